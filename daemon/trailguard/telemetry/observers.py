"""What each event of :mod:`trailguard.observe` means to its three readers: Prometheus
(:class:`MetricsObserver`), the exit summary (:class:`Tally`) and the log (:class:`LogObserver`).

The parts that emit events know none of these; the composition root (app.py) builds an
:class:`~trailguard.observe.Observers` of the three and hands it out.  A new metric or log line
for something that already has an event is a change here only.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from trailguard.observe import (
    CircuitOpened,
    ConfigReloaded,
    ConfigReloadRejected,
    DedupRecorded,
    DetectionCommitted,
    DuplicatesDropped,
    Event,
    EventBridgeRecordRead,
    FactsRecorded,
    ForgerySuspected,
    JobFinished,
    JobLeaseLost,
    JobQueueSampled,
    JobsEnqueued,
    MessageFailed,
    MessageFinished,
    MessageLeftForRedrive,
    MessageReceived,
    MessageRejected,
    MessageReleased,
    MessageUnrecognised,
    ObjectFailed,
    ObjectProcessed,
    ObjectSkipped,
    Observer,
    Observers,
    PolicyChangeJudged,
    PollFailed,
    PollSucceeded,
    TestEventAcknowledged,
    VisibilityExtended,
    VisibilityExtendFailed,
)
from trailguard.telemetry.logging import get_logger

if TYPE_CHECKING:  # not at run time: a local replay reports to the log only, without Prometheus
    from trailguard.telemetry.metrics import Metrics

__all__ = ["LogObserver", "MetricsObserver", "Tally", "standard_observers"]

_ingest = get_logger("trailguard.ingest")
_remediation = get_logger("trailguard.remediate")
_config = get_logger("trailguard.config")
_observe = get_logger("trailguard.observe")


class MetricsObserver:
    """Events -> Prometheus, through :class:`~trailguard.telemetry.metrics.Metrics` (which
    bounds every label value)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def observe(self, event: Event) -> None:
        m = self.metrics
        match event:
            case PollSucceeded():
                m.poll_succeeded(event.queue, at=event.at)
            case PollFailed(error=error):
                m.error(error.stage, error.reason)
            case MessageReceived():
                m.message_received(event.queue, sent_timestamp_ms=event.sent_timestamp_ms)
            case MessageFinished():
                m.message_handled(event.queue, event.outcome)
            case MessageFailed():
                m.error(event.stage, event.error_type)
            case MessageUnrecognised():
                m.error("parse", "unrecognised_body")
            case MessageRejected():
                m.message_rejected(event.queue, event.reason)
            case VisibilityExtended():
                m.visibility_extended(event.queue)
            case VisibilityExtendFailed(error=error):
                m.error(error.stage, error.reason)
            case ObjectSkipped():
                m.object_processed(event.outcome)
            case ObjectProcessed():
                m.records(event.records, invalid=event.bad_records)
                m.object_processed(
                    event.outcome,
                    event.size_bytes,
                    event.seconds,
                    account=event.account,
                    region=event.region,
                )
            case ObjectFailed(error=error):
                m.object_processed("failed_transient" if error.transient else "failed_permanent")
                m.error(error.stage, error.reason)
            case EventBridgeRecordRead():
                m.records(1)
            case ForgerySuspected():
                m.forgery_suspected_in(event.path)
            case PolicyChangeJudged():
                m.policy_change(event.kind, event.verdict)
            case DetectionCommitted():
                m.detection(event.detection, sent_timestamp_ms=event.sent_timestamp_ms)
            case DuplicatesDropped():
                m.duplicates_dropped(event.count)
            case DedupRecorded():
                m.dedup_recorded(event.window_secs, event.taken_over)
            case JobFinished(job=job):
                m.remediation_job(job.action, job.state)
            case CircuitOpened():
                m.error("remediation", "circuit_open")
            case JobQueueSampled():
                m.remediation_queue(event.depth, event.oldest_pending_age_secs)
            case ConfigReloaded():
                m.config_reloaded(True)
            case ConfigReloadRejected():
                m.config_reloaded(False)
            case _:
                pass


