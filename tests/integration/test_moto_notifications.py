"""parse_body against the bodies a real moto server delivers to SQS.

Every notification path trailguard supports is set up on moto over HTTP: S3 -> SQS, S3 -> SNS ->
SQS with raw delivery on and off, S3 -> EventBridge -> SQS, and (published by hand, since moto's
CloudTrail does not deliver files) CloudTrail's SNS notification and an EventBridge API-call
event.  Objects are uploaded under keys with spaces, '+', a literal '%2B', ':' and non-ASCII, and
parse_body must give back exactly the uploaded bucket and keys.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from tests.integration.conftest import Boto3Clients, MotoServer
from trailguard.ingest.notifications import ObjectRef, ParsedBody, parse_body

pytestmark = pytest.mark.integration

BUCKET = "trail-bucket"
KEYS = [
    "AWSLogs/111122223333/CloudTrail/us-east-1/2024/05/01/"
    "111122223333_CloudTrail_us-east-1_20240501T1205Z_AbCdEf012345.json.gz",
    "with space/two  spaces.json.gz",
    "c++/a+b.json.gz",
    "literal/a%2Bb%20c.json.gz",
    "non-ascii/café-日本-é.json.gz",
    "colon/2024-05-01T12:05:00.json.gz",
]


# --------------------------------------------------------------------------- helpers


def make_queue(aws: Boto3Clients, name: str) -> tuple[str, str]:
    url = aws.sqs.create_queue(QueueName=name)["QueueUrl"]
    attrs = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, attrs["Attributes"]["QueueArn"]


def receive_all(aws: Boto3Clients, url: str, expected: int, timeout: float = 10.0) -> list[str]:
    """Receive (and delete) ``expected`` bodies, then check that nothing else waits."""
    bodies: list[str] = []
    deadline = time.monotonic() + timeout
    while len(bodies) < expected and time.monotonic() < deadline:
        got = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in got.get("Messages", []):
            bodies.append(message["Body"])
            aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert len(bodies) == expected, bodies
    extra = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert extra.get("Messages", []) == []
    return bodies


def upload(aws: Boto3Clients, keys: list[str], bucket: str = BUCKET) -> dict[str, ObjectRef]:
    """Put one small object per key; the refs a notification should yield, by key."""
    refs = {}
    for i, key in enumerate(keys):
        body = f"object {i}".encode()
        etag = aws.s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
        refs[key] = ObjectRef(bucket=bucket, key=key, size=len(body), etag=etag)
    return refs


def split(parsed: list[ParsedBody]) -> tuple[list[ParsedBody], list[ObjectRef]]:
    """(the test events, every object ref in order); fails on anything else."""
    tests = [p for p in parsed if p.kind == "test_event"]
    refs = [ref for p in parsed if p.kind == "objects" for ref in p.objects]
    others = [p for p in parsed if p.kind not in ("test_event", "objects")]
    assert others == [], others
    return tests, refs


def assert_same_refs(refs: list[ObjectRef], expected: dict[str, ObjectRef]) -> None:
    assert Counter(ref.key for ref in refs) == Counter(list(expected))  # each key once
    assert {ref.key: ref for ref in refs} == expected


@pytest.fixture
def aws(clean_moto: MotoServer, boto3_session_clients: Boto3Clients) -> Boto3Clients:
    boto3_session_clients.s3.create_bucket(Bucket=BUCKET)
    return boto3_session_clients


# --------------------------------------------------------------------------- S3 -> SQS


def test_s3_to_sqs(aws: Boto3Clients) -> None:
    url, arn = make_queue(aws, "direct")
    aws.s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    expected = upload(aws, KEYS)
    bodies = receive_all(aws, url, expected=1 + len(KEYS))

    # What moto really sends: the S3 event JSON, keys form-encoded with quote_plus ('/' too).
    raw_keys = [
        json.loads(b)["Records"][0]["s3"]["object"]["key"] for b in bodies if "Records" in b
    ]
    assert "with+space%2Ftwo++spaces.json.gz" in raw_keys
    assert "c%2B%2B%2Fa%2Bb.json.gz" in raw_keys

    parsed = [parse_body(b) for b in bodies]
    tests, refs = split(parsed)
    assert [p.format for p in tests] == ["s3-test-event"]
    assert {p.format for p in parsed if p.kind == "objects"} == {"s3"}
    assert_same_refs(refs, expected)


def test_object_removed_names_nothing(aws: Boto3Clients) -> None:
    url, arn = make_queue(aws, "removed")
    upload(aws, KEYS[:1])
    aws.s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectRemoved:*"]}]
        },
    )
    aws.s3.delete_object(Bucket=BUCKET, Key=KEYS[0])
    parsed = [parse_body(b) for b in receive_all(aws, url, expected=2)]
    assert [(p.kind, p.format, p.objects) for p in parsed] == [
        ("test_event", "s3-test-event", ()),
        ("objects", "s3", ()),
    ]


# --------------------------------------------------------------------------- S3 -> SNS -> SQS


def test_s3_to_sns_to_sqs_raw_and_enveloped(aws: Boto3Clients) -> None:
    raw_url, raw_arn = make_queue(aws, "sns-raw")
    env_url, env_arn = make_queue(aws, "sns-envelope")
    topic = aws.sns.create_topic(Name="trail-topic")["TopicArn"]
    aws.sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=raw_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    aws.sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=env_arn,
        Attributes={"RawMessageDelivery": "false"},
    )
    aws.s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    expected = upload(aws, KEYS)

    raw_bodies = receive_all(aws, raw_url, expected=1 + len(KEYS))
    env_bodies = receive_all(aws, env_url, expected=1 + len(KEYS))

    # Raw delivery: the S3 body itself.  Off: SNS's JSON envelope with the S3 body as Message.
    assert all("Records" in json.loads(b) or "Event" in json.loads(b) for b in raw_bodies)
    envelopes = [json.loads(b) for b in env_bodies]
    assert {e["Type"] for e in envelopes} == {"Notification"}
    assert {e["TopicArn"] for e in envelopes} == {topic}

    raw = [parse_body(b) for b in raw_bodies]
    raw_tests, raw_refs = split(raw)
    assert [p.format for p in raw_tests] == ["s3-test-event"]
    assert {p.format for p in raw if p.kind == "objects"} == {"s3"}
    assert_same_refs(raw_refs, expected)

    wrapped = [parse_body(b) for b in env_bodies]
    env_tests, env_refs = split(wrapped)
    assert [p.format for p in env_tests] == ["sns+s3-test-event"]
    assert {p.format for p in wrapped if p.kind == "objects"} == {"sns+s3"}
    assert_same_refs(env_refs, expected)


def test_cloudtrail_sns_notification_through_sns(aws: Boto3Clients) -> None:
    """CloudTrail's own message, published by hand (moto's CloudTrail delivers no files)."""
    raw_url, raw_arn = make_queue(aws, "ct-raw")
    env_url, env_arn = make_queue(aws, "ct-envelope")
    topic = aws.sns.create_topic(Name="cloudtrail-topic")["TopicArn"]
    aws.sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=raw_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    aws.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=env_arn)
    keys = [KEYS[0], "c++/a+b.json.gz", "literal/a%2Bb.json.gz", "non-ascii/é.json.gz"]
    aws.sns.publish(TopicArn=topic, Message=json.dumps({"s3Bucket": BUCKET, "s3ObjectKey": keys}))

    expected = tuple(ObjectRef(bucket=BUCKET, key=key) for key in keys)
    (raw_body,) = receive_all(aws, raw_url, expected=1)
    (env_body,) = receive_all(aws, env_url, expected=1)
    assert parse_body(raw_body) == ParsedBody(
        kind="objects", format="cloudtrail-sns", objects=expected
    )
    assert parse_body(env_body) == ParsedBody(
        kind="objects", format="sns+cloudtrail-sns", objects=expected
    )


# --------------------------------------------------------------------------- S3 -> EventBridge


def _rule_to_queue(aws: Boto3Clients, name: str, pattern: dict[str, Any], queue_arn: str) -> None:
    aws.events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
    aws.events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": queue_arn}])


def test_s3_to_eventbridge_to_sqs(aws: Boto3Clients) -> None:
    url, arn = make_queue(aws, "eventbridge")
    _rule_to_queue(
        aws,
        "trail-objects",
        {
            "source": ["aws.s3"],
            "detail-type": ["Object Created"],
            "detail": {"bucket": {"name": [BUCKET]}},
        },
        arn,
    )
    aws.s3.put_bucket_notification_configuration(
        Bucket=BUCKET, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    expected = upload(aws, KEYS)

    # No test event on this path; one EventBridge event per object, key exactly as stored.
    bodies = receive_all(aws, url, expected=len(KEYS))
    events = [json.loads(b) for b in bodies]
    assert {(e["source"], e["detail-type"]) for e in events} == {("aws.s3", "Object Created")}
    assert sorted(e["detail"]["object"]["key"] for e in events) == sorted(KEYS)

    parsed = [parse_body(b) for b in bodies]
    tests, refs = split(parsed)
    assert tests == []
    assert {p.format for p in parsed} == {"eventbridge-s3"}
    assert_same_refs(refs, expected)


def test_eventbridge_api_call_to_sqs(aws: Boto3Clients) -> None:
    """The body shape EventBridge delivers for a CloudTrail API call.

    AWS refuses PutEvents with an ``aws.`` source; moto accepts it, which lets the test drive the
    real EventBridge -> SQS delivery path.
    """
    url, arn = make_queue(aws, "api-calls")
    _rule_to_queue(
        aws,
        "iam-calls",
        {"source": ["aws.iam"], "detail-type": ["AWS API Call via CloudTrail"]},
        arn,
    )
    detail = {
        "eventVersion": "1.09",
        "eventSource": "iam.amazonaws.com",
        "eventName": "DeleteRolePolicy",
        "eventID": "0d7a6a49-1111-2222-3333-444455556666",
        "eventTime": "2024-05-01T12:04:59Z",
        "awsRegion": "us-east-1",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/alice"},
        "requestParameters": {"roleName": "app", "policyName": "inline"},
        "readOnly": False,
        "managementEvent": True,
    }
    aws.events.put_events(
        Entries=[
            {
                "Source": "aws.iam",
                "DetailType": "AWS API Call via CloudTrail",
                "Detail": json.dumps(detail),
            }
        ]
    )
    (body,) = receive_all(aws, url, expected=1)
    parsed = parse_body(body)
    assert parsed.kind == "api_call"
    assert parsed.format == "eventbridge-api-call"
    assert parsed.record is not None
    assert parsed.record.event_name == "DeleteRolePolicy"
    assert parsed.record.event_id == detail["eventID"]
    assert parsed.record.param("roleName") == "app"
