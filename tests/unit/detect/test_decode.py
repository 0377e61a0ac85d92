"""decode_file, decompress and CandidateNames: shapes, gzip, skips, errors, escapes, bad records."""

from __future__ import annotations

import gzip
import json
import pickle
import zlib
from pathlib import Path
from typing import Any

import pytest

from trailguard.detect.decode import CandidateNames, DecodedFile, decode_file, decompress
from trailguard.detect.record import Record
from trailguard.errors import DecodeError
from trailguard.vocabulary import REMOVAL_EVENT_NAMES

# Every test here runs on both decode paths: the C scanner and msgspec alone.
pytestmark = pytest.mark.usefixtures("both_decoders")

CORPUS = Path("/work/shared/corpus")
if not CORPUS.exists():  # pragma: no cover - the copy shipped with the tests
    CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus"

NAMES = REMOVAL_EVENT_NAMES
PF = CandidateNames(NAMES)
LOG_KEY = (
    "AWSLogs/o-abcdefghij/123456789012/CloudTrail/us-east-1/2024/06/01/"
    "123456789012_CloudTrail_us-east-1_20240601T0000Z_abcdefgh.json.gz"
)
DIGEST_KEY = (
    "AWSLogs/123456789012/CloudTrail-Digest/us-east-1/2024/06/01/"
    "123456789012_CloudTrail-Digest_us-east-1_trail_us-east-1_20240601T000000Z.json.gz"
)
INSIGHT_KEY = (
    "AWSLogs/123456789012/CloudTrail-Insight/us-east-1/2024/06/01/"
    "123456789012_CloudTrail-Insight_us-east-1_20240601T0000Z_abcdefgh.json.gz"
)


def rec(name: str = "GetObject", n: int = 0, **extra: Any) -> dict[str, Any]:
    """A realistic CloudTrail record."""
    source = "iam.amazonaws.com" if name in NAMES else "s3.amazonaws.com"
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:alice",
            "arn": "arn:aws:sts::123456789012:assumed-role/admin/alice",
            "accountId": "123456789012",
            "accessKeyId": "ASIAEXAMPLE",
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "arn": "arn:aws:iam::123456789012:role/admin"},
                "attributes": {"creationDate": "2024-06-01T00:00:00Z", "mfaAuthenticated": "false"},
            },
        },
        "eventTime": f"2024-06-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z",
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-cli/2.15.10 Python/3.11.6 Linux/6.5.0 exe/x86_64.ubuntu.22",
        "requestParameters": {"userName": "bob", "policyName": f"p{n}"},
        "responseElements": None,
        "requestID": f"req-{n}",
        "eventID": f"00000000-0000-4000-8000-{n:012d}",
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": "123456789012",
        "eventCategory": "Management",
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256"},
    }
    record.update(extra)
    return record


MIXED = [
    rec("GetObject", 0),
    rec("DeleteUserPolicy", 1),
    rec("DescribeInstances", 2),
    rec("DetachRolePolicy", 3, errorCode="AccessDenied", errorMessage="denied"),
    rec("PutUserPolicy", 4),
    rec("DeletePolicy", 5),
]
MIXED_CANDIDATES = ["DeleteUserPolicy", "DetachRolePolicy", "DeletePolicy"]


def encode(records: list[Any], shape: str) -> bytes:
    if shape == "records":
        return json.dumps({"Records": records}, separators=(",", ":")).encode()
    if shape == "array":
        return json.dumps(records, indent=2).encode()
    if shape == "jsonl":
        return b"".join(json.dumps(r).encode() + b"\n" for r in records)
    if shape == "lookup-events":
        events = [
            {
                "EventId": r["eventID"],
                "EventName": r["eventName"],
                "ReadOnly": "false",
                "EventTime": 1717200000.0,
                "EventSource": r["eventSource"],
                "Resources": [],
                "CloudTrailEvent": json.dumps(r),
            }
            for r in records
        ]
        return json.dumps({"Events": events, "NextToken": "abc"}, indent=4).encode()
    if shape == "record":
        assert len(records) == 1
        return json.dumps(records[0]).encode()
    raise AssertionError(shape)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def decode(data: bytes | bytearray | memoryview, **kw: Any) -> DecodedFile:
    return decode_file(data, PF, source="s3://bucket/key", **kw)


