"""`trailguard run` end to end, as an operator runs it.

Real parts only: a moto server over HTTP on 127.0.0.1 holds the trail bucket, the queues (each
with a dead-letter queue), SNS topics and EventBridge rules; the daemon is a real subprocess
(``python -m trailguard run --config FILE``) whose ``[aws] endpoint_url`` is a fault-injecting
reverse proxy in front of moto (tests/integration/proxy.py), so a test can make one object slow,
fail a GET with 503 or drop a connection, and see every request the daemon made; SIGTERM and
SIGKILL are real signals, restarts are real restarts on the same state and detections file.

Every wait is a bounded poll of a condition.  Queues stay shallow (moto's SQS slows sharply with
hundreds of waiting messages).  The daemon runs with ``visibility_timeout_secs = 4`` (heartbeat
every second: 3 s of slack on a busy machine), ``wait_time_secs = 1`` and one decode worker, so
redelivery and shutdown are quick.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.factories import (
    ACCOUNT,
    REMOVALS,
    SHAPES,
    delivery_key,
    encode_file,
    make_record,
    noise_record,
)
from tests.integration.conftest import TRAIL_BUCKET, Boto3Clients, MotoServer
from tests.integration.daemon_harness import (
    DaemonConfig,
    DaemonHarness,
    DaemonRun,
    group_members,
    wait_until,
)
from tests.integration.proxy import FaultProxy

pytestmark = pytest.mark.integration

BUCKET = TRAIL_BUCKET
VISIBILITY = 4
MAX_OBJECT_BYTES = 64 << 10
MakeDaemon = Callable[..., DaemonHarness]


# --------------------------------------------------------------------------- AWS arrangement


@pytest.fixture(params=["threads", "processes"])
def daemons(
    tmp_path: Path, proxy: FaultProxy, request: pytest.FixtureRequest
) -> Iterator[MakeDaemon]:
    """``daemons(queue_urls=[...], **DaemonConfig fields)`` -> a harness; all killed at teardown.

    Every scenario runs with decode threads and with decode worker processes."""
    made: list[DaemonHarness] = []

    def make(**kwargs: Any) -> DaemonHarness:
        kwargs.setdefault("decode_in", request.param)
        kwargs.setdefault("endpoint_url", proxy.endpoint_url)
        kwargs.setdefault("visibility_timeout_secs", VISIBILITY)
        kwargs.setdefault("heartbeat_fraction", 0.25)
        harness = DaemonHarness(tmp_path / f"daemon{len(made)}", DaemonConfig(**kwargs))
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def make_queue(aws: Boto3Clients, name: str, *, max_receive: int = 5) -> tuple[str, str, str]:
    """(queue url, queue arn, dead-letter queue url): every queue gets a DLQ, as README says."""
    dlq_url = aws.sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = queue_arn(aws, dlq_url)
    url = aws.sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(VISIBILITY),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}
            ),
        },
    )["QueueUrl"]
    return url, queue_arn(aws, url), dlq_url


def queue_arn(aws: Boto3Clients, url: str) -> str:
    attrs = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attrs["Attributes"]["QueueArn"]


def depth(aws: Boto3Clients, url: str) -> tuple[int, int]:
    """(visible, in flight) messages."""
    attrs = aws.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


def wait_empty(aws: Boto3Clients, url: str, harness: DaemonHarness, timeout: float = 30) -> None:
    wait_until(
        lambda: depth(aws, url) == (0, 0),
        timeout=timeout,
        what=f"queue {url.rsplit('/', 1)[-1]} to be empty",
        context=lambda: f"depth={depth(aws, url)}\n{harness.describe()}",
    )


def notify_queue(aws: Boto3Clients, arn: str, bucket: str = BUCKET) -> None:
    """S3 -> SQS notifications for every created object (S3 sends a TestEvent at once)."""
    aws.s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )


def put(aws: Boto3Clients, key: str, data: bytes, bucket: str = BUCKET) -> None:
    if data[:2] == b"\x1f\x8b":  # as CloudTrail stores its files
        aws.s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=data,
            ContentType="application/json",
            ContentEncoding="gzip",
        )
    else:
        aws.s3.put_object(Bucket=bucket, Key=key, Body=data)


def put_records(
    aws: Boto3Clients, key: str, records: list[dict[str, Any]], *, bucket: str = BUCKET
) -> None:
    put(aws, key, encode_file(records, compress=True), bucket=bucket)


def wait_detections(harness: DaemonHarness, event_ids: set[str], timeout: float = 30) -> None:
    wait_until(
        lambda: harness.has_detections(event_ids),
        timeout=timeout,
        what=f"detections for {sorted(event_ids)}",
        context=harness.describe,
    )


def assert_once(harness: DaemonHarness, event_ids: set[str]) -> None:
    """The detections file holds exactly these eventIDs, each exactly once."""
    counts = harness.event_id_counts()
    assert counts == Counter(dict.fromkeys(event_ids, 1)), harness.describe()


def stop_ok(harness: DaemonHarness, run: DaemonRun, signum: int = signal.SIGTERM) -> None:
    """SIGTERM (or SIGINT): exit 0, promptly, with a clean stop logged."""
    code = harness.stop(run, timeout=15, signum=signum)
    assert code == 0, run.describe()
    assert run.events("daemon.stopped"), run.describe()
    no_leftovers(run)


def no_leftovers(run: DaemonRun) -> None:
    """The daemon's decode workers, forkserver and resource tracker are gone with it."""
    wait_until(
        lambda: not group_members(run.pid),
        timeout=15,
        what="the daemon's worker processes to exit",
        context=lambda: f"left: {group_members(run.pid)}",
    )


