"""The two shortcuts of decode_file give exactly what the plain paths give.

* the locator (candidate records found by their bytes instead of a second list[Raw] pass);
* the streaming path for big gzip files (decoded piece by piece as they inflate).

Each is compared with the path it replaces on the same input: records, candidates, bad records,
shape and sizes, or the same DecodeError.  Correctness only; speed is ``make bench``'s business.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import trailguard.detect.locate as locate_mod
from trailguard.detect.decode import CandidateNames, DecodedFile, DecodeLimits, decode_file
from trailguard.detect.stream import PieceDecoder
from trailguard.errors import DecodeError

NAMES = ("DeleteUserPolicy", "DetachRolePolicy", "PutRolePolicy", "AttachRolePolicy")
OTHER = ("GetObject", "Decrypt", "ListPolicies", "DeleteUserPolicyX")
PF = CandidateNames(NAMES)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def record(name: str, i: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::123456789012:user/u{i}"},
        "eventTime": "2024-06-01T00:00:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "requestParameters": {"userName": f"u{i}", "policyName": "p"},
        "eventID": f"id-{i}",
        "recipientAccountId": "123456789012",
    }
    body.update(extra)
    return body


def gz(records: list[Any], **kwargs: Any) -> bytes:
    return gzip.compress(msgspec.json.encode({"Records": records}, **kwargs), mtime=0)


def result(data: bytes, **limits: Any) -> DecodedFile | str:
    try:
        return decode_file(data, PF, source="t", limits=DecodeLimits(**limits))
    except DecodeError as exc:
        return f"DecodeError: {exc.reason}"


def located_and_raw(data: bytes) -> tuple[Any, Any]:
    """(decode_file's result and whether the locator answered, the result without it)."""
    with pytest.MonkeyPatch.context() as patch:
        calls: list[bool] = []
        real = locate_mod._Locator.locate

        def spy(self: Any, *args: Any) -> Any:
            found = real(self, *args)
            calls.append(found is not None)
            return found

        patch.setattr(locate_mod._Locator, "locate", spy)
        located = result(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(locate_mod._Locator, "locate", lambda self, *args: None)
        raw = result(data)
    return (located, calls), raw


# -- the locator -----------------------------------------------------------------------------


@pytest.mark.usefixtures("msgspec_decoder")  # the locator is part of that path
def test_locator_finds_the_candidates_of_a_compact_file() -> None:
    records = [record("GetObject", i) for i in range(50)]
    records[3] = record("PutRolePolicy", 3)
    records[40] = record("DeleteUserPolicy", 40)
    (located, calls), raw = located_and_raw(gz(records))
    assert calls == [True]
    assert located == raw
    assert isinstance(located, DecodedFile)
    assert [r.event_id for r in located.candidates] == ["id-3", "id-40"]


@pytest.mark.usefixtures("msgspec_decoder")  # the locator is part of that path
@pytest.mark.parametrize(
    "text",
    [
        # the eventName escaped: the locator must not miss it (it declines, the Raw pass finds it)
        rb'{"Records":[{"eventVersion":"1","eventName":"Delete\u0055serPolicy","eventID":"a"}]}',
        rb'{"Records":[{"eventVersion":"1","event\u004eame":"DeleteUserPolicy","eventID":"a"}]}',
        # a nested object imitating a record, next to a real candidate that is escaped
        rb'{"Records":[{"eventVersion":"1","eventName":"Delete\u0055serPolicy","eventID":"real",'
        rb'"requestParameters":{"x":[{"eventVersion":"1","eventName":"DeleteUserPolicy",'
        rb'"eventID":"fake"},{"eventVersion":"2"}]}}]}',
        # the imitation alone, inside a record that is no candidate
        rb'{"Records":[{"eventVersion":"1","eventName":"GetObject","requestParameters":{"x":'
        rb'[{"eventVersion":"1","eventName":"DeleteUserPolicy"},{"eventVersion":"2"}]}},'
        rb'{"eventVersion":"1","eventName":"DeleteUserPolicy","eventID":"b"}]}',
        # whitespace around the colon, records not starting with eventVersion
        b'{"Records":[{"eventVersion":"1","eventName" : "DeleteUserPolicy","eventID":"a"},'
        b'{"eventName":"PutRolePolicy","eventVersion":"1","eventID":"b"}]}',
        # duplicate keys: msgspec keeps the last one
        b'{"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy","eventName":"GetObject"},'
        b'{"eventVersion":"1","eventName":"GetObject","eventName":"PutRolePolicy"}]}',
        # the name as a value elsewhere, and an escaped backslash before "u00"
        b'{"Records":[{"eventVersion":"1","eventName":"PutRolePolicy","policyName":'
        b'"DeleteUserPolicy","x":"a\\\\u0044"}]}',
        # a candidate with a type error: a bad record, same message either way
        b'{"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy","eventID":5},'
        b'{"eventVersion":"1","eventName":"GetObject"}]}',
        # the last record, and something after the Records array
        b'{"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy"}],"more":[1]}',
        b'[{"eventVersion":"1","eventName":"DetachRolePolicy"},{"eventVersion":"1","eventName":'
        b'"AttachRolePolicy","requestParameters":{"policyDocument":"{\\"a\\":\\"}]\\"}"}}]',
    ],
)
def test_locator_agrees_with_the_raw_pass(text: bytes) -> None:
    for data in (text, gzip.compress(text, mtime=0)):
        (located, _), raw = located_and_raw(data)
        assert located == raw


@pytest.mark.usefixtures("msgspec_decoder")  # the locator is part of that path
@pytest.mark.parametrize("noise", [0, 10, 2000])
def test_locator_with_names_sharing_a_part(noise: int) -> None:
    """Several names (PutRolePolicy, DetachRolePolicy: one scan for "RolePolicy"), the names
    elsewhere in strings and keys, a nested imitation, and the shared part everywhere."""
    records = [record("GetObject", i, userAgent="RolePolicy " * noise) for i in range(30)]
    records[2] = record("PutRolePolicy", 2, requestParameters={"PutRolePolicy": "PutRolePolicy"})
    records[9] = record("DetachRolePolicy", 9)
    records[20] = record("PutRolePolicy", 20)
    (located, calls), raw = located_and_raw(gz(records))
    assert located == raw
    assert calls == [True]
    assert isinstance(located, DecodedFile)
    assert [r.event_id for r in located.candidates] == ["id-2", "id-9", "id-20"]
    records[25] = record(
        "GetObject",
        25,
        requestParameters={"x": [{"eventVersion": "1", "eventName": "DetachRolePolicy"}, {}]},
    )
    (located, calls), raw = located_and_raw(gz(records))
    assert located == raw
    assert calls == [False]  # one hit too many: declined, the Raw pass answered


json_text = st.text(st.sampled_from('ab"\\{}[],:/ ueventVersionName'), max_size=12)
nested = st.recursive(
    st.none() | st.integers() | json_text,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["eventVersion", "eventName", "x", "}]"]), inner, max_size=3
        )
    ),
    max_leaves=6,
)


