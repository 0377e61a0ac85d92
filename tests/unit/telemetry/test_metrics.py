"""The Prometheus metrics: naming rules, zero-initialised label sets, bounded label values."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from trailguard.config import parse_config
from trailguard.detect.detection import (
    Actor,
    Detection,
    EventBridgeSource,
    FileSource,
    S3Source,
    Source,
    Target,
)
from trailguard.detect.rules import OUTCOMES, POLICY_REMOVAL_EVENTS, SEVERITIES
from trailguard.telemetry.metrics import (
    DISPOSITIONS,
    JOB_ACTIONS,
    JOB_STATES,
    MAX_ERROR_SERIES,
    MESSAGE_OUTCOMES,
    OBJECT_OUTCOMES,
    QUEUED_JOB_STATES,
    REJECT_REASONS,
    Metrics,
)
from trailguard.vocabulary import CHANGE_COUNTS, CHANGE_KINDS

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/trail"
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z

# Label names whose values could be unbounded; none may appear on any trailguard metric.
FORBIDDEN_LABELS = {
    "event_id",
    "eventid",
    "arn",
    "actor_arn",
    "principal",
    "user",
    "key",
    "bucket",
    "object",
    "ip",
    "source_ip",
    "message_id",
    "receipt_handle",
    "url",
    "queue_url",
    "access_key_id",
}
ALLOWED_LABELS = {
    "queue",
    "outcome",
    "reason",
    "event_name",
    "severity",
    "disposition",
    "stage",
    "type",
    "action",
    "state",
    "path",
    "account",
    "region",
    "version",
    "python",
    "le",
    "kind",
    "verdict",
}


def families(metrics: Metrics) -> dict[str, Metric]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def samples(metrics: Metrics, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called ``name`` whose labels include ``labels``."""
    found = []
    for family in families(metrics).values():
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                found.append((sample.labels, sample.value))
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float:
    matched = [
        v
        for lbl, v in samples(metrics, name, **labels)
        if set(lbl) - {"le"} == set(labels) - {"le"}
    ]
    assert len(matched) == 1, (name, labels, matched)
    return matched[0]