# --------------------------------------------------------------------------- the flow


def test_s3_notifications_end_to_end(aws: Boto3Clients, daemons: MakeDaemon) -> None:
    url, arn, dlq = make_queue(aws, "trail")
    notify_queue(aws, arn)  # S3 puts its TestEvent in the queue now
    # The documented defaults for the poll (20 s long polls): shutdown must not wait for one.
    harness = daemons(queue_urls=[url], wait_time_secs=20)
    run = harness.start()

    expected: dict[str, tuple[str, str, str]] = {}  # eventID -> (api, outcome, key)
    for i, api in enumerate(sorted(REMOVALS)):
        failed = i % 3 == 0
        record = make_record(api, error_code="AccessDenied" if failed else None)
        key = delivery_key(suffix=f"EndToEnd{i:04d}")
        data = encode_file([noise_record(i), record], SHAPES[i % 4], compress=i % 2 == 0)
        put(aws, key, data)
        expected[record["eventID"]] = (api, "failure" if failed else "success", key)
    quiet = delivery_key(suffix="NoiseOnly0000")
    put(aws, quiet, encode_file([noise_record(n) for n in range(20)], compress=True))

    wait_detections(harness, set(expected))
    wait_empty(aws, url, harness)
    stop_ok(harness, run)

    assert_once(harness, set(expected))
    for detection in harness.detections():
        api, outcome, key = expected[detection["event_id"]]
        assert detection["event_name"] == api
        assert detection["outcome"] == outcome
        assert detection["source"] == {"bucket": BUCKET, "key": key}
    assert run.events("sqs.test_event_acknowledged")
    assert run.events("s3.object_processed", key=quiet, detections=0)
    assert depth(aws, dlq) == (0, 0)


# Keys as operators really have them: a trail prefix with spaces, '+' and non-ASCII (S3 sends
# them form-encoded in notifications, as stored in EventBridge events and CloudTrail's SNS).
ODD_PREFIXES = ["trail logs/", "a+b c++/", "café-日本/"]


def odd_key(prefix: str, suffix: str) -> str:
    return delivery_key(prefix=prefix, suffix=suffix)


def sns_to_queue(aws: Boto3Clients, topic: str, queue_arn_: str, *, raw: bool) -> None:
    aws.sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn_,
        Attributes={"RawMessageDelivery": "true" if raw else "false"},
    )


def rule_to_queue(aws: Boto3Clients, name: str, pattern: dict[str, Any], arn: str) -> None:
    aws.events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
    aws.events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])


def api_call_queue(aws: Boto3Clients, name: str) -> tuple[str, str, str]:
    """A queue fed by EventBridge "AWS API Call via CloudTrail" events from aws.iam."""
    url, arn, dlq = make_queue(aws, name)
    rule_to_queue(
        aws,
        f"{name}-rule",
        {"source": ["aws.iam"], "detail-type": ["AWS API Call via CloudTrail"]},
        arn,
    )
    return url, arn, dlq


def put_api_call(aws: Boto3Clients, record: dict[str, Any]) -> None:
    """What EventBridge delivers seconds after an IAM call (moto accepts the aws.* source)."""
    response = aws.events.put_events(
        Entries=[
            {
                "Source": "aws.iam",
                "DetailType": "AWS API Call via CloudTrail",
                "Detail": json.dumps(record),
            }
        ]
    )
    assert response["FailedEntryCount"] == 0


def removal(api: str = "DeleteUserPolicy", **kwargs: Any) -> dict[str, Any]:
    return make_record(api, **kwargs)


