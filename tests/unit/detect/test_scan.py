"""The C scanner (trailguard.detect._scan): exact where it answers, declines what it cannot judge.

Three kinds of checks:

* its AVX2 masks against its portable byte-by-byte masks, on every document here (the portable
  code is the reference: short, one byte at a time);
* decode_file with the scanner against decode_file with msgspec alone (the decoder of before),
  on valid documents of every kind: same DecodedFile, or the scanner declined;
* crafted documents: what it must decline, what it must return as a candidate (escapes,
  duplicate keys), and everything at every offset from a 64-byte block boundary.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import use_decoder
from trailguard.detect.decode import SCANNER, CandidateNames, DecodedFile, decode_file
from trailguard.errors import DecodeError

NAMES = ("DeleteRolePolicy", "DeleteUserPolicy", "PutRolePolicy", "DetachGroupPolicy")
PF = CandidateNames(NAMES)
NAME_BYTES = PF.name_bytes
SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module", autouse=True)
def scanner() -> Iterator[None]:
    yield from use_decoder("scanner")


def scan(
    text: bytes, names: tuple[bytes, ...] = NAME_BYTES
) -> tuple[int, int, int, list[int]] | str:
    """The scanner's answer, checked to be the same with the AVX2 and the portable masks."""
    from trailguard.detect import _scan

    fast = _scan.records(text, names)
    slow = _scan.records(text, names, simd=False)
    assert fast == slow
    return fast


def accepted(text: bytes) -> tuple[int, list[int]]:
    """(count, candidate indexes) of a document the scanner must accept."""
    found = scan(text)
    assert not isinstance(found, str), found
    count, first_start, first_end, spans = found
    if count:
        first = json.loads(text[first_start:first_end])
        assert first == json.loads(text)["Records"][0]
    for at in range(0, len(spans), 3):
        index, start, end = spans[at : at + 3]
        assert json.loads(text[start:end]) == json.loads(text)["Records"][index]
    return count, spans[0::3]


def declined(text: bytes) -> str:
    found = scan(text)
    assert isinstance(found, str), found
    return found


def outcome(data: bytes, kind: str) -> DecodedFile | str:
    before = SCANNER.enabled
    SCANNER.enabled = kind == "scanner"
    try:
        return decode_file(data, PF, source="t")
    except DecodeError as exc:
        return f"DecodeError: {exc.reason}"
    finally:
        SCANNER.enabled = before


def doc(*records: str, head: str = '{"Records":[', tail: str = "]}") -> bytes:
    return (head + ",".join(records) + tail).encode()


def rec(name: str = "GetObject", extra: str = "") -> str:
    return (
        '{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"},'
        f'"eventSource":"iam.amazonaws.com","eventName":"{name}","eventID":"e-{name}"{extra}}}'
    )


# -- what it finds -----------------------------------------------------------------------------


def test_counts_and_finds_the_named_records() -> None:
    text = doc(rec(), rec("DeleteRolePolicy"), rec(), rec("PutRolePolicy"), rec("GetUser"))
    assert accepted(text) == (5, [1, 3])


@pytest.mark.parametrize("length", [1, 2, 62, 63, 64, 70, 200])
def test_names_of_every_length(length: int) -> None:
    """Only the values of a length some name has are compared (a 64-bit mask, the last bit for
    63 bytes and more): the names themselves are still found, others of their length are not."""
    name = ("N" * length).encode()
    other = ("M" * length).encode()
    text = doc(rec(name.decode()), rec(other.decode()), rec("X" * (length + 1)), rec())
    found = scan(text, (name,))
    assert not isinstance(found, str)
    assert (found[0], found[3][0::3]) == (4, [0])
    # and a name longer than 63 bytes does not make every long value one
    assert scan(text, (("L" * 90).encode(),))[3] == []


