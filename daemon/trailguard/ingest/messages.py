"""Handling one SQS message, start to finish — and the only place a message is deleted.

parse body -> object refs (or one EventBridge record) -> fetch + decode each object (bounded,
off the event loop, visibility extended on a heartbeat) -> rules -> check the records' digests
against the event ledger -> record policy facts -> commit detections durably -> enqueue
remediation jobs durably -> delete the message.

An eventID the ledger already knows with other content is a conflict (one of the two records is
forged): logged as ``ledger.conflict``, counted in ``trailguard_forgery_suspected_total`` and
flagged ``forgery_suspected`` in the detection record; the confirmation gate never writes from
it (remediate/confirm.py).

Outcomes, by promise:

* every ref processed, detections committed and jobs enqueued: the message is deleted;
* an S3 test event, or refs that are all digest/Insight/other keys: deleted without download;
* a transient failure that outlived its retries: the message is released for redelivery after
  a backoff delay that grows with its receive count (no hot loop);
* a permanent failure (NoSuchKey, AccessDenied, corrupt or oversized object), or a body that is
  none of the known shapes: counted, logged with bucket/key/reason or message id, and left
  invisible until its visibility timeout ends, so the queue's redrive policy moves it to the
  dead-letter queue after maxReceiveCount deliveries.  Detections from the message's other,
  good objects are committed all the same (and deduplicated when it comes back);
* a body naming more than ``[limits] max_objects_per_message`` objects, or a bucket its queue
  does not list in ``buckets``: rejected before anything is fetched (``sqs.message_rejected``,
  ``trailguard_sqs_messages_rejected_total``) and left to the redrive policy the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from trailguard.decode_pool import DecodePool
from trailguard.detect.detection import Detection, EventBridgeSource, S3Source
from trailguard.detect.digest import EventDigest
from trailguard.detect.keys import KeyKind, classify_key, key_account_region
from trailguard.detect.policy_facts import PolicyFact
from trailguard.detect.process import Detector, FileOutcome
from trailguard.errors import DecodeError, OperationError, PermanentError, TransientError
from trailguard.ingest.budget import ByteBudget, Reservation
from trailguard.ingest.notifications import ObjectRef, parse_body
from trailguard.ingest.retry import retry_transient
from trailguard.ingest.s3 import ObjectStore
from trailguard.ingest.sqs import Message, SqsQueue
from trailguard.outputs.sink import DetectionSink
from trailguard.telemetry.logging import get_logger
from trailguard.telemetry.metrics import (
    DeliveryPath,
    MessageOutcome,
    Metrics,
    ObjectOutcome,
    RejectReason,
)

if TYPE_CHECKING:
    from trailguard.remediate.service import Remediation
    from trailguard.state.ledger import EventLedger
    from trailguard.state.policy_history import PolicyHistoryStore

log = get_logger(__name__)

# Why an object was not downloaded (or was skipped after decoding) -> its metric outcome.
_SKIPPED: dict[str, ObjectOutcome] = {
    "digest": "skipped_digest",
    "insight": "skipped_insight",
    "excluded": "skipped_excluded",
    "other": "skipped_other",
}

FETCH_ATTEMPTS = 4
RELEASE_BASE_SECS = 15
RELEASE_CAP_SECS = 900


@dataclass
class IngestStats:
    """Counters for the daemon's exit summary (and tests); metrics mirror these."""

    messages: dict[str, int] = field(default_factory=dict)  # outcome -> count
    objects: dict[str, int] = field(default_factory=dict)  # outcome -> count
    records: int = 0
    bytes_compressed: int = 0
    detections: int = 0
    duplicates: int = 0
    facts: int = 0
    conflicts: int = 0
    jobs: int = 0
    errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (stage, reason)

    def bump(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n


@dataclass(frozen=True)
class HandlerSettings:
    """Per-queue settings (from ``[[sources.sqs]]``, ``[limits]`` and ``[keys]``)."""

    queue_label: str
    visibility_timeout_secs: int
    heartbeat_interval_secs: float
    max_object_bytes: int
    key_include: Sequence[re.Pattern[str]] = ()
    key_exclude: Sequence[re.Pattern[str]] = ()
    #: ``[limits] max_objects_per_message``: a body naming more is rejected whole.
    max_objects_per_message: int = 100
    #: The queue's ``buckets``; empty: any bucket.
    buckets: frozenset[str] = frozenset()


class MessageHandler:
    def __init__(
        self,
        *,
        detector: Detector,
        store: ObjectStore,
        pool: DecodePool,
        sink: DetectionSink,
        object_slots: asyncio.Semaphore,
        budget: ByteBudget | None = None,
        stats: IngestStats,
        metrics: Metrics,
        history: PolicyHistoryStore | None = None,
        ledger: EventLedger | None = None,
        remediation: Remediation | None = None,
    ) -> None:
        self.detector = detector  # swapped on live reload
        self.pool = pool  # swapped on live reload
        self._store = store
        self._sink = sink
        self._slots = object_slots
        # bytes of objects held at once (the daemon passes [limits] max_bytes_in_flight)
        self._budget = budget if budget is not None else ByteBudget(1 << 62)
        self._metrics = metrics
        self._history = history
        self._ledger = ledger
        self._remediation = remediation
        self.stats = stats

    # -- entry point ---------------------------------------------------------------------------

    async def handle(
        self, queue: SqsQueue, message: Message, settings: HandlerSettings
    ) -> MessageOutcome:
        """Process one message; returns its outcome (deleted, released, left, ...)."""
        bound = log.bind(queue=settings.queue_label, message_id=message.message_id)
        parsed = parse_body(message.body)
        if parsed.kind == "unknown":
            self._error("parse", "unrecognised_body")
            bound.warning(
                "sqs.message_unrecognised",
                format=parsed.format,
                reason=parsed.reason,
                receive_count=message.receive_count,
            )
            return "unrecognised"
        if parsed.kind == "test_event":
            await queue.delete(message)
            bound.info("sqs.test_event_acknowledged", format=parsed.format)
            return "test_event"
        if parsed.kind == "api_call":
            assert parsed.record is not None
            record = parsed.record
            source = EventBridgeSource(queue=queue.url, message_id=message.message_id)
            detection, facts, digest = self.detector.examine(record, source)
            self.stats.records += 1
            self._metrics.records(1)
            await self._finish(
                [detection] if detection else [],
                facts,
                [digest] if digest else [],
                message,
                "eventbridge",
            )
            await queue.delete(message)
            return "deleted"
        rejected = self._rejection(parsed.objects, settings)
        if rejected is not None:
            reason, fields = rejected
            self._metrics.message_rejected(settings.queue_label, reason)
            bound.warning(
                "sqs.message_rejected",
                reason=reason,
                format=parsed.format,
                receive_count=message.receive_count,
                **fields,
            )
            return "rejected"
        return await self._handle_objects(queue, message, parsed.objects, settings)

    # -- before anything is fetched ------------------------------------------------------------

    @staticmethod
    def _rejection(
        refs: Sequence[ObjectRef], settings: HandlerSettings
    ) -> tuple[RejectReason, dict[str, object]] | None:
        """Why a body is refused whole -- nothing it names fetched -- with what to log, or None.

        AWS's own notifications name one object (CloudTrail's SNS message, the files of one
        delivery), from the buckets the queue is for; anything else is forged or misrouted, and
        goes to the dead-letter queue where someone will look at it.
        """
        if settings.buckets:
            foreign = sorted({ref.bucket for ref in refs} - settings.buckets)
            if foreign:
                return "bucket_not_allowed", {
                    "bucket": foreign[0],
                    "buckets_not_allowed": len(foreign),
                    "objects": len(refs),
                }
        if len(refs) > settings.max_objects_per_message:
            return "too_many_objects", {
                "bucket": refs[0].bucket,
                "objects": len(refs),
                "max_objects_per_message": settings.max_objects_per_message,
            }
        return None

    # -- objects ------------------------------------------------------------------------------

    def _wanted(self, key: str, settings: HandlerSettings) -> str | None:
        """None when the key should be fetched, else the reason to skip it."""
        kind = classify_key(key)
        if kind in (KeyKind.DIGEST, KeyKind.INSIGHT):
            return kind.value
        if any(p.search(key) for p in settings.key_exclude):
            return "excluded"
        if settings.key_include:
            return None if any(p.search(key) for p in settings.key_include) else "other"
        return None if kind is KeyKind.LOG else "other"

    async def _handle_objects(
        self,
        queue: SqsQueue,
        message: Message,
        refs: Sequence[ObjectRef],
        settings: HandlerSettings,
    ) -> MessageOutcome:
        wanted: list[ObjectRef] = []
        for ref in refs:
            reason = self._wanted(ref.key, settings)
            if reason is None:
                wanted.append(ref)
            else:
                self._object_outcome(_SKIPPED[reason])
                log.debug("s3.object_skipped", bucket=ref.bucket, key=ref.key, reason=reason)
        if not wanted:
            await queue.delete(message)
            return "deleted"

        heartbeat = asyncio.create_task(self._heartbeat(queue, message, settings))
        try:
            results = await asyncio.gather(
                *(self._process_object(ref, settings) for ref in wanted), return_exceptions=True
            )
            detections: list[Detection] = []
            facts: list[PolicyFact] = []
            events: list[EventDigest] = []
            failures: list[OperationError] = []
            for ref, result in zip(wanted, results, strict=True):
                if isinstance(result, OperationError):
                    failures.append(result)
                    self._object_failed(ref, result)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    detections.extend(result.detections)
                    facts.extend(result.facts)
                    events.extend(result.events)
            await self._finish(detections, facts, events, message, "s3")
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

        if not failures:
            await queue.delete(message)
            return "deleted"
        if all(f.transient for f in failures):
            delay = int(
                min(RELEASE_CAP_SECS, RELEASE_BASE_SECS * 2 ** max(0, message.receive_count - 1))
            )
            await queue.set_visibility(message, delay)
            log.warning(
                "sqs.message_released",
                queue=settings.queue_label,
                message_id=message.message_id,
                retry_in_secs=delay,
                receive_count=message.receive_count,
            )
            return "released"
        log.warning(
            "sqs.message_left_for_redrive",
            queue=settings.queue_label,
            message_id=message.message_id,
            receive_count=message.receive_count,
            failed_objects=len(failures),
        )
        return "left_for_redrive"

    async def _process_object(self, ref: ObjectRef, settings: HandlerSettings) -> FileOutcome:
        started = time.perf_counter()
        name = f"s3://{ref.bucket}/{ref.key}"
        async with self._slots:
            held = Reservation(self._budget)
            try:
                with self._metrics.object_in_flight():

                    async def fetch() -> bytes | bytearray:
                        held.release()  # what a failed attempt took goes back first
                        return await self._store.fetch(
                            ref.bucket,
                            ref.key,
                            max_bytes=settings.max_object_bytes,
                            reserve=held.take,
                        )

                    data = await retry_transient(fetch, attempts=FETCH_ATTEMPTS, what=name)
                    self._metrics.bytes_in_flight(self._budget.in_use)
                    try:
                        outcome = await self.pool.process(
                            data,
                            source=S3Source(bucket=ref.bucket, key=ref.key),
                            name=name,
                            key=ref.key,
                        )
                    except DecodeError as exc:
                        raise PermanentError("decode", "undecodable", exc.reason) from exc
            finally:
                held.release()
                self._metrics.bytes_in_flight(self._budget.in_use)
        decoded = outcome.decoded
        seconds = time.perf_counter() - started
        self.stats.records += decoded.records
        self.stats.bytes_compressed += len(data)
        self._metrics.records(decoded.records, invalid=decoded.bad_record_count)
        account, region = key_account_region(ref.key)
        result: ObjectOutcome = (
            _SKIPPED.get(decoded.skipped, "skipped_other") if decoded.skipped else "ok"
        )
        self.stats.bump(self.stats.objects, result)
        self._metrics.object_processed(result, len(data), seconds, account=account, region=region)
        log.info(
            "s3.object_processed",
            bucket=ref.bucket,
            key=ref.key,
            records=decoded.records,
            candidates=len(decoded.candidates),
            detections=len(outcome.detections),
            facts=len(outcome.facts),
            bad_records=decoded.bad_record_count,
            bytes=len(data),
            duration_secs=round(seconds, 4),
        )
        if decoded.bad_record_count:
            # which records, and why: each bad record is its own problem, never its neighbours'
            log.warning(
                "s3.records_invalid",
                bucket=ref.bucket,
                key=ref.key,
                count=decoded.bad_record_count,
                first=decoded.bad_records[:10],
            )
        return outcome

    def _object_failed(self, ref: ObjectRef, error: OperationError) -> None:
        transient = isinstance(error, TransientError)
        self._object_outcome("failed_transient" if transient else "failed_permanent")
        self._error(error.stage, error.reason)
        log.error(
            "s3.object_failed",
            bucket=ref.bucket,
            key=ref.key,
            stage=error.stage,
            reason=error.reason,
            detail=error.detail,
            transient=error.transient,
        )

    # -- history, commit, jobs ----------------------------------------------------------------

    async def _finish(
        self,
        detections: list[Detection],
        facts: list[PolicyFact],
        events: list[EventDigest],
        message: Message,
        path: DeliveryPath,
    ) -> None:
        """Make everything this message produced durable, in the order remediation needs.

        The records' digests into the event ledger first (a conflict flags the detections of
        its eventID), then the policy facts (a job may need the document a Put earlier in the
        same file carried), then the detections, then the jobs -- planned from *every*
        detection, duplicates too: enqueuing is idempotent, and a crash between the detection
        write and the enqueue must not lose the jobs of a redelivered message whose detections
        are already written.
        """
        if self._ledger is not None and events:
            conflicted = await check_ledger(self._ledger, events, path, self._metrics)
            self.stats.conflicts += sum(1 for c in conflicted.values() if c)
            detections = flag_conflicts(detections, conflicted)
        if self._history is not None and facts:
            new = await self._history.record(facts)
            self.stats.facts += new
            if new:
                log.debug("history.facts_recorded", new=new, seen=len(facts))
        result = await self._sink.commit(detections)
        self.stats.detections += len(result.written)
        self.stats.duplicates += result.duplicates
        self._metrics.duplicates_dropped(result.duplicates)
        for detection in result.written:
            self._metrics.detection(detection, sent_timestamp_ms=message.sent_timestamp_ms)
            log.info(
                "detection",
                event_id=detection.event_id,
                event_name=detection.event_name,
                outcome=detection.outcome,
                severity=detection.severity,
                disposition=detection.disposition,
                suppressed_by=detection.suppressed_by,
                forgery_suspected=detection.forgery_suspected,
                rule=detection.rule,
                account_id=detection.account_id,
                actor_arn=detection.actor.arn,
                target=detection.target.name,
            )
        if result.duplicates:
            log.debug("detection.duplicates_dropped", count=result.duplicates)
        if self._remediation is not None and detections:
            self.stats.jobs += await self._remediation.plan_and_enqueue(detections)

    # -- heartbeat, bookkeeping ----------------------------------------------------------------

    async def _heartbeat(
        self, queue: SqsQueue, message: Message, settings: HandlerSettings
    ) -> None:
        """Keep the message invisible while its objects are processed."""
        timeout = settings.visibility_timeout_secs
        interval = max(1.0, settings.heartbeat_interval_secs)
        while True:
            await asyncio.sleep(interval)
            try:
                await queue.set_visibility(message, timeout)
                self.stats.bump(self.stats.messages, "visibility_extended")
                self._metrics.visibility_extended(settings.queue_label)
                log.debug("sqs.visibility_extended", message_id=message.message_id, secs=timeout)
            except OperationError as exc:
                self._error(exc.stage, exc.reason)
                log.warning(
                    "sqs.visibility_extend_failed",
                    message_id=message.message_id,
                    reason=exc.reason,
                    detail=exc.detail,
                )

    def _error(self, stage: str, reason: str) -> None:
        key = (stage, reason)
        self.stats.errors[key] = self.stats.errors.get(key, 0) + 1
        self._metrics.error(stage, reason)

    def _object_outcome(self, outcome: ObjectOutcome) -> None:
        self.stats.bump(self.stats.objects, outcome)
        self._metrics.object_processed(outcome)


async def check_ledger(
    ledger: EventLedger,
    events: Sequence[EventDigest],
    path: DeliveryPath,
    metrics: Metrics | None = None,
) -> dict[str, bool]:
    """Record the digests in the event ledger; the conflicted eventIDs among them, each True
    when this delivery made the conflict (a content the ledger did not know): those are logged
    (``ledger.conflict``) and counted (``trailguard_forgery_suspected_total``)."""
    conflicts = await ledger.observe(events, path=path)
    for conflict in conflicts:
        if not conflict.new:
            continue
        if metrics is not None:
            metrics.forgery_suspected_in(path)
        log.warning(
            "ledger.conflict",
            event_id=conflict.event_id,
            path=path,
            contents=len(conflict.entries),
            event_names=[entry.event_name for entry in conflict.entries],
            digests=list(conflict.digests),
            seen_via=[entry.path for entry in conflict.entries],
            account_id=next((e.account_id for e in conflict.entries if e.account_id), None),
            meaning="one of these records is forged: neither is ever a source for a write",
        )
    return {conflict.event_id: conflict.new for conflict in conflicts}


def flag_conflicts(detections: list[Detection], conflicted: Mapping[str, bool]) -> list[Detection]:
    """The detections, those of a conflicted eventID flagged ``forgery_suspected``."""
    if not conflicted:
        return detections
    return [
        msgspec.structs.replace(d, forgery_suspected=True)
        if d.event_id is not None and d.event_id in conflicted
        else d
        for d in detections
    ]
