"""The one observation path: the small frozen events the daemon's parts emit, and the observer
they emit them to.

A part that does something worth counting or telling (a message finished, an object was
processed, a detection became durable, a job reached a state) builds one event and hands it to
its :class:`Observer`; it never touches a metric, a counter or a log line for it itself.  What
each event means to Prometheus, to the exit summary and to the log is decided in one place per
reader, :mod:`trailguard.telemetry.observers` (``MetricsObserver``, ``Tally``, ``LogObserver``),
and :class:`Observers` fans one event out to all of them -- the model is stamina's
``RetryDetails`` handed to its instrumentation hooks.

Events carry what their readers need and nothing attacker-sized: names, counts, reasons, the
already-bounded detection or job.  They are frozen msgspec Structs (cheaper to define at import
and to build than dataclasses); emitting one is a loop over the observers, which must not raise
(an observer's failure is logged and the others still run).

Diagnostics that nobody counts (a claim that failed and will be retried, a worker started) stay
plain log calls where they happen.  This module imports only msgspec at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol, TypeVar

import msgspec

if TYPE_CHECKING:
    from trailguard.detect.detection import Detection
    from trailguard.errors import OperationError
    from trailguard.remediate.jobs import CircuitOpen, Job
    from trailguard.state.ledger import LedgerConflict
    from trailguard.vocabulary import (
        ChangeCount,
        ChangeKind,
        DeliveryPath,
        MessageOutcome,
        ObjectOutcome,
        RejectReason,
    )

__all__ = [
    "CircuitOpened",
    "ConfigReloadRejected",
    "ConfigReloaded",
    "DedupRecorded",
    "DetectionCommitted",
    "DuplicatesDropped",
    "Event",
    "EventBridgeRecordRead",
    "FactsRecorded",
    "ForgerySuspected",
    "JobFinished",
    "JobLeaseLost",
    "JobQueueSampled",
    "JobsEnqueued",
    "MessageFailed",
    "MessageFinished",
    "MessageLeftForRedrive",
    "MessageReceived",
    "MessageRejected",
    "MessageReleased",
    "MessageUnrecognised",
    "ObjectFailed",
    "ObjectProcessed",
    "ObjectSkipped",
    "Observer",
    "Observers",
    "PolicyChangeJudged",
    "PollFailed",
    "PollSucceeded",
    "Recorder",
    "TestEventAcknowledged",
    "VisibilityExtendFailed",
    "VisibilityExtended",
]


# -- SQS ---------------------------------------------------------------------------------------


class PollSucceeded(msgspec.Struct, frozen=True):
    """A receive call returned (with or without messages)."""

    queue: str
    at: float


class PollFailed(msgspec.Struct, frozen=True):
    """A receive call failed; the poller waits ``retry_in_secs`` before the next."""

    queue: str
    error: OperationError
    retry_in_secs: float


class MessageReceived(msgspec.Struct, frozen=True):
    queue: str
    message_id: str
    sent_timestamp_ms: int | None


class MessageFinished(msgspec.Struct, frozen=True):
    """A message's handling ended with ``outcome`` (the last event of every message)."""

    queue: str
    message_id: str
    outcome: MessageOutcome


class MessageFailed(msgspec.Struct, frozen=True):
    """Handling a message raised: nothing was deleted, it comes back after its visibility
    timeout.  ``crashed``: not one of trailguard's errors (a bug; ``exc`` has the traceback)."""

    queue: str
    message_id: str
    stage: str
    error_type: str
    error: str
    crashed: bool = False
    exc: BaseException | None = None


class MessageUnrecognised(msgspec.Struct, frozen=True):
    """A body of no known shape: left for the redrive policy."""

    queue: str
    message_id: str
    format: str
    reason: str
    receive_count: int


class TestEventAcknowledged(msgspec.Struct, frozen=True):
    """An ``s3:TestEvent`` (sent when a bucket notification is configured): deleted."""

    __test__ = False  # not a pytest class, whatever its name

    queue: str
    message_id: str
    format: str


class MessageRejected(msgspec.Struct, frozen=True):
    """A body refused whole before anything it names was fetched."""

    queue: str
    message_id: str
    reason: RejectReason
    format: str
    receive_count: int
    #: what to log with it (counts, the first foreign bucket); bounded by the handler
    fields: Mapping[str, object] = msgspec.field(default_factory=dict)


class MessageReleased(msgspec.Struct, frozen=True):
    """Given back for redelivery in ``retry_in_secs`` (``reason``: transient, or shutdown)."""

    queue: str
    message_id: str
    reason: str
    retry_in_secs: int
    receive_count: int


class MessageLeftForRedrive(msgspec.Struct, frozen=True):
    """A permanent failure: left invisible until its timeout, for the redrive policy."""

    queue: str
    message_id: str
    receive_count: int
    failed_objects: int


class VisibilityExtended(msgspec.Struct, frozen=True):
    queue: str
    message_id: str
    secs: int


class VisibilityExtendFailed(msgspec.Struct, frozen=True):
    queue: str
    message_id: str
    error: OperationError


# -- objects and records -----------------------------------------------------------------------


class ObjectSkipped(msgspec.Struct, frozen=True):
    """An object a notification named and that is not fetched (digest, Insight, excluded...)."""

    bucket: str
    key: str
    reason: str
    outcome: ObjectOutcome