def fails(data: bytes | bytearray | memoryview, **kw: Any) -> str:
    with pytest.raises(DecodeError) as info:
        decode(data, **kw)
    assert info.value.source == "s3://bucket/key"
    assert info.value.reason
    return info.value.reason


def names(result: DecodedFile) -> list[str | None]:
    return [r.event_name for r in result.candidates]


# -- CandidateNames -------------------------------------------------------------------------------


def test_candidate_names_refuse_what_no_rule_can_name() -> None:
    assert PF.event_names == frozenset(NAMES)
    with pytest.raises(ValueError, match="empty"):
        CandidateNames([""])
    with pytest.raises(TypeError):
        CandidateNames([1])  # type: ignore[list-item]


def test_candidate_names_pickle() -> None:
    copy = pickle.loads(pickle.dumps(PF))
    assert copy.event_names == PF.event_names
    assert copy.name_bytes == PF.name_bytes


# -- decompress ------------------------------------------------------------------------------------


def test_decompress_plain_is_unchanged() -> None:
    data = b'{"Records":[]}'
    assert decompress(data, source="x") is data


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_decompress_gzip(kind: type) -> None:
    payload = json.dumps({"Records": MIXED}).encode() * 3
    assert bytes(decompress(kind(gz(payload)), source="x")) == payload


def test_decompress_multi_member() -> None:
    a, b = b'{"Records":[', b"]}"
    assert bytes(decompress(gz(a) + gz(b), source="x")) == a + b
    # the same member twice: the trailer of the first equals the last four bytes of the input
    member = gz(b"abc")
    assert bytes(decompress(member + member, source="x")) == b"abcabc"
    many = b"".join(gz(bytes([65 + i % 26]) * 10) for i in range(300))
    assert len(decompress(many, source="x")) == 3000


def test_decompress_trailing_zero_padding_is_ignored() -> None:
    assert bytes(decompress(gz(b"hello") + b"\0" * 16, source="x")) == b"hello"


def test_decompress_trailing_garbage_is_an_error() -> None:
    data = gz(b"hello world" * 10)
    with pytest.raises(DecodeError, match="non-gzip data after member 1"):
        decompress(data + b"garbage!", source="x")
    # garbage that ends with the right size trailer still cannot fool the single-member check
    with pytest.raises(DecodeError, match="truncated or corrupt gzip"):
        decompress(data + b"junk" + data[-4:], source="x")


@pytest.mark.parametrize("cut", [3, 10, 20, -9, -4, -1])
def test_decompress_truncated(cut: int) -> None:
    data = gz(json.dumps({"Records": MIXED}).encode())
    with pytest.raises(DecodeError) as info:
        decompress(data[:cut], source="s3://b/k")
    assert info.value.reason.startswith("truncated or corrupt gzip: ")
    assert info.value.source == "s3://b/k"


def test_decompress_corrupt() -> None:
    data = bytearray(gz(json.dumps({"Records": MIXED}).encode()))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(DecodeError, match=r"^x: truncated or corrupt gzip: "):
        decompress(bytes(data), source="x")
    crc = bytearray(gz(b"hello"))
    crc[-8] ^= 1  # CRC32 of the member
    with pytest.raises(DecodeError, match="incorrect data check"):
        decompress(bytes(crc), source="x")
    size = bytearray(gz(b"hello"))
    size[-4] ^= 1  # ISIZE
    with pytest.raises(DecodeError, match="incorrect length check"):
        decompress(bytes(size), source="x")


def test_decompress_limit() -> None:
    bomb = gz(b"\0" * 100_000)
    with pytest.raises(DecodeError, match="more than 1000 bytes"):
        decompress(bomb, source="x", max_size=1000)
    with pytest.raises(DecodeError, match="more than 1000 bytes"):
        decompress(bomb + bomb, source="x", max_size=1000)
    assert len(decompress(bomb, source="x", max_size=100_000)) == 100_000