def detection(
    *,
    event_name: str | None = "DeleteRolePolicy",
    outcome: Any = "success",
    severity: str = "high",
    disposition: Any = "alert",
    account_id: str | None = "123456789012",
    aws_region: str | None = "us-east-1",
    event_time: str | None = "2027-01-15T07:55:00Z",
    source: Source | None = None,
) -> Detection:
    return Detection(
        event_id="0b3e5d1c-0000-4000-8000-000000000001",
        event_time=event_time,
        event_name=event_name,
        event_source="iam.amazonaws.com",
        aws_region=aws_region,
        account_id=account_id,
        actor=Actor(
            type="IAMUser",
            arn="arn:aws:iam::123456789012:user/mallory",
            principal_id="AIDAEXAMPLE",
            access_key_id="AKIAEXAMPLE",
            mfa_authenticated=False,
            session_issuer_arn=None,
            invoked_by=None,
            source_ip="203.0.113.7",
            user_agent="aws-cli/2.15.0",
        ),
        target=Target(
            kind="role", name="app", policy_name="inline", policy_arn=None, version_id=None
        ),
        outcome=outcome,
        error_code=None,
        severity=severity,
        rule="iam-delete-role-policy",
        disposition=disposition,
        suppressed_by=None,
        source=source or S3Source(bucket="trail", key="AWSLogs/123456789012/CloudTrail/x.json.gz"),
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(queues=["trail", "events"], queue_aliases={QUEUE_URL: "trail"})


# --------------------------------------------------------------------------------------------
# Naming rules
# --------------------------------------------------------------------------------------------


def trailguard_families(metrics: Metrics) -> Iterable[Metric]:
    return (f for name, f in families(metrics).items() if name.startswith("trailguard_"))


def test_every_metric_follows_the_naming_rules(metrics: Metrics) -> None:
    found = list(trailguard_families(metrics))
    assert len(found) >= 25
    for family in found:
        name = family.name
        assert re.fullmatch(r"trailguard_[a-z0-9_]+", name), name
        assert family.documentation, f"{name} has no HELP text"
        # The text parser strips _total from counter family names; each sample keeps it.
        if family.type == "counter":
            assert {s.name for s in family.samples} <= {f"{name}_total"}, name
        else:
            assert not name.endswith("_total"), f"{name} is a {family.type} named like a counter"
        if family.type == "histogram":
            assert name.endswith(("_seconds", "_bytes")), name
        # Base units only.
        assert not re.search(r"_(ms|milliseconds|minutes|hours|kb|mb|kilobytes)(_|$)", name)
        words = set(name.split("_"))
        if words & {"time", "timestamp", "age", "lag", "latency", "duration", "processing"}:
            assert name.endswith("_seconds"), name


def test_every_label_is_bounded(metrics: Metrics) -> None:
    # Record one of everything first, so labels created on demand are present too.
    exercise(metrics)
    for family in trailguard_families(metrics):
        for sample in family.samples:
            names = set(sample.labels)
            assert not names & FORBIDDEN_LABELS, (sample.name, names)
            assert names <= ALLOWED_LABELS, (sample.name, names - ALLOWED_LABELS)
            for label_value in sample.labels.values():
                assert "arn:" not in label_value
                assert "/" not in label_value or sample.name.startswith("trailguard_build")
                assert "203.0.113" not in label_value


def exercise(metrics: Metrics) -> None:
    metrics.message_received(QUEUE_URL, sent_timestamp_ms=int((NOW - 30) * 1000), now=NOW)
    metrics.message_handled("trail", "deleted")
    metrics.message_rejected("trail", "bucket_not_allowed")
    metrics.visibility_extended("trail")
    metrics.poll_succeeded("trail", at=NOW)
    metrics.object_processed("ok", 1234, 0.5, account="123456789012", region="eu-west-1")
    metrics.records(100, invalid=1)
    metrics.detection(detection(), sent_timestamp_ms=int((NOW - 2) * 1000), now=NOW)
    metrics.duplicates_dropped(2)
    metrics.policy_change("inline", "weakened")
    metrics.error("s3_get", "NoSuchKey")
    metrics.remediation_job("restore_inline_policy", "succeeded")
    metrics.remediation_queue({"pending": 3}, 42.0)
    metrics.config_reloaded(True)


def test_build_info(metrics: Metrics) -> None:
    ((labels, v),) = samples(metrics, "trailguard_build_info")
    assert v == 1
    assert labels["version"]
    assert re.fullmatch(r"3\.\d+\.\d+.*", labels["python"])


def test_no_created_series(metrics: Metrics) -> None:
    body, _ = metrics.render()
    assert b"_created" not in body


def test_openmetrics_when_asked(metrics: Metrics) -> None:
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_each_metrics_has_its_own_registry() -> None:
    a, b = Metrics(process_collectors=False), Metrics(process_collectors=False)
    a.records(5)
    assert value(a, "trailguard_records_scanned_total") == 5
    assert value(b, "trailguard_records_scanned_total") == 0


def test_process_collectors_are_optional() -> None:
    assert "process_cpu_seconds" in families(Metrics())
    assert not any(n.startswith("process_") for n in families(Metrics(process_collectors=False)))


# --------------------------------------------------------------------------------------------
# Label sets initialised to zero
# --------------------------------------------------------------------------------------------


def test_queue_label_sets_start_at_zero(metrics: Metrics) -> None:
    for queue in ("trail", "events"):
        assert value(metrics, "trailguard_sqs_messages_received_total", queue=queue) == 0
        assert value(metrics, "trailguard_sqs_visibility_extensions_total", queue=queue) == 0
        assert (
            value(metrics, "trailguard_sqs_last_successful_poll_timestamp_seconds", queue=queue)
            == 0
        )
        assert value(metrics, "trailguard_sqs_message_age_seconds_count", queue=queue) == 0
        for outcome in MESSAGE_OUTCOMES:
            assert (
                value(
                    metrics, "trailguard_sqs_messages_handled_total", queue=queue, outcome=outcome
                )
                == 0
            )
    assert not samples(metrics, "trailguard_sqs_messages_received_total", queue="other")
    found = samples(metrics, "trailguard_sqs_messages_rejected_total")
    assert {(lbl["queue"], lbl["reason"]) for lbl, _ in found} == {
        (q, r) for q in ("trail", "events") for r in ("too_many_objects", "bucket_not_allowed")
    }
    assert all(v == 0 for _, v in found)
    assert "rejected" in MESSAGE_OUTCOMES


def test_rejected_messages(metrics: Metrics) -> None:
    metrics.message_rejected(QUEUE_URL, "too_many_objects")
    metrics.message_rejected("trail", "too_many_objects")
    metrics.message_rejected("events", "bucket_not_allowed")
    metrics.message_rejected("trail", "whatever")  # type: ignore[arg-type]
    metrics.message_handled("trail", "rejected")
    assert REJECT_REASONS == ("too_many_objects", "bucket_not_allowed")
    rejected = "trailguard_sqs_messages_rejected_total"
    assert value(metrics, rejected, queue="trail", reason="too_many_objects") == 2
    assert value(metrics, rejected, queue="trail", reason="bucket_not_allowed") == 0
    assert value(metrics, rejected, queue="events", reason="bucket_not_allowed") == 1
    assert not samples(metrics, rejected, reason="whatever")
    handled = "trailguard_sqs_messages_handled_total"
    assert value(metrics, handled, queue="trail", outcome="rejected") == 1


def test_object_and_path_label_sets_start_at_zero(metrics: Metrics) -> None:
    for outcome in OBJECT_OUTCOMES:
        assert value(metrics, "trailguard_s3_objects_total", outcome=outcome) == 0
    for path in ("s3", "eventbridge", "file"):
        assert value(metrics, "trailguard_delivery_lag_seconds_count", path=path) == 0


def test_detection_label_sets_start_at_zero(metrics: Metrics) -> None:
    found = samples(metrics, "trailguard_detections_total")
    names = POLICY_REMOVAL_EVENTS | {"other"}
    expected = {
        (n, o, s, d) for n in names for o in OUTCOMES for s in SEVERITIES for d in DISPOSITIONS
    }
    assert {
        (lbl["event_name"], lbl["outcome"], lbl["severity"], lbl["disposition"]) for lbl, _ in found
    } == expected
    assert all(v == 0 for _, v in found)


def test_remediation_label_sets_start_at_zero(metrics: Metrics) -> None:
    found = samples(metrics, "trailguard_remediation_jobs_total")
    assert {(lbl["action"], lbl["state"]) for lbl, _ in found} == {
        (a, s) for a in JOB_ACTIONS for s in JOB_STATES
    }
    assert all(v == 0 for _, v in found)
    for state in QUEUED_JOB_STATES:
        assert value(metrics, "trailguard_remediation_queue_depth", state=state) == 0
    assert value(metrics, "trailguard_remediation_oldest_pending_age_seconds") == 0


def test_policy_change_label_sets_start_at_zero_and_count(metrics: Metrics) -> None:
    name = "trailguard_policy_changes_total"
    found = samples(metrics, name)
    assert {(lbl["kind"], lbl["verdict"]) for lbl, _ in found} == {
        (k, v) for k in CHANGE_KINDS for v in CHANGE_COUNTS
    }
    assert all(v == 0 for _, v in found)
    assert set(CHANGE_COUNTS) == {
        "weakened",
        "possibly_weakened",
        "not_weakened",
        "baseline_unknown",
    }
    metrics.policy_change("inline", "weakened")
    metrics.policy_change("boundary", "baseline_unknown")
    metrics.policy_change("boundary", "baseline_unknown")
    metrics.policy_change("???", "unheard-of")
    assert value(metrics, name, kind="inline", verdict="weakened") == 1
    assert value(metrics, name, kind="boundary", verdict="baseline_unknown") == 2
    assert value(metrics, name, kind="other", verdict="other") == 1


def test_config_reload_label_sets_start_at_zero(metrics: Metrics) -> None:
    for outcome in ("success", "failure"):
        assert value(metrics, "trailguard_config_reloads_total", outcome=outcome) == 0
    assert value(metrics, "trailguard_config_last_reload_successful") == 1


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------


def test_sqs_metrics(metrics: Metrics) -> None:
    metrics.message_received(QUEUE_URL, sent_timestamp_ms=int((NOW - 90) * 1000), now=NOW)
    metrics.message_received("trail")
    metrics.message_handled(QUEUE_URL, "deleted")
    metrics.message_handled("trail", "left_for_redrive")
    metrics.visibility_extended("trail")
    metrics.poll_succeeded(QUEUE_URL, at=NOW)
    in_flight = [3]
    metrics.watch_in_flight(messages=lambda: in_flight[0])
    assert value(metrics, "trailguard_sqs_messages_received_total", queue="trail") == 2
    assert (
        value(metrics, "trailguard_sqs_messages_handled_total", queue="trail", outcome="deleted")
        == 1
    )
    assert (
        value(
            metrics,
            "trailguard_sqs_messages_handled_total",
            queue="trail",
            outcome="left_for_redrive",
        )
        == 1
    )
    assert value(metrics, "trailguard_sqs_visibility_extensions_total", queue="trail") == 1
    assert (
        value(metrics, "trailguard_sqs_last_successful_poll_timestamp_seconds", queue="trail")
        == NOW
    )
    assert value(metrics, "trailguard_sqs_messages_in_flight") == 3
    # One age observation (90 s), in the 120 s bucket and not the 60 s one.
    assert value(metrics, "trailguard_sqs_message_age_seconds_count", queue="trail") == 1
    assert (
        value(metrics, "trailguard_sqs_message_age_seconds_bucket", queue="trail", le="60.0") == 0
    )
    assert (
        value(metrics, "trailguard_sqs_message_age_seconds_bucket", queue="trail", le="120.0") == 1
    )


def test_unknown_queue_is_other_and_unknown_outcome_is_failed(metrics: Metrics) -> None:
    metrics.message_received("https://sqs.eu-west-1.amazonaws.com/999999999999/unknown")
    metrics.message_handled("trail", "exploded")  # type: ignore[arg-type]
    assert value(metrics, "trailguard_sqs_messages_received_total", queue="other") == 1
    assert (
        value(metrics, "trailguard_sqs_messages_handled_total", queue="trail", outcome="failed")
        == 1
    )


def test_object_metrics(metrics: Metrics) -> None:
    metrics.object_processed("ok", 2048, 0.2, account="123456789012", region="eu-west-1")
    metrics.object_processed("skipped_digest")
    metrics.object_processed("failed_permanent", 0)
    metrics.object_processed("weird")  # type: ignore[arg-type]
    held = {"objects": 1, "bytes": 4096}
    metrics.watch_in_flight(objects=lambda: held["objects"], held_bytes=lambda: held["bytes"])
    assert value(metrics, "trailguard_s3_objects_in_flight") == 1
    assert value(metrics, "trailguard_s3_object_bytes_in_flight_bytes") == 4096
    held.update(objects=0, bytes=0)  # read at each scrape, not when set
    assert value(metrics, "trailguard_s3_objects_in_flight") == 0
    assert value(metrics, "trailguard_s3_object_bytes_in_flight_bytes") == 0
    assert value(metrics, "trailguard_s3_objects_total", outcome="ok") == 1
    assert value(metrics, "trailguard_s3_objects_total", outcome="skipped_digest") == 1
    assert value(metrics, "trailguard_s3_objects_total", outcome="failed_permanent") == 2
    assert value(metrics, "trailguard_s3_object_bytes_total") == 2048
    assert value(metrics, "trailguard_s3_object_processing_seconds_count") == 1
    assert (
        value(
            metrics,
            "trailguard_s3_objects_by_account_total",
            account="123456789012",
            region="eu-west-1",
        )
        == 1
    )


def test_records(metrics: Metrics) -> None:
    metrics.records(1000, invalid=3)
    metrics.records(0)
    assert value(metrics, "trailguard_records_scanned_total") == 1000
    assert value(metrics, "trailguard_records_invalid_total") == 3


def test_detection_counts_lag_and_latency(metrics: Metrics) -> None:
    metrics.detection(detection(), sent_timestamp_ms=int((NOW - 1.5) * 1000), now=NOW)
    labels = {
        "event_name": "DeleteRolePolicy",
        "outcome": "success",
        "severity": "high",
        "disposition": "alert",
    }
    assert value(metrics, "trailguard_detections_total", **labels) == 1
    assert (
        value(
            metrics,
            "trailguard_detections_by_account_total",
            account="123456789012",
            region="us-east-1",
        )
        == 1
    )
    # eventTime 5 minutes before NOW: in the 300 s bucket, not the 120 s one.
    assert value(metrics, "trailguard_delivery_lag_seconds_sum", path="s3") == 300
    assert value(metrics, "trailguard_delivery_lag_seconds_bucket", path="s3", le="120.0") == 0
    assert value(metrics, "trailguard_delivery_lag_seconds_bucket", path="s3", le="300.0") == 1
    assert value(metrics, "trailguard_detection_latency_seconds_count") == 1
    assert value(metrics, "trailguard_detection_latency_seconds_sum") == pytest.approx(1.5)


def test_detection_paths_and_missing_fields(metrics: Metrics) -> None:
    metrics.detection(detection(source=EventBridgeSource(queue="q", message_id="m")), now=NOW)
    metrics.detection(detection(source=FileSource(file="x.json.gz"), event_time=None), now=NOW)
    metrics.detection(detection(event_time="not a time"), now=NOW)
    metrics.detection(detection(event_time="2027-01-15T08:00:30Z"), now=NOW)  # clock skew
    assert value(metrics, "trailguard_delivery_lag_seconds_count", path="eventbridge") == 1
    assert value(metrics, "trailguard_delivery_lag_seconds_count", path="file") == 0
    assert value(metrics, "trailguard_delivery_lag_seconds_count", path="s3") == 1
    assert value(metrics, "trailguard_delivery_lag_seconds_sum", path="s3") == 0  # clamped
    assert value(metrics, "trailguard_detection_latency_seconds_count") == 0


def test_event_names_outside_the_rules_are_other(metrics: Metrics) -> None:
    metrics.detection(detection(event_name="DeleteBucket"), now=NOW)
    metrics.detection(detection(event_name=None), now=NOW)
    other = {"event_name": "other", "outcome": "success", "severity": "high"}
    assert value(metrics, "trailguard_detections_total", disposition="alert", **other) == 2
    assert not samples(metrics, "trailguard_detections_total", event_name="DeleteBucket")


def test_event_names_follow_the_config() -> None:
    config = parse_config(
        '[[rules]]\nid = "iam-delete-policy-version"\nenabled = false\n'
        '[[rules]]\nid = "org-detach"\nevent_names = ["DetachPolicy"]\n'
        'event_source = "organizations.amazonaws.com"\n'
        f'[[sources.sqs]]\nqueue_url = "{QUEUE_URL}"\nname = "org"\n'
        "[metrics]\naccount_labels = false\n",
        file="t.toml",
    )
    m = Metrics.from_config(config, process_collectors=False)
    assert "DetachPolicy" in m.event_names
    assert "DeletePolicyVersion" not in m.event_names
    assert m.queue_labels == ("org",)
    m.message_received(QUEUE_URL)
    assert value(m, "trailguard_sqs_messages_received_total", queue="org") == 1
    assert samples(m, "trailguard_detections_total", event_name="DetachPolicy")
    assert not samples(m, "trailguard_detections_total", event_name="DeletePolicyVersion")
    # account_labels = false: the per-account counters stay empty.
    m.detection(detection(event_name="DetachPolicy"), now=NOW)
    m.object_processed("ok", 10, 0.1, account="123456789012", region="us-east-1")
    assert not samples(m, "trailguard_detections_by_account_total")
    assert not samples(m, "trailguard_s3_objects_by_account_total")
    assert "trailguard_detections_by_account" in families(m)  # still declared


def test_set_event_names_on_reload(metrics: Metrics) -> None:
    metrics.detection(detection(event_name="DeleteRolePolicy"), now=NOW)
    metrics.set_event_names({"DetachPolicy"})
    assert samples(metrics, "trailguard_detections_total", event_name="DetachPolicy")
    # The old series keeps its count; new detections of that name count as other.
    metrics.detection(detection(event_name="DeleteRolePolicy"), now=NOW)
    labels = {"outcome": "success", "severity": "high", "disposition": "alert"}
    assert (
        value(metrics, "trailguard_detections_total", event_name="DeleteRolePolicy", **labels) == 1
    )
    assert value(metrics, "trailguard_detections_total", event_name="other", **labels) == 1


def test_account_labels_are_validated_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Metrics(process_collectors=False)
    m.detection(detection(account_id="not-an-account", aws_region="../etc"), now=NOW)
    assert value(m, "trailguard_detections_by_account_total", account="other", region="other") == 1
    monkeypatch.setattr("trailguard.telemetry.metrics.MAX_ACCOUNT_SERIES", 3)
    for i in range(10):
        m.detection(detection(account_id=f"{i:012d}"), now=NOW)
    accounts = {lbl["account"] for lbl, _ in samples(m, "trailguard_detections_by_account_total")}
    assert len(accounts) <= 4  # the cap, plus other
    assert "other" in accounts


def test_errors_are_bounded(metrics: Metrics) -> None:
    metrics.error("s3_get", "NoSuchKey")
    metrics.error("s3_get", "NoSuchKey")
    metrics.error("somewhere", "arn:aws:iam::123456789012:user/x")
    assert value(metrics, "trailguard_errors_total", stage="s3_get", type="NoSuchKey") == 2
    assert value(metrics, "trailguard_errors_total", stage="other", type="other") == 1
    for i in range(MAX_ERROR_SERIES + 50):
        metrics.error("decode", f"Reason{i}")
    assert len(samples(metrics, "trailguard_errors_total")) <= MAX_ERROR_SERIES + 1


def test_duplicates_and_remediation(metrics: Metrics) -> None:
    metrics.duplicates_dropped(4)
    metrics.duplicates_dropped(0)
    metrics.remediation_job("restore_inline_policy", "running")
    metrics.remediation_job("restore_inline_policy", "succeeded")
    metrics.remediation_queue({"pending": 2, "awaiting_approval": 1}, 75.0)
    assert value(metrics, "trailguard_duplicates_dropped_total") == 4
    assert (
        value(
            metrics,
            "trailguard_remediation_jobs_total",
            action="restore_inline_policy",
            state="succeeded",
        )
        == 1
    )
    assert value(metrics, "trailguard_remediation_queue_depth", state="pending") == 2
    assert value(metrics, "trailguard_remediation_queue_depth", state="running") == 0
    assert value(metrics, "trailguard_remediation_oldest_pending_age_seconds") == 75
    metrics.remediation_queue({}, None)
    assert value(metrics, "trailguard_remediation_queue_depth", state="pending") == 0
    assert value(metrics, "trailguard_remediation_oldest_pending_age_seconds") == 0


def test_config_reload(metrics: Metrics) -> None:
    metrics.config_reloaded(False)
    assert value(metrics, "trailguard_config_reloads_total", outcome="failure") == 1
    assert value(metrics, "trailguard_config_last_reload_successful") == 0
    metrics.config_reloaded(True)
    assert value(metrics, "trailguard_config_last_reload_successful") == 1
