"""`trailguard run` as an on-call team runs it: metrics, health, sd_notify, live reload and
remediation, end to end.

Real parts only, as in test_daemon.py (whose helpers this reuses): a moto server on 127.0.0.1
behind the fault-injecting proxy, the daemon as a subprocess (``python -m trailguard run``), real
signals, real HTTP to the daemon's ``[http] listen`` (a free loopback port), and for sd_notify a
real Unix datagram socket bound by the test, as systemd binds one for a ``Type=notify`` service.

Checked (issues 4 and 5, "How it is checked"):

* ``/metrics`` of a live daemon after a trail with a successful, a failed (AccessDenied) and a
  suppressed removal: detections by event name, outcome, severity and disposition; SQS, S3,
  records, build info; no label value is an ARN, eventID, key or IP.  ``/healthz`` 200;
  ``/readyz`` 200 once polling and 503 with the reason while SQS answers every receive with an
  error (the proxy), 200 again when it recovers;
* sd_notify: READY=1 after start-up, WATCHDOG=1 every half ``WATCHDOG_USEC``, RELOADING=1 +
  MONOTONIC_USEC then READY=1 around SIGHUP, STOPPING=1 on SIGTERM, all from the main pid
  (``NotifyAccess=main``);
* SIGHUP: a new suppression applies to files processed after it, an object in flight across the
  reload is finished, not dropped; a broken file is rejected with its key path, the running
  config stays, ``trailguard_config_reloads_total{outcome="failure"}`` counts it;
* remediation in enforce mode against moto's IAM, every event confirmed through CloudTrail
  LookupEvents (the proxy answers it from the test's real records; moto's answers HTTP 500):
  every inline document, attachment, policy version, deleted managed policy and role
  permissions boundary is put back exactly;
  ``trailguard jobs list --json`` shows each job succeeded with its audit record; a replayed
  duplicate changes nothing and enqueues nothing; a second run in dry-run over a fresh removal
  changes nothing in IAM and records the plan; ``trailguard_remediation_jobs_total`` counts them;
* a forged EventBridge body (one SQS message) carrying a real removal's eventID: reported
  (``ledger.conflict``, ``trailguard_forgery_suspected_total``, a flagged detection), nothing
  written, the job waits for an operator; ``confirm_events = false`` is warned about at start.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import itertools
import json
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import (
    ACCOUNT,
    ATTACKER_ARN,
    delivery_key,
    encode_file,
    iam_user_identity,
    make_record,
    noise_record,
)
from tests.integration.conftest import Boto3Clients
from tests.integration.daemon_harness import (
    WATCHDOG_PID_WRAPPER,
    DaemonConfig,
    DaemonHarness,
    DaemonRun,
    NotifySocket,
    free_port,
    group_members,
    http_get,
    sample,
    scrape,
    wait_until,
)
from tests.integration.proxy import FaultProxy
from tests.integration.test_daemon import (
    VISIBILITY,
    make_queue,
    notify_queue,
    put,
    put_records,
    run_cli,
    stop_ok,
    wait_detections,
    wait_empty,
)
from tests.integration.test_ops_files import _NAME as METRIC_NAME
from tests.integration.test_ops_files import ALERTS, dashboard_exprs, resolve
from tests.remediation_support import ALL_RESTORES, DOC_DENY_EC2, DOC_DENY_S3
from trailguard import __version__

if TYPE_CHECKING:
    from mypy_boto3_iam.client import IAMClient

pytestmark = pytest.mark.integration

MakeDaemon = Callable[..., DaemonHarness]

PIPELINE_ARN = f"arn:aws:iam::{ACCOUNT}:user/terraform-ci"
SUPPRESS_PIPELINE = f"""
[[suppress]]
name = "terraform-pipeline"
actor_arn = ["{PIPELINE_ARN}"]
"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def daemons(tmp_path: Path, proxy: FaultProxy) -> Iterator[MakeDaemon]:
    """``daemons(queue_urls=[...], **DaemonConfig fields)`` -> a harness whose daemon serves
    HTTP on a free loopback port; every daemon is killed at teardown."""
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


def base_url(harness: DaemonHarness) -> str:
    assert harness.config.http_listen is not None
    return f"http://{harness.config.http_listen}"


def by_pipeline(api: str, **kwargs: Any) -> dict[str, Any]:
    """A removal by the (suppressed) infrastructure pipeline's IAM user."""
    return make_record(api, user_identity=iam_user_identity(PIPELINE_ARN), **kwargs)


def detections_by_id(harness: DaemonHarness) -> dict[str, dict[str, Any]]:
    return {str(d["event_id"]): d for d in harness.detections()}


# --------------------------------------------------------------------------- 1. metrics, health

IPV4 = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b")