# -- shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("shape", ["records", "array", "jsonl", "lookup-events"])
def test_shapes(shape: str, compressed: bool) -> None:
    text = encode(MIXED, shape)
    result = decode(gz(text) if compressed else text, key=LOG_KEY)
    assert result.shape == shape
    assert result.records == len(MIXED)
    assert names(result) == MIXED_CANDIDATES
    assert result.skipped is None
    assert result.bad_records == []
    assert result.compressed is compressed
    assert result.bytes_decompressed == len(text)
    first = result.candidates[0]
    assert isinstance(first, Record)
    assert first.event_source == "iam.amazonaws.com"
    assert first.user_identity is not None
    assert first.user_identity.arn == "arn:aws:sts::123456789012:assumed-role/admin/alice"
    assert first.param("policyName") == "p1"
    assert result.candidates[1].failed


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_single_record(compressed: bool) -> None:
    text = encode([rec("DetachGroupPolicy", 7)], "record")
    result = decode(gz(text) if compressed else text)
    assert (result.shape, result.records, names(result)) == ("record", 1, ["DetachGroupPolicy"])
    other = decode(encode([rec("GetObject")], "record"))
    assert (other.shape, other.records, other.candidates) == ("record", 1, [])


def test_gzip_is_detected_by_magic_not_by_name() -> None:
    text = encode(MIXED, "records")
    misleading = decode(gz(text), key="AWSLogs/123456789012/CloudTrail/us-east-1/2024/06/01/x.json")
    assert misleading.compressed
    assert names(misleading) == MIXED_CANDIDATES
    plain = decode(text, key=LOG_KEY)  # named .json.gz, holds plain JSON
    assert not plain.compressed
    assert names(plain) == MIXED_CANDIDATES


def test_multi_member_gzip_file() -> None:
    text = encode(MIXED, "records")
    result = decode(gz(text[:100]) + gz(text[100:]))
    assert result.compressed
    assert names(result) == MIXED_CANDIDATES


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_buffer_types(kind: type) -> None:
    text = encode(MIXED, "records")
    assert names(decode(kind(text))) == MIXED_CANDIDATES
    assert names(decode(kind(gz(text)))) == MIXED_CANDIDATES


def test_non_contiguous_and_cast_memoryviews() -> None:
    text = encode(MIXED, "records")
    doubled = bytes(b for c in text for b in (c, 0))
    assert names(decode(memoryview(doubled)[::2])) == MIXED_CANDIDATES
    padded = text + b" " * (-len(text) % 4)
    assert names(decode(memoryview(padded).cast("I"))) == MIXED_CANDIDATES


def test_empty_records_and_array() -> None:
    assert decode(b'{"Records":[]}').records == 0
    assert decode(b"[]").shape == "array"
    assert decode(b'{"Events":[]}').shape == "lookup-events"


def test_whitespace_and_byte_order_mark_are_tolerated() -> None:
    text = encode(MIXED, "records")
    assert names(decode(b"\n\t  " + text + b"\r\n")) == MIXED_CANDIDATES
    assert names(decode(b"\xef\xbb\xbf" + text)) == MIXED_CANDIDATES
    assert decode(b"\xef\xbb\xbf" + encode(MIXED, "jsonl")).records == len(MIXED)


def test_jsonl_blank_lines_and_crlf() -> None:
    lines = [json.dumps(r).encode() for r in MIXED]
    text = b"\r\n\r\n".join(lines) + b"\r\n\n   \n"
    result = decode(text)
    assert (result.shape, result.records, names(result)) == ("jsonl", 6, MIXED_CANDIDATES)


def test_records_key_need_not_come_first() -> None:
    text = json.dumps({"Meta": {"x": [1, 2]}, "Records": MIXED}).encode()
    assert names(decode(text)) == MIXED_CANDIDATES


def test_unknown_fields_and_sparse_records() -> None:
    sparse = [{"eventName": "DeletePolicy"}, {"eventTime": "2024-06-01T00:00:00Z"}]
    result = decode(json.dumps({"Records": sparse, "extra": True}).encode())
    assert result.records == 2
    assert names(result) == ["DeletePolicy"]
    assert result.candidates[0].event_id is None