@st.composite
def record_lists(draw: st.DrawFn) -> list[Any]:
    count = draw(st.integers(0, 12))
    records: list[Any] = []
    for i in range(count):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            records.append(draw(nested))  # anything at all
            continue
        name = draw(st.sampled_from(NAMES + OTHER))
        extra: dict[str, Any] = {}
        if draw(st.booleans()):
            extra["requestParameters"] = {"list": [draw(nested), draw(nested)]}
        if draw(st.booleans()):
            extra["requestParameters"] = {
                "x": [{"eventVersion": "1", "eventName": draw(st.sampled_from(NAMES))}, {}]
            }
        if kind == 1:
            extra["eventID"] = draw(st.integers())  # a type error
        records.append(record(name, i, **extra))
    return records


def escaped(text: bytes, how: int) -> bytes:
    """The same JSON with some letters of eventName/names spelt as \\u escapes, or spaced."""
    if how == 1:
        return text.replace(b'"eventName":"Delete', b'"eventName":"\\u0044elete', 1)
    if how == 2:
        return text.replace(b'"eventName":', b'"eventName" : ', 2)
    if how == 3:
        return text.replace(b'"eventName"', b'"event\\u004eame"', 1)
    return text


@SETTINGS
@given(records=record_lists(), how=st.integers(0, 3))
def test_locator_property(records: list[Any], how: int) -> None:
    text = escaped(msgspec.json.encode({"Records": records}), how)
    (located, _), raw = located_and_raw(text)
    assert located == raw


# -- streaming -------------------------------------------------------------------------------


def streamed_and_in_memory(data: bytes, piece: int) -> tuple[Any, Any]:
    return result(data, stream_over=0, stream_piece=piece), result(data)


def stream_used(data: bytes, piece: int) -> bool:
    """Whether streaming answers with msgspec parts alone (no record needed the walk)."""
    with pytest.MonkeyPatch.context() as patch:
        walked: list[bool] = []
        real = PieceDecoder.walk_rest

        def spy(self: Any, *args: Any) -> Any:
            walked.append(True)
            return real(self, *args)

        patch.setattr(PieceDecoder, "walk_rest", spy)
        result(data, stream_over=0, stream_piece=piece)
    return not walked


@pytest.mark.parametrize("piece", [1, 64, 1000, 1 << 20])
def test_stream_gives_the_in_memory_result(piece: int) -> None:
    records = [record(OTHER[i % 4], i) for i in range(300)]
    for i in (0, 7, 150, 299):
        records[i] = record(NAMES[i % 4], i)
    records[99] = record("DeleteUserPolicy", 99, eventID=12)  # a bad candidate
    data = gz(records)
    assert stream_used(data, piece)
    streamed, in_memory = streamed_and_in_memory(data, piece)
    assert streamed == in_memory
    assert isinstance(streamed, DecodedFile)
    assert streamed.records == 300
    assert len(streamed.candidates) == 4
    assert len(streamed.bad_records) == 1
    assert streamed.bad_records[0].startswith("record 99: a field has the wrong type (")


