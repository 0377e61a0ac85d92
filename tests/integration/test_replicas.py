"""Many replicas, one result: three real ``trailguard run`` processes share one queue and one
DynamoDB table on a moto server (S3, SQS, DynamoDB), one of them SIGKILLed twice mid-stream and
restarted.

What README "Running many replicas" promises, checked on the union of the three outputs:

* no event lost: every removal's eventID is in some replica's detections file;
* reported once, but for the crash window: duplicate lines are at most the dedup claims the
  replicas took over after a dead replica's lease (``dedup.claim_taken_over``, the metric
  ``trailguard_dedup_takeovers_total``) -- the test measures both and prints them;
* each job planned once (one job per removal in the shared store, whichever replica saw it,
  however often) and run once (one ``remediation.job_finished`` per job at most, every job
  final; a job the killed replica held is run again only after its lease);
* the queue drains, the dead-letter queue stays empty; ``trailguard jobs list`` reads the shared
  store from outside the replicas; ``trailguard state init`` created the table.

Behaviour, not throughput: a few hundred small files, uploaded in batches so moto's queue stays
shallow (it slows sharply with hundreds of waiting messages); every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.factories import encode_file, make_record
from tests.integration.conftest import TRAIL_BUCKET, Boto3Clients, MotoServer
from tests.integration.daemon_harness import DaemonConfig, DaemonHarness, wait_until
from tests.integration.test_daemon import depth, make_queue, notify_queue, put
from trailguard.demo.records import noise_record

pytestmark = pytest.mark.integration

REPLICAS = 3
FILES = 300
BATCH = 25
REMOVAL_EVERY = 5  # every 5th file holds a policy removal: 60 removals
DUPLICATED = 12  # removals CloudTrail delivers twice (in two files): dedup across replicas
KILL_AFTER_BATCHES = (4, 8)  # SIGKILL replica 0 after 100 and 200 files, then restart it
VISIBILITY = 4
REMEDIATION = """
[remediation]
mode = "dry-run"
workers = 2
job_timeout_secs = 5
poll_interval_secs = 1
confirm_events = false