def test_empty_records_and_whitespace_everywhere() -> None:
    assert accepted(b'{"Records":[]}') == (0, [])
    assert accepted(b' \n{ "Records" :\t[ ] }\r\n') == (0, [])
    pretty = json.dumps(
        {"Records": [json.loads(rec("DeleteUserPolicy")), json.loads(rec())]}, indent=2
    ).encode()
    assert accepted(pretty) == (2, [0])


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (rec("Delete\\u0052olePolicy"), "an escape in the value could spell any name"),
        (rec("GetObject", ',"eventName":"GetObject"'), "two eventName keys: a parser keeps one"),
        (rec("GetObject", ',"event\\u004eame":"DeleteRolePolicy"'), "an escaped letter"),
        (rec("GetObject", ',"x":"\\u0041"'), "an escaped letter anywhere in the record"),
    ],
)
def test_returns_doubtful_records_as_candidates(record: str, why: str) -> None:
    assert accepted(doc(rec(), record)) == (2, [1]), why


def test_eventsource_may_be_null_or_nested() -> None:
    text = doc(rec("GetObject", ',"eventSource":null'), rec("GetObject", ',"x":{"eventSource":1}'))
    assert accepted(text) == (2, [])


def test_nested_eventname_is_not_the_records_own() -> None:
    nested = rec("GetObject", ',"requestParameters":{"eventName":"DeleteRolePolicy"}')
    listed = rec("GetObject", ',"x":[{"eventName":"DeleteRolePolicy"}],"y":"eventName"')
    assert accepted(doc(nested, listed)) == (2, [])


def test_escapes_that_cannot_spell_a_letter_are_no_reason() -> None:
    policy = '{\\"Statement\\":[{\\"Effect\\":\\"Allow\\"}]}\\n\\t\\/\\\\\\u003c\\u00e9'
    assert accepted(doc(rec("GetObject", f',"policyDocument":"{policy}"'))) == (1, [])


@pytest.mark.parametrize(
    "text",
    [
        b'{"Records":[{"eventVersion":"1"}]}',  # no eventName at all
        b'{"Records":[{"event\\u004eame":"GetObject"}]}',  # only an escaped key
        b'{"Records":[{"eventName":null}]}',
        b'{"Records":[{"eventName":"a"},{"eventName":"b","eventSource":7}]}',  # msgspec: bad
        b'{"Records":[{"eventName":"a"},{"eventName":"b","eventSource":{}}]}',
        b'{"Records":[{"eventName":"a","x":"\xc3"}]}',  # invalid UTF-8 anywhere
        b'{"Records":[{"eventName":"a","x":"\xed\xa0\x80"}]}',  # a surrogate
        b'{"Records":[{"eventName":"a","x":"\xc0\x80"}]}',  # overlong
        b'{"Records":[{"eventName":5}]}',
        b'{"Records":[{"eventName":"a\x01b"}]}',  # control character in a string
        b'{"Records":[{"eventName":"a\\qb"}]}',  # invalid escape
        b'{"Records":[{"eventName":"a\\u12"}]}',  # short \u escape
        b'{"Records":[{"eventName":"a\\u12G4"}]}',
        b'{"Records":[{"eventName":"abc}]}',  # unterminated string
        b'{"Records":[{"eventName":"abc"}]',  # truncated
        b'{"Records":[{"eventName":"abc"]}',  # mismatched
        b'{"Records":[{"eventName":"abc","x":[1}]}]}',
        b'{"Records":[{"eventName":"abc"},]}',  # trailing comma
        b'{"Records":[,{"eventName":"abc"}]}',
        b'{"Records":[{"eventName":"abc"}{"eventName":"abc"}]}',  # no comma
        b'{"Records":[{"eventName":"abc"},,{"eventName":"abc"}]}',
        b'{"Records":[{"eventName":"abc"},1]}',  # not an object
        b'{"Records":[{"eventName":"abc"},"x"]}',
        b'{"Records":[[{"eventName":"abc"}]]}',
        b'{"Records":[{"eventName":"abc"}],"more":1}',  # more than Records
        b'{"Records":[{"eventName":"abc"}]}x',  # trailing garbage
        b'{"Records":[{"eventName":"abc"}]}{}',
        b'{"Records":[{"eventName":"abc"}]} 1',
        b'{"Other":[],"Records":[]}',  # Records not first: msgspec's path decides
        b'[{"eventName":"abc"}]',
        b'{"Records":{}}',
        b'{"Records":[{"eventName":"abc","n":01}]}',  # numbers
        b'{"Records":[{"eventName":"abc","n":1.}]}',
        b'{"Records":[{"eventName":"abc","n":.5}]}',
        b'{"Records":[{"eventName":"abc","n":-}]}',
        b'{"Records":[{"eventName":"abc","n":1e}]}',
        b'{"Records":[{"eventName":"abc","n":tru}]}',  # literals
        b'{"Records":[{"eventName":"abc","n":nulll}]}',
        b'{"Records":[{"eventName":"abc","n":True}]}',
        b'{"Records":[{"eventName":"abc","n":@}]}',
        b'{"Records":[{"eventName":"abc","n":u}]}',  # a u outside strings is no \\u escape
        b'{"Records":[{"eventName":"abc","n":undefined}]}',
        b'{"Records":[{"eventName":"abc","n":\\u0041}]}',  # an escape outside a string
        b'{"Records":[{"eventName":"abc","n":[1,u]}]}',
        b'{"Records":[{"eventName":"abc","n":[true,nul]}]}',  # a bad scalar after a good one
        b'{"Records":[{"eventName":"abc","n":\xc3\xa9}]}',
        b'{"Records":[{"eventName":"abc","n":1}\x0c]}',  # form feed is no JSON whitespace
        b'{"Records":[{"eventName":"abc","n":1}\x1a]}',
        b'{"Records":[{"eventName":"abc","n":"x"\\}]}',
        b"{" * 3000 + b"}" * 3000,
    ],
)
def test_declines_what_it_cannot_judge(text: bytes) -> None:
    declined(text)


