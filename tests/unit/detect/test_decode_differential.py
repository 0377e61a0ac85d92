"""Every decode path gives the same answer for any input: the C scanner, msgspec's parts, the
reference walk alone, and each of them streamed in small pieces.

The inputs are CloudTrail-like documents with damage put into some records by construction
(grammar errors, bytes that are not UTF-8, half surrogate pairs, control characters, deep
nesting, escaped or duplicated keys, notification sources, non-objects, huge records) and cut
at random places; the answer compared is everything decode_file returns (records, candidates,
bad records with their reasons, shape, sizes) or its DecodeError's reason.  A result that
depended on the CPU, ``TRAILGUARD_SCANNER`` or a JSON library's tolerance would fail here.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trailguard.detect.decode import SCANNER, CandidateNames, DecodeLimits, decode_file
from trailguard.errors import DecodeError
from trailguard.ingest.notifications import parse_body

NAMES = ("DeleteUserPolicy", "DetachRolePolicy", "PutRolePolicy", "DeletePolicy")
PF = CandidateNames(NAMES)
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = DecodeLimits(max_record_bytes=64 << 10)  # so that "too big" is reachable


@contextmanager
def path(kind: str) -> Iterator[None]:
    enabled, reference = SCANNER.enabled, SCANNER.reference
    SCANNER.enabled = kind == "scanner"
    SCANNER.reference = kind == "reference"
    try:
        yield
    finally:
        SCANNER.enabled, SCANNER.reference = enabled, reference


def outcome(data: bytes, limits: DecodeLimits = SMALL) -> tuple[Any, ...]:
    try:
        r = decode_file(data, PF, source="t", limits=limits)
    except DecodeError as exc:
        return ("error", exc.reason)
    return (
        r.shape,
        r.records,
        tuple(msgspec.json.encode(c) for c in r.candidates),
        tuple(r.bad_records),
        r.bad_record_count,
        r.skipped,
        r.compressed,
        r.bytes_decompressed,
    )


def paths() -> list[str]:
    return ["scanner", "msgspec", "reference"] if SCANNER.available else ["msgspec", "reference"]


def all_agree(data: bytes) -> tuple[Any, ...]:
    """The one answer of every path, in memory and streamed; fails if two differ."""
    answers: dict[str, tuple[Any, ...]] = {}
    for kind in paths():
        with path(kind):
            answers[kind] = outcome(data)
            streamed = msgspec.structs.replace(SMALL, stream_over=0, stream_piece=7)
            answers[kind + "+stream"] = outcome(data, streamed)
    first = next(iter(answers.values()))
    for kind, answer in answers.items():
        assert answer == first, f"{kind} differs:\n{answer}\n!=\n{first}"
    return first


def record(name: str, i: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::123456789012:user/u{i}"},
        "eventTime": "2024-06-01T00:00:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": name,
        "requestParameters": {"userName": f"u{i}", "policyName": "p"},
        "eventID": f"id-{i}",
    }
    body.update(extra)
    return body


# What can be done to one record's bytes (a compact JSON object starting with '{').
DAMAGE: dict[str, Any] = {
    "two values": lambda b: b[:-1] + b',"a":1 2}',
    "key without value": lambda b: b[:-1] + b',"a"}',
    "trailing comma": lambda b: b[:-1] + b",}",
    "missing colon": lambda b: b[:-1] + b',"a" 1}',
    "bad literal": lambda b: b[:-1] + b',"a":tru}',
    "bad number": lambda b: b[:-1] + b',"a":01}',
    "bad escape": lambda b: b[:-1] + b',"a":"\\x"}',
    "lone high surrogate": lambda b: b[:-1] + b',"a":"\\ud800"}',
    "lone low surrogate": lambda b: b[:-1] + b',"a":"\\udc00"}',
    "a surrogate pair": lambda b: b[:-1] + b',"a":"\\ud83d\\ude00"}',
    "control character": lambda b: b[:-1] + b',"a":"x\x01y"}',
    "not UTF-8": lambda b: b[:-1] + b',"a":"x\xffy"}',
    "overlong UTF-8": lambda b: b[:-1] + b',"a":"\xc0\x80"}',
    "UTF-8 ok": lambda b: b[:-1] + ',"a":"é😀"}'.encode(),
    "deep": lambda b: b[:-1] + b',"a":' + b"[" * 300 + b"]" * 300 + b"}",
    "very deep": lambda b: b[:-1] + b',"a":' + b"[" * 1100 + b"]" * 1100 + b"}",
    "escaped name": lambda b: (
        b.replace(b'"eventName":"', b'"eventName":"\\u0044', 1) if b'"eventName":"D' in b else b
    ),
    "escaped key": lambda b: b.replace(b'"eventName"', b'"event\\u004eame"', 1),
    "duplicate name null": lambda b: b[:-1] + b',"event\\u004eame":null}',
    "duplicate name": lambda b: b[:-1] + b',"eventName":"DeletePolicy"}',
    "name not a string": lambda b: b.replace(b'"eventName":', b'"eventName":5,"x":', 1),
    "no name": lambda b: b.replace(b'"eventName":', b'"x":', 1),
    "no name no time": lambda b: b.replace(b'"eventName":', b'"x":', 1).replace(
        b'"eventTime":', b'"y":', 1
    ),
    "notification": lambda b: b.replace(b'"iam.amazonaws.com"', b'"aws:s3"', 1),
    "insight": lambda b: (
        b.replace(b'"eventName":', b'"x":', 1)[:-1] + b',"eventType":"AwsCloudTrailInsight"}'
    ),
    "source not a string": lambda b: b.replace(b'"eventSource":', b'"eventSource":[1],"x":', 1),
    "wrong type in a candidate": lambda b: b[:-1] + b',"userIdentity":"x"}',
    "huge": lambda b: b[:-1] + b',"a":"' + b"x" * (70 << 10) + b'"}',
    "not an object": lambda b: b"[1,2]",
    "a string": lambda b: b'"DeletePolicy"',
    "null": lambda b: b"null",
    "whitespace": lambda b: b" \n" + b.replace(b",", b" ,\t", 3) + b"\r\n",
    "bracket in a string": lambda b: b[:-1] + b',"a":"}]},{\\"eventVersion\\":"}',
    "nested imitation": lambda b: (
        b[:-1] + b',"a":[{"eventVersion":"1","eventName":"DeletePolicy"},{"eventVersion":"2"}]}'
    ),
}


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    count = draw(st.integers(0, 8))
    parts: list[bytes] = []
    for i in range(count):
        name = draw(st.sampled_from((*NAMES, "GetObject", "ListUsers")))
        text = json.dumps(record(name, i), separators=(",", ":")).encode()
        if draw(st.integers(0, 2)) == 0:
            text = DAMAGE[draw(st.sampled_from(sorted(DAMAGE)))](text)
        parts.append(text)
    shape = draw(st.sampled_from(["records", "records", "array", "jsonl", "lookup"]))
    if shape == "records":
        doc = b'{"Records":[' + b",".join(parts) + b"]}"
    elif shape == "array":
        doc = b"[" + b",".join(parts) + b"]"
    elif shape == "jsonl":
        doc = b"\n".join(parts) + b"\n"
    else:
        events = b",".join(
            b'{"EventId":"x","CloudTrailEvent":' + json.dumps(p.decode("utf-8", "replace")).encode()
            for p in parts
        )
        doc = b'{"Events":[' + events + b"]}"
    if draw(st.integers(0, 9)) == 0:
        doc = doc[: draw(st.integers(0, len(doc)))]
    return doc


@SETTINGS
@given(doc=documents(), compress=st.booleans())
@example(
    doc=b'{"Records":[{"eventName":"DeletePolicy","eventTime":"t"},{"a":1 2}]}', compress=False
)
def test_every_path_gives_the_same_answer(doc: bytes, compress: bool) -> None:
    if not doc:
        return
    all_agree(gzip.compress(doc, mtime=0) if compress else doc)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("compress", [False, True])
def test_each_kind_of_damage_stays_in_its_record(damage: str, compress: bool) -> None:
    """A damaged record between two removals: both removals are found, whatever the damage
    and whichever path decodes (the damaged record may be bad, fine or a removal itself)."""
    before = json.dumps(record("DeleteUserPolicy", 0), separators=(",", ":")).encode()
    after = json.dumps(record("DetachRolePolicy", 2), separators=(",", ":")).encode()
    middle = DAMAGE[damage](json.dumps(record("GetObject", 1), separators=(",", ":")).encode())
    doc = b'{"Records":[' + before + b"," + middle + b"," + after + b"]}"
    answer = all_agree(gzip.compress(doc, mtime=0) if compress else doc)
    assert answer[0] == "records", answer
    found = [json.loads(c)["eventID"] for c in answer[2]]
    assert found[0] == "id-0"
    assert found[-1] == "id-2"


def test_msgspec_023_utf8_regression() -> None:
    """The finding: one record with invalid UTF-8 made the whole file invalid on both paths
    with msgspec 0.23, losing the real DeleteUserPolicy beside it."""
    doc = json.dumps(
        {"Records": [record("DeleteUserPolicy", 0), record("GetObject", 1)]}, separators=(",", ":")
    ).encode()
    doc = doc.replace(b'"eventName":"GetObject"', b'"eventName":"Get\xffObject"')
    answer = all_agree(doc)
    assert [json.loads(c)["eventName"] for c in answer[2]] == ["DeleteUserPolicy"]
    assert answer[3] == ("record 1: a string is not valid UTF-8",)


@pytest.mark.parametrize(
    "body",
    [
        b'{"Records": "\xff"}',
        '{"Records": "\ud800"}',
        b'{"detail-type":"AWS API Call via CloudTrail","detail":' + b"[" * 300 + b"]" * 300 + b"}",
    ],
)
def test_sqs_bodies_are_judged_by_trailguard_not_by_msgspec(body: str | bytes) -> None:
    parsed = parse_body(body)
    assert parsed.kind == "unknown"
    assert parsed.reason is not None
    assert "not valid UTF-8" in parsed.reason or "nested too deeply (more than" in parsed.reason