[[remediation.policies]]
rules = ["*"]
min_severity = "low"
actions = ["restore_inline_policy"]
"""


def removal(i: int, when: dt.datetime) -> dict[str, Any]:
    return make_record(
        "DeleteRolePolicy",
        {"roleName": f"app-{i}", "policyName": f"guard-{i}"},
        event_id=f"removal-{i:04d}",
        event_time=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def trail_files() -> tuple[list[tuple[str, bytes]], set[str]]:
    """(key, gzip body) of FILES files and the removal eventIDs among them."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    files: list[tuple[str, bytes]] = []
    expected: set[str] = set()
    removals: list[dict[str, Any]] = []
    for n in range(FILES):
        records = [noise_record(n * 10 + j) for j in range(8)]
        if n % REMOVAL_EVERY == 0:
            record = removal(n // REMOVAL_EVERY, start + dt.timedelta(seconds=n))
            removals.append(record)
            expected.add(record["eventID"])
            records.insert(3, record)
        elif n % REMOVAL_EVERY == 2 and len(removals) <= DUPLICATED and removals:
            records.append(removals[-1])  # the same event again, in another file
        stamp = (start + dt.timedelta(minutes=n)).strftime("%Y%m%dT%H%MZ")
        key = (
            f"AWSLogs/123456789012/CloudTrail/us-east-1/{stamp[:4]}/{stamp[4:6]}/{stamp[6:8]}/"
            f"123456789012_CloudTrail_us-east-1_{stamp}_{n:016d}.json.gz"
        )
        files.append((key, encode_file(records, compress=True)))
    return files, expected


@pytest.fixture
def replicas(tmp_path: Path, aws: Boto3Clients, moto_server: MotoServer) -> Iterator[Any]:
    url, arn, dlq = make_queue(aws, "trail", max_receive=5)
    made: list[DaemonHarness] = []
    for index in range(REPLICAS):
        config = DaemonConfig(
            endpoint_url=moto_server.endpoint_url,
            queue_urls=[url],
            visibility_timeout_secs=VISIBILITY,
            heartbeat_fraction=0.25,
            state_backend="dynamodb",
            state_table="trailguard-replicas",
            extra=REMEDIATION,
        )
        made.append(DaemonHarness(tmp_path / f"replica{index}", config))
    yield made, url, arn, dlq
    for harness in made:
        harness.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trailguard", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def jobs_list(config: Path) -> list[dict[str, Any]]:
    result = cli("jobs", "list", "--json", "--limit", "1000", "--config", str(config))
    assert result.returncode == 0, result.stderr
    jobs: list[dict[str, Any]] = json.loads(result.stdout)
    return jobs


def union(harnesses: list[DaemonHarness]) -> Counter[str]:
    total: Counter[str] = Counter()
    for harness in harnesses:
        total.update(harness.event_id_counts())
    return total


def log_entries(harnesses: list[DaemonHarness], name: str) -> list[dict[str, Any]]:
    return [e for h in harnesses for run in h.runs for e in run.events(name)]


def test_three_replicas_one_result_with_a_replica_killed_twice(
    aws: Boto3Clients, replicas: Any
) -> None:
    harnesses, url, arn, dlq = replicas
    init = cli("state", "init", "--config", str(harnesses[0].config_path))
    assert init.returncode == 0, init.stderr
    assert "created table trailguard-replicas" in init.stdout
    again = cli("state", "init", "--config", str(harnesses[0].config_path))
    assert again.returncode == 0, again.stderr  # idempotent
    assert "created" not in again.stdout

    notify_queue(aws, arn)
    runs = [harness.start() for harness in harnesses]
    files, expected = trail_files()

    def describe() -> str:
        return (
            f"queue={depth(aws, url)} dlq={depth(aws, dlq)} seen={len(set(union(harnesses)))}"
            f"/{len(expected)}\n" + "\n".join(h.describe() for h in harnesses)
        )

    kills = 0
    for batch in range(FILES // BATCH):
        for key, body in files[batch * BATCH : (batch + 1) * BATCH]:
            put(aws, key, body, bucket=TRAIL_BUCKET)
        wait_until(  # keep moto's queue shallow
            lambda: sum(depth(aws, url)) < 2 * BATCH,
            timeout=60,
            interval=0.25,
            what="the replicas to keep up",
            context=describe,
        )
        if batch + 1 in KILL_AFTER_BATCHES:
            runs[0].kill_group()  # SIGKILL, mid-stream: messages in flight, claims held
            kills += 1
            runs[0] = harnesses[0].start()  # the same detections file: recovery at start

    wait_until(
        lambda: depth(aws, url) == (0, 0) and expected <= set(union(harnesses)),
        timeout=120,
        interval=0.5,
        what="every removal detected and the queue drained",
        context=describe,
    )
    final = {"succeeded", "dead", "skipped", "dry_run", "awaiting_approval"}
    jobs = wait_until(
        lambda: (
            found
            if len(found := jobs_list(harnesses[1].config_path)) >= len(expected)
            and all(job["state"] in final for job in found)
            else None
        ),
        timeout=120,
        interval=1.0,
        what="every job final",
        context=lambda: json.dumps(
            Counter(job["state"] for job in jobs_list(harnesses[1].config_path))
        ),
    )

    # No event lost; reported once but for the measured crash window.
    counts = union(harnesses)
    assert expected <= set(counts), describe()
    duplicates = sum(count - 1 for count in counts.values())
    taken_over = sum(
        int(e.get("count", 0)) for e in log_entries(harnesses, "dedup.claim_taken_over")
    )
    recovered = sum(
        int(e.get("recovered_event_ids") or 0) for e in log_entries(harnesses, "daemon.started")
    )
    print(  # the figures README quotes
        f"\nreplicas={REPLICAS} files={FILES} removals={len(expected)} kills={kills} "
        f"detection_lines={sum(counts.values())} duplicates={duplicates} "
        f"dedup_takeovers={taken_over} recovered_at_restart={recovered}"
    )
    assert duplicates <= taken_over, describe()

    # Each job planned once and run once.
    assert sorted(job["detection"]["event_id"] for job in jobs) == sorted(expected)
    assert len({job["id"] for job in jobs}) == len(expected)
    ends = [e for e in log_entries(harnesses, "remediation.job_finished") if e["state"] in final]
    finished = Counter(e["job_id"] for e in ends)  # a "failed" attempt is retried: not an end
    assert all(n <= 1 for n in finished.values()), [e for e in ends if finished[e["job_id"]] > 1][
        :4
    ]
    assert not log_entries(harnesses, "remediation.lease_lost")
    rerun = [job["id"] for job in jobs if job["attempts"] > 1]
    print(f"jobs={len(jobs)} states={dict(Counter(j['state'] for j in jobs))} rerun={len(rerun)}")

    # The queue drained through the replicas; nothing went to the dead-letter queue.
    assert depth(aws, url) == (0, 0)
    assert depth(aws, dlq) == (0, 0), describe()
    for harness in harnesses:
        run = harness.runs[-1]
        assert run.proc.poll() is None, run.describe()  # all alive at the end