def assert_no_identifying_labels(text: str, forbidden: set[str]) -> None:
    """No label value in the exposition is an ARN, eventID, S3 key, queue URL or IP address."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {
        value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        for value in s.labels.values()
    }
    assert values, "no labels at all?"
    for value in values:
        assert not value.startswith("arn:"), value
        assert "AWSLogs" not in value, value
        assert ".json" not in value, value
        assert "://" not in value, value
        assert IPV4.search(value) is None, value
        assert value not in forbidden, value
    for item in forbidden:  # not even inside another label value or a help text
        assert item not in text, item


def test_metrics_health_and_readiness_of_a_live_daemon(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)  # S3's TestEvent: one more message received and handled
    harness = daemons(queue_urls=[url], ready_max_poll_age_secs=3.0, extra=SUPPRESS_PIPELINE)
    run = harness.start()
    base = base_url(harness)
    assert http_get(f"{base}/healthz") == (200, "ok\n")
    wait_until(
        lambda: http_get(f"{base}/readyz") == (200, "ready\n"),
        timeout=15,
        what="/readyz 200 once the queue is polled",
        context=lambda: repr(http_get(f"{base}/readyz")),
    )

    success = make_record("DeleteUserPolicy")
    denied = make_record("DeleteRolePolicy", error_code="AccessDenied")
    suppressed = by_pipeline("DetachRolePolicy")
    records = [noise_record(0), success, noise_record(1), denied, suppressed, noise_record(2)]
    key = delivery_key(suffix="MetricsFile0001")
    data = encode_file(records, compress=True)
    put_records(aws, key, records)
    ids = {r["eventID"] for r in (success, denied, suppressed)}
    wait_detections(harness, ids)
    wait_empty(aws, url, harness)

    found = detections_by_id(harness)
    expected = {  # (event_name, outcome, severity, disposition) as the detections file says
        success["eventID"]: ("DeleteUserPolicy", "success", "high", "alert"),
        denied["eventID"]: ("DeleteRolePolicy", "failure", "medium", "alert"),
        suppressed["eventID"]: ("DetachRolePolicy", "success", "high", "suppressed"),
    }
    for event_id, labels in expected.items():
        d = found[event_id]
        assert (d["event_name"], d["outcome"], d["severity"], d["disposition"]) == labels

    text, samples = scrape(base)
    detections = {
        dict(labels)["event_name"]
        + "/"
        + "/".join(dict(labels)[k] for k in ("outcome", "severity", "disposition")): value
        for (name, labels), value in samples.items()
        if name == "trailguard_detections_total"
    }
    nonzero = {k: v for k, v in detections.items() if v}
    assert nonzero == {"/".join(labels): 1.0 for labels in expected.values()}
    # Every watched event name's label sets exist from the start (zero-initialised).
    assert len(detections) > 10 * 2 * 5 * 2

    q = {"queue": "trail"}
    assert sample(samples, "trailguard_sqs_messages_received_total", **q) == 2
    assert sample(samples, "trailguard_sqs_messages_handled_total", **q, outcome="deleted") == 1
    assert sample(samples, "trailguard_sqs_messages_handled_total", **q, outcome="test_event") == 1
    assert sample(samples, "trailguard_sqs_messages_handled_total", **q, outcome="failed") == 0
    assert sample(samples, "trailguard_s3_objects_total", outcome="ok") == 1
    assert sample(samples, "trailguard_s3_objects_total", outcome="failed_permanent") == 0
    assert sample(samples, "trailguard_s3_object_bytes_total") == len(data)
    assert sample(samples, "trailguard_s3_object_processing_seconds_count") == 1
    assert sample(samples, "trailguard_records_scanned_total") == len(records)
    assert sample(samples, "trailguard_records_invalid_total") == 0
    assert sample(samples, "trailguard_duplicates_dropped_total") == 0
    assert sample(samples, "trailguard_delivery_lag_seconds_count", path="s3") == 3
    assert sample(samples, "trailguard_detection_latency_seconds_count") == 3
    assert sample(samples, "trailguard_sqs_messages_in_flight") == 0
    assert sample(samples, "trailguard_s3_objects_in_flight") == 0
    last_poll = sample(samples, "trailguard_sqs_last_successful_poll_timestamp_seconds", **q)
    assert last_poll is not None
    assert abs(time.time() - last_poll) < 30
    assert (
        sample(
            samples, "trailguard_s3_objects_by_account_total", account=ACCOUNT, region="us-east-1"
        )
        == 1
    )
    [build] = [labels for (name, labels), _ in samples.items() if name == "trailguard_build_info"]
    assert dict(build)["version"] == __version__
    assert sample(samples, "trailguard_build_info", **dict(build)) == 1
    assert sample(samples, "trailguard_config_last_reload_successful") == 1
    # Every metric the Grafana dashboard and the alert rules name is in this live daemon's output.
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    for where, source in (
        ("dashboard", "\n".join(dashboard_exprs())),
        ("alerts.yml", ALERTS.read_text()),
    ):
        named = set(METRIC_NAME.findall(source))
        assert named, where
        assert sorted(n for n in named if not resolve(n, families)) == [], where
    assert_no_identifying_labels(
        text,
        {
            *ids,
            key,
            url,
            ATTACKER_ARN,
            PIPELINE_ARN,
            success["sourceIPAddress"],
            success["requestID"],
        },
    )

    # SQS answers every receive with an error: alive, but not ready, and /readyz says why.
    proxy.add_rule("status", operation="ReceiveMessage", status=503, code="ServiceUnavailable")
    not_ready = wait_until(
        lambda: (lambda r: r if r[0] == 503 else None)(http_get(f"{base}/readyz")),
        timeout=30,
        what="/readyz 503 while SQS fails",
        context=run.describe,
    )
    assert not_ready[1].startswith("not ready\n"), not_ready
    assert re.search(
        r"sqs: queue trail last polled successfully \d+s ago \(limit 3s\)", not_ready[1]
    )
    assert http_get(f"{base}/healthz") == (200, "ok\n")
    failed = run.wait_for("sqs.receive_failed")  # after the SDK's own retries
    assert failed["queue"] == "trail"
    _, samples = scrape(base)
    errors = {
        dict(labels)["type"]: value
        for (name, labels), value in samples.items()
        if name == "trailguard_errors_total" and dict(labels)["stage"] == "sqs_receive"
    }
    assert sum(errors.values()) >= 1, errors

    # SQS is back: ready again at the next successful receive (after the poll's backoff).
    proxy.clear_rules()
    wait_until(
        lambda: http_get(f"{base}/readyz") == (200, "ready\n"),
        timeout=45,
        what="/readyz 200 after SQS recovers",
        context=run.describe,
    )
    assert run.proc.poll() is None
    stop_ok(harness, run)


# --------------------------------------------------------------------------- 2. sd_notify


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(
        item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if item
    )


def test_sd_notify_ready_watchdog_reload_stopping(aws: Boto3Clients, daemons: MakeDaemon) -> None:
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    watchdog_usec = 2_000_000  # WatchdogSec=2: a ping every second
    with NotifySocket() as notify:
        # decode worker processes: they must not inherit $NOTIFY_SOCKET (checked below)
        harness = daemons(queue_urls=[url], http_listen=None, decode_in="processes")
        run = harness.start(
            env={**notify.env, "WATCHDOG_USEC": str(watchdog_usec)},
            wrapper=WATCHDOG_PID_WRAPPER,  # WATCHDOG_PID = the daemon's pid, as systemd sets it
        )
        [ready] = notify.wait_for("READY=1")
        # After start-up: the queues were checked before; the daemon logs daemon.started next.
        assert run.events("sqs.queue_ready")
        assert ready.get("STATUS") == "watching 1 queue(s)"

        pings = notify.wait_for("WATCHDOG=1", since=ready.at, count=4, timeout=10)
        gaps = [b.at - a.at for a, b in itertools.pairwise(pings)]
        assert all(0.5 < gap < watchdog_usec / 1e6 for gap in gaps), gaps

        # The decode workers are not the main process: they do not inherit $NOTIFY_SOCKET.
        workers = [pid for pid in group_members(run.pid) if pid != run.pid]
        assert workers, "no decode worker processes?"
        for pid in workers:
            assert "NOTIFY_SOCKET" not in environ_of(pid), pid

        # SIGHUP: RELOADING=1 with the monotonic time the reload started, then READY=1.
        sent_usec, sent_at = monotonic_usec(), time.monotonic()
        run.send(signal.SIGHUP)
        [reloading] = notify.wait_for("RELOADING=1", since=sent_at)
        usec = int(reloading.get("MONOTONIC_USEC") or "0")
        assert sent_usec <= usec <= monotonic_usec()
        [reloaded] = notify.wait_for("READY=1", since=reloading.at)
        assert reloaded.get("STATUS") == "config reloaded"
        order = notify.messages
        assert order.index(reloading) < order.index(reloaded)
        run.wait_for("config.reloaded")
        notify.wait_for("WATCHDOG=1", since=reloaded.at, count=2, timeout=10)

        # SIGTERM: STOPPING=1 when the drain starts, and no READY=1 after it.
        sent_at = time.monotonic()
        run.send(signal.SIGTERM)
        [stopping] = notify.wait_for("STOPPING=1", since=sent_at)
        assert run.wait_exit(timeout=15) == 0, run.describe()
        assert not notify.with_field("READY=1", since=stopping.at)

        # systemd's NotifyAccess=main accepts messages from the main process only.
        senders = {m.pid for m in notify.messages}
        assert senders == {run.pid}, senders
        assert [m.get("READY") for m in notify.messages if m.get("READY")] == ["1", "1"]


# --------------------------------------------------------------------------- 3. live reload

ENABLE_REMEDIATION = """
[[remediation.policies]]
rules = ["*"]
actions = ["restore_inline_policy"]
"""


def reload_with(harness: DaemonHarness, run: DaemonRun, **changes: Any) -> dict[str, Any]:
    """Rewrite the daemon's config with ``changes`` (DaemonConfig fields), SIGHUP, and the
    ``config.reloaded`` line it answers with."""
    harness.configure(dataclasses.replace(harness.config, **changes))
    run.send(signal.SIGHUP)
    return run.wait_for("config.reloaded")


def test_sighup_applies_a_new_suppression_to_what_is_processed_after_it(
    aws: Boto3Clients, daemons: MakeDaemon
) -> None:
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    harness = daemons(queue_urls=[url])
    run = harness.start()

    before = by_pipeline("DeleteUserPolicy")
    put_records(aws, delivery_key(suffix="BeforeReload01"), [noise_record(0), before])
    wait_detections(harness, {before["eventID"]})
    assert detections_by_id(harness)[before["eventID"]]["disposition"] == "alert"

    reloaded = reload_with(harness, run, extra=harness.config.extra + SUPPRESS_PIPELINE)
    assert reloaded["applied"] == ["suppress"], reloaded
    assert reloaded["restart_required"] == [], reloaded

    after = by_pipeline("DetachUserPolicy")
    other = make_record("DeleteRolePolicy")  # the attacker: still an alert
    put_records(aws, delivery_key(suffix="AfterReload001"), [noise_record(1), after, other])
    wait_detections(harness, {before["eventID"], after["eventID"], other["eventID"]})
    wait_empty(aws, url, harness)
    found = detections_by_id(harness)
    assert found[before["eventID"]]["disposition"] == "alert"  # written before: unchanged
    assert found[after["eventID"]]["disposition"] == "suppressed"
    assert found[after["eventID"]]["suppressed_by"] == "suppress[0] (terraform-pipeline)"
    assert found[other["eventID"]]["disposition"] == "alert"
    _, samples = scrape(base_url(harness))
    assert sample(samples, "trailguard_config_reloads_total", outcome="success") == 1
    assert sample(samples, "trailguard_config_last_reload_successful") == 1
    stop_ok(harness, run)
    assert Counter(harness.event_id_counts().values()) == Counter({1: 3})


def test_sighup_finishes_the_object_in_flight_across_the_reload(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    """An object whose download is in progress when the reload happens is finished (judged by
    the rules it is decoded with: the new ones) and its message deleted, not dropped."""
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    harness = daemons(queue_urls=[url])
    run = harness.start()
    held_key = delivery_key(suffix="AcrossReload01")
    hold = proxy.add_rule("hold", method="GET", path_contains=held_key)
    across = by_pipeline("DeleteGroupPolicy")
    put_records(aws, held_key, [across])
    wait_until(
        lambda: proxy.count(method="GET", path_contains=held_key) == 1,
        what="the held download in progress",
        context=run.describe,
    )
    reloaded = reload_with(harness, run, extra=harness.config.extra + SUPPRESS_PIPELINE)
    assert reloaded["applied"] == ["suppress"], reloaded
    hold.release()

    wait_detections(harness, {across["eventID"]})
    wait_empty(aws, url, harness)
    assert detections_by_id(harness)[across["eventID"]]["disposition"] == "suppressed"
    assert run.events("s3.object_processed", key=held_key)
    assert not run.events("sqs.message_released")
    assert not run.events("sqs.message_failed")
    assert not run.events("sqs.message_crashed")
    stop_ok(harness, run)
    assert harness.event_id_counts() == {across["eventID"]: 1}


def test_sighup_changes_the_log_level_and_reports_what_needs_a_restart(
    aws: Boto3Clients, daemons: MakeDaemon
) -> None:
    """The daemon started without remediation (no [[remediation.policies]]): turning it on needs
    a restart -- reported, not pretended -- while the log level changes at once."""
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    harness = daemons(queue_urls=[url])
    run = harness.start()
    reloaded = reload_with(
        harness, run, extra=harness.config.extra + ENABLE_REMEDIATION, log_level="debug"
    )
    assert reloaded["applied"] == ["logging"], reloaded
    assert reloaded["restart_required"] == ["remediation"], reloaded

    removed = make_record("DeleteUserPolicy")
    put_records(aws, delivery_key(suffix="AfterLevel0001"), [removed])
    wait_detections(harness, {removed["eventID"]})
    wait_empty(aws, url, harness)
    assert [e for e in run.logs() if e.get("level") == "debug"], "log level not reloaded"
    assert not run.events("remediation.jobs_enqueued")  # remediation was not started
    stop_ok(harness, run)


def test_sighup_rejects_a_broken_config_and_keeps_the_running_one(
    aws: Boto3Clients, daemons: MakeDaemon
) -> None:
    """A file that would drop the suppression but has an invalid key is rejected as a whole,
    with its key path; the running config stays; the failure is counted."""
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    harness = daemons(queue_urls=[url], extra=SUPPRESS_PIPELINE)
    run = harness.start()
    broken = harness.config_path.read_text().replace(SUPPRESS_PIPELINE, "") + (
        '\n[[rules]]\nid = "iam-delete-user-policy"\nseverity_success = "urgent"\n'
    )
    harness.config_path.write_text(broken)
    run.send(signal.SIGHUP)
    rejected = run.wait_for("config.reload_rejected")
    assert rejected["key"] == "rules[0].severity_success", rejected
    assert rejected["file"] == str(harness.config_path)
    assert "urgent" in rejected["reason"]
    assert rejected["level"] == "error"

    still = by_pipeline("DeleteRolePolicy")
    fresh = make_record("DeleteUserPolicy")
    put_records(aws, delivery_key(suffix="AfterBroken001"), [still, fresh])
    wait_detections(harness, {still["eventID"], fresh["eventID"]})
    wait_empty(aws, url, harness)
    found = detections_by_id(harness)
    assert found[still["eventID"]]["disposition"] == "suppressed"  # the running config stayed
    assert (found[fresh["eventID"]]["disposition"], found[fresh["eventID"]]["severity"]) == (
        "alert",
        "high",
    )
    base = base_url(harness)
    _, samples = scrape(base)
    assert sample(samples, "trailguard_config_reloads_total", outcome="success") == 0
    assert sample(samples, "trailguard_config_reloads_total", outcome="failure") == 1
    assert sample(samples, "trailguard_config_last_reload_successful") == 0
    assert http_get(f"{base}/readyz") == (200, "ready\n")
    assert run.proc.poll() is None
    stop_ok(harness, run)


# --------------------------------------------------------------------------- 4./5. remediation


class Trail:
    """CloudTrail records of what the test does in moto's IAM, in eventTime order."""

    def __init__(self) -> None:
        self._t = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=30)

    def rec(self, event_name: str, params: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self._t += dt.timedelta(seconds=5)
        kwargs.setdefault("event_time", self._t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        kwargs.setdefault("event_id", str(uuid.uuid4()))
        return make_record(event_name, params, **kwargs)


TRUST = json.dumps({"Version": "2012-10-17", "Statement": []})


def parn(name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{ACCOUNT}:policy{path}{name}"


def create_policy(
    iam: IAMClient, trail: Trail, name: str, document: str, path: str = "/"
) -> dict[str, Any]:
    created = iam.create_policy(PolicyName=name, Path=path, PolicyDocument=document)["Policy"]
    return trail.rec(
        "CreatePolicy",
        {"policyName": name, "path": path, "policyDocument": document},
        responseElements={
            "policy": {
                "policyName": name,
                "policyId": created["PolicyId"],
                "arn": created["Arn"],
                "path": path,
                "defaultVersionId": "v1",
                "attachmentCount": 0,
                "isAttachable": True,
            }
        },
    )


def arrange_iam(iam: IAMClient, trail: Trail) -> list[dict[str, Any]]:
    """Users, roles, groups and managed policies, created for real; the records of it."""
    records: list[dict[str, Any]] = []
    iam.create_user(UserName="alice")
    iam.create_user(UserName="bob")
    iam.create_user(UserName="carol")
    for role in ("app-role", "ci", "app", "lambda-exec"):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=TRUST)
    iam.create_group(GroupName="devs")
    iam.create_group(GroupName="ops")

    # Inline policies on a user, a role, a group (and carol's, removed by the pipeline).
    for kind, name, policy, doc in (
        ("User", "alice", "s3-guard", DOC_DENY_S3),
        ("Role", "app-role", "guard", DOC_DENY_EC2),
        ("Group", "devs", "deny-prod", DOC_DENY_S3),
        ("User", "carol", "pipeline-managed", DOC_DENY_EC2),
    ):
        getattr(iam, f"put_{kind.lower()}_policy")(
            **{f"{kind}Name": name, "PolicyName": policy, "PolicyDocument": doc}
        )
        records.append(
            trail.rec(
                f"Put{kind}Policy",
                {f"{kind.lower()}Name": name, "policyName": policy, "policyDocument": doc},
            )
        )

    # A managed policy attached to a role, a user and a group.
    records.append(create_policy(iam, trail, "Guardrail", DOC_DENY_S3, "/team/"))
    guardrail = parn("Guardrail", "/team/")
    for kind, name in (("Role", "ci"), ("User", "bob"), ("Group", "ops")):
        getattr(iam, f"attach_{kind.lower()}_policy")(
            **{f"{kind}Name": name, "PolicyArn": guardrail}
        )
        records.append(
            trail.rec(f"Attach{kind}Policy", {f"{kind.lower()}Name": name, "policyArn": guardrail})
        )

    # A policy with a second, non-default version.
    records.append(create_policy(iam, trail, "Boundary", DOC_DENY_S3))
    iam.create_policy_version(
        PolicyArn=parn("Boundary"), PolicyDocument=DOC_DENY_EC2, SetAsDefault=False
    )
    records.append(
        trail.rec(
            "CreatePolicyVersion",
            {"policyArn": parn("Boundary"), "policyDocument": DOC_DENY_EC2, "setAsDefault": False},
            responseElements={"policyVersion": {"versionId": "v2", "isDefaultVersion": False}},
        )
    )

    # A policy that will be deleted outright (detached first, as IAM requires).
    records.append(create_policy(iam, trail, "Retired", DOC_DENY_EC2, "/legacy/"))
    iam.attach_role_policy(RoleName="app", PolicyArn=parn("Retired", "/legacy/"))
    records.append(
        trail.rec("AttachRolePolicy", {"roleName": "app", "policyArn": parn("Retired", "/legacy/")})
    )

    # A role's permissions boundary.
    records.append(create_policy(iam, trail, "DevBoundary", DOC_DENY_S3))
    iam.put_role_permissions_boundary(
        RoleName="lambda-exec", PermissionsBoundary=parn("DevBoundary")
    )
    records.append(
        trail.rec(
            "PutRolePermissionsBoundary",
            {"roleName": "lambda-exec", "permissionsBoundary": parn("DevBoundary")},
        )
    )
    return records


def remove_iam(iam: IAMClient, trail: Trail) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The removals, done in moto; their records and the pipeline's (suppressed) one."""
    records: list[dict[str, Any]] = []
    for kind, name, policy in (
        ("User", "alice", "s3-guard"),
        ("Role", "app-role", "guard"),
        ("Group", "devs", "deny-prod"),
    ):
        getattr(iam, f"delete_{kind.lower()}_policy")(**{f"{kind}Name": name, "PolicyName": policy})
        records.append(
            trail.rec(f"Delete{kind}Policy", {f"{kind.lower()}Name": name, "policyName": policy})
        )
    guardrail = parn("Guardrail", "/team/")
    for kind, name in (("Role", "ci"), ("User", "bob"), ("Group", "ops")):
        getattr(iam, f"detach_{kind.lower()}_policy")(
            **{f"{kind}Name": name, "PolicyArn": guardrail}
        )
        records.append(
            trail.rec(f"Detach{kind}Policy", {f"{kind.lower()}Name": name, "policyArn": guardrail})
        )
    iam.delete_policy_version(PolicyArn=parn("Boundary"), VersionId="v2")
    records.append(
        trail.rec("DeletePolicyVersion", {"policyArn": parn("Boundary"), "versionId": "v2"})
    )
    retired = parn("Retired", "/legacy/")
    iam.detach_role_policy(RoleName="app", PolicyArn=retired)
    iam.delete_policy(PolicyArn=retired)
    records.append(trail.rec("DetachRolePolicy", {"roleName": "app", "policyArn": retired}))
    records.append(trail.rec("DeletePolicy", {"policyArn": retired}))
    iam.delete_role_permissions_boundary(RoleName="lambda-exec")
    records.append(trail.rec("DeleteRolePermissionsBoundary", {"roleName": "lambda-exec"}))

    iam.delete_user_policy(UserName="carol", PolicyName="pipeline-managed")
    pipeline = trail.rec(
        "DeleteUserPolicy",
        {"userName": "carol", "policyName": "pipeline-managed"},
        user_identity=iam_user_identity(PIPELINE_ARN),
    )
    return records, pipeline


def inline_doc(iam: IAMClient, kind: str, name: str, policy: str) -> object:
    try:
        got = getattr(iam, f"get_{kind}_policy")(
            **{f"{kind.capitalize()}Name": name, "PolicyName": policy}
        )
    except iam.exceptions.NoSuchEntityException:
        return None
    return got["PolicyDocument"]


def attached_arns(iam: IAMClient, kind: str, name: str) -> list[str]:
    listed = getattr(iam, f"list_attached_{kind}_policies")(**{f"{kind.capitalize()}Name": name})
    return sorted(p["PolicyArn"] for p in listed["AttachedPolicies"])


def managed_policy(iam: IAMClient, arn: str) -> object:
    """(path, [(document, is default) of every version]) or None when there is no policy."""
    try:
        policy = iam.get_policy(PolicyArn=arn)["Policy"]
    except iam.exceptions.NoSuchEntityException:
        return None
    versions = []
    for version in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
        got = iam.get_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
        document = json.dumps(got["PolicyVersion"]["Document"], sort_keys=True)
        versions.append((document, version["IsDefaultVersion"]))
    return policy["Path"], sorted(versions)


def iam_state(iam: IAMClient) -> dict[str, object]:
    """Everything the removals touched, as IAM reports it now."""
    return {
        "alice/s3-guard": inline_doc(iam, "user", "alice", "s3-guard"),
        "app-role/guard": inline_doc(iam, "role", "app-role", "guard"),
        "devs/deny-prod": inline_doc(iam, "group", "devs", "deny-prod"),
        "carol/pipeline-managed": inline_doc(iam, "user", "carol", "pipeline-managed"),
        "role ci": attached_arns(iam, "role", "ci"),
        "user bob": attached_arns(iam, "user", "bob"),
        "group ops": attached_arns(iam, "group", "ops"),
        "role app": attached_arns(iam, "role", "app"),
        "Boundary": managed_policy(iam, parn("Boundary")),
        "Retired": managed_policy(iam, parn("Retired", "/legacy/")),
        "lambda-exec boundary": iam.get_role(RoleName="lambda-exec")["Role"]
        .get("PermissionsBoundary", {})
        .get("PermissionsBoundaryArn"),
    }


def jobs_list(harness: DaemonHarness) -> list[dict[str, Any]]:
    """``trailguard jobs list --json`` as an operator runs it, next to the running daemon."""
    result = run_cli(
        "jobs", "list", "--json", "--limit", "1000", "--config", str(harness.config_path)
    )
    assert result.returncode == 0, result.stderr
    jobs: list[dict[str, Any]] = json.loads(result.stdout)
    return jobs


FINAL_STATES = {"succeeded", "dead", "skipped", "dry_run", "awaiting_approval"}


def wait_jobs(
    harness: DaemonHarness, run: DaemonRun, count: int, *, timeout: float = 60
) -> list[dict[str, Any]]:
    """The job list once ``count`` jobs exist and every one is in a final state."""

    def done() -> list[dict[str, Any]] | None:
        jobs = jobs_list(harness)
        if len(jobs) >= count and all(j["state"] in FINAL_STATES for j in jobs):
            return jobs
        return None

    return wait_until(
        done,
        timeout=timeout,
        interval=1.0,
        what=f"{count} remediation jobs to finish",
        context=lambda: (
            json.dumps(
                [(j["action"], j["state"], j["reason"], j["error"]) for j in jobs_list(harness)]
            )
            + "\n"
            + run.describe()
        ),
    )


def remediation_toml(mode: str, *, workers: int = 2, confirm_events: bool = True) -> str:
    # Every write is confirmed through CloudTrail LookupEvents; moto's answers HTTP 500, so the
    # proxy answers it from the records the test registers as real (proxy.serve_lookup_events).
    return f"""
[remediation]
mode = "{mode}"
workers = {workers}
confirm_events = {str(confirm_events).lower()}
poll_interval_secs = 0.5
max_attempts = 8
backoff_base_secs = 0.5
backoff_cap_secs = 2.0
iam_rate_per_sec = 50.0

[[remediation.policies]]
rules = ["*"]
min_severity = "low"
actions = [{ALL_RESTORES}]
{SUPPRESS_PIPELINE}"""


def job_metrics(samples: dict[Any, float]) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["action"], dict(labels)["state"]): value
        for (name, labels), value in samples.items()
        if name == "trailguard_remediation_jobs_total" and value
    }


