"""What one SQS message may make trailguard fetch, end to end against the moto server.

Real parts only, as in test_daemon.py (whose helpers this reuses): the daemon is a subprocess
talking to moto through the fault-injecting proxy, which records every request, so "no GET was
made" is what the proxy saw.  Checked (issue 12 §3):

* a body naming more objects than ``[limits] max_objects_per_message``, and one naming a bucket
  its queue's ``buckets`` does not list (alone, or next to an allowed one), are rejected before
  anything is fetched: no GET for any object they name, ``sqs.message_rejected`` with the queue,
  message id, reason and bucket, ``trailguard_sqs_messages_rejected_total`` and
  ``trailguard_sqs_messages_handled_total{outcome="rejected"}`` once per delivery, and in the
  dead-letter queue after maxReceiveCount deliveries; a body at the bound and an ordinary S3
  notification of the allowed bucket are processed meanwhile;
* keys CloudTrail cannot write (``..`` segments, NUL, newline) are never fetched: the body is
  left to the redrive policy as unrecognised, and ``trailguard replay s3://`` skips such keys
  in a listing (``s3.key_refused``) instead of fetching them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from tests.conftest import ROOT
from tests.factories import delivery_key, noise_record
from tests.integration.conftest import Boto3Clients
from tests.integration.daemon_harness import (
    DaemonConfig,
    DaemonHarness,
    free_port,
    sample,
    scrape,
    wait_until,
)
from tests.integration.proxy import FaultProxy
from tests.integration.test_daemon import (
    BUCKET,
    VISIBILITY,
    assert_once,
    depth,
    make_queue,
    notify_queue,
    put_records,
    removal,
    run_cli,
    stop_ok,
    wait_detections,
)

pytestmark = pytest.mark.integration

MakeDaemon = Callable[..., DaemonHarness]
OTHER_BUCKET = "someone-elses-bucket"


@pytest.fixture
def daemons(tmp_path: Path, proxy: FaultProxy) -> Iterator[MakeDaemon]:
    """A harness whose daemon serves /metrics on a free port (decoding does not matter here:
    the point is what is never fetched); every daemon is killed at teardown."""
    made: list[DaemonHarness] = []

    def make(**kwargs: Any) -> DaemonHarness:
        kwargs.setdefault("endpoint_url", proxy.endpoint_url)
        kwargs.setdefault("visibility_timeout_secs", VISIBILITY)
        kwargs.setdefault("heartbeat_fraction", 0.25)
        kwargs.setdefault("http_listen", f"127.0.0.1:{free_port()}")
        harness = DaemonHarness(tmp_path / f"daemon{len(made)}", DaemonConfig(**kwargs))
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def s3_notification(*refs: tuple[str, str]) -> str:
    """An S3 event notification body naming (bucket, key) pairs, keys form-encoded as S3 does."""
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": bucket},
                        "object": {"key": quote_plus(key), "size": 100},
                    },
                }
                for bucket, key in refs
            ]
        }
    )


def cloudtrail_sns(keys: list[str], bucket: str = BUCKET) -> str:
    return json.dumps({"s3Bucket": bucket, "s3ObjectKey": keys})


def send(aws: Boto3Clients, url: str, body: str) -> str:
    return aws.sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]


def gets(proxy: FaultProxy, key: str) -> int:
    return proxy.count(method="GET", path_contains=key)


def test_over_bound_and_foreign_bucket_bodies_are_never_fetched_and_go_to_the_dlq(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    max_receive = 2
    bound = 3
    url, arn, dlq = make_queue(aws, "trail", max_receive=max_receive)
    aws.s3.create_bucket(Bucket=OTHER_BUCKET)

    # Every object exists and holds a removal: had any been fetched, a detection would show it.
    # The bodies are written straight to the queue, as a forger would.
    over = [delivery_key(suffix=f"OverBound{i:07d}") for i in range(bound + 1)]
    at_bound = [delivery_key(suffix=f"AtBound{i:09d}") for i in range(bound)]
    neighbour = delivery_key(suffix="NextToForeign01")
    foreign = delivery_key(suffix="ForeignBucket01")
    removals = {key: removal() for key in [*over, *at_bound, neighbour]}
    for key, record in removals.items():
        put_records(aws, key, [noise_record(1), record])
    put_records(aws, foreign, [removal()], bucket=OTHER_BUCKET)
    ids = {
        "too_many_objects": send(aws, url, cloudtrail_sns(over)),
        "bucket_not_allowed": send(aws, url, cloudtrail_sns([foreign], bucket=OTHER_BUCKET)),
        "mixed": send(aws, url, s3_notification((BUCKET, neighbour), (OTHER_BUCKET, foreign))),
    }
    send(aws, url, cloudtrail_sns(at_bound))  # at the bound: processed
    accepted = {removals[key]["eventID"] for key in at_bound}

    harness = daemons(queue_urls=[url], buckets=(BUCKET,), max_objects_per_message=bound)
    run = harness.start()
    # The allowed bucket's ordinary S3 notifications flow meanwhile (a TestEvent first).
    notify_queue(aws, arn)
    ordinary = removal("DeleteRolePolicy")
    put_records(aws, delivery_key(suffix="Ordinary0000001"), [ordinary])
    accepted.add(ordinary["eventID"])
    wait_detections(harness, accepted)
    wait_until(
        lambda: depth(aws, dlq)[0] == 3 and depth(aws, url) == (0, 0),
        timeout=40,
        what="the three rejected messages in the DLQ, the queue empty",
        context=lambda: f"queue={depth(aws, url)} dlq={depth(aws, dlq)}\n{harness.describe()}",
    )
    assert harness.config.http_listen is not None
    _, samples = scrape(f"http://{harness.config.http_listen}")
    stop_ok(harness, run)

    # Nothing a rejected body names was fetched, the allowed bucket's neighbour included.
    for key in [*over, neighbour]:
        assert gets(proxy, key) == 0, key
    assert proxy.count(method="GET", path_contains=OTHER_BUCKET) == 0
    for key in at_bound:
        assert gets(proxy, key) == 1, key
    assert_once(harness, accepted)

    # Logged once per delivery, with where it came from.
    events = run.events("sqs.message_rejected")
    assert len(events) == 3 * max_receive, events
    by_id: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        assert event["queue"] == "trail"
        assert event["level"] == "warning"
        by_id.setdefault(event["message_id"], []).append(event)
    assert set(by_id) == set(ids.values())
    for case, message_id in ids.items():
        seen = by_id[message_id]
        assert sorted(e["receive_count"] for e in seen) == [1, 2]
        first = seen[0]
        if case == "too_many_objects":
            assert first["reason"] == "too_many_objects"
            assert (first["objects"], first["max_objects_per_message"]) == (bound + 1, bound)
            assert first["bucket"] == BUCKET
            assert first["format"] == "cloudtrail-sns"
        else:
            assert first["reason"] == "bucket_not_allowed"
            assert first["bucket"] == OTHER_BUCKET
            assert first["buckets_not_allowed"] == 1
    assert not run.events("s3.object_failed")

    # Counted once per delivery, by bounded reason.
    q = {"queue": "trail"}
    rejected = "trailguard_sqs_messages_rejected_total"
    assert sample(samples, rejected, **q, reason="too_many_objects") == max_receive
    assert sample(samples, rejected, **q, reason="bucket_not_allowed") == 2 * max_receive
    handled = "trailguard_sqs_messages_handled_total"
    assert sample(samples, handled, **q, outcome="rejected") == 3 * max_receive
    assert sample(samples, handled, **q, outcome="left_for_redrive") == 0

    # The dead-letter queue holds the three rejected messages.
    dead = aws.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert {m["MessageId"] for m in dead} == set(ids.values())


TRAVERSAL = {
    "dotdot": "../../../../tmp/tg-pwned/" + delivery_key(suffix="Traversal000001"),
    "inner-dotdot": "AWSLogs/x/../" + delivery_key(suffix="Traversal000002"),
    "nul": delivery_key(suffix="Nul0000000001").replace(".json", "\x00.json"),
    "newline": delivery_key(suffix="Newline000001").replace(".json", "\nFAKE=1.json"),
}


def test_keys_cloudtrail_cannot_write_are_never_fetched(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Traversal, NUL and newline keys in every body shape: never fetched, never a file, left to
    the redrive policy; the same message's good key is not fetched either."""
    max_receive = 2
    url, _, dlq = make_queue(aws, "trail", max_receive=max_receive)
    good = delivery_key(suffix="GoodNeighbour01")
    put_records(aws, good, [removal()])
    sent = []
    for key in TRAVERSAL.values():
        sent.append(send(aws, url, s3_notification((BUCKET, good), (BUCKET, key))))
        sent.append(send(aws, url, cloudtrail_sns([key])))
    harness = daemons(queue_urls=[url])
    run = harness.start()
    wait_until(
        lambda: depth(aws, dlq)[0] == len(sent) and depth(aws, url) == (0, 0),
        timeout=40,
        what="every message in the DLQ",
        context=lambda: f"queue={depth(aws, url)} dlq={depth(aws, dlq)}\n{harness.describe()}",
    )
    stop_ok(harness, run)

    assert proxy.count(method="GET") == 0  # not the good key either: the body is refused whole
    assert harness.detections() == []
    unknown = run.events("sqs.message_unrecognised")
    assert len(unknown) == len(sent) * max_receive
    for u in unknown:
        assert u["reason"].endswith(
            ("has a '.' or '..' path segment", "has a control character")
        ), u["reason"]
    assert {u["message_id"] for u in unknown} == set(sent)
    assert all("\n" not in u["reason"] and "\x00" not in u["reason"] for u in unknown)
    # No file was made of a key: not in the daemon's folder, its working directory (the
    # checkout) or where the traversal pointed.
    markers = ("Traversal", "Nul000", "Newline", "FAKE", "tg-pwned")
    for root in (tmp_path, ROOT):
        made = [p for p in root.rglob("*") if any(m in p.name for m in markers)]
        assert made == [], made
    assert not Path("/tmp/tg-pwned").exists()


