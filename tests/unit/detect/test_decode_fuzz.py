"""Property tests: whatever the bytes, decode_file returns a DecodedFile or raises DecodeError.

Also: every candidate is found however its eventName is escaped, candidates are exactly the
records an independent decoder (json) finds, and gzip or not makes no difference.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trailguard.detect.decode import CandidateNames, DecodedFile, decode_file
from trailguard.detect.record import Record
from trailguard.errors import DecodeError
from trailguard.vocabulary import REMOVAL_EVENT_NAMES

# Every property holds on both decode paths: the C scanner and msgspec alone.
pytestmark = pytest.mark.usefixtures("both_decoders")

NAMES = REMOVAL_EVENT_NAMES
OTHER_NAMES = ("GetObject", "PutUserPolicy", "AttachRolePolicy", "DeletePolicyX", "ListPolicies")
PF = CandidateNames(NAMES)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(data: bytes, key: str | None = None) -> DecodedFile | DecodeError:
    """decode_file's result or its DecodeError; any other exception fails the test."""
    error: DecodeError | None = None
    try:
        result = decode_file(data, PF, source="fuzz", key=key)
    except DecodeError as exc:
        error = exc
    if error is not None:
        assert error.reason, "a DecodeError must say why"
        assert error.source == "fuzz"
        return error
    assert isinstance(result, DecodedFile)
    assert result.records >= len(result.candidates)
    assert all(r.event_name in NAMES for r in result.candidates)
    assert (result.skipped is None) == (result.shape not in ("digest", "insight"))
    return result


def record(name: str, i: int) -> dict[str, Any]:
    return {
        "eventVersion": "1.09",
        "eventTime": "2024-06-01T00:00:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": name,
        "eventID": f"id-{i}",
        "userIdentity": {"type": "IAMUser", "userName": "alice"},
        "requestParameters": {"userName": "alice", "policyName": f"p{i}"},
    }


VALID_TEXT = json.dumps(
    {"Records": [record(n, i) for i, n in enumerate(NAMES + OTHER_NAMES)]},
    separators=(",", ":"),
).encode()
VALID_GZIP = gzip.compress(VALID_TEXT, mtime=0)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(
        (*NAMES, "eventName", "eventTime", "Records", "Events", "aws:s3", "AwsCloudTrailInsight")
    ),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Records",
                    "Events",
                    "CloudTrailEvent",
                    "eventName",
                    "eventTime",
                    "eventSource",
                    "eventType",
                    "userIdentity",
                    "requestParameters",
                    "digestStartTime",
                    "x",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=25,
)