def test_remediation_puts_back_every_removed_policy(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    iam = aws.iam
    trail = Trail()
    puts = arrange_iam(iam, trail)
    intact = iam_state(iam)
    removals, pipeline = remove_iam(iam, trail)
    removed = iam_state(iam)
    assert all(removed[k] != intact[k] for k in intact), removed

    # CloudTrail recorded all of it: LookupEvents confirms every event.
    cloudtrail = proxy.serve_lookup_events()
    cloudtrail.add(*puts, *removals, pipeline)

    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    harness = daemons(queue_urls=[url], extra=remediation_toml("enforce"))
    run = harness.start()
    assert run.events("daemon.started")[0]["remediation"] == "enforce"
    assert not run.events("remediation.confirm_events_off")
    base = base_url(harness)

    # CloudTrail delivers the puts first, then the removals (and an ordinary file with them).
    puts_key = delivery_key(stamp="20261101T1200Z", suffix="PolicyPuts00001")
    put_records(aws, puts_key, [noise_record(0), *puts])
    run.wait_for("s3.object_processed", key=puts_key)
    removals_key = delivery_key(stamp="20261101T1205Z", suffix="Removals0000001")
    put_records(aws, removals_key, [*removals, noise_record(1), pipeline])
    wait_detections(harness, {r["eventID"] for r in [*removals, pipeline]})

    jobs = wait_jobs(harness, run, len(removals))
    planned = sorted((j["action"], j["detection"]["event_name"]) for j in jobs)
    assert planned == sorted(
        [
            ("restore_inline_policy", "DeleteUserPolicy"),
            ("restore_inline_policy", "DeleteRolePolicy"),
            ("restore_inline_policy", "DeleteGroupPolicy"),
            ("reattach_managed_policy", "DetachRolePolicy"),
            ("reattach_managed_policy", "DetachUserPolicy"),
            ("reattach_managed_policy", "DetachGroupPolicy"),
            ("restore_policy_version", "DeletePolicyVersion"),
            ("reattach_managed_policy", "DetachRolePolicy"),
            ("recreate_managed_policy", "DeletePolicy"),
            ("restore_permissions_boundary", "DeleteRolePermissionsBoundary"),
        ]
    ), planned
    # Every document and attachment is back exactly; the pipeline's removal was left alone.
    expected = {**intact, "carol/pipeline-managed": None}
    assert iam_state(iam) == expected
    assert pipeline["eventID"] not in {j["detection"]["event_id"] for j in jobs}
    for job in jobs:
        assert job["state"] == "succeeded", job
        assert job["mode"] == "enforce"
        assert job["error"] is None
        steps = [entry["step"] for entry in job["audit"]]
        assert steps[0] == "planned", steps
        assert "before" in steps, steps  # live IAM state read first, every time
        if job["changed"]:
            assert {"did", "after"} <= set(steps), steps
            confirmed = [
                e["data"]["event_id"]
                for e in job["audit"]
                if (e["data"] or {}).get("confirmation") == "confirmed"
            ]
            assert job["detection"]["event_id"] in confirmed, job["audit"]
        else:
            assert "did" not in steps, steps
            assert job["reason"] == "already_in_place", job
    # The DeletePolicy's recreate reattaches what history recorded, so the job for the
    # DetachRolePolicy before it may find the attachment in place; every other job wrote.
    unchanged = [j for j in jobs if not j["changed"]]
    assert all(
        (j["action"], j["detection"]["target"]["name"]) == ("reattach_managed_policy", "app")
        for j in unchanged
    ), unchanged
    recreated = next(j for j in jobs if j["action"] == "recreate_managed_policy")
    assert "policy id" in json.dumps(recreated["audit"]).lower()

    # 5. The jobs in the metrics (mirrored from the runner every few seconds).
    succeeded = Counter(j["action"] for j in jobs)

    def counted() -> dict[tuple[str, str], float] | None:
        _, samples = scrape(base)
        got = job_metrics(samples)
        ok = {action: got.get((action, "succeeded"), 0) for action in succeeded}
        depth = sum(v for (n, _), v in samples.items() if n == "trailguard_remediation_queue_depth")
        return got if ok == dict(succeeded) and depth == 0 else None

    got = wait_until(counted, timeout=20, what="remediation job metrics", context=run.describe)
    assert not [k for k in got if k[1] in ("dead", "dry_run", "skipped", "awaiting_approval")]
    # At most the reattach to role app failed once, if it ran before the policy was recreated.
    assert {k: v for k, v in got.items() if k[1] == "failed"} in (
        {},
        {("reattach_managed_policy", "failed"): 1},
    ), got

    # A replayed duplicate (the removals file delivered again): nothing new, nothing changed.
    enqueued = len(run.events("remediation.jobs_enqueued"))
    replay_key = delivery_key(stamp="20261101T1210Z", suffix="ReplayedCopy001")
    put_records(aws, replay_key, removals)
    run.wait_for("s3.object_processed", key=replay_key)
    wait_empty(aws, url, harness)  # deleted: its jobs, if any, were durably enqueued before
    assert len(run.events("remediation.jobs_enqueued")) == enqueued
    again = jobs_list(harness)
    assert sorted((j["id"], j["state"], j["updated_at"]) for j in again) == sorted(
        (j["id"], j["state"], j["updated_at"]) for j in jobs
    )
    assert iam_state(iam) == expected
    stop_ok(harness, run)
    assert run.events("daemon.stopped")[0]["duplicates"] == len(removals)

    # A second run, in dry-run, over a fresh removal: the plan is recorded, IAM is untouched.
    harness.configure(dataclasses.replace(harness.config, extra=remediation_toml("dry-run")))
    rerun = harness.start()
    assert rerun.events("daemon.started")[0]["remediation"] == "dry-run"
    iam.delete_role_policy(RoleName="app-role", PolicyName="guard")
    fresh = trail.rec("DeleteRolePolicy", {"roleName": "app-role", "policyName": "guard"})
    cloudtrail.add(fresh)
    put_records(aws, delivery_key(stamp="20261101T1215Z", suffix="FreshRemoval001"), [fresh])
    wait_detections(harness, {fresh["eventID"]})
    jobs = wait_jobs(harness, rerun, len(removals) + 1)
    [dry] = [j for j in jobs if j["detection"]["event_id"] == fresh["eventID"]]
    assert (dry["action"], dry["state"], dry["mode"], dry["changed"]) == (
        "restore_inline_policy",
        "dry_run",
        "dry-run",
        False,
    ), dry
    plan = [entry for entry in dry["audit"] if entry["step"] == "plan"]
    assert len(plan) == 1, dry["audit"]
    assert plan[0]["what"].startswith("dry-run: would "), plan
    assert not [entry for entry in dry["audit"] if entry["step"] == "did"]
    assert iam_state(iam) == {**expected, "app-role/guard": None}
    wait_until(
        lambda: job_metrics(scrape(base)[1]).get(("restore_inline_policy", "dry_run")) == 1,
        timeout=20,
        what="the dry-run job in the metrics",
        context=rerun.describe,
    )

    # SIGHUP back to enforce, live: the next removal is put back.  The worker count is read
    # when the runner starts: reported as needing a restart, not pretended.
    harness.configure(
        dataclasses.replace(harness.config, extra=remediation_toml("enforce", workers=3))
    )
    rerun.send(signal.SIGHUP)
    reloaded = rerun.wait_for("config.reloaded")
    assert reloaded["applied"] == ["remediation"], reloaded
    assert reloaded["restart_required"] == ["remediation.workers"], reloaded
    iam.delete_group_policy(GroupName="devs", PolicyName="deny-prod")
    live = trail.rec("DeleteGroupPolicy", {"groupName": "devs", "policyName": "deny-prod"})
    cloudtrail.add(live)
    put_records(aws, delivery_key(stamp="20261101T1220Z", suffix="AfterLiveReload"), [live])
    jobs = wait_jobs(harness, rerun, len(removals) + 2)
    [enforced] = [j for j in jobs if j["detection"]["event_id"] == live["eventID"]]
    assert (enforced["state"], enforced["mode"], enforced["changed"]) == (
        "succeeded",
        "enforce",
        True,
    ), enforced
    assert iam_state(iam) == {**expected, "app-role/guard": None}  # the dry-run one stays
    stop_ok(harness, rerun)


ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


def test_a_forged_queue_message_is_reported_and_writes_nothing(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    """Issue 12 §1a with nothing but sqs:SendMessage: one EventBridge "AWS API Call via
    CloudTrail" body carrying a PutRolePolicy of an Allow-* document under the eventID of a real
    DeleteRolePolicy, sent before CloudTrail's file arrives."""
    iam = aws.iam
    trail = Trail()
    iam.create_role(RoleName="app-role", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName="app-role", PolicyName="guard", PolicyDocument=DOC_DENY_S3)
    params = {"roleName": "app-role", "policyName": "guard", "policyDocument": DOC_DENY_S3}
    put = trail.rec("PutRolePolicy", params)
    iam.delete_role_policy(RoleName="app-role", PolicyName="guard")
    delete = trail.rec("DeleteRolePolicy", {"roleName": "app-role", "policyName": "guard"})
    proxy.serve_lookup_events().add(put, delete)
    forged = {
        **put,
        "eventID": delete["eventID"],
        # two seconds before the removal, after the real put: history's latest put
        "eventTime": (
            dt.datetime.fromisoformat(delete["eventTime"].replace("Z", "+00:00"))
            - dt.timedelta(seconds=2)
        ).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "requestParameters": {**params, "policyDocument": ALLOW_ALL},
    }

    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    harness = daemons(queue_urls=[url], extra=remediation_toml("enforce"))
    run = harness.start()
    base = base_url(harness)
    aws.sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(
            {
                "version": "0",
                "id": "forged-1",
                "detail-type": "AWS API Call via CloudTrail",
                "source": "aws.iam",
                "account": ACCOUNT,
                "time": forged["eventTime"],
                "region": "us-east-1",
                "resources": [],
                "detail": forged,
            }
        ),
    )
    wait_empty(aws, url, harness)
    put_records(aws, delivery_key(stamp="20261101T1200Z", suffix="RealDelivery001"), [put, delete])
    wait_detections(harness, {delete["eventID"]})
    [job] = [j for j in wait_jobs(harness, run, 1) if j["action"] == "restore_inline_policy"]
    assert job["state"] == "awaiting_approval", job
    assert job["reason"].startswith(f"conflict: eventID {delete['eventID']} seen with 2 ")
    assert not [e for e in job["audit"] if e["step"] == "did"]
    assert inline_doc(iam, "role", "app-role", "guard") is None
    # Reported: the log event, the flagged detection, the metric.
    conflict = run.wait_for("ledger.conflict", event_id=delete["eventID"])
    assert conflict["seen_via"] == ["eventbridge", "s3"]
    [detection] = [d for d in harness.detections() if d["event_id"] == delete["eventID"]]
    assert detection["forgery_suspected"] is True
    _, samples = scrape(base)
    assert sample(samples, "trailguard_forgery_suspected_total", path="s3") == 1
    assert sample(samples, "trailguard_forgery_suspected_total", path="eventbridge") == 0
    # `jobs show` puts the forged document in front of the operator, with the plan to approve.
    shown = run_cli("jobs", "show", job["id"], "--config", str(harness.config_path))
    assert shown.returncode == 0, shown.stderr
    assert f"--plan {job['plan_sha256']}" in shown.stdout
    assert ALLOW_ALL in shown.stdout, shown.stdout
    stop_ok(harness, run)

    # The same daemon told to trust the trail: it says so at start-up.  (The waiting job stays
    # waiting: only an operator moves it on -- `retry` does not apply to it.)
    harness.configure(
        dataclasses.replace(harness.config, extra=remediation_toml("enforce", confirm_events=False))
    )
    again = harness.start()
    [warning] = again.events("remediation.confirm_events_off")
    assert "restore_inline_policy" in warning["warning"]
    retried = run_cli("jobs", "retry", job["id"], "--config", str(harness.config_path))
    assert retried.returncode == 1  # awaiting_approval is not retryable; it waits for a human
    assert inline_doc(iam, "role", "app-role", "guard") is None
    stop_ok(harness, again)


# --------------------------------------------------------------------------- hostile records


def test_a_hostile_record_never_hides_the_removal_beside_it(
    aws: Boto3Clients, daemons: MakeDaemon, proxy: FaultProxy
) -> None:
    """Issue 12: one record with bytes that are not UTF-8 (which msgspec 0.23 rejects with the
    whole document) and one with a grammar error, delivered through S3 and SQS: the real
    removal between them is detected, the two are counted and named, the message is deleted."""
    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    harness = daemons(queue_urls=[url], extra=SUPPRESS_PIPELINE)
    run = harness.start()
    removal = make_record("DeleteUserPolicy")
    before = json.dumps(noise_record(0), separators=(",", ":")).encode()
    middle = json.dumps(removal, separators=(",", ":")).encode()
    after = json.dumps(noise_record(2), separators=(",", ":")).encode()
    before = before.replace(b'"eventName":"', b'"eventName":"\xff', 1)
    after = after[:-1] + b',"a":1 2}'
    text = b'{"Records":[' + before + b"," + middle + b"," + after + b"]}"
    put(aws, delivery_key(suffix="HostileFile0001"), gzip.compress(text))
    wait_detections(harness, {removal["eventID"]})
    wait_empty(aws, url, harness)
    _, samples = scrape(base_url(harness))
    assert sample(samples, "trailguard_records_scanned_total") == 3
    assert sample(samples, "trailguard_records_invalid_total") == 2
    [event] = run.events("s3.records_invalid")
    assert event["count"] == 2
    assert event["first"][0] == "record 0: a string is not valid UTF-8"
    assert event["first"][1].startswith("record 2: invalid JSON: unexpected '2'")