class Tally:
    """Counts for the daemon's exit summary (``daemon.stopped``), benchmarks and tests."""

    def __init__(self) -> None:
        self.messages: Counter[str] = Counter()  # outcome (and received, visibility_extended)
        self.objects: Counter[str] = Counter()  # outcome
        self.records = 0
        self.bytes_compressed = 0
        self.detections = 0
        self.duplicates = 0
        self.facts = 0
        self.changes: Counter[str] = Counter()  # policy changes by verdict
        self.conflicts = 0
        self.jobs = 0
        self.errors: Counter[tuple[str, str]] = Counter()  # (stage, reason)
        self.jobs_finished: Counter[tuple[str, str]] = Counter()  # (action, state entered)
        self.findings: Counter[str] = Counter()  # finding code
        self.circuit_open = 0
        self.lease_lost = 0
        self.taken_over = 0  # dedup claims taken over after another writer's lease

    def observe(self, event: Event) -> None:
        match event:
            case MessageReceived():
                self.messages["received"] += 1
            case MessageFinished():
                self.messages[event.outcome] += 1
            case VisibilityExtended():
                self.messages["visibility_extended"] += 1
            case PollFailed(error=error) | VisibilityExtendFailed(error=error):
                self.errors[(error.stage, error.reason)] += 1
            case MessageFailed():
                self.errors[(event.stage, event.error_type)] += 1
            case MessageUnrecognised():
                self.errors[("parse", "unrecognised_body")] += 1
            case ObjectSkipped():
                self.objects[event.outcome] += 1
            case ObjectProcessed():
                self.objects[event.outcome] += 1
                self.records += event.records
                self.bytes_compressed += event.size_bytes
            case ObjectFailed(error=error):
                self.objects["failed_transient" if error.transient else "failed_permanent"] += 1
                self.errors[(error.stage, error.reason)] += 1
            case EventBridgeRecordRead():
                self.records += 1
            case ForgerySuspected():
                self.conflicts += 1
            case FactsRecorded():
                self.facts += event.new
            case PolicyChangeJudged():
                self.changes[event.verdict] += 1
            case DetectionCommitted():
                self.detections += 1
            case DuplicatesDropped():
                self.duplicates += event.count
            case DedupRecorded():
                self.taken_over += event.taken_over
            case JobsEnqueued():
                self.jobs += event.count
            case JobFinished(job=job):
                self.jobs_finished[(job.action, job.state)] += 1
                for finding in job.findings:
                    self.findings[finding.code] += 1
            case JobLeaseLost():
                self.lease_lost += 1
            case CircuitOpened():
                self.circuit_open += 1
            case _:
                pass

    def summary(self) -> dict[str, object]:
        """What ``daemon.stopped`` logs."""
        return {
            "messages": dict(self.messages),
            "objects": dict(self.objects),
            "records": self.records,
            "detections": self.detections,
            "duplicates": self.duplicates,
            "dedup_taken_over": self.taken_over,
            "facts": self.facts,
            "policy_changes": dict(self.changes),
            "jobs": self.jobs,
        }


class LogObserver:
    """Events -> one structlog line each, with a stable event name (README lists them)."""

    def observe(self, event: Event) -> None:
        match event:
            case PollFailed(error=error):
                _ingest.error(
                    "sqs.receive_failed",
                    queue=event.queue,
                    reason=error.reason,
                    detail=error.detail,
                    transient=error.transient,
                    retry_in_secs=event.retry_in_secs,
                )
            case MessageFailed(crashed=True):
                _ingest.error(
                    "sqs.message_crashed",
                    queue=event.queue,
                    message_id=event.message_id,
                    error=event.error,
                    exc_info=event.exc,
                )
            case MessageFailed():
                _ingest.error(
                    "sqs.message_failed",
                    queue=event.queue,
                    message_id=event.message_id,
                    error=event.error,
                    error_type=event.error_type,
                )
            case MessageUnrecognised():
                _ingest.warning(
                    "sqs.message_unrecognised",
                    queue=event.queue,
                    message_id=event.message_id,
                    format=event.format,
                    reason=event.reason,
                    receive_count=event.receive_count,
                )
            case TestEventAcknowledged():
                _ingest.info(
                    "sqs.test_event_acknowledged",
                    queue=event.queue,
                    message_id=event.message_id,
                    format=event.format,
                )
            case MessageRejected():
                _ingest.warning(
                    "sqs.message_rejected",
                    queue=event.queue,
                    message_id=event.message_id,
                    reason=event.reason,
                    format=event.format,
                    receive_count=event.receive_count,
                    **event.fields,
                )
            case MessageReleased():
                level = _ingest.info if event.reason == "shutdown" else _ingest.warning
                level(
                    "sqs.message_released",
                    queue=event.queue,
                    message_id=event.message_id,
                    reason=event.reason,
                    retry_in_secs=event.retry_in_secs,
                    receive_count=event.receive_count,
                )
            case MessageLeftForRedrive():
                _ingest.warning(
                    "sqs.message_left_for_redrive",
                    queue=event.queue,
                    message_id=event.message_id,
                    receive_count=event.receive_count,
                    failed_objects=event.failed_objects,
                )
            case VisibilityExtended():
                _ingest.debug(
                    "sqs.visibility_extended", message_id=event.message_id, secs=event.secs
                )
            case VisibilityExtendFailed(error=error):
                _ingest.warning(
                    "sqs.visibility_extend_failed",
                    message_id=event.message_id,
                    reason=error.reason,
                    detail=error.detail,
                )
            case ObjectSkipped():
                _ingest.debug(
                    "s3.object_skipped", bucket=event.bucket, key=event.key, reason=event.reason
                )
            case ObjectProcessed():
                _object_processed(event)
            case ObjectFailed(error=error):
                _ingest.error(
                    "s3.object_failed",
                    bucket=event.bucket,
                    key=event.key,
                    stage=error.stage,
                    reason=error.reason,
                    detail=error.detail,
                    transient=error.transient,
                )
            case ForgerySuspected():
                _forgery_suspected(event)
            case FactsRecorded() if event.new:
                _ingest.debug("history.facts_recorded", new=event.new, seen=event.seen)
            case PolicyChangeJudged():
                _policy_change_judged(event)
            case DetectionCommitted():
                _detection(event)
            case DuplicatesDropped() if event.count:
                _ingest.debug("detection.duplicates_dropped", count=event.count)
            case JobFinished():
                _job_finished(event)
            case JobLeaseLost(job=job):
                _remediation.warning("remediation.lease_lost", job_id=job.id, action=job.action)
            case CircuitOpened(record=record):
                _remediation.warning(
                    "remediation.circuit_open",
                    job_id=record.job_id,
                    action=record.action,
                    target=record.target_key,
                    account_id=record.account_id,
                    restores_in_window=record.restores_in_window,
                    max_restores=record.max_restores,
                    window_secs=record.window_secs,
                )
            case ConfigReloaded():
                _config.info(
                    "config.reloaded",
                    applied=list(event.applied),
                    restart_required=list(event.restart_required),
                )
            case ConfigReloadRejected():
                _config.error(
                    "config.reload_rejected",
                    file=event.file,
                    key=event.key,
                    reason=event.reason,
                    keeping="the running config",
                )
            case _:
                pass