@pytest.mark.parametrize(
    "number", [b"0", b"-0", b"12", b"-1.5", b"1e5", b"1E+5", b"2.5e-3", b"true", b"false", b"null"]
)
def test_valid_scalars(number: bytes) -> None:
    text = b'{"Records":[{"eventName":"abc","n":' + number + b',"m":[' + number + b"]}]}"
    assert accepted(text) == (1, [])


@pytest.mark.parametrize("pad", range(140))
def test_every_offset_from_a_block_boundary(pad: int) -> None:
    """The key, its quotes, escapes and brackets at every position around 64-byte blocks."""
    filler = "x" * pad
    text = doc(
        rec("GetObject", f',"f":"{filler}"'),
        rec("DeleteRolePolicy", f',"g":"{filler}\\\\","h":{{"i":[1,{{"j":"\\"{filler}"}}]}}'),
        rec("GetObject", f',"k":"{filler}\\u0041"'),
        rec("GetObject"),
    )
    assert accepted(text) == (4, [1, 2])
    # and a control character, an unterminated string, a bad escape at that offset
    declined(doc(rec("GetObject", f',"f":"{filler}\x05"')))
    declined(doc(rec("GetObject")) + b' "' + filler.encode())
    declined(doc(rec("GetObject", f',"f":"{filler}\\x"')))
    # scalars, good and bad, at that offset
    scalars = ',"n":[1,-20,true,false,null,3.5e2,{"o":0}]'
    assert accepted(doc(rec("GetObject", f',"f":"{filler}"{scalars}'))) == (1, [])
    for bad in ("01", "u", "nul", "1.", "tru"):
        declined(doc(rec("GetObject", f',"f":"{filler}","n":[1,{bad}]')))


# -- agreement with the msgspec path --------------------------------------------------------------

names = st.sampled_from(
    [*NAMES, "GetObject", "PutUserPolicy", "DeleteRolePolicyX", "Delete\\u0052olePolicy", ""]
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    records = []
    for _ in range(draw(st.integers(0, 6))):
        record: dict[str, Any] = draw(st.dictionaries(st.text(max_size=10), values, max_size=5))
        record["eventVersion"] = "1.08"
        record["eventName"] = draw(names)
        record["eventID"] = draw(st.uuids()).hex
        record.setdefault("eventSource", "iam.amazonaws.com")
        records.append(record)
    text = json.dumps(
        {"Records": records},
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 1])),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
    )
    return text.replace('"Delete\\\\u0052olePolicy"', '"Delete\\u0052olePolicy"').encode()