# -- digest and insight ----------------------------------------------------------------------------

DIGEST: dict[str, Any] = {
    "awsAccountId": "123456789012",
    "digestStartTime": "2024-06-01T00:00:00Z",
    "digestEndTime": "2024-06-01T01:00:00Z",
    "digestS3Bucket": "trail-bucket",
    "digestS3Object": DIGEST_KEY,
    "digestPublicKeyFingerprint": "0123abcd",
    "digestSignatureAlgorithm": "SHA256withRSA",
    "newestEventTime": "2024-06-01T00:59:00Z",
    "oldestEventTime": "2024-06-01T00:00:01Z",
    "previousDigestS3Bucket": None,
    "logFiles": [],
}

INSIGHT: dict[str, Any] = {
    "eventVersion": "1.08",
    "eventTime": "2024-06-01T00:00:00Z",
    "awsRegion": "us-east-1",
    "eventID": "e1",
    "eventType": "AwsCloudTrailInsight",
    "recipientAccountId": "123456789012",
    "sharedEventID": "s1",
    "insightDetails": {
        "state": "Start",
        "eventSource": "iam.amazonaws.com",
        "eventName": "DeleteUserPolicy",
        "insightType": "ApiCallRateInsight",
    },
    "eventCategory": "Insight",
}


def test_digest_by_key_is_skipped_without_decoding() -> None:
    result = decode(gz(b"not even json"), key=DIGEST_KEY)
    assert (result.shape, result.skipped, result.records) == ("digest", "digest", 0)
    assert result.compressed
    assert result.bytes_decompressed == 0


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_digest_by_content(compressed: bool) -> None:
    text = json.dumps(DIGEST).encode()
    result = decode(gz(text) if compressed else text, key="local/digest.json")
    assert (result.shape, result.skipped, result.records, result.candidates) == (
        "digest",
        "digest",
        0,
        [],
    )


def test_insight_by_key() -> None:
    text = encode(MIXED, "records")  # content is not even looked at
    result = decode(gz(text), key=INSIGHT_KEY)
    assert (result.shape, result.skipped, result.records, result.candidates) == (
        "insight",
        "insight",
        0,
        [],
    )


@pytest.mark.parametrize("shape", ["records", "array", "jsonl"])
def test_insight_by_content(shape: str) -> None:
    other = dict(INSIGHT, insightDetails={**INSIGHT["insightDetails"], "state": "End"})
    result = decode(gz(encode([INSIGHT, other], shape)))
    assert (result.shape, result.skipped, result.records) == ("insight", "insight", 0)


# -- file-level errors -----------------------------------------------------------------------------


def test_empty_inputs() -> None:
    assert fails(b"") == "empty file (0 bytes)"
    assert fails(b" \n\t ").startswith("empty file: only whitespace")
    assert fails(gz(b"")).startswith("empty file: the gzip data decompresses to 0 bytes")
    assert fails(b"", key=DIGEST_KEY) == "empty file (0 bytes)"


