"""parse_body: every body shape that can reach a trailguard queue, and everything else."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailguard.detect.keys import unsafe_key
from trailguard.detect.record import Record
from trailguard.ingest.notifications import ObjectRef, ParsedBody, parse_body

BUCKET = "trail-bucket"
LOG_KEY = (
    "AWSLogs/o-abcdefghij/111122223333/CloudTrail/us-east-1/2024/05/01/"
    "111122223333_CloudTrail_us-east-1_20240501T1205Z_AbCdEf012345.json.gz"
)
TOPIC = "arn:aws:sns:us-east-1:111122223333:trail-topic"


# --------------------------------------------------------------------------- body builders


def s3_record(
    key: str,
    *,
    bucket: str = BUCKET,
    event: str = "ObjectCreated:Put",
    size: int | None = 1234,
    etag: str | None = "0123456789abcdef0123456789abcdef",
) -> dict[str, Any]:
    """One record as S3 writes it; ``key`` is given already encoded."""
    obj: dict[str, Any] = {"key": key, "sequencer": "0A1B2C3D4E5F678901"}
    if size is not None:
        obj["size"] = size
    if etag is not None:
        obj["eTag"] = etag
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T12:05:00.000Z",
        "eventName": event,
        "userIdentity": {"principalId": "AWS:AROAEXAMPLE:regionalDeliverySession"},
        "requestParameters": {"sourceIPAddress": "10.0.0.1"},
        "responseElements": {"x-amz-request-id": "R1", "x-amz-id-2": "I2"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "trailguard",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3EXAMPLE"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def s3_body(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


def sns(message: str | dict[str, Any], **overrides: Any) -> str:
    envelope: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": "6f0e0c53-1111-2222-3333-444455556666",
        "TopicArn": TOPIC,
        "Subject": "Amazon S3 Notification",
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": "2024-05-01T12:05:01.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE==",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }
    envelope.update(overrides)
    return json.dumps(envelope)


def cloudtrail_sns(*keys: str, bucket: str = BUCKET) -> dict[str, Any]:
    return {"s3Bucket": bucket, "s3ObjectKey": list(keys)}


def eventbridge(detail_type: Any, source: Any, detail: Any) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": source,
        "account": "111122223333",
        "time": "2024-05-01T12:05:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{BUCKET}"],
        "detail": detail,
    }


def eb_object_created(key: str, **obj_extra: Any) -> dict[str, Any]:
    obj = {"key": key, "size": 99, "etag": "b1946ac92492d2347c6235b4d2611184"}
    obj.update(obj_extra)
    return eventbridge(
        "Object Created",
        "aws.s3",
        {
            "version": "0",
            "bucket": {"name": BUCKET},
            "object": obj,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "cloudtrail.amazonaws.com",
            "reason": "PutObject",
        },
    )


def s3_test_event_body(bucket: str = BUCKET) -> dict[str, Any]:
    return {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2024-05-01T12:00:00.000Z",
        "Bucket": bucket,
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }


API_DETAIL: dict[str, Any] = {
    "eventVersion": "1.09",
    "userIdentity": {
        "type": "AssumedRole",
        "principalId": "AROAEXAMPLE:alice",
        "arn": "arn:aws:sts::111122223333:assumed-role/Admin/alice",
        "accountId": "111122223333",
        "sessionContext": {
            "sessionIssuer": {"type": "Role", "arn": "arn:aws:iam::111122223333:role/Admin"},
            "attributes": {"creationDate": "2024-05-01T11:00:00Z", "mfaAuthenticated": "true"},
        },
    },
    "eventTime": "2024-05-01T12:04:59Z",
    "eventSource": "iam.amazonaws.com",
    "eventName": "DeleteUserPolicy",
    "awsRegion": "us-east-1",
    "sourceIPAddress": "198.51.100.7",
    "userAgent": "aws-cli/2.15.0",
    "requestParameters": {"userName": "bob", "policyName": "inline-s3"},
    "responseElements": None,
    "requestID": "9d6a5f3e-0000-0000-0000-000000000000",
    "eventID": "1f7b0a3c-1111-2222-3333-444455556666",
    "readOnly": False,
    "eventType": "AwsApiCall",
    "managementEvent": True,
    "recipientAccountId": "111122223333",
    "eventCategory": "Management",
    "tlsDetails": {"tlsVersion": "TLSv1.3"},
}


def keys_of(parsed: ParsedBody) -> list[str]:
    return [ref.key for ref in parsed.objects]


def assert_unknown(parsed: ParsedBody, *, format: str = "unknown", says: str = "") -> None:
    assert parsed.kind == "unknown", parsed
    assert parsed.format == format, parsed
    assert parsed.objects == ()
    assert parsed.record is None
    assert parsed.reason
    assert says in parsed.reason, parsed.reason
    assert len(parsed.reason) <= 200


# --------------------------------------------------------------------------- S3 notifications


def test_s3_notification_names_the_object() -> None:
    parsed = parse_body(s3_body(s3_record(LOG_KEY)))
    assert parsed == ParsedBody(
        kind="objects",
        format="s3",
        objects=(
            ObjectRef(
                bucket=BUCKET, key=LOG_KEY, size=1234, etag="0123456789abcdef0123456789abcdef"
            ),
        ),
    )


@pytest.mark.parametrize(
    ("encoded", "key"),
    [
        ("logs/red+flower.json.gz", "logs/red flower.json.gz"),  # space is '+'
        ("logs/c%2B%2B.json", "logs/c++.json"),  # a real '+' is %2B
        ("logs/caf%C3%A9.json", "logs/café.json"),  # non-ASCII: UTF-8, percent-encoded
        ("logs%2Fx%3Ay.json", "logs/x:y.json"),  # moto encodes '/' too; AWS leaves it
        ("a+b%2Bc%252B+%C3%A9.json", "a b+c%2B é.json"),  # what moto sends for that key
        ("logs/100%25.json", "logs/100%.json"),
        ("logs/%7Euser%3Dx.json", "logs/~user=x.json"),
    ],
)
def test_s3_keys_are_form_decoded(encoded: str, key: str) -> None:
    parsed = parse_body(s3_body(s3_record(encoded)))
    assert parsed.kind == "objects"
    assert keys_of(parsed) == [key]


def test_s3_event_names_other_than_object_created_are_ignored() -> None:
    body = s3_body(
        s3_record("gone.json", event="ObjectRemoved:Delete", size=None, etag=None),
        s3_record("a.json", event="ObjectCreated:CompleteMultipartUpload"),
        s3_record("b.json", event="ObjectCreated:Copy"),
        s3_record("restored.json", event="ObjectRestore:Completed"),
        s3_record("c.json", event="s3:ObjectCreated:Post"),  # S3 look-alikes keep the prefix
    )
    parsed = parse_body(body)
    assert parsed.kind == "objects"
    assert keys_of(parsed) == ["a.json", "b.json", "c.json"]


def test_s3_notification_without_created_objects_names_nothing() -> None:
    parsed = parse_body(s3_body(s3_record("gone.json", event="ObjectRemoved:Delete")))
    assert parsed == ParsedBody(kind="objects", format="s3")


def test_s3_repeated_object_is_named_once() -> None:
    parsed = parse_body(s3_body(s3_record("a.json"), s3_record("b.json"), s3_record("a.json")))
    assert keys_of(parsed) == ["a.json", "b.json"]


def test_s3_size_and_etag_are_optional() -> None:
    parsed = parse_body(s3_body(s3_record("a.json", size=None, etag=None)))
    assert parsed.objects == (ObjectRef(bucket=BUCKET, key="a.json"),)


def test_bytes_body_is_accepted() -> None:
    parsed = parse_body(s3_body(s3_record("caf%C3%A9.json")).encode())
    assert keys_of(parsed) == ["café.json"]


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (lambda r: r.update(eventSource="aws:sqs"), "eventSource is 'aws:sqs'"),
        (lambda r: r.pop("eventSource"), "eventSource is missing"),
        (lambda r: r.update(eventName=7), "eventName is not a string"),
        (lambda r: r.update(s3=[]), "s3 is not an object"),
        (lambda r: r["s3"].pop("bucket"), "bucket is not an object"),
        (lambda r: r["s3"]["bucket"].update(name=["x"]), "name is not a string"),
        (lambda r: r["s3"]["bucket"].update(name="a/b"), "not a bucket name"),
        (lambda r: r["s3"]["bucket"].update(name=""), "not a bucket name"),
        (lambda r: r["s3"]["object"].pop("key"), "key is not a string"),
        (lambda r: r["s3"]["object"].update(key=""), "key is empty"),
        (lambda r: r["s3"]["object"].update(key="%C3"), "not percent-encoded UTF-8"),
        (lambda r: r["s3"]["object"].update(key="%ED%A0%80"), "not percent-encoded UTF-8"),
        (lambda r: r["s3"]["object"].update(key="k" * 1025), "longer than 1024 bytes"),
        (lambda r: r["s3"]["object"].update(size="12"), "size is not a non-negative integer"),
        (lambda r: r["s3"]["object"].update(size=-1), "size is not a non-negative integer"),
        (lambda r: r["s3"]["object"].update(size=True), "size is not a non-negative integer"),
        (lambda r: r["s3"]["object"].update(size=1.5), "size is not a non-negative integer"),
        (lambda r: r["s3"]["object"].update(eTag=1), "eTag is not a string"),
    ],
)
def test_s3_record_with_wrong_shape_is_rejected(mutate: Any, says: str) -> None:
    record = s3_record("a.json")
    mutate(record)
    assert_unknown(parse_body(s3_body(record)), format="s3", says=says)


def test_one_bad_record_rejects_the_whole_body() -> None:
    bad = s3_record("b.json")
    bad["s3"]["object"]["key"] = 5
    assert_unknown(parse_body(s3_body(s3_record("a.json"), bad)), format="s3", says="Records[1]")


@pytest.mark.parametrize(
    ("records", "says"),
    [([], "Records is empty"), ({}, "Records is not a list"), ([1], "Records[0] is not an object")],
)
def test_s3_records_must_be_a_list_of_objects(records: Any, says: str) -> None:
    assert_unknown(parse_body(json.dumps({"Records": records})), format="s3", says=says)


def test_s3_key_at_the_length_limit_is_accepted() -> None:
    key = "é" * 512  # 1024 bytes in UTF-8
    parsed = parse_body(s3_body(s3_record(quote_plus(key))))
    assert keys_of(parsed) == [key]


# --------------------------------------------------------------------------- SNS envelopes


def test_sns_wrapped_s3_notification() -> None:
    inner = s3_body(s3_record("logs/red+flower%2B.json"))
    parsed = parse_body(sns(inner))
    assert parsed.kind == "objects"
    assert parsed.format == "sns+s3"
    assert parsed.objects == (
        ObjectRef(
            bucket=BUCKET,
            key="logs/red flower+.json",
            size=1234,
            etag="0123456789abcdef0123456789abcdef",
        ),
    )


def test_sns_raw_delivery_is_the_plain_s3_notification() -> None:
    inner = s3_body(s3_record("logs/red+flower%2B.json"))
    raw, wrapped = parse_body(inner), parse_body(sns(inner))
    assert raw.format == "s3"
    assert raw.objects == wrapped.objects


def test_sns_wrapped_test_event() -> None:
    assert parse_body(sns(s3_test_event_body())) == ParsedBody(
        kind="test_event", format="sns+s3-test-event"
    )


def test_sns_wrapped_cloudtrail_notification() -> None:
    parsed = parse_body(sns(cloudtrail_sns(LOG_KEY)))
    assert parsed == ParsedBody(
        kind="objects",
        format="sns+cloudtrail-sns",
        objects=(ObjectRef(bucket=BUCKET, key=LOG_KEY),),
    )


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"Type": "SubscriptionConfirmation"}, "Type is 'SubscriptionConfirmation'"),
        ({"Type": None}, "Type is missing"),
        ({"TopicArn": None}, "no TopicArn"),
        ({"TopicArn": "trail-topic"}, "no TopicArn"),
        ({"Message": {"Records": []}}, "Message is not a string"),
        ({"Message": ""}, "SNS Message is empty"),
        ({"Message": "not json"}, "SNS Message is not valid JSON"),
        ({"Message": "[1, 2]"}, "SNS Message is a JSON array"),
        ({"Message": '{"hello": 1}'}, "SNS Message has none of the fields"),
    ],
)
def test_bad_sns_envelope_is_rejected(overrides: dict[str, Any], says: str) -> None:
    body = json.loads(sns(s3_body(s3_record("a.json"))))
    body.update(overrides)
    assert_unknown(parse_body(json.dumps(body)), format="sns", says=says)


@pytest.mark.parametrize(
    "inner",
    [
        pytest.param(sns(s3_body(s3_record("a.json"))), id="sns-in-sns"),
        pytest.param(json.dumps(eb_object_created("a.json")), id="eventbridge-in-sns"),
    ],
)
def test_sns_envelope_unwraps_once_and_only_s3_or_cloudtrail(inner: str) -> None:
    assert_unknown(parse_body(sns(inner)), format="sns", says="not an S3 or CloudTrail")


# --------------------------------------------------------------------------- CloudTrail's SNS


def test_cloudtrail_notification_keys_are_not_decoded() -> None:
    keys = [LOG_KEY, "prefix with space/a+b%2B.json.gz", "prefix/café.json.gz"]
    parsed = parse_body(json.dumps(cloudtrail_sns(*keys)))
    assert parsed.kind == "objects"
    assert parsed.format == "cloudtrail-sns"
    assert keys_of(parsed) == keys  # a literal '+' stays '+', '%2B' stays '%2B'
    assert {ref.bucket for ref in parsed.objects} == {BUCKET}
    assert all(ref.size is None and ref.etag is None for ref in parsed.objects)


def test_cloudtrail_notification_repeated_key_is_named_once() -> None:
    parsed = parse_body(json.dumps(cloudtrail_sns(LOG_KEY, LOG_KEY)))
    assert keys_of(parsed) == [LOG_KEY]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"s3Bucket": BUCKET}, "s3ObjectKey is not a list"),
        ({"s3ObjectKey": [LOG_KEY]}, "s3Bucket is not a string"),
        ({"s3Bucket": BUCKET, "s3ObjectKey": LOG_KEY}, "s3ObjectKey is not a list"),
        ({"s3Bucket": BUCKET, "s3ObjectKey": []}, "s3ObjectKey is empty"),
        ({"s3Bucket": BUCKET, "s3ObjectKey": [LOG_KEY, 3]}, "s3ObjectKey[1] is not a string"),
        ({"s3Bucket": BUCKET, "s3ObjectKey": [""]}, "s3ObjectKey[0] is empty"),
        ({"s3Bucket": "no spaces", "s3ObjectKey": [LOG_KEY]}, "not a bucket name"),
    ],
)
def test_bad_cloudtrail_notification_is_rejected(body: dict[str, Any], says: str) -> None:
    assert_unknown(parse_body(json.dumps(body)), format="cloudtrail-sns", says=says)


# --------------------------------------------------------------------------- EventBridge


def test_eventbridge_object_created_key_is_not_decoded() -> None:
    key = "logs/red flower+c%2B/2023-08-08T14:03:40.json.gz"
    parsed = parse_body(json.dumps(eb_object_created(key)))
    assert parsed == ParsedBody(
        kind="objects",
        format="eventbridge-s3",
        objects=(
            ObjectRef(bucket=BUCKET, key=key, size=99, etag="b1946ac92492d2347c6235b4d2611184"),
        ),
    )


def test_eventbridge_object_created_as_moto_writes_it() -> None:
    # moto: "eTag" instead of AWS's "etag", "version-id": "null", an epoch-free ISO time.
    body = eb_object_created("a b+c%2B é.json", etag=None, eTag="abc", **{"version-id": "null"})
    parsed = parse_body(json.dumps(body))
    assert parsed.objects == (ObjectRef(bucket=BUCKET, key="a b+c%2B é.json", size=99, etag="abc"),)


@pytest.mark.parametrize(
    "detail_type", ["Object Deleted", "Object Tags Added", "Object ACL Updated"]
)
def test_eventbridge_other_s3_events_name_nothing(detail_type: str) -> None:
    body = eventbridge(detail_type, "aws.s3", {"bucket": {"name": BUCKET}, "object": {"key": "k"}})
    assert parse_body(json.dumps(body)) == ParsedBody(kind="objects", format="eventbridge-s3")


@pytest.mark.parametrize(
    ("body", "format", "says"),
    [
        (eventbridge("Object Created", "aws.ec2", {}), "eventbridge", "unsupported EventBridge"),
        (eventbridge("Object Created", "my.app", {}), "eventbridge", "unsupported EventBridge"),
        (eventbridge("Bucket Burnt", "aws.s3", {}), "eventbridge", "'Bucket Burnt'"),
        (eventbridge("EC2 Instance State", "aws.ec2", {}), "eventbridge", "unsupported"),
        (eventbridge(None, "aws.s3", {}), "eventbridge", "detail-type is not a string"),
        (eventbridge("Object Created", 1, {}), "eventbridge", "source is not a string"),
        (eventbridge("Object Created", "aws.s3", []), "eventbridge-s3", "detail is not an object"),
        (eventbridge("Object Created", "aws.s3", {}), "eventbridge-s3", "detail.bucket is not"),
        (
            eventbridge("Object Created", "aws.s3", {"bucket": {"name": BUCKET}, "object": {}}),
            "eventbridge-s3",
            "detail.object.key is not a string",
        ),
        (eb_object_created("k", size="9"), "eventbridge-s3", "size is not"),
        (eb_object_created("k", etag=9), "eventbridge-s3", "etag is not a string"),
        (eb_object_created(""), "eventbridge-s3", "detail.object.key is empty"),
    ],
)
def test_bad_eventbridge_event_is_rejected(body: dict[str, Any], format: str, says: str) -> None:
    assert_unknown(parse_body(json.dumps(body)), format=format, says=says)


def test_eventbridge_api_call_decodes_the_record() -> None:
    body = eventbridge("AWS API Call via CloudTrail", "aws.iam", API_DETAIL)
    parsed = parse_body(json.dumps(body))
    assert parsed.kind == "api_call"
    assert parsed.format == "eventbridge-api-call"
    assert parsed.objects == ()
    record = parsed.record
    assert isinstance(record, Record)
    assert record.event_name == "DeleteUserPolicy"
    assert record.event_id == "1f7b0a3c-1111-2222-3333-444455556666"
    assert record.event_source == "iam.amazonaws.com"
    assert record.param("userName") == "bob"
    assert record.user_identity is not None
    assert record.user_identity.arn == "arn:aws:sts::111122223333:assumed-role/Admin/alice"
    assert not record.failed


def test_eventbridge_api_call_accepts_a_sparse_record() -> None:
    body = eventbridge("AWS API Call via CloudTrail", "aws.iam", {"eventName": "DeletePolicy"})
    parsed = parse_body(json.dumps(body))
    assert parsed.kind == "api_call"
    assert parsed.record == Record(event_name="DeletePolicy")


@pytest.mark.parametrize(
    ("detail", "says"),
    [
        ({**API_DETAIL, "eventName": 42}, "$.eventName"),
        ({**API_DETAIL, "userIdentity": "root"}, "$.userIdentity"),
        ({**API_DETAIL, "requestParameters": ["userName"]}, "$.requestParameters"),
        ([API_DETAIL], "detail is not an object"),
        (None, "detail is not an object"),
    ],
)
def test_eventbridge_api_call_with_wrong_types_is_rejected(detail: Any, says: str) -> None:
    body = eventbridge("AWS API Call via CloudTrail", "aws.iam", detail)
    assert_unknown(parse_body(json.dumps(body)), format="eventbridge-api-call", says=says)


def test_eventbridge_api_call_must_come_from_an_aws_source() -> None:
    # EventBridge refuses PutEvents with an "aws." source, so only AWS services can send these.
    body = eventbridge("AWS API Call via CloudTrail", "evil.iam", API_DETAIL)
    assert_unknown(parse_body(json.dumps(body)), format="eventbridge-api-call", says="'evil.iam'")


# --------------------------------------------------------------------------- test events


def test_s3_test_event() -> None:
    assert parse_body(json.dumps(s3_test_event_body())) == ParsedBody(
        kind="test_event", format="s3-test-event"
    )


def test_moto_test_event() -> None:
    body = '{"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-01-01T00:00:00.000Z"}'
    assert parse_body(body).kind == "test_event"


@pytest.mark.parametrize(
    "body",
    [
        {"Service": "Amazon S3", "Event": "s3:ObjectCreated:Put"},
        {"Service": "Amazon SQS", "Event": "s3:TestEvent"},
        {"Event": "s3:TestEvent"},
    ],
)
def test_near_test_events_are_rejected(body: dict[str, Any]) -> None:
    assert_unknown(parse_body(json.dumps(body)), format="s3-test-event")


# --------------------------------------------------------------------------- garbage and smuggling


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("", "body is empty"),
        ("  \n\t", "body is empty"),
        (b"", "body is empty"),
        ("not json", "not valid JSON"),
        ('{"Records": [', "not valid JSON"),
        (b'{"Records": "\xff"}', "not valid UTF-8"),
        ('{"Records": "\ud800"}', "not valid UTF-8"),  # a str holding a lone surrogate
        ("null", "JSON null"),
        ("[]", "JSON array"),
        ('"Records"', "JSON string"),
        ("3", "JSON number"),
        ("true", "JSON boolean"),
        ("{}", "none of the fields"),
        ('{"records": []}', "none of the fields"),
        ("[" * 100_000, "nested too deeply"),
        ('{"Event": "\\ud800"}', "not valid JSON"),  # a lone surrogate
    ],
)
def test_garbage_is_unknown(body: str | bytes, says: str) -> None:
    assert_unknown(parse_body(body), says=says)


def test_non_text_body_is_unknown() -> None:
    assert_unknown(parse_body(None), says="NoneType")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        {"Records": [s3_record("a.json")], "s3Bucket": BUCKET, "s3ObjectKey": ["b.json"]},
        {**cloudtrail_sns("a.json"), **eb_object_created("b.json")},
        {**eb_object_created("a.json"), "Records": [s3_record("b.json")]},
        {**json.loads(sns(s3_body(s3_record("a.json")))), "Records": [s3_record("b.json")]},
        {**s3_test_event_body(), "s3ObjectKey": ["b.json"]},
    ],
)
def test_ambiguous_bodies_are_rejected(body: dict[str, Any]) -> None:
    assert_unknown(parse_body(json.dumps(body)), says="ambiguous")


def test_refs_are_not_taken_from_unexpected_places() -> None:
    record = s3_record("a.json")
    record["s3"]["object"]["Records"] = [s3_record("smuggled.json")]
    record["s3ObjectKey"] = ["smuggled.json"]
    parsed = parse_body(s3_body(record))
    assert keys_of(parsed) == ["a.json"]


def test_reason_quotes_at_most_a_few_characters_safely() -> None:
    body = eventbridge("\x1b[31m" + "A" * 500 + "\nfake log line", "aws.s3", {})
    parsed = parse_body(json.dumps(body))
    assert parsed.kind == "unknown"
    assert parsed.reason is not None
    assert "\x1b" not in parsed.reason
    assert "\n" not in parsed.reason
    assert "A" * 30 not in parsed.reason


# --------------------------------------------------------------------------- properties

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Records",
                    "s3",
                    "bucket",
                    "object",
                    "key",
                    "name",
                    "size",
                    "eTag",
                    "etag",
                    "eventSource",
                    "eventName",
                    "Type",
                    "TopicArn",
                    "Message",
                    "s3Bucket",
                    "s3ObjectKey",
                    "detail-type",
                    "detail",
                    "source",
                    "Event",
                    "Service",
                    "eventID",
                    "userIdentity",
                    "requestParameters",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@given(st.text())
def test_parse_body_never_raises_on_text(body: str) -> None:
    assert isinstance(parse_body(body), ParsedBody)


@given(st.binary())
def test_parse_body_never_raises_on_bytes(body: bytes) -> None:
    assert isinstance(parse_body(body), ParsedBody)


@given(_json)
@settings(max_examples=300)
def test_parse_body_never_raises_on_json(doc: Any) -> None:
    body = json.dumps(doc)
    parsed = parse_body(body)
    assert isinstance(parsed, ParsedBody)
    assert (parsed.reason is not None) == (parsed.kind == "unknown")
    # And wrapped in SNS, as SNS would deliver it.
    assert isinstance(parse_body(sns(body)), ParsedBody)


@given(st.text(min_size=1).filter(lambda k: len(k.encode("utf-8", "surrogatepass")) <= 1024))
def test_s3_key_round_trips_through_form_encoding(key: str) -> None:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be S3 keys
        return
    bodies = [
        s3_body(s3_record(quote_plus(key))),
        s3_body(s3_record(quote(key, safe="/"))),
        json.dumps(cloudtrail_sns(key)),
        json.dumps(eb_object_created(key)),
    ]
    unsafe = unsafe_key(key)
    for body in bodies:
        parsed = parse_body(body)
        if unsafe is None:
            assert keys_of(parsed) == [key]
        else:  # a key CloudTrail cannot have written: the body is refused, nothing named
            assert parsed.kind == "unknown"
            assert parsed.objects == ()
            assert parsed.reason is not None
            assert parsed.reason.endswith(unsafe)


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("../../../../tmp/pwned/" + LOG_KEY, "has a '.' or '..' path segment"),
        ("AWSLogs/../" + LOG_KEY, "has a '.' or '..' path segment"),
        ("./" + LOG_KEY, "has a '.' or '..' path segment"),
        (LOG_KEY + "/..", "has a '.' or '..' path segment"),
        (LOG_KEY.replace(".json", "\x00.json"), "has a control character"),
        (LOG_KEY.replace(".json", "\nFAKE=1.json"), "has a control character"),
        (LOG_KEY.replace(".json", "\x1b[2J.json"), "has a control character"),
        (LOG_KEY.replace(".json", "\x85.json"), "has a control character"),
    ],
)
def test_keys_cloudtrail_cannot_write_are_refused_in_every_shape(key: str, says: str) -> None:
    """Traversal and NUL/newline keys never become an ObjectRef: the body is unknown (left for
    the redrive policy), so no GET, log line or file name is ever made of them."""
    for body in (
        s3_body(s3_record(quote_plus(key))),
        json.dumps(cloudtrail_sns(key)),
        sns(json.dumps(cloudtrail_sns(key))),
        json.dumps(eb_object_created(key)),
    ):
        parsed = parse_body(body)
        assert parsed.kind == "unknown", body
        assert parsed.objects == ()
        assert parsed.reason is not None
        assert parsed.reason.endswith(says), parsed.reason
        assert "\n" not in parsed.reason
        assert "\x00" not in parsed.reason


@pytest.mark.parametrize(
    "key",
    [
        "..%2F..%2Fx/" + LOG_KEY,  # '%2F' in a key is the three characters, not a '/'
        "logs..old/" + LOG_KEY,  # dots inside a segment are ordinary
        "/" + LOG_KEY,  # a leading '/' and an empty segment: odd, opaque, allowed
        "a//" + LOG_KEY,
        "café 日本 +/" + LOG_KEY,
    ],
)
def test_odd_but_harmless_keys_are_kept(key: str) -> None:
    assert keys_of(parse_body(s3_body(s3_record(quote_plus(key))))) == [key]
    assert keys_of(parse_body(json.dumps(cloudtrail_sns(key)))) == [key]