def test_every_body_shape_and_odd_keys(aws: Boto3Clients, daemons: MakeDaemon) -> None:
    """S3 -> SNS -> SQS (raw on and off), CloudTrail's SNS message, S3 -> EventBridge -> SQS and
    EventBridge API-call events, with keys holding spaces, '+' and non-ASCII: one daemon, five
    queues; each event detected once, every queue emptied, SIGTERM exits 0."""
    expected: dict[str, str] = {}  # eventID -> the S3 key it must be reported from ("" = API call)
    apis = sorted(REMOVALS)

    # S3 -> SNS -> two queues, raw delivery on and off: both queues name the same objects, so
    # each object is processed twice and each event must still be written once.
    sns_bucket = "trail-sns"
    aws.s3.create_bucket(Bucket=sns_bucket)
    raw_url, raw_arn, _ = make_queue(aws, "sns-raw")
    env_url, env_arn, _ = make_queue(aws, "sns-envelope")
    topic = aws.sns.create_topic(Name="s3-events")["TopicArn"]
    sns_to_queue(aws, topic, raw_arn, raw=True)
    sns_to_queue(aws, topic, env_arn, raw=False)
    aws.s3.put_bucket_notification_configuration(
        Bucket=sns_bucket,
        NotificationConfiguration={
            "TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]
        },
    )

    # S3 -> EventBridge -> queue.
    eb_bucket = "trail-eventbridge"
    aws.s3.create_bucket(Bucket=eb_bucket)
    eb_url, eb_arn, _ = make_queue(aws, "eventbridge-objects")
    rule_to_queue(
        aws,
        "trail-objects",
        {
            "source": ["aws.s3"],
            "detail-type": ["Object Created"],
            "detail": {"bucket": {"name": [eb_bucket]}},
        },
        eb_arn,
    )
    aws.s3.put_bucket_notification_configuration(
        Bucket=eb_bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )

    # CloudTrail's own SNS notification (moto's CloudTrail delivers no files: published by hand),
    # enveloped by SNS; keys are not encoded.
    ct_url, ct_arn, _ = make_queue(aws, "cloudtrail-sns")
    ct_topic = aws.sns.create_topic(Name="cloudtrail-deliveries")["TopicArn"]
    sns_to_queue(aws, ct_topic, ct_arn, raw=False)

    # EventBridge "AWS API Call via CloudTrail": straight to the rules.
    api_url, _, _ = api_call_queue(aws, "api-calls")

    queues = [raw_url, env_url, eb_url, ct_url, api_url]
    harness = daemons(queue_urls=queues)
    run = harness.start()

    n = 0
    for bucket in (sns_bucket, eb_bucket):
        for prefix in ODD_PREFIXES:
            record = removal(apis[n % len(apis)])
            key = odd_key(prefix, f"{bucket[-3:]}{n:04d}")
            put_records(aws, key, [noise_record(n), record], bucket=bucket)
            expected[record["eventID"]] = key
            n += 1
    ct_keys = []
    for prefix in ODD_PREFIXES:
        record = removal(apis[n % len(apis)])
        key = odd_key(prefix, f"ct{n:04d}")
        put_records(aws, key, [record], bucket=BUCKET)  # BUCKET has no notifications
        expected[record["eventID"]] = key
        ct_keys.append(key)
        n += 1
    aws.sns.publish(
        TopicArn=ct_topic, Message=json.dumps({"s3Bucket": BUCKET, "s3ObjectKey": ct_keys})
    )
    api_record = removal("DetachRolePolicy")
    put_api_call(aws, api_record)
    expected[api_record["eventID"]] = ""

    wait_detections(harness, set(expected))
    for url in queues:
        wait_empty(aws, url, harness)
    stop_ok(harness, run)

    assert_once(harness, set(expected))
    for detection in harness.detections():
        key = expected[detection["event_id"]]
        if key:
            assert detection["source"]["key"] == key
        else:
            assert detection["source"] == {
                "queue": api_url,
                "message_id": detection["source"]["message_id"],
            }
    # Both SNS queues got S3's TestEvent (enveloped and raw), and each object was read twice.
    acknowledged = {e["format"] for e in run.events("sqs.test_event_acknowledged")}
    assert acknowledged == {"s3-test-event", "sns+s3-test-event"}
    summary = run.events("daemon.stopped")[0]
    assert summary["duplicates"] == len(ODD_PREFIXES)
    assert not run.events("sqs.message_unrecognised")