def test_gzip_errors() -> None:
    data = gz(encode(MIXED, "records"))
    assert fails(data[: len(data) // 2]).startswith("truncated or corrupt gzip: ")
    broken = bytearray(data)
    broken[40] ^= 0x55
    assert fails(bytes(broken)).startswith("truncated or corrupt gzip: ")
    assert fails(b"\x1f\x8b").startswith("truncated or corrupt gzip: ")


def test_invalid_json_says_where() -> None:
    # outside the records (the file's own structure): the whole file, with where
    reason = fails(b'{"Records":[{"eventName":"GetObject"} {"eventName":"X"}]}')
    assert reason == "invalid JSON: records not separated by one comma ('{') (byte 38)"
    reason = fails(gz(b'{"Records":[{"eventName":"GetObject"}],"x":tru}'))
    assert reason == "invalid JSON: invalid character (byte 43 of the decompressed data)"
    assert fails(b"\xef\xbb\xbf[1,]") == "invalid JSON: unexpected ']' (byte 6)"
    assert fails(b"nope").startswith("invalid JSON: ")
    assert fails(b"[1,2] [3]") == "invalid JSON: more than one JSON value (byte 6)"


def test_invalid_json_inside_a_record_is_that_record_alone() -> None:
    text = b'{"Records":[{"eventName":"GetObject"},{"eventName":tru},{"eventName":"DeletePolicy"}]}'
    for data in (text, gz(text)):
        result = decode(data)
        assert (result.records, names(result)) == (3, ["DeletePolicy"])
        assert result.bad_records == [
            "record 1: invalid JSON: invalid character at byte 13 of the record"
        ]


def test_truncated_json() -> None:
    text = encode(MIXED, "records")
    for cut in (1, 12, 13, 30, len(text) // 2, len(text) - 1):
        assert fails(text[:cut]).startswith("truncated JSON: "), cut
        assert fails(gz(text[:cut])).startswith("truncated JSON: "), cut
    assert fails(encode(MIXED, "array")[:-1]).startswith("truncated JSON: ")


def test_deep_json_is_fine_but_a_deep_candidate_is_bad() -> None:
    deep = b"[" * 60_000 + b"]" * 60_000
    other = b'{"eventName":"GetObject","a":' + deep + b"}"
    removal = b'{"eventName":"DeletePolicy","a":' + deep + b"}"
    result = decode(b'{"Records":[' + other + b"," + removal + b"]}")
    assert (result.records, result.candidates) == (2, [])
    assert result.bad_records == ["record 1: nested too deeply to decode (more than 256 levels)"]
    # the walk's own stack is bounded: past 65,536 open brackets the file is refused
    assert fails(b'{"Records":[{"a":' + b"[" * 70_000) == (
        "not a CloudTrail log: brackets nested more than 65536 levels deep (byte 65550)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"foo":1}', "the JSON object has no Records, Events or record fields (keys: foo)"),
        (b"{}", "(keys: none)"),
        (b"42", "the JSON document is a number"),
        (b'"DeletePolicy"', "the JSON document is a string"),
        (b"null", "the JSON document is null"),
        (b"true", "the JSON document is a boolean"),
        (b"[1,2,3]", "no usable record (record 0: expected an object, got a number)"),
        (b'[["a"]]', "record 0: expected an object, got an array"),
        (b'{"Records":5}', "Records is a number, expected an array"),
        (b'{"Events":{"a":1}}', "Events is an object, expected an array"),
        (b'{"Records":[{"foo":1},{"bar":2}]}', "neither eventTime nor eventName"),
        (b'[{"eventVersion":"1.08"}]', "neither eventTime nor eventName"),
        (b'{"eventVersion":"1.08","awsRegion":"x"}', "neither eventTime nor eventName"),
        (b'{"Records":[{"eventName":5}]}', "record 0: eventName is not a string or null"),
    ],
)
def test_not_cloudtrail(text: bytes, expected: str) -> None:
    reason = fails(text)
    assert reason.startswith("not a CloudTrail log: ")
    assert expected in reason
    assert fails(gz(text)) == reason


def test_s3_event_notification_is_not_cloudtrail() -> None:
    notification = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-06-01T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
                "requestParameters": {"sourceIPAddress": "203.0.113.7"},
                "s3": {"bucket": {"name": "trail"}, "object": {"key": LOG_KEY}},
            }
        ]
    }
    reason = fails(json.dumps(notification).encode())
    assert reason.startswith("not a CloudTrail log: ")
    assert "eventSource 'aws:s3'" in reason
    sqs = {"Records": [{"messageId": "1", "body": "{}", "eventSource": "aws:sqs"}]}
    assert "aws:sqs" in fails(json.dumps(sqs).encode())


def test_jsonl_where_no_line_is_json() -> None:
    assert fails(b"{oops\n{still not json}\n") == "invalid JSON: unexpected 'o' (byte 1)"
    # a broken pretty-printed document is not mistaken for JSON Lines with bad lines
    pretty = json.dumps({"Records": MIXED}, indent=2).encode()
    assert fails(pretty[:-30]).startswith("truncated JSON: ")
    # and a broken record in it is that record alone
    broken = pretty.replace(b'"GetObject"', b"GetObject", 1)
    result = decode(broken)
    assert (result.records, names(result)) == (len(MIXED), MIXED_CANDIDATES)
    assert result.bad_records[0].startswith("record 0: invalid JSON: invalid character at byte ")


