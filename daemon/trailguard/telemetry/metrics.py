"""Every Prometheus metric trailguard exports, in one class that owns its own registry.

:class:`Metrics` holds a private :class:`~prometheus_client.CollectorRegistry` (never the global
one), so a test, a replay and the daemon can each build their own.  The daemon calls the
methods below through :class:`~trailguard.telemetry.observers.MetricsObserver` (the events of
:mod:`trailguard.observe`) and reads the in-flight gauges at scrape time; the HTTP server
(:mod:`.http`) renders :meth:`Metrics.render` at ``/metrics``.

Naming follows the Prometheus guide: one prefix (``trailguard_``), base units (seconds, bytes),
``_total`` on counters, and labels whose values are bounded:

* ``queue`` -- the configured label of an ``[[sources.sqs]]`` queue (URLs map to it); anything
  else is ``other``;
* ``event_name`` -- only names that the configured rules watch; anything else is ``other``;
* ``outcome``, ``severity``, ``disposition``, ``stage``, ``action``, ``state``, ``path`` -- closed
  vocabularies defined here;
* ``type`` (of an error) -- the stable ``reason`` of an :class:`~trailguard.errors.OperationError`
  (an AWS error code or a short word), capped at :data:`MAX_ERROR_SERIES` label sets;
* ``account`` / ``region`` -- only on the two ``*_by_account_total`` counters, switched off with
  ``[metrics] account_labels = false``, validated (12 digits, a region name) and capped at
  :data:`MAX_ACCOUNT_SERIES` label sets.

Never an eventID, ARN, key, IP address or message id.  Every label set known up front is
initialised to zero at construction, so ``rate()`` and ``increase()`` see the first event and
dashboards show 0 rather than "no data".

Recording never raises for an unexpected label value: it is folded into ``other``.  Metrics must
not be the reason a message is not processed.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
)
from prometheus_client.exposition import choose_encoder

from trailguard import __version__
from trailguard.detect.detection import Detection, EventBridgeSource, FileSource, S3Source
from trailguard.telemetry.metric_families import MetricFamilies
from trailguard.vocabulary import (
    ACTION_NAMES,
    CHANGE_COUNTS,
    CHANGE_KINDS,
    DELIVERY_PATHS,
    DISPOSITIONS,
    ERROR_STAGES,
    JOB_STATES,
    MESSAGE_OUTCOMES,
    OBJECT_OUTCOMES,
    OUTCOMES,
    QUEUED_JOB_STATES,
    REJECT_REASONS,
    REMOVAL_EVENT_NAMES,
    SEVERITIES,
    ActionName,
    DeliveryPath,
    JobState,
    MessageOutcome,
    ObjectOutcome,
    RejectReason,
)

if TYPE_CHECKING:
    from trailguard.config import Config

__all__ = [
    "DELIVERY_PATHS",
    "DISPOSITIONS",
    "ERROR_STAGES",
    "JOB_ACTIONS",
    "JOB_STATES",
    "MAX_ACCOUNT_SERIES",
    "MAX_ERROR_SERIES",
    "MESSAGE_OUTCOMES",
    "OBJECT_OUTCOMES",
    "OTHER",
    "QUEUED_JOB_STATES",
    "REJECT_REASONS",
    "DeliveryPath",
    "JobAction",
    "JobState",
    "MessageOutcome",
    "Metrics",
    "ObjectOutcome",
    "RejectReason",
]

# _created series double the series count and Prometheus 2.x ingests them as separate gauges;
# trailguard's counters are process-lifetime and process_start_time_seconds says when that began.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

OTHER: Final = "other"

JobAction = ActionName
JOB_ACTIONS: Final = ACTION_NAMES

MAX_ERROR_SERIES: Final = 200
MAX_ACCOUNT_SERIES: Final = 10_000

# Buckets, in seconds.  Delivery lag spans EventBridge (seconds) to S3 (CloudTrail delivers
# every ~5 minutes, sometimes much later) to backfills (days).

_ACCOUNT = re.compile(r"[0-9]{12}")
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+){1,4}")
_ERROR_TYPE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Metrics(MetricFamilies):
    """trailguard's metrics and the registry that serves them.

    ``queues``: the configured queue labels (``SqsSourceConfig.label``); ``queue_aliases`` maps
    other spellings (the queue URLs) to those labels.  ``event_names``: what the rules watch.
    """

    def __init__(
        self,
        *,
        queues: Iterable[str] = (),
        queue_aliases: Mapping[str, str] | None = None,
        event_names: Iterable[str] = REMOVAL_EVENT_NAMES,
        account_labels: bool = True,
        version: str = __version__,
        process_collectors: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.account_labels = account_labels
        self._lock = threading.Lock()
        self._queues: dict[str, str] = {q: q for q in queues}
        for alias, label in (queue_aliases or {}).items():
            if label in self._queues:
                self._queues[alias] = label
        self._event_names: frozenset[str] = frozenset()
        self._error_series: set[tuple[str, str]] = set()
        self._account_series: set[tuple[str, str]] = set()
        r = self.registry

        if process_collectors:
            prometheus_client.ProcessCollector(registry=r)
            prometheus_client.PlatformCollector(registry=r)
            prometheus_client.GCCollector(registry=r)

        self.define_families(r, version)

        # -- zero every label set known up front -----------------------------------------------
        for outcome in ("success", "failure"):
            self.config_reloads.labels(outcome)
        for queue in self.queue_labels:
            self.sqs_received.labels(queue)
            for message_outcome in MESSAGE_OUTCOMES:
                self.sqs_handled.labels(queue, message_outcome)
            for reason in REJECT_REASONS:
                self.sqs_rejected.labels(queue, reason)
            self.sqs_message_age.labels(queue)
            self.sqs_visibility_extensions.labels(queue)
            self.sqs_last_poll.labels(queue).set(0)
        for object_outcome in OBJECT_OUTCOMES:
            self.s3_objects.labels(object_outcome)
        for path in DELIVERY_PATHS:
            self.delivery_lag.labels(path)
            self.forgery_suspected.labels(path)
        for action in JOB_ACTIONS:
            for state in JOB_STATES:
                self.jobs.labels(action, state)
        for state in QUEUED_JOB_STATES:
            self.job_queue_depth.labels(state).set(0)
        for change_kind in CHANGE_KINDS:
            for change_count in CHANGE_COUNTS:
                self.policy_changes.labels(change_kind, change_count)
        self.set_event_names(event_names)

    @classmethod
    def from_config(cls, config: Config, *, process_collectors: bool = True) -> Metrics:
        """Queues, watched event names and account labels as the config says."""
        sources = config.sources.sqs
        return cls(
            queues=[src.label for src in sources],
            queue_aliases={src.queue_url: src.label for src in sources},
            event_names=[
                name
                for rule in config.resolved_rules()
                if rule.enabled
                for name in rule.event_names
            ],
            account_labels=config.metrics.account_labels,
            process_collectors=process_collectors,
        )

    # -- label helpers -------------------------------------------------------------------------

    @property
    def queue_labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self._queues.values()))

    @property
    def event_names(self) -> frozenset[str]:
        return self._event_names

    def set_event_names(self, names: Iterable[str]) -> None:
        """The event names the rules watch (again after a reload); new label sets start at 0.

        Series of names no longer watched stay (a counter never goes back); new detections of
        those names count as ``other``.
        """
        self._event_names = frozenset(names)
        for name in sorted(self._event_names | {OTHER}):
            for outcome in OUTCOMES:
                for severity in SEVERITIES:
                    for disposition in DISPOSITIONS:
                        self.detections.labels(name, outcome, severity, disposition)

    def _queue(self, queue: str) -> str:
        return self._queues.get(queue, OTHER)

    def _account(self, account: str | None, region: str | None) -> tuple[str, str] | None:
        if not self.account_labels:
            return None
        key = (
            account if account and _ACCOUNT.fullmatch(account) else OTHER,
            region if region and _REGION.fullmatch(region) else OTHER,
        )
        with self._lock:
            if key not in self._account_series:
                if len(self._account_series) >= MAX_ACCOUNT_SERIES:
                    key = (OTHER, OTHER)
                self._account_series.add(key)
        return key

    # -- SQS -----------------------------------------------------------------------------------

    def message_received(
        self, queue: str, *, sent_timestamp_ms: int | None = None, now: float | None = None
    ) -> None:
        """A message was received (call once per message); observes its age when known."""
        label = self._queue(queue)
        self.sqs_received.labels(label).inc()
        if sent_timestamp_ms is not None:
            age = (time.time() if now is None else now) - sent_timestamp_ms / 1000
            self.sqs_message_age.labels(label).observe(max(0.0, age))

    def message_handled(self, queue: str, outcome: MessageOutcome) -> None:
        """A message is finished: deleted, released, left for redrive ..."""
        if outcome not in MESSAGE_OUTCOMES:
            outcome = "failed"
        self.sqs_handled.labels(self._queue(queue), outcome).inc()

    def message_rejected(self, queue: str, reason: RejectReason) -> None:
        """A message was rejected before any fetch (it is also handled as ``rejected``)."""
        if reason in REJECT_REASONS:
            self.sqs_rejected.labels(self._queue(queue), reason).inc()

    def visibility_extended(self, queue: str) -> None:
        self.sqs_visibility_extensions.labels(self._queue(queue)).inc()

    def poll_succeeded(self, queue: str, *, at: float | None = None) -> None:
        """A receive call returned (with or without messages)."""
        self.sqs_last_poll.labels(self._queue(queue)).set(time.time() if at is None else at)

    # -- S3 and records ------------------------------------------------------------------------

    def object_processed(
        self,
        outcome: ObjectOutcome,
        size_bytes: int = 0,
        seconds: float | None = None,
        *,
        account: str | None = None,
        region: str | None = None,
    ) -> None:
        """One S3 object is done (or skipped, or failed).

        ``size_bytes``: bytes downloaded; ``seconds``: fetch-to-evaluated time (observed for
        ``ok`` only); ``account``/``region``: from the key, for the per-account counter.
        """
        if outcome not in OBJECT_OUTCOMES:
            outcome = "failed_permanent"
        self.s3_objects.labels(outcome).inc()
        if size_bytes > 0:
            self.s3_bytes.inc(size_bytes)
        if outcome == "ok":
            if seconds is not None:
                self.s3_duration.observe(max(0.0, seconds))
            key = self._account(account, region)
            if key is not None:
                self.s3_by_account.labels(*key).inc()

    def watch_in_flight(
        self,
        *,
        messages: Callable[[], float] | None = None,
        objects: Callable[[], float] | None = None,
        held_bytes: Callable[[], float] | None = None,
    ) -> None:
        """Read the in-flight gauges from these callables at each scrape: SQS messages received
        and not finished, S3 objects being fetched or decoded, bytes of objects held."""
        for gauge, read in (
            (self.sqs_in_flight, messages),
            (self.s3_in_flight, objects),
            (self.s3_bytes_in_flight, held_bytes),
        ):
            if read is not None:
                gauge.set_function(read)

    def records(self, scanned: int, *, invalid: int = 0) -> None:
        """Records read from a file or event (``invalid``: how many of them were undecodable)."""
        if scanned > 0:
            self.records_scanned.inc(scanned)
        if invalid > 0:
            self.records_invalid.inc(invalid)

    # -- detections ----------------------------------------------------------------------------

    def detection(
        self, d: Detection, *, sent_timestamp_ms: int | None = None, now: float | None = None
    ) -> None:
        """A detection was made durable (written, not a duplicate).

        Counts it, observes its delivery lag (now - eventTime) and, given the SQS message's
        SentTimestamp, the message-to-detection latency.
        """
        now = time.time() if now is None else now
        name = d.event_name if d.event_name in self._event_names else OTHER
        severity = d.severity if d.severity in SEVERITIES else OTHER
        outcome = d.outcome if d.outcome in OUTCOMES else OTHER
        disposition = d.disposition if d.disposition in DISPOSITIONS else OTHER
        self.detections.labels(name, outcome, severity, disposition).inc()
        key = self._account(d.account_id, d.aws_region)
        if key is not None:
            self.detections_by_account.labels(*key).inc()
        event_time = _parse_time(d.event_time)
        if event_time is not None:
            self.delivery_lag.labels(_path(d)).observe(max(0.0, now - event_time))
        if sent_timestamp_ms is not None:
            self.detection_latency.observe(max(0.0, now - sent_timestamp_ms / 1000))

    def forgery_suspected_in(self, path: str, count: int = 1) -> None:
        """``count`` records arrived by ``path`` with an eventID already seen with other
        content (event ledger conflicts)."""
        if count > 0:
            label = path if path in DELIVERY_PATHS else OTHER
            self.forgery_suspected.labels(label).inc(count)

    def policy_change(self, kind: str, verdict: str) -> None:
        """A policy change was judged (``verdict``: weakened, possibly_weakened, not_weakened,
        baseline_unknown)."""
        self.policy_changes.labels(
            kind if kind in CHANGE_KINDS else OTHER, verdict if verdict in CHANGE_COUNTS else OTHER
        ).inc()

    def duplicates_dropped(self, count: int) -> None:
        if count > 0:
            self.duplicates.inc(count)

    def dedup_recorded(self, window_secs: float, taken_over: int) -> None:
        self.dedup_window.observe(window_secs)
        if taken_over > 0:
            self.dedup_takeovers.inc(taken_over)

    # -- errors --------------------------------------------------------------------------------

    def error(self, stage: str, error_type: str) -> None:
        """An error at ``stage`` (``OperationError.stage``) of ``error_type`` (its ``reason``)."""
        stage = stage if stage in ERROR_STAGES else OTHER
        error_type = error_type if _ERROR_TYPE.fullmatch(error_type) else OTHER
        with self._lock:
            if (stage, error_type) not in self._error_series:
                if len(self._error_series) >= MAX_ERROR_SERIES:
                    error_type = OTHER
                self._error_series.add((stage, error_type))
        self.errors.labels(stage, error_type).inc()

    # -- remediation ---------------------------------------------------------------------------

    def remediation_job(self, action: str, state: str) -> None:
        """A job entered ``state``."""
        self.jobs.labels(
            action if action in JOB_ACTIONS else OTHER, state if state in JOB_STATES else OTHER
        ).inc()

    def remediation_queue(
        self, depth: Mapping[str, int], oldest_pending_age_seconds: float | None
    ) -> None:
        """The job store's current depth by state (missing states are 0) and oldest pending."""
        for state in QUEUED_JOB_STATES:
            self.job_queue_depth.labels(state).set(depth.get(state, 0))
        self.job_oldest_pending_age.set(max(0.0, oldest_pending_age_seconds or 0.0))

    # -- config --------------------------------------------------------------------------------

    def config_reloaded(self, ok: bool) -> None:
        self.config_reloads.labels("success" if ok else "failure").inc()
        self.config_last_reload_successful.set(1 if ok else 0)

    # -- exposition ----------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) for an HTTP ``Accept`` header: Prometheus text format 0.0.4 by
        default, OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _path(d: Detection) -> DeliveryPath:
    source = d.source
    if isinstance(source, S3Source):
        return "s3"
    if isinstance(source, EventBridgeSource):
        return "eventbridge"
    assert isinstance(source, FileSource)
    return "file"


def _parse_time(text: str | None) -> float | None:
    """CloudTrail's eventTime (``2026-11-01T12:00:00Z``) as Unix time, or None."""
    if not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()