def test_the_stream_threshold_changes_nothing() -> None:
    data = gz([record("DeleteUserPolicy", i) for i in range(20)])
    size = int.from_bytes(data[-4:], "little")
    assert result(data, stream_over=size - 1) == result(data, stream_over=size + len(data) * 8)


@pytest.mark.parametrize(
    "text",
    [
        # a cut inside a record: nested objects starting with eventVersion
        b'{"Records":[{"eventVersion":"1","eventName":"GetObject","requestParameters":{"x":'
        b'[{"eventVersion":"1"},{"eventVersion":"2","eventName":"DeleteUserPolicy"}]}},'
        b'{"eventVersion":"1","eventName":"DeleteUserPolicy","eventID":"b"}]}',
        # pretty-printed, a BOM, spaces around the Records key
        b'\xef\xbb\xbf {\n "Records" : [\n  {"eventVersion": "1", "eventName": "DeleteUserPolicy"},'
        b'\n  {"eventVersion": "1", "eventName": "GetObject"}\n ]\n}\n',
        # another key after Records, or before
        b'{"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy"}],"x":1}',
        b'{"x":1,"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy"}]}',
        b'{"Records":[{"eventVersion":"1","eventName":"A"}],"Records":[{"eventVersion":"1",'
        b'"eventName":"DeleteUserPolicy"},{"eventVersion":"1","eventName":"B"}]}',
        # odd records: careful path in memory
        b'{"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy"},{"eventVersion":"1"},'
        b'{"eventVersion":"1","eventName":"GetObject","eventSource":"aws:s3"},7]}',
        b'{"Records":[{"eventVersion":"1","eventSource":"aws:s3","eventName":"x"}]}',
        # broken JSON in the middle, and at the end
        b'{"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy"},{"eventVersion":tru},'
        b'{"eventVersion":"1","eventName":"GetObject"}]}',
        b'{"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy"},{"eventVersion":"1"',
        b'{"Records":[]}',
        b'{"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy"}]} trailing',
        b'[{"eventVersion":"1","eventName":"DeleteUserPolicy"}]',
        b'{"eventVersion":"1","eventName":"DeleteUserPolicy"}\n{"eventVersion":"1","eventName":"x"}',
    ],
)
@pytest.mark.parametrize("piece", [1, 16, 1 << 20])
def test_stream_agrees_on_odd_files(text: bytes, piece: int) -> None:
    streamed, in_memory = streamed_and_in_memory(gzip.compress(text, mtime=0), piece)
    assert streamed == in_memory


def test_stream_gzip_errors_are_the_in_memory_errors() -> None:
    data = gz([record("DeleteUserPolicy", i) for i in range(200)])
    for bad in (
        data[: len(data) // 2],  # truncated
        data[:-3],  # truncated trailer
        data + b"garbage!",  # trailing garbage
        data[:100] + bytes([data[100] ^ 0xFF]) + data[101:],  # corrupt
    ):
        streamed, in_memory = streamed_and_in_memory(bad, 64)
        assert isinstance(in_memory, str)
        assert streamed == in_memory
    text = msgspec.json.encode({"Records": [record("DeleteUserPolicy", i) for i in range(200)]})
    half = len(text) // 2
    two = gzip.compress(text[:half], mtime=0) + gzip.compress(text[half:], mtime=0)  # 2 members
    streamed, in_memory = streamed_and_in_memory(two, 64)
    assert streamed == in_memory
    assert isinstance(streamed, DecodedFile)
    padded = data + b"\0" * 10
    assert streamed_and_in_memory(padded, 64)[0] == streamed_and_in_memory(padded, 64)[1]


def test_stream_refuses_a_gzip_bomb_as_in_memory() -> None:
    data = gz([record("DeleteUserPolicy", i) for i in range(200)])
    limit = int.from_bytes(data[-4:], "little") - 1
    streamed = result(data, stream_over=0, stream_piece=64, max_inflated_bytes=limit)
    assert streamed == result(data, max_inflated_bytes=limit)
    assert isinstance(streamed, str)
    assert "refusing a possible gzip bomb" in streamed


@SETTINGS
@given(
    records=record_lists(),
    piece=st.integers(1, 400),
    how=st.integers(0, 3),
    cut=st.none() | st.integers(0, 2000),
)
@example(records=[], piece=1, how=0, cut=None)
def test_stream_property(records: list[Any], piece: int, how: int, cut: int | None) -> None:
    text = escaped(msgspec.json.encode({"Records": records}), how)
    data = gzip.compress(text, mtime=0)
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    if not data:
        return
    streamed, in_memory = streamed_and_in_memory(data, piece)
    assert streamed == in_memory


def test_stream_matches_an_independent_decoder() -> None:
    records = [record(NAMES[i % 4] if i % 5 == 0 else "GetObject", i) for i in range(120)]
    streamed = result(gz(records), stream_over=0, stream_piece=300)
    assert isinstance(streamed, DecodedFile)
    expected = [
        r["eventID"] for r in json.loads(msgspec.json.encode(records)) if r["eventName"] in NAMES
    ]
    assert [r.event_id for r in streamed.candidates] == expected