def test_jsonl_with_a_broken_first_line() -> None:
    lines = [b'{"eventName": "DeletePolicy", "eventTi', *(json.dumps(r).encode() for r in MIXED)]
    result = decode(b"\n".join(lines))
    assert (result.shape, result.records, names(result)) == ("jsonl", 7, MIXED_CANDIDATES)
    assert result.bad_records == ["line 1: truncated JSON: the data ends inside a string"]
    assert fails(b'{"foo": 1}\n{"bar": 2}\n[1]\n') == (
        "not a CloudTrail log: no usable record (line 1: not a CloudTrail record: "
        "it has neither eventTime nor eventName)"
    )


def test_concatenated_pretty_objects_are_not_guessed() -> None:
    text = json.dumps(MIXED[0], indent=2).encode() + b"\n" + json.dumps(MIXED[1], indent=2).encode()
    assert fails(text).startswith("invalid JSON: more than one JSON value (byte ")


# -- escapes and exactness -------------------------------------------------------------------------


def test_escaped_event_name_is_a_candidate() -> None:
    body = encode([rec("GetObject", 0), rec("X", 1)], "records")
    body = body.replace(b'"eventName":"X"', b'"eventName":"Delete\\u0055serPolicy"')
    for data in (body, gz(body)):
        result = decode(data)
        assert names(result) == ["DeleteUserPolicy"]
    key_escaped = body.replace(b'"eventName":"Delete', b'"event\\u004eame":"Delete')
    assert names(decode(key_escaped)) == ["DeleteUserPolicy"]


def test_escaped_event_name_in_lookup_events() -> None:
    text = encode([rec("X", 1)], "lookup-events")
    text = text.replace(b'\\"eventName\\": \\"X\\"', b'\\"eventName\\": \\"\\\\u0044eletePolicy\\"')
    assert b"u0044" in text
    assert names(decode(text)) == ["DeletePolicy"]


def test_candidates_are_exact_names() -> None:
    look_alikes = [
        rec("DeletePolicyX"),
        rec("XDeletePolicy"),
        rec("deleteuserpolicy"),
        rec("DeleteBucketPolicy"),
        rec("ListPolicies", requestParameters={"note": "DeleteUserPolicy"}),
        rec("AttachRolePolicy", userAgent="DetachRolePolicy"),
        rec("DeleteUserPolicy "),
        rec("DeletePolicyVersion"),
    ]
    for shape in ("records", "array", "jsonl", "lookup-events"):
        result = decode(encode(look_alikes, shape))
        assert names(result) == ["DeletePolicyVersion"], shape
        assert result.records == len(look_alikes)


def test_candidate_set_comes_from_the_prefilter() -> None:
    text = encode(MIXED, "records")
    only = decode_file(text, CandidateNames(["PutUserPolicy", "GetObject"]), source="x")
    assert names(only) == ["GetObject", "PutUserPolicy"]
    assert decode_file(text, CandidateNames([]), source="x").candidates == []


def test_duplicate_keys_last_one_wins_consistently() -> None:
    text = b'{"Records":[{"eventName":"DeletePolicy","eventTime":"t","eventName":"GetObject"}]}'
    assert decode(text).candidates == []
    text = b'{"Records":[{"eventName":"GetObject","eventTime":"t","eventName":"DeletePolicy"}]}'
    assert names(decode(text)) == ["DeletePolicy"]