def test_digest_insight_and_other_keys_acknowledged_without_download(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    harness = daemons(queue_urls=[url])
    run = harness.start()

    skipped = [
        f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/2026/11/01/"
        f"{ACCOUNT}_CloudTrail-Digest_us-east-1_trail_us-east-1_20261101T120000Z.json.gz",
        f"AWSLogs/{ACCOUNT}/CloudTrail-Insight/us-east-1/2026/11/01/"
        f"{ACCOUNT}_CloudTrail-Insight_us-east-1_20261101T1200Z_InSiGhT0001.json.gz",
        "notes/README.txt",
    ]
    for key in skipped:
        put(aws, key, gzip.compress(b'{"Records": []}'))
    record = removal()
    log_key = delivery_key(suffix="AfterTheSkips01")
    put_records(aws, log_key, [record])

    wait_detections(harness, {record["eventID"]})
    wait_empty(aws, url, harness)
    stop_ok(harness, run)

    assert_once(harness, {record["eventID"]})
    for key in skipped:
        assert proxy.count(method="GET", path_contains=key) == 0, key
    assert proxy.count(method="GET", path_contains=log_key) == 1


# --------------------------------------------------------------------------- failures


def test_corrupt_missing_oversized_and_unknown_go_to_the_dlq_while_the_rest_flows(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    """Permanent failures (a truncated gzip, a key gone before it was read, an object over
    limits.max_object_bytes, a body that is no notification) are not deleted: they come back
    after their visibility timeout (never sooner: no hot loop), and after maxReceiveCount
    deliveries moto's redrive policy moves them to the DLQ.  Good messages before, between and
    after them are processed meanwhile, and the good object named with a missing one in the
    same message is written once despite redelivery."""
    max_receive = 2
    url, arn, dlq = make_queue(aws, "trail", max_receive=max_receive)
    notify_queue(aws, arn)

    before = removal("DeleteRolePolicy")
    put_records(aws, delivery_key(suffix="GoodBefore0001"), [before])
    corrupt_key = delivery_key(suffix="Corrupt0000001")
    good_gzip = encode_file([noise_record(1), removal()], compress=True)
    put(aws, corrupt_key, good_gzip[: len(good_gzip) // 2])  # truncated gzip
    missing_key = delivery_key(suffix="Missing0000001")
    put(aws, missing_key, good_gzip)
    aws.s3.delete_object(Bucket=BUCKET, Key=missing_key)  # notified, then gone: NoSuchKey
    oversized_key = delivery_key(suffix="Oversized00001")
    put(aws, oversized_key, os.urandom(MAX_OBJECT_BYTES + 1))
    aws.sqs.send_message(QueueUrl=url, MessageBody="hello, not a notification")
    # CloudTrail's SNS message (raw delivery) naming a good object and a missing one.
    partner = removal("DetachUserPolicy")
    partner_key = delivery_key(suffix="Partner0000001")
    put_records(aws, partner_key, [partner])
    aws.sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(
            {
                "s3Bucket": BUCKET,
                "s3ObjectKey": [partner_key, delivery_key(suffix="NeverThere0001")],
            }
        ),
    )

    harness = daemons(queue_urls=[url], max_object_bytes=MAX_OBJECT_BYTES)
    run = harness.start()
    run.wait_for("s3.object_failed", key=corrupt_key)
    # Nothing stalls: an object uploaded after the failure is processed while the failed
    # messages wait out their visibility timeout.
    after = removal("DeleteGroupPolicy")
    put_records(aws, delivery_key(suffix="GoodAfter00001"), [after])
    wait_detections(harness, {before["eventID"], partner["eventID"], after["eventID"]})

    # corrupt, missing, oversized, unknown body, good+missing: all five end in the DLQ.
    wait_until(
        lambda: depth(aws, dlq)[0] == 5 and depth(aws, url) == (0, 0),
        timeout=40,
        what="the five failing messages in the DLQ, the queue empty",
        context=lambda: f"queue={depth(aws, url)} dlq={depth(aws, dlq)}\n{harness.describe()}",
    )
    stop_ok(harness, run)

    assert_once(harness, {before["eventID"], partner["eventID"], after["eventID"]})
    corrupt_failures = run.events("s3.object_failed", key=corrupt_key)
    missing_failures = run.events("s3.object_failed", key=missing_key)
    # Each failing message was delivered exactly maxReceiveCount times: left for the redrive
    # policy each time, never retried in a loop, never deleted.
    assert len(corrupt_failures) == max_receive
    assert {(f["stage"], f["reason"]) for f in corrupt_failures} == {("decode", "undecodable")}
    assert len(missing_failures) == max_receive
    assert {f["reason"] for f in missing_failures} == {"NoSuchKey"}
    assert all(f["bucket"] == BUCKET and missing_key in f["detail"] for f in missing_failures)
    oversized = run.events("s3.object_failed", key=oversized_key)
    assert [f["reason"] for f in oversized] == ["too_large"] * max_receive
    assert "max_object_bytes" in oversized[0]["detail"]
    unknown = run.events("sqs.message_unrecognised")
    assert len(unknown) == max_receive
    assert len({u["message_id"] for u in unknown}) == 1
    left = run.events("sqs.message_left_for_redrive")
    assert sorted(e["receive_count"] for e in left) == [1] * 4 + [2] * 4  # + the unknown body
    # The corrupt object was fetched once per delivery: permanent errors are not retried.
    assert proxy.count(method="GET", path_contains=corrupt_key) == max_receive
    dead = aws.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert "hello, not a notification" in [m["Body"] for m in dead]


def test_transient_503_and_connection_reset_are_retried(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    """botocore retries twice itself; trailguard's own backoff retries after that.  Four 503s in
    a row on one object and two dropped connections on another: both processed, nothing
    released or dead-lettered, no duplicate."""
    url, arn, dlq = make_queue(aws, "trail")
    notify_queue(aws, arn)
    flaky_key = delivery_key(suffix="Flaky503000001")
    reset_key = delivery_key(suffix="ResetConn00001")
    proxy.add_rule("status", method="GET", path_contains=flaky_key, times=4, status=503)
    proxy.add_rule("reset", method="GET", path_contains=reset_key, times=2)
    harness = daemons(queue_urls=[url])
    run = harness.start()

    flaky, reset = removal("DeletePolicy"), removal("DetachGroupPolicy")
    put_records(aws, flaky_key, [flaky])
    put_records(aws, reset_key, [reset])
    wait_detections(harness, {flaky["eventID"], reset["eventID"]})
    wait_empty(aws, url, harness)
    stop_ok(harness, run)

    assert_once(harness, {flaky["eventID"], reset["eventID"]})
    assert proxy.count(method="GET", path_contains=flaky_key) == 5  # 4 x 503, then 200
    assert proxy.count(method="GET", path_contains=reset_key) == 3  # 2 x reset, then 200
    assert run.events("retry.scheduled", what=f"s3://{BUCKET}/{flaky_key}")
    assert not run.events("s3.object_failed")
    assert not run.events("sqs.message_released")
    assert depth(aws, dlq) == (0, 0)


def test_transient_failure_outliving_its_retries_releases_the_message_for_later(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    """An object answering 503 to every attempt: after botocore's and trailguard's retries the
    message is released with a backoff delay (``release_backoff_secs``, not deleted, not
    dead-lettered),
    nothing touches it meanwhile, and it succeeds when it comes back."""
    url, arn, dlq = make_queue(aws, "trail")
    notify_queue(aws, arn)
    key = delivery_key(suffix="Unavailable001")
    proxy.add_rule("status", method="GET", path_contains=key, status=503)
    harness = daemons(queue_urls=[url], release_backoff_secs=3)
    run = harness.start()
    record = removal("DeleteRolePolicy")
    put_records(aws, key, [record])

    released = run.wait_for("sqs.message_released")
    assert released["retry_in_secs"] == 3  # first receive: the configured delay, not doubled
    assert 3 in visibility_calls(proxy)
    failed = run.events("s3.object_failed", key=key)
    assert [(f["reason"], f["transient"]) for f in failed] == [("SlowDown", True)]
    attempts = proxy.count(method="GET", path_contains=key)
    assert attempts >= 4  # trailguard's FETCH_ATTEMPTS, each with botocore's own retries
    assert depth(aws, url) == (0, 1)
    proxy.clear_rules()

    wait_detections(harness, {record["eventID"]}, timeout=3 + 30)
    wait_empty(aws, url, harness)
    stop_ok(harness, run)
    assert_once(harness, {record["eventID"]})
    # Nothing fetched it while it was released: one more GET, when it came back.
    assert proxy.count(method="GET", path_contains=key) == attempts + 1
    assert depth(aws, dlq) == (0, 0)


# --------------------------------------------------------------------------- slow objects


def visibility_calls(proxy: FaultProxy, *, since: float = 0.0) -> list[int]:
    """The VisibilityTimeout of each ChangeMessageVisibility the daemon sent after ``since``."""
    values = []
    for seen in proxy.requests:
        if seen.operation == "ChangeMessageVisibility" and seen.at >= since:
            values.append(int(json.loads(seen.body)["VisibilityTimeout"]))
    return values


def test_slow_object_outliving_the_visibility_timeout_is_processed_once(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    """The object's GET is held for more than two visibility timeouts: the heartbeat keeps the
    message invisible (nobody receives it again), it is fetched once, detected once, deleted."""
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    slow_key = delivery_key(suffix="SlowObject0001")
    hold = proxy.add_rule("hold", method="GET", path_contains=slow_key)
    harness = daemons(queue_urls=[url])
    run = harness.start()

    record = removal("DeleteRolePermissionsBoundary")
    put_records(aws, slow_key, [record])
    wait_until(
        lambda: proxy.count(method="GET", path_contains=slow_key) == 1,
        what="the daemon to start fetching the slow object",
        context=harness.describe,
    )
    held_since = proxy.first(method="GET", path_contains=slow_key).at
    # Two visibility timeouts (heartbeats come at most once a second): without a heartbeat the
    # message would have come back twice.
    wait_until(
        lambda: len(visibility_calls(proxy, since=held_since)) >= 2 * VISIBILITY,
        timeout=2 * VISIBILITY + 20,
        what="heartbeats for two visibility timeouts while the object is held",
        context=harness.describe,
    )
    assert depth(aws, url) == (0, 1)  # still in flight, invisible, not redelivered
    hold.release()

    wait_detections(harness, {record["eventID"]})
    wait_empty(aws, url, harness)
    stop_ok(harness, run)

    assert_once(harness, {record["eventID"]})
    assert proxy.count(method="GET", path_contains=slow_key) == 1
    assert len(run.events("s3.object_processed", key=slow_key)) == 1
    assert set(visibility_calls(proxy)) == {VISIBILITY}  # extensions only: never released


def test_sigterm_mid_object_releases_then_restart_processes_once(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    """SIGTERM while one object of a two-object message is still downloading: the drain deadline
    passes, the message is released (visibility 0, not deleted) and the daemon exits 0 within
    deadline + margin.  A restart processes the message: every event detected exactly once,
    including the one that was already written before from another file -- even with the dedup
    store lost (as after a crash between the detections write and the dedup record): start-up
    recovers the eventIDs from the detections file."""
    url, _, _ = make_queue(aws, "trail")
    deadline = 2.0
    harness = daemons(queue_urls=[url], deadline_secs=deadline)
    run = harness.start()

    seen_before = removal("DeleteUserPolicy")
    put_records(aws, delivery_key(suffix="EarlierFile001"), [seen_before])
    aws.sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(
            {"s3Bucket": BUCKET, "s3ObjectKey": [delivery_key(suffix="EarlierFile001")]}
        ),
    )
    wait_detections(harness, {seen_before["eventID"]})
    wait_empty(aws, url, harness)

    fast_key, slow_key = (
        delivery_key(suffix="FastHalf000001"),
        delivery_key(suffix="SlowHalf000001"),
    )
    fresh, slow = removal("DetachRolePolicy"), removal("DeletePolicyVersion")
    put_records(aws, fast_key, [seen_before, fresh])  # CloudTrail repeats an event sometimes
    put_records(aws, slow_key, [noise_record(7), slow])
    proxy.add_rule("hold", method="GET", path_contains=slow_key)
    aws.sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps({"s3Bucket": BUCKET, "s3ObjectKey": [fast_key, slow_key]}),
    )
    run.wait_for("s3.object_processed", key=fast_key)
    wait_until(
        lambda: proxy.count(method="GET", path_contains=slow_key) == 1,
        what="the slow object's download to be in progress",
    )

    signalled = time.monotonic()
    run.send(signal.SIGTERM)
    code = run.wait_exit(timeout=deadline + 12)
    assert code == 0, run.describe()
    released = run.events("sqs.message_released", reason="shutdown")
    assert len(released) == 1, run.describe()
    assert 0 in visibility_calls(proxy, since=signalled)
    assert proxy.count(operation="DeleteMessage") == 1  # only the earlier message's
    assert depth(aws, url) == (1, 0)  # back in the queue at once, not after its timeout
    assert harness.event_id_counts() == Counter({seen_before["eventID"]: 1})  # nothing half-done

    for path in harness.state_path.parent.glob(harness.state_path.name + "*"):
        path.unlink()  # the dedup store (and its WAL) is gone: only the detections file remains
    proxy.clear_rules()
    rerun = harness.start()
    assert rerun.events("daemon.started")[0]["recovered_event_ids"] == 1
    wait_detections(harness, {fresh["eventID"], slow["eventID"]})
    wait_empty(aws, url, harness)
    stop_ok(harness, rerun)
    assert_once(harness, {seen_before["eventID"], fresh["eventID"], slow["eventID"]})
    assert rerun.events("daemon.stopped")[0]["duplicates"] == 1


def test_sigterm_drain_finishes_the_object_in_flight_within_the_deadline(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    """SIGTERM stops receiving at once, but an object that completes before the drain deadline
    is committed and its message deleted: nothing released, nothing left for the next start."""
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    key = delivery_key(suffix="FinishesInTime")
    hold = proxy.add_rule("hold", method="GET", path_contains=key)
    harness = daemons(queue_urls=[url], deadline_secs=60.0)
    run = harness.start()
    record = removal("DeletePolicy")
    put_records(aws, key, [record])
    wait_until(
        lambda: proxy.count(method="GET", path_contains=key) == 1,
        what="the download in progress",
    )

    run.send(signal.SIGTERM)
    run.wait_for("daemon.draining", in_flight=1)
    receives = proxy.count(operation="ReceiveMessage")
    hold.release()
    assert run.wait_exit(timeout=15) == 0, run.describe()
    no_leftovers(run)
    assert_once(harness, {record["eventID"]})
    assert depth(aws, url) == (0, 0)
    assert not run.events("sqs.message_released")
    assert 0 not in visibility_calls(proxy)
    assert proxy.count(operation="ReceiveMessage") == receives  # no receive after the signal


def test_sigkill_mid_work_then_restart_loses_nothing_and_duplicates_nothing(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    """SIGKILL with detections written but their messages not yet deleted (the DeleteMessage
    calls stall in the proxy and never reach SQS) and one object still downloading.  After a
    restart everything is processed once: the written ones are recognised as duplicates."""
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    proxy.add_rule("stall", operation="DeleteMessage")
    slow_key = delivery_key(suffix="InProgress0001")
    proxy.add_rule("hold", method="GET", path_contains=slow_key)
    harness = daemons(queue_urls=[url])
    run = harness.start()

    written = [removal(api) for api in ("DeleteUserPolicy", "DeleteRolePolicy", "DeletePolicy")]
    for i, record in enumerate(written):
        put_records(aws, delivery_key(suffix=f"Written{i:07d}"), [noise_record(i), record])
    in_progress = removal("DetachGroupPolicy")
    put_records(aws, slow_key, [in_progress])
    written_ids = {r["eventID"] for r in written}
    wait_detections(harness, written_ids)
    wait_until(
        lambda: (
            proxy.count(operation="DeleteMessage") >= len(written) + 1  # + the TestEvent
            and proxy.count(method="GET", path_contains=slow_key) == 1
        ),
        what="deletes stalled and the slow download in progress",
        context=harness.describe,
    )

    run.send(signal.SIGKILL)
    assert run.wait_exit(timeout=10) == -signal.SIGKILL
    no_leftovers(run)  # its decode workers notice the daemon is gone and exit on their own
    proxy.clear_rules()  # the stalled deletes are dropped, never forwarded
    visible, in_flight = depth(aws, url)
    assert visible + in_flight == len(written) + 2  # nothing deleted: not even the TestEvent
    # A crash in the middle of a later write would leave a torn last line: add one.
    with harness.detections_path.open("ab") as out:
        out.write(b'{"event_id":"torn-by-a-crash","event_na')

    rerun = harness.start()
    assert rerun.events("daemon.started")[0]["recovered_event_ids"] == len(written)
    wait_detections(harness, written_ids | {in_progress["eventID"]}, timeout=VISIBILITY + 30)
    wait_empty(aws, url, harness)
    stop_ok(harness, rerun)
    assert_once(harness, written_ids | {in_progress["eventID"]})
    assert rerun.events("daemon.stopped")[0]["duplicates"] == len(written)
    # The torn line was ended at start-up: it stays one bad line, the next detection is whole.
    assert harness.torn_lines() == ['{"event_id":"torn-by-a-crash","event_na']


def test_second_sigterm_exits_at_once(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    """With a long drain deadline and an object in flight, a second SIGTERM exits at once
    (128+15), and the unfinished message is not lost: a restart processes it."""
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    slow_key = delivery_key(suffix="NeverFinishes1")
    proxy.add_rule("stall", method="GET", path_contains=slow_key)
    harness = daemons(queue_urls=[url], deadline_secs=120.0)
    run = harness.start()
    record = removal("DeleteGroupPolicy")
    put_records(aws, slow_key, [record])
    wait_until(
        lambda: proxy.count(method="GET", path_contains=slow_key) == 1,
        what="the download in progress",
    )

    run.send(signal.SIGTERM)
    run.wait_for("daemon.stopping")
    assert run.proc.poll() is None  # draining, up to 120 s
    run.send(signal.SIGTERM)
    assert run.wait_exit(timeout=10) == 128 + signal.SIGTERM
    assert run.events("daemon.forced_exit")
    no_leftovers(run)
    assert harness.detections() == []

    proxy.clear_rules()
    rerun = harness.start()
    wait_detections(harness, {record["eventID"]}, timeout=VISIBILITY + 30)
    wait_empty(aws, url, harness)
    stop_ok(harness, rerun)
    assert_once(harness, {record["eventID"]})


# --------------------------------------------------------------------------- duplicates


def test_same_event_in_two_files_and_through_s3_and_eventbridge_is_detected_once(
    aws: Boto3Clients, daemons: MakeDaemon
) -> None:
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    api_url, _, _ = api_call_queue(aws, "api-calls")
    harness = daemons(queue_urls=[url, api_url])
    run = harness.start()

    twice = removal("DeleteUserPermissionsBoundary")  # CloudTrail delivered it in two files
    put_records(aws, delivery_key(suffix="FirstCopy00001"), [noise_record(1), twice])
    put_records(aws, delivery_key(suffix="SecondCopy0001", stamp="20261101T1205Z"), [twice])
    both_ways = removal("DetachUserPolicy")  # by EventBridge first, by S3 minutes later
    put_api_call(aws, both_ways)
    wait_detections(harness, {both_ways["eventID"]})
    put_records(aws, delivery_key(suffix="ViaS3Later0001"), [both_ways, noise_record(2)])
    s3_first = removal("DeleteGroupPolicy")  # the other order: S3 first, EventBridge after
    put_records(aws, delivery_key(suffix="S3First000001"), [s3_first])
    wait_detections(harness, {twice["eventID"], s3_first["eventID"]})
    put_api_call(aws, s3_first)

    wait_until(
        lambda: (
            len(run.events("s3.object_processed")) == 4
            and depth(aws, url) == depth(aws, api_url) == (0, 0)
        ),
        what="every file processed, both queues empty",
        context=harness.describe,
    )
    stop_ok(harness, run, signal.SIGINT)  # Ctrl-C drains like SIGTERM
    assert_once(harness, {twice["eventID"], both_ways["eventID"], s3_first["eventID"]})
    by_id = {d["event_id"]: d for d in harness.detections()}
    assert set(by_id[both_ways["eventID"]]["source"]) == {"queue", "message_id"}
    assert set(by_id[s3_first["eventID"]]["source"]) == {"bucket", "key"}
    assert run.events("daemon.stopped")[0]["duplicates"] == 3


# --------------------------------------------------------------------------- backfill


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trailguard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def test_replay_s3_lists_only_the_requested_days(
    aws: Boto3Clients, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Several days, accounts and regions, an organisation trail layout and a trail prefix: only
    the days asked are fetched (the proxy saw no GET for the others) and reported."""
    org = "o-a1b2c3d4e5"
    layout = [  # (account, region, day, organisation)
        ("111111111111", "us-east-1", "20261030", None),
        ("111111111111", "us-east-1", "20261031", None),
        ("111111111111", "eu-west-1", "20261101", None),
        ("222222222222", "us-east-1", "20261101", None),
        ("222222222222", "us-east-1", "20261102", None),
        ("333333333333", "us-west-2", "20261031", org),
        ("333333333333", "ap-southeast-2", "20261101", org),
        ("444444444444", "us-west-2", "20261103", org),
        ("444444444444", "us-west-2", "20250614", org),
    ]
    files: dict[str, tuple[str, str]] = {}  # key -> (eventID, YYYYMMDD)
    for i, (account, region, day, org_id) in enumerate(layout):
        record = removal(sorted(REMOVALS)[i], recipientAccountId=account)
        key = delivery_key(
            account=account,
            region=region,
            stamp=f"{day}T0{i}05Z",
            suffix=f"Replay{i:08d}",
            prefix="org-trail/",
            org=org_id,
        )
        put_records(aws, key, [noise_record(i), record])
        files[key] = (record["eventID"], day)
    digest = (
        "org-trail/AWSLogs/111111111111/CloudTrail-Digest/us-east-1/2026/10/31/"
        "111111111111_CloudTrail-Digest_us-east-1_t_us-east-1_20261031T000000Z.json.gz"
    )
    put(aws, digest, gzip.compress(b"{}"))
    config = tmp_path / "replay.toml"
    config.write_text(
        f'[aws]\nregion = "us-east-1"\nendpoint_url = "{proxy.endpoint_url}"\n'
        f'[state]\npath = "{tmp_path / "state.sqlite3"}"\n'  # never the machine's own state
    )

    def replay(uri: str, *window: str) -> tuple[dict[str, str], str]:
        """eventID -> key of the detections, and the summary."""
        out = tmp_path / f"replay-{len(proxy.requests)}.jsonl"
        result = run_cli(
            "replay", uri, *window, "--config", str(config), "-o", str(out), "--no-progress"
        )
        assert result.returncode == 0, result.stderr
        detections = [json.loads(line) for line in out.read_text().splitlines()]
        ids = Counter(d["event_id"] for d in detections)
        assert set(ids.values()) <= {1}, ids
        return {d["event_id"]: d["source"]["key"] for d in detections}, result.stderr

    def expect(keep: Callable[[str, str], bool]) -> dict[str, str]:
        return {eid: key for key, (eid, day) in files.items() if keep(key, day)}

    # Two days across accounts, regions and the organisation's folder.
    got, summary = replay(
        f"s3://{BUCKET}/org-trail/", "--since", "2026-10-31", "--until", "2026-11-01"
    )
    inside = expect(lambda key, day: "20261031" <= day <= "20261101")
    assert got == inside
    assert len(inside) == 5
    assert f"files: {len(inside)} ({len(inside)} read" in summary
    assert f"detections: {len(inside)}" in summary
    for key in files:
        assert proxy.count(method="GET", path_contains=key) == (1 if key in inside.values() else 0)
    assert proxy.count(method="GET", path_contains=digest) == 0

    # The organisation's folder alone, one day.
    got, summary = replay(
        f"s3://{BUCKET}/org-trail/AWSLogs/{org}", "--since", "2026-11-01", "--until", "2026-11-01"
    )
    assert got == expect(lambda key, day: org in key and day == "20261101")
    assert "detections: 1" in summary

    # Only --until: every day since CloudTrail began (November 2013), listed by the folders
    # that exist rather than by ~4,700 day prefixes per region.
    before = len(proxy.requests)
    got, summary = replay(f"s3://{BUCKET}/org-trail", "--until", "2026-10-31")
    assert got == expect(lambda key, day: day <= "20261031")
    assert len(got) == 4
    assert len(proxy.requests) - before < 100


# --------------------------------------------------------------------------- start-up errors


def test_unreachable_queue_exits_1_with_a_clear_message(
    aws: Boto3Clients, daemons: MakeDaemon, moto_server: MotoServer
) -> None:
    missing = f"{moto_server.endpoint_url}/{moto_server.account_id}/no-such-queue"
    harness = daemons(queue_urls=[missing])
    run = harness.start(wait_started=False)
    assert run.wait_exit(timeout=30) == 1, run.describe()
    stderr = run.stderr()
    assert "cannot start" in stderr
    assert missing in stderr
    assert "NonExistentQueue" in stderr or "does not exist" in stderr
    assert not run.events("daemon.started")


def test_unreachable_endpoint_exits_1_with_a_clear_message(
    clean_moto: MotoServer, daemons: MakeDaemon
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    queue = f"{endpoint}/{clean_moto.account_id}/trail"
    harness = daemons(queue_urls=[queue], endpoint_url=endpoint)
    run = harness.start(wait_started=False)
    assert run.wait_exit(timeout=60) == 1, run.describe()
    stderr = run.stderr()
    assert "cannot start" in stderr
    assert queue in stderr
    assert "Could not connect" in stderr or "connection" in stderr.lower()