class ObjectProcessed(msgspec.Struct, frozen=True):
    """An object was fetched, decoded and evaluated (``outcome`` ok, or skipped_* after
    decoding)."""

    bucket: str
    key: str
    outcome: ObjectOutcome
    size_bytes: int
    seconds: float
    account: str | None
    region: str | None
    records: int
    candidates: int
    detections: int
    facts: int
    bad_records: int
    #: the first few bad records (index and reason), already bounded by the decoder
    first_bad_records: tuple[object, ...] = ()


class ObjectFailed(msgspec.Struct, frozen=True):
    bucket: str
    key: str
    error: OperationError


class EventBridgeRecordRead(msgspec.Struct, frozen=True):
    """One record arrived as an EventBridge event (no S3 object)."""

    queue: str
    message_id: str


# -- what a message produced -------------------------------------------------------------------


class ForgerySuspected(msgspec.Struct, frozen=True):
    """An eventID already seen with other content: one of the two records is forged (this
    delivery made the conflict)."""

    conflict: LedgerConflict
    path: DeliveryPath


class FactsRecorded(msgspec.Struct, frozen=True):
    """Policy facts written to the history (``new`` of ``seen`` were not there before)."""

    new: int
    seen: int


class PolicyChangeJudged(msgspec.Struct, frozen=True, kw_only=True):
    """A policy change was compared with the previous document (ingest/changes.py):
    ``verdict`` weakened / possibly_weakened (``reported``: a detection was made of it),
    not_weakened, or baseline_unknown (no previous document to compare with)."""

    kind: ChangeKind
    verdict: ChangeCount
    reason: str
    reported: bool
    event_id: str
    event_name: str | None
    account_id: str
    target: str | None
    policy: str | None
    previous_event_id: str | None
    steps: int | None
    duration_secs: float


class DetectionCommitted(msgspec.Struct, frozen=True):
    """A detection was made durable (written, not a duplicate)."""

    detection: Detection
    sent_timestamp_ms: int | None = None


class DedupRecorded(msgspec.Struct, frozen=True):
    """Detections written and fsynced were recorded in the dedup store ``window_secs`` later:
    the window in which a crash makes an event be reported twice.  ``taken_over``: how many of
    the keys were claims another writer left unrecorded after its lease -- it died in that
    window, or before writing (the only second reports there can be)."""

    count: int
    window_secs: float
    taken_over: int = 0


class DuplicatesDropped(msgspec.Struct, frozen=True):
    """Detections whose eventID was already recorded (redelivery, the other path)."""

    count: int


class JobsEnqueued(msgspec.Struct, frozen=True):
    """Remediation jobs durably enqueued for a message's detections (new ones only)."""

    count: int


# -- remediation -------------------------------------------------------------------------------


class JobFinished(msgspec.Struct, frozen=True):
    """A job attempt ended and its outcome is stored: ``job.state`` is the state it entered."""

    job: Job
    duration_secs: float


class JobLeaseLost(msgspec.Struct, frozen=True):
    """A job's outcome was not stored: its lease had passed and another worker took it."""

    job: Job


class CircuitOpened(msgspec.Struct, frozen=True):
    """A target was restored too often: automatic restores of it stop."""

    record: CircuitOpen


class JobQueueSampled(msgspec.Struct, frozen=True):
    """The job store's depth by state and the age of the oldest due job, read just now."""

    depth: Mapping[str, int]
    oldest_pending_age_secs: float | None


# -- config ------------------------------------------------------------------------------------


class ConfigReloaded(msgspec.Struct, frozen=True):
    applied: tuple[str, ...]
    restart_required: tuple[str, ...]


class ConfigReloadRejected(msgspec.Struct, frozen=True):
    file: str | None
    key: str | None
    reason: str


Event = (
    PollSucceeded
    | PollFailed
    | MessageReceived
    | MessageFinished
    | MessageFailed
    | MessageUnrecognised
    | TestEventAcknowledged
    | MessageRejected
    | MessageReleased
    | MessageLeftForRedrive
    | VisibilityExtended
    | VisibilityExtendFailed
    | ObjectSkipped
    | ObjectProcessed
    | ObjectFailed
    | EventBridgeRecordRead
    | ForgerySuspected
    | FactsRecorded
    | DedupRecorded
    | PolicyChangeJudged
    | DetectionCommitted
    | DuplicatesDropped
    | JobsEnqueued
    | JobFinished
    | JobLeaseLost
    | CircuitOpened
    | JobQueueSampled
    | ConfigReloaded
    | ConfigReloadRejected
)


class Observer(Protocol):
    """Something that reads events: metrics, the exit summary, the log, a test's list."""

    def observe(self, event: Event) -> None: ...


class Observers:
    """Fans each event out to every observer, in order; one that raises is reported to the
    ``on_error`` hook (the log) and the others still see the event: telling must never be why
    work is not done."""

    __slots__ = ("_observers", "on_error")

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers: tuple[Observer, ...] = tuple(observers)
        self.on_error: _ErrorHook | None = None

    def add(self, observer: Observer) -> None:
        self._observers = (*self._observers, observer)

    def observe(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer.observe(event)
            except Exception as exc:  # noqa: BLE001 - an observer never stops the work
                if self.on_error is not None:
                    self.on_error(observer, event, exc)


_E = TypeVar("_E")


class _ErrorHook(Protocol):
    def __call__(self, observer: Observer, event: Event, exc: Exception) -> None: ...


class Recorder:
    """Keeps every event (tests, tools): ``recorder.of(ObjectProcessed)``."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def observe(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[_E]) -> list[_E]:
        return [event for event in self.events if isinstance(event, kind)]
