"""Handling one SQS message, start to finish — and the only place a message is deleted.

parse body -> object refs (or one EventBridge record) -> fetch + decode each object (bounded,
off the event loop, visibility extended on a heartbeat) -> rules -> check the records' digests
against the event ledger -> record policy facts -> judge policy changes against the history
(ingest/changes.py) -> commit detections durably -> enqueue remediation jobs durably -> delete
the message.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trailguard.config import KeysConfig, RuleEntry, SeverityConfig, Suppression
from trailguard.config.rules import resolve_rules
from trailguard.decode_pool import DecodePool
from trailguard.detect.changes import ChangeCandidate
from trailguard.detect.detection import Detection, EventBridgeSource, S3Source
from trailguard.detect.digest import EventDigest
from trailguard.detect.keys import KeyKind, classify_key, key_account_region
from trailguard.detect.policy_facts import PolicyFact
from trailguard.detect.process import Detector, FileOutcome
from trailguard.errors import DecodeError, OperationError, PermanentError
from trailguard.ingest.budget import ByteBudget, Reservation
from trailguard.ingest.changes import ChangeJudge
from trailguard.ingest.forgery import check_ledger, flag_conflicts
from trailguard.ingest.notifications import ObjectRef, parse_body
from trailguard.ingest.s3 import ObjectStore
from trailguard.ingest.sqs import Message, SqsQueue
from trailguard.observe import (
    DetectionCommitted,
    DuplicatesDropped,
    EventBridgeRecordRead,
    FactsRecorded,
    JobsEnqueued,
    MessageLeftForRedrive,
    MessageRejected,
    MessageReleased,
    MessageUnrecognised,
    ObjectFailed,
    ObjectProcessed,
    ObjectSkipped,
    Observer,
    TestEventAcknowledged,
    VisibilityExtended,
    VisibilityExtendFailed,
)
from trailguard.outputs.sink import DetectionSink
from trailguard.retry import retry_transient
from trailguard.vocabulary import DeliveryPath, MessageOutcome, ObjectOutcome, RejectReason

if TYPE_CHECKING:
    from trailguard.remediate.service import Remediation
    from trailguard.state.ledger import EventLedger
    from trailguard.state.policy_history import PolicyHistoryStore

# Why an object was not downloaded (or was skipped after decoding) -> its metric outcome.
_SKIPPED: dict[str, ObjectOutcome] = {
    "digest": "skipped_digest",
    "insight": "skipped_insight",
    "excluded": "skipped_excluded",
    "other": "skipped_other",
}

FETCH_ATTEMPTS = 4
RELEASE_CAP_SECS = 900


@dataclass(frozen=True)
class HandlerSettings:
    """Per-queue settings (from ``[[sources.sqs]]`` and ``[limits]``)."""

    queue_label: str
    visibility_timeout_secs: int
    heartbeat_interval_secs: float
    max_object_bytes: int
    #: ``[limits] max_objects_per_message``: a body naming more is rejected whole.
    max_objects_per_message: int = 100
    #: The queue's ``buckets``; empty: any bucket.
    buckets: frozenset[str] = frozenset()
    #: ``release_backoff_secs``: first delay before a released message comes back.
    release_backoff_secs: int = 15


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
        observer: Observer,
        history: PolicyHistoryStore | None = None,
        ledger: EventLedger | None = None,
        remediation: Remediation | None = None,
        keys: KeysConfig | None = None,
    ) -> None:
        self.detector = detector  # replaced on live reload
        self.pool = pool
        self._store = store
        self._sink = sink
        self._slots = object_slots
        # bytes of objects held at once (the daemon passes [limits] max_bytes_in_flight)
        self.budget = budget if budget is not None else ByteBudget(1 << 62)
        self._observer = observer
        #: objects being fetched or decoded now (a gauge reads it at scrape time)
        self.objects_in_flight = 0
        self._history = history
        self._ledger = ledger
        self._remediation = remediation
        # policy changes are judged against the history: weakening detections (issue 16)
        self._changes = ChangeJudge(history, observer) if history is not None else None
        self.reconfigure_keys(keys if keys is not None else KeysConfig())

    # -- live reload (trailguard/live.py) ------------------------------------------------------

    def reconfigure_keys(self, keys: KeysConfig) -> tuple[str, ...]:
        """``[keys]``: which object keys are fetched, from the next message on."""
        self._include = tuple(re.compile(p) for p in keys.include)
        self._exclude = tuple(re.compile(p) for p in keys.exclude)
        return ()

    def reconfigure_detection(
        self, rules: Sequence[RuleEntry], suppress: Sequence[Suppression], severity: SeverityConfig
    ) -> tuple[str, ...]:
        """``[[rules]]``, ``[[suppress]]``, ``[severity]``: new records are judged by the new
        rules (objects already in a decode worker finish with the old ones)."""
        self.detector = self.detector.with_rules(resolve_rules(tuple(rules)), suppress, severity)
        self.pool.reconfigure(rules, suppress, severity)
        return ()

    # -- entry point ---------------------------------------------------------------------------

    async def handle(
        self, queue: SqsQueue, message: Message, settings: HandlerSettings
    ) -> MessageOutcome:
        """Process one message; returns its outcome (deleted, released, left, ...)."""
        emit = self._observer.observe
        label, message_id = settings.queue_label, message.message_id
        parsed = parse_body(message.body)
        if parsed.kind == "unknown":
            emit(
                MessageUnrecognised(
                    label, message_id, parsed.format, parsed.reason or "", message.receive_count
                )
            )
            return "unrecognised"
        if parsed.kind == "test_event":
            await queue.delete(message)
            emit(TestEventAcknowledged(label, message_id, parsed.format))
            return "test_event"
        if parsed.kind == "api_call":
            assert parsed.record is not None
            record = parsed.record
            source = EventBridgeSource(queue=queue.url, message_id=message.message_id)
            detection, facts, digest = self.detector.examine(record, source)
            change = self.detector.change(record, source, facts, digest)
            emit(EventBridgeRecordRead(label, message_id))
            await self._finish(
                [detection] if detection else [],
                facts,
                [digest] if digest else [],
                message,
                "eventbridge",
                [change] if change else [],
            )
            await queue.delete(message)
            return "deleted"
        rejected = self._rejection(parsed.objects, settings)
        if rejected is not None:
            reason, fields = rejected
            emit(
                MessageRejected(
                    label, message_id, reason, parsed.format, message.receive_count, fields
                )
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

    def _wanted(self, key: str) -> str | None:
        """None when the key should be fetched, else the reason to skip it."""
        kind = classify_key(key)
        if kind in (KeyKind.DIGEST, KeyKind.INSIGHT):
            return kind.value
        if any(p.search(key) for p in self._exclude):
            return "excluded"
        if self._include:
            return None if any(p.search(key) for p in self._include) else "other"
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
            reason = self._wanted(ref.key)
            if reason is None:
                wanted.append(ref)
            else:
                self._observer.observe(ObjectSkipped(ref.bucket, ref.key, reason, _SKIPPED[reason]))
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
            changes: list[ChangeCandidate] = []
            failures: list[OperationError] = []
            for ref, result in zip(wanted, results, strict=True):
                if isinstance(result, OperationError):
                    failures.append(result)
                    self._observer.observe(ObjectFailed(ref.bucket, ref.key, result))
                elif isinstance(result, BaseException):
                    raise result
                else:
                    detections.extend(result.detections)
                    facts.extend(result.facts)
                    events.extend(result.events)
                    changes.extend(result.changes)
            await self._finish(detections, facts, events, message, "s3", changes)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

        if not failures:
            await queue.delete(message)
            return "deleted"
        if all(f.transient for f in failures):
            delay = int(
                min(
                    RELEASE_CAP_SECS,
                    settings.release_backoff_secs * 2 ** max(0, message.receive_count - 1),
                )
            )
            await queue.set_visibility(message, delay)
            self._observer.observe(
                MessageReleased(
                    settings.queue_label,
                    message.message_id,
                    "transient",
                    delay,
                    message.receive_count,
                )
            )
            return "released"
        self._observer.observe(
            MessageLeftForRedrive(
                settings.queue_label, message.message_id, message.receive_count, len(failures)
            )
        )
        return "left_for_redrive"

    async def _process_object(self, ref: ObjectRef, settings: HandlerSettings) -> FileOutcome:
        started = time.perf_counter()
        name = f"s3://{ref.bucket}/{ref.key}"
        async with self._slots:
            held = Reservation(self.budget)
            self.objects_in_flight += 1
            try:

                async def fetch() -> bytes | bytearray:
                    held.release()  # what a failed attempt took goes back first
                    return await self._store.fetch(
                        ref.bucket,
                        ref.key,
                        max_bytes=settings.max_object_bytes,
                        reserve=held.take,
                    )

                data = await retry_transient(fetch, attempts=FETCH_ATTEMPTS, what=name)
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
                self.objects_in_flight -= 1
        decoded = outcome.decoded
        account, region = key_account_region(ref.key)
        self._observer.observe(
            ObjectProcessed(
                bucket=ref.bucket,
                key=ref.key,
                outcome=_SKIPPED.get(decoded.skipped, "skipped_other") if decoded.skipped else "ok",
                size_bytes=len(data),
                seconds=time.perf_counter() - started,
                account=account,
                region=region,
                records=decoded.records,
                candidates=len(decoded.candidates),
                detections=len(outcome.detections),
                facts=len(outcome.facts),
                bad_records=decoded.bad_record_count,
                first_bad_records=tuple(decoded.bad_records[:10]),
            )
        )
        return outcome

    # -- history, commit, jobs ----------------------------------------------------------------

    async def _finish(
        self,
        detections: list[Detection],
        facts: list[PolicyFact],
        events: list[EventDigest],
        message: Message,
        path: DeliveryPath,
        changes: Sequence[ChangeCandidate] = (),
    ) -> None:
        """Make everything this message produced durable, in the order remediation needs.

        The records' digests into the event ledger first (a conflict flags the detections of
        its eventID), then the policy facts (a job may need the document a Put earlier in the
        same file carried), then the policy changes judged against them (each compared with
        what the history held just before it), then the detections, then the jobs -- planned
        from *every*
        detection, duplicates too: enqueuing is idempotent, and a crash between the detection
        write and the enqueue must not lose the jobs of a redelivered message whose detections
        are already written.
        """
        emit = self._observer.observe
        conflicted: Mapping[str, bool] = {}
        if self._ledger is not None and events:
            conflicted = await check_ledger(self._ledger, events, path, self._observer)
            detections = flag_conflicts(detections, conflicted)
        if self._history is not None and facts:
            emit(FactsRecorded(new=await self._history.record(facts), seen=len(facts)))
        if self._changes is not None and changes:
            judged = await self._changes.judge(changes)
            detections = [*detections, *flag_conflicts(judged.detections, conflicted)]
        result = await self._sink.commit(detections)
        emit(DuplicatesDropped(result.duplicates))
        for detection in result.written:
            emit(DetectionCommitted(detection, sent_timestamp_ms=message.sent_timestamp_ms))
        if self._remediation is not None and detections:
            emit(JobsEnqueued(await self._remediation.plan_and_enqueue(detections)))

    # -- heartbeat ---------------------------------------------------------------------------

    async def _heartbeat(
        self, queue: SqsQueue, message: Message, settings: HandlerSettings
    ) -> None:
        """Keep the message invisible while its objects are processed."""
        timeout = settings.visibility_timeout_secs
        interval = max(1.0, settings.heartbeat_interval_secs)
        label, message_id = settings.queue_label, message.message_id
        while True:
            await asyncio.sleep(interval)
            try:
                await queue.set_visibility(message, timeout)
                self._observer.observe(VisibilityExtended(label, message_id, timeout))
            except OperationError as exc:
                self._observer.observe(VisibilityExtendFailed(label, message_id, exc))