# -- bad records -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["records", "array"])
def test_bad_records_do_not_spoil_the_file(shape: str) -> None:
    records: list[Any] = [
        rec("GetObject", 0),
        "a string",
        rec("DeleteUserPolicy", 2),
        17,
        rec("DeleteRolePolicy", 4, userIdentity="not an object"),
        rec("GetObject", 5, eventName=["DeletePolicy"]),
        None,
        rec("DeletePolicy", 7),
    ]
    result = decode(gz(encode(records, shape)))
    assert result.records == len(records)
    assert names(result) == ["DeleteUserPolicy", "DeletePolicy"]
    assert result.bad_records[:3] == [
        "record 1: expected an object, got a string",
        "record 3: expected an object, got a number",
        "record 4: a field has the wrong type (Expected `object | null`, got `str` - at "
        "`$.userIdentity`)",
    ]
    assert result.bad_records[3:] == [
        "record 5: eventName is not a string or null",
        "record 6: expected an object, got null",
    ]
    assert result.bad_record_count == 5


def test_candidate_with_impossible_types_on_fast_path() -> None:
    records = [rec("GetObject", 0), rec("DetachUserPolicy", 1, requestParameters=[1, 2])]
    result = decode(encode(records, "records"))
    assert result.candidates == []
    assert result.records == 2
    assert len(result.bad_records) == 1
    # trailguard's words, then the decoder's (which names the field)
    assert result.bad_records[0].startswith("record 1: a field has the wrong type (")
    assert "requestParameters" in result.bad_records[0]


def test_invalid_utf8_in_a_record() -> None:
    text = encode([rec("GetObject", 0), rec("DeletePolicy", 1)], "records")
    head, _, tail = text.rpartition(b'"userName":"bob"')  # in record 1 only
    text = head + b'"userName":"b\xffb"' + tail
    result = decode(text)
    assert result.candidates == []
    assert result.bad_records == ["record 1: a string is not valid UTF-8"]
    # one bad record never hides its neighbour (msgspec 0.23 rejects such a document whole)
    both = encode([rec("DeleteUserPolicy", 0), rec("X", 1)], "records")
    both = both.replace(b'"eventName":"X"', b'"eventName":"Get\xffObject"')
    result = decode(both)
    assert (names(result), result.bad_records) == (
        ["DeleteUserPolicy"],
        ["record 1: a string is not valid UTF-8"],
    )
    bad_name = encode([rec("GetObject", 0), rec("X", 1)], "array")
    bad_name = bad_name.replace(b'"eventName": "X"', b'"eventName": "X\xff"')
    result = decode(bad_name)
    assert result.records == 2
    assert result.bad_records[0].startswith("record 1: a string is not valid UTF-8")


def test_jsonl_bad_lines() -> None:
    lines = [
        json.dumps(rec("GetObject", 0)).encode(),
        b"",
        b'{"eventName": "DeletePolicy", "eventTime": tru}',
        b"[1, 2]",
        json.dumps(rec("DeleteGroupPolicy", 3)).encode(),
        b'{"eventName": "DeleteUserPolicy"',
    ]
    result = decode(b"\n".join(lines))
    assert result.shape == "jsonl"
    assert result.records == 5  # blank lines are not records
    assert names(result) == ["DeleteGroupPolicy"]
    assert result.bad_records == [
        "line 3: invalid JSON: invalid character at byte 43 of the record",
        "line 4: expected an object, got an array",
        "line 6: truncated JSON: the data ends before the JSON document does",
    ]


def test_lookup_events_bad_events() -> None:
    good = encode([rec("DeletePolicy", 0)], "lookup-events")
    doc = json.loads(good)
    doc["Events"] += [
        {"EventId": "x"},
        {"CloudTrailEvent": "{not json"},
        {"CloudTrailEvent": 5},
        "string",
        {"CloudTrailEvent": json.dumps(rec("DetachUserPolicy", 5))},
        {"CloudTrailEvent": json.dumps([1])},
    ]
    result = decode(json.dumps(doc).encode())
    assert result.shape == "lookup-events"
    assert result.records == 7
    assert names(result) == ["DeletePolicy", "DetachUserPolicy"]
    assert result.bad_records == [
        "event 1: no CloudTrailEvent string",
        "event 2: CloudTrailEvent: invalid JSON: unexpected 'n' at byte 1 of the record",
        "event 3: CloudTrailEvent is a number, not a string",
        "event 4: expected an object, got a string",
        "event 6: expected an object, got an array",
    ]