def test_replay_s3_skips_keys_cloudtrail_cannot_write(
    aws: Boto3Clients, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Someone else's objects in the trail bucket under traversal and control-character keys
    (S3 lists them like any other): skipped with ``s3.key_refused``, never fetched; the real
    file is."""
    good = removal()
    good_key = delivery_key(suffix="Backfill0000001")
    put_records(aws, good_key, [good])
    # Each matches CloudTrail's layout (a log file by its name): only the check refuses it.
    planted = {
        "dot-prefix": delivery_key(suffix="Planted0000001", prefix="./"),
        "dotdot-before-layout": "AWSLogs/x/../" + delivery_key(suffix="Planted0000002"),
        # (moto cannot store a newline in a key; an escape sequence and a carriage return it can)
        "escape": delivery_key(suffix="Planted0000003").replace(".json", "\x1b[2J.json"),
        "carriage-return": delivery_key(suffix="Planted0000004").replace(".json", "\rOK.json"),
    }
    for key in planted.values():
        put_records(aws, key, [removal()])
    config = tmp_path / "replay.toml"
    config.write_text(
        f'[aws]\nregion = "us-east-1"\nendpoint_url = "{proxy.endpoint_url}"\n'
        f'[state]\npath = "{tmp_path / "state.sqlite3"}"\n'  # never the machine's own state
    )
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "replay", f"s3://{BUCKET}/", "--config", str(config), "-o", str(out), "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["event_id"] for line in out.read_text().splitlines()] == [
        good["eventID"]
    ]
    assert gets(proxy, good_key) == 1
    for key in planted.values():
        assert gets(proxy, key) == 0, key
    refused = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if line.startswith("{") and '"s3.key_refused"' in line
    ]
    assert sorted(r["key"] for r in refused) == sorted(planted.values())
    assert {r["reason"] for r in refused} == {
        "has a '.' or '..' path segment",
        "has a control character",
    }
    assert "files: 1 (1 read" in result.stderr