@SETTINGS
@given(st.binary(max_size=2000))
@example(b"\x1f\x8b")
@example(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\x00" * 12)
@example(b"\xef\xbb\xbf")
@example(b'{"Records":[{"eventName":"\\ud800"}]}')
def test_arbitrary_bytes(data: bytes) -> None:
    outcome(data)
    outcome(gzip.compress(data, mtime=0))


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_gzip_magic(tail: bytes) -> None:
    outcome(b"\x1f\x8b" + tail)
    outcome(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + tail)
    outcome(VALID_GZIP + tail)


@SETTINGS
@given(json_values, st.sampled_from(["top", "records", "array", "jsonl", "lookup", "gzip"]))
def test_arbitrary_json(value: Any, wrap: str) -> None:
    if wrap == "top":
        text = json.dumps(value).encode()
    elif wrap == "records":
        text = json.dumps({"Records": value}).encode()
    elif wrap == "array":
        text = json.dumps(value if isinstance(value, list) else [value]).encode()
    elif wrap == "jsonl":
        items = value if isinstance(value, list) else [value]
        text = b"\n".join(json.dumps(v).encode() for v in items)
    elif wrap == "lookup":
        items = value if isinstance(value, list) else [value]
        events = [{"CloudTrailEvent": json.dumps(v)} for v in items]
        text = json.dumps({"Events": events}).encode()
    else:
        text = gzip.compress(json.dumps(value).encode(), mtime=0)
    outcome(text)


def oracle(values: list[Any], shape: str) -> tuple[list[Any], list[Any]]:
    """(usable records, expected candidate names) as json + the decode contract define them.

    The fast path (every record an object with string eventName, the first one's eventSource
    not a notification's) takes every record as usable; otherwise each record is judged.
    """
    fast = (
        shape != "jsonl"
        and bool(values)
        and all(
            isinstance(v, dict)
            and isinstance(v.get("eventName"), str)
            and isinstance(v.get("eventSource"), str | None)
            for v in values
        )
        and not (values[0].get("eventSource") or "").startswith("aws:")
    )
    usable = []
    for v in values:
        if fast:
            usable.append(v)
            continue
        if not isinstance(v, dict):
            continue
        name, source = v.get("eventName"), v.get("eventSource")
        if not isinstance(name, str | None) or not isinstance(source, str | None):
            continue
        if (source or "").startswith("aws:"):
            continue
        if name is None and v.get("eventTime") is None:
            continue
        usable.append(v)
    expected = []
    for v in usable:
        if v.get("eventName") in NAMES:
            try:
                msgspec.json.decode(json.dumps(v).encode(), type=Record)
            except msgspec.ValidationError:
                continue
            expected.append(v["eventName"])
    return usable, expected


@SETTINGS
@given(
    st.lists(
        json_values | st.builds(record, st.sampled_from(NAMES + OTHER_NAMES), st.integers(0, 9)),
        max_size=8,
    ),
    st.sampled_from(["records", "array", "jsonl"]),
)
def test_arbitrary_records_candidates_match_an_oracle(values: list[Any], shape: str) -> None:
    if shape == "records":
        text = json.dumps({"Records": values}).encode()
    elif shape == "array":
        text = json.dumps(values).encode()
    else:
        text = b"\n".join(json.dumps(v).encode() for v in values)
    result = outcome(text)
    usable, expected = oracle(values, shape)
    if shape == "jsonl" and (len(values) < 2 or isinstance(values[0], list)):
        return  # one line is a whole document; a first line "[" reads as a broken array
    if shape == "jsonl" and not any(isinstance(v, dict) for v in values):
        assert isinstance(result, DecodeError)  # no line is an object: not JSON Lines at all
        assert result.reason.startswith("invalid JSON: ")
        return
    if values and not usable:
        assert isinstance(result, DecodeError)
        assert result.reason.startswith("not a CloudTrail log: ")
        return
    assert isinstance(result, DecodedFile), result
    if all(v.get("eventType") == "AwsCloudTrailInsight" for v in usable) and usable:
        assert result.skipped == "insight"
        return
    assert result.records == len(values)
    assert [r.event_name for r in result.candidates] == expected
    assert len(result.bad_records) == min(
        len(values)
        - len(expected)
        - (len(usable) - sum(1 for v in usable if v.get("eventName") in NAMES)),
        101,
    )


def test_every_truncation_of_a_gzip_file() -> None:
    for cut in range(len(VALID_GZIP)):
        result = outcome(VALID_GZIP[:cut])
        assert isinstance(result, DecodeError), cut
    assert len(outcome(VALID_GZIP).candidates) == len(NAMES)  # type: ignore[union-attr]


def test_every_truncation_of_a_json_file() -> None:
    for cut in range(len(VALID_TEXT)):
        result = outcome(VALID_TEXT[:cut])
        assert isinstance(result, DecodeError), cut


@SETTINGS
@given(st.integers(0, len(VALID_TEXT) - 1), st.binary(min_size=1, max_size=4))
def test_corrupted_json_file(position: int, garbage: bytes) -> None:
    data = VALID_TEXT[:position] + garbage + VALID_TEXT[position + len(garbage) :]
    outcome(data)
    outcome(gzip.compress(data, mtime=0))


@SETTINGS
@given(st.integers(10, len(VALID_GZIP) - 1), st.integers(1, 255))
def test_corrupted_gzip_file(position: int, flip: int) -> None:
    data = bytearray(VALID_GZIP)
    data[position] ^= flip
    result = outcome(bytes(data))
    if isinstance(result, DecodedFile):
        # Accepted only when the flip changed nothing deflate reads (the unused padding bits
        # after the final block): the CRC then matches, and so must the whole result.
        assert result == outcome(VALID_GZIP), f"corruption at {position} went unnoticed"


def escape_some(text: str, mask: list[bool]) -> str:
    """JSON-encode ``text`` with the characters picked by ``mask`` written as \\u escapes."""
    out = []
    for i, char in enumerate(text):
        if mask[i % len(mask)]:
            out.append(f"\\u{ord(char):04{'x' if i % 2 else 'X'}}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


@SETTINGS
@given(
    st.sampled_from(NAMES),
    st.lists(st.booleans(), min_size=1, max_size=30),
    st.sampled_from(["records", "array", "jsonl", "lookup"]),
    st.booleans(),
)
def test_escaped_candidates_are_never_missed(
    name: str, mask: list[bool], shape: str, compress: bool
) -> None:
    escaped = escape_some(name, mask)
    body = json.dumps(record("PLACEHOLDER", 1)).replace('"PLACEHOLDER"', escaped)
    assert json.loads(body)["eventName"] == name
    other = json.dumps(record("GetObject", 0))
    if shape == "records":
        text = f'{{"Records":[{other},{body}]}}'
    elif shape == "array":
        text = f"[{other},{body}]"
    elif shape == "jsonl":
        text = f"{other}\n{body}\n"
    else:
        text = json.dumps({"Events": [{"CloudTrailEvent": other}, {"CloudTrailEvent": body}]})
    data = text.encode()
    if compress:
        data = gzip.compress(data, mtime=0)
    result = outcome(data)
    assert isinstance(result, DecodedFile)
    assert [r.event_name for r in result.candidates] == [name]


@SETTINGS
@given(st.lists(st.sampled_from(NAMES + OTHER_NAMES), max_size=40), st.booleans())
def test_candidates_are_exactly_the_listed_names(chosen: list[str], compress: bool) -> None:
    text = json.dumps({"Records": [record(n, i) for i, n in enumerate(chosen)]}).encode()
    plain = outcome(text)
    assert isinstance(plain, DecodedFile)
    assert [r.event_name for r in plain.candidates] == [n for n in chosen if n in NAMES]
    assert [r.event_id for r in plain.candidates] == [
        f"id-{i}" for i, n in enumerate(chosen) if n in NAMES
    ]
    assert plain.records == len(chosen)
    if compress:
        packed = outcome(gzip.compress(text, mtime=0))
        assert isinstance(packed, DecodedFile)
        assert packed.candidates == plain.candidates
        assert packed.records == plain.records