def test_not_cloudtrail_records_among_good_ones() -> None:
    records = [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}, rec("DeletePolicy", 0)]
    result = decode(encode(records, "records"))
    assert names(result) == ["DeletePolicy"]
    assert result.bad_records == [
        "record 0: not a CloudTrail record: eventSource 'aws:s3' is an AWS event notification "
        "(S3/SQS/SNS style), not a CloudTrail API record"
    ]
    # any record with an AWS event notification's eventSource, wherever it is
    records = [rec("DeletePolicy", 0), {"eventSource": "aws:sqs"}, {"eventSource": "aws:s3"}]
    result = decode(encode(records, "records"))
    assert names(result) == ["DeletePolicy"]
    assert result.bad_records == [
        "record 1: not a CloudTrail record: eventSource 'aws:sqs' is an AWS event notification "
        "(S3/SQS/SNS style), not a CloudTrail API record",
        "record 2: not a CloudTrail record: eventSource 'aws:s3' is an AWS event notification "
        "(S3/SQS/SNS style), not a CloudTrail API record",
    ]
    records = [rec("DeletePolicy", 0), {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]
    result = decode(encode(records, "records"))
    assert names(result) == ["DeletePolicy"]
    assert result.bad_records == [
        "record 1: not a CloudTrail record: eventSource 'aws:s3' is an AWS event notification "
        "(S3/SQS/SNS style), not a CloudTrail API record"
    ]


def test_bad_records_are_capped() -> None:
    records: list[Any] = [rec("DeletePolicy", 0), *range(150)]
    result = decode(encode(records, "records"))
    assert result.records == 151
    assert len(result.bad_records) == 101
    assert result.bad_records[-1] == "... and 50 more bad records"


# -- corpus and misc -------------------------------------------------------------------------------


def test_stratus_red_team_corpus() -> None:
    files = sorted((CORPUS / "stratus-red-team").glob("*.json"))
    assert len(files) == 35
    total = 0
    for path in files:
        data = path.read_bytes()
        result = decode_file(data, PF, source=str(path), key=str(path))
        assert result.shape == "array"
        assert result.bad_records == []
        assert result.candidates == []  # no policy removal in this corpus
        assert result.records == len(json.loads(data))
        total += result.records
        gzipped = decode_file(gz(data), PF, source=str(path))
        assert gzipped.records == result.records
    assert total == 310


def test_samples_corpus_candidates_match_an_oracle() -> None:
    lines = (CORPUS / "samples.jsonl").read_text().splitlines()
    records = [json.loads(line)["record"] for line in lines if line.strip()]
    expected = [r.get("eventName") for r in records if r.get("eventName") in NAMES]
    assert expected
    for shape in ("records", "array", "jsonl", "lookup-events"):
        if shape == "lookup-events":
            usable = [r for r in records if "eventID" in r]
            want = [r.get("eventName") for r in usable if r.get("eventName") in NAMES]
            result = decode(gz(encode(usable, shape)))
        else:
            want = expected
            result = decode(gz(encode(records, shape)))
        assert names(result) == want, shape
        assert result.bad_records == [], shape


def test_decoded_file_pickles() -> None:
    result = decode(gz(encode(MIXED, "records")))
    assert pickle.loads(pickle.dumps(result)) == result


def test_large_file_with_one_candidate_in_the_middle() -> None:
    records = [rec("GetObject", i) for i in range(5000)]
    records[2500] = rec("DeleteRolePermissionsBoundary", 2500)
    result = decode(gz(encode(records, "records")))
    assert result.records == 5000
    assert names(result) == ["DeleteRolePermissionsBoundary"]
    assert result.candidates[0].event_id == "00000000-0000-4000-8000-000000002500"


def test_zlib_and_libdeflate_paths_agree() -> None:
    text = encode([rec("GetObject", i) for i in range(300)], "records")
    single = gz(text)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    other = compressor.compress(text) + compressor.flush()
    split = gz(text[:1000]) + gz(text[1000:])
    assert bytes(decompress(single, source="x")) == text
    assert bytes(decompress(other, source="x")) == text
    assert bytes(decompress(split, source="x")) == text