@SETTINGS
@given(documents(), st.booleans())
def test_same_result_as_msgspec_alone(text: bytes, compress: bool) -> None:
    data = gzip.compress(text, mtime=0) if compress else text
    assert outcome(data, "scanner") == outcome(data, "msgspec")
    found = scan(text)
    if not isinstance(found, str):
        records = json.loads(text)["Records"]
        assert found[0] == len(records)
        wanted = [i for i, r in enumerate(records) if r.get("eventName") in NAMES]
        assert set(wanted) <= set(found[3][0::3])


@SETTINGS
@given(documents(), st.data())
def test_a_damaged_document_never_changes_a_valid_answer(text: bytes, data: st.DataObject) -> None:
    """Bytes changed, cut or inserted: if msgspec alone accepts the result, so does the scanner
    with the same answer; if msgspec rejects it, the scanner declines or counts it (it does not
    check the order of tokens inside a record), and never differs between AVX2 and portable."""
    at = data.draw(st.integers(0, len(text)))
    byte = data.draw(st.binary(min_size=0, max_size=2))
    cut = data.draw(st.integers(0, 3))
    damaged = text[:at] + byte + text[at + cut :]
    scan(damaged)
    expected = outcome(damaged, "msgspec")
    if isinstance(expected, DecodedFile):
        assert outcome(damaged, "scanner") == expected


@pytest.mark.parametrize(
    "text",
    [
        rb'{"Records":[{"eventVersion":"1","eventName":"Delete\u0055serPolicy","eventID":"a"}]}',
        rb'{"Records":[{"eventVersion":"1","event\u004eame":"DeleteUserPolicy","eventID":"a"}]}',
        rb'{"Records":[{"eventVersion":"1","eventName":"GetObject","event\u004eame":'
        rb'"DeleteUserPolicy","eventID":"a"}]}',
        b'{"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy","eventName":"GetObject"},'
        b'{"eventVersion":"1","eventName":"GetObject","eventName":"PutRolePolicy"}]}',
        b'{"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy","eventID":5},'
        b'{"eventVersion":"1","eventName":"GetObject"}]}',
        b'{"Records":[{"eventVersion":"1","eventName":"GetObject","eventSource":"aws:s3"}]}',
        b'{"Records":[{"eventVersion":"1","eventName":"DeleteUserPolicy","eventSource":7}]}',
    ],
)
def test_crafted_records_same_as_msgspec(text: bytes) -> None:
    """An escaped or duplicated key cannot hide a record, nor a type error change the result."""
    assert outcome(text, "scanner") == outcome(text, "msgspec")


def test_a_hidden_removal_is_still_detected() -> None:
    text = (
        b'{"Records":[{"eventVersion":"1.08","eventSource":"iam.amazonaws.com","eventName":'
        b'"GetUser","event\\u004eame":"DeleteRolePolicy","eventID":"x"}]}'
    )
    found = outcome(text, "scanner")
    assert isinstance(found, DecodedFile)
    assert [r.event_name for r in found.candidates] == ["DeleteRolePolicy"]


@pytest.mark.parametrize("depth", [1, 6])
def test_a_big_document_walked_in_several_rounds(depth: int) -> None:
    """Thousands of records (the flattened positions are walked every few thousand): the same
    count and candidates as json, nested objects at every depth included."""
    nested = "{" + '"a":{' * depth + '"b":[1,2]' + "}" * depth + "}"
    records = [
        rec(
            "DeleteRolePolicy" if i % 97 == 5 else "GetObject",
            f',"requestParameters":{nested},"x":"{"y" * (i % 70)}"',
        )
        for i in range(3000)
    ]
    text = doc(*records)
    count, candidates = accepted(text)
    assert count == 3000
    assert candidates == [i for i in range(3000) if i % 97 == 5]
    assert outcome(text, "scanner") == outcome(text, "msgspec")
    # and the last record closed by the wrong bracket still declines
    assert "mismatched" in declined(text[:-3] + b"]]}")