def _object_processed(event: ObjectProcessed) -> None:
    _ingest.info(
        "s3.object_processed",
        bucket=event.bucket,
        key=event.key,
        records=event.records,
        candidates=event.candidates,
        detections=event.detections,
        facts=event.facts,
        bad_records=event.bad_records,
        bytes=event.size_bytes,
        duration_secs=round(event.seconds, 4),
    )
    if event.bad_records:
        # which records, and why: each bad record is its own problem, never its neighbours'
        _ingest.warning(
            "s3.records_invalid",
            bucket=event.bucket,
            key=event.key,
            count=event.bad_records,
            first=list(event.first_bad_records),
        )


def _forgery_suspected(event: ForgerySuspected) -> None:
    conflict = event.conflict
    _ingest.warning(
        "ledger.conflict",
        event_id=conflict.event_id,
        path=event.path,
        contents=len(conflict.entries),
        event_names=[entry.event_name for entry in conflict.entries],
        digests=list(conflict.digests),
        seen_via=[entry.path for entry in conflict.entries],
        account_id=next((e.account_id for e in conflict.entries if e.account_id), None),
        meaning="one of these records is forged: neither is ever a source for a write",
    )


def _policy_change_judged(event: PolicyChangeJudged) -> None:
    # A weakening (reported or not) is news; a proven harmless change or one without a
    # baseline is routine (the metric counts them).
    level = _ingest.info if event.verdict in ("weakened", "possibly_weakened") else _ingest.debug
    level(
        "policy.change_judged",
        event_id=event.event_id,
        event_name=event.event_name,
        kind=event.kind,
        verdict=event.verdict,
        reason=event.reason,
        reported=event.reported,
        account_id=event.account_id,
        target=event.target,
        policy=event.policy,
        previous_event_id=event.previous_event_id,
        steps=event.steps,
        duration_secs=round(event.duration_secs, 4),
    )


def _detection(event: DetectionCommitted) -> None:
    d = event.detection
    _ingest.info(
        "detection",
        event_id=d.event_id,
        event_name=d.event_name,
        outcome=d.outcome,
        severity=d.severity,
        disposition=d.disposition,
        suppressed_by=d.suppressed_by,
        forgery_suspected=d.forgery_suspected,
        rule=d.rule,
        change=d.change.verdict if d.change is not None else None,
        account_id=d.account_id,
        actor_arn=d.actor.arn,
        target=d.target.name,
    )


def _job_finished(event: JobFinished) -> None:
    done = event.job
    for finding in done.findings:
        _remediation.warning(
            "remediation.finding",
            job_id=done.id,
            code=finding.code,
            severity=finding.severity,
            subject=finding.subject,
            detail=finding.detail,
            account_id=done.account_id,
        )
    _remediation.info(
        "remediation.job_finished",
        job_id=done.id,
        action=done.action,
        state=done.state,
        mode=done.mode,
        changed=done.changed,
        reason=done.reason,
        error=done.error,
        attempts=done.attempts,
        event_id=done.event_id,
        account_id=done.account_id,
        target=done.target_key,
        duration_secs=round(event.duration_secs, 3),
    )


def _observer_failed(observer: Observer, event: Event, exc: Exception) -> None:
    _observe.error(
        "observer.failed",
        observer=type(observer).__name__,
        event_type=type(event).__name__,
        error=repr(exc),
    )


def standard_observers(metrics: Metrics | None, *extra: Any) -> tuple[Observers, Tally]:
    """The daemon's observers: metrics (when given), the tally and the log, plus ``extra``;
    returns the fan-out and the tally (for the exit summary)."""
    tally = Tally()
    observers: list[Observer] = [tally, LogObserver(), *extra]
    if metrics is not None:
        observers.insert(0, MetricsObserver(metrics))
    fanout = Observers(observers)
    fanout.on_error = _observer_failed
    return fanout, tally
