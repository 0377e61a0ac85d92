"""Handling one SQS message, start to finish — and the only place a message is deleted.

parse body -> object refs (or one EventBridge record) -> fetch + decode each object (bounded,
off the event loop, visibility extended on a heartbeat) -> rules -> commit detections durably
-> delete the message.

Outcomes, by promise:

* every ref processed and detections committed: the message is deleted;
* an S3 test event, or refs that are all digest/Insight/other keys: deleted without download;
* a transient failure that outlived its retries: the message is released for redelivery after
  a backoff delay that grows with its receive count (no hot loop);
* a permanent failure (NoSuchKey, AccessDenied, corrupt or oversized object), or a body that is
  none of the known shapes: counted, logged with bucket/key/reason or message id, and left
  invisible until its visibility timeout ends, so the queue's redrive policy moves it to the
  dead-letter queue after maxReceiveCount deliveries.  Detections from the message's other,
  good objects are committed all the same (and deduplicated when it comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from trailguard.decode_pool import DecodePool
from trailguard.detect.detection import Detection, EventBridgeSource, S3Source
from trailguard.detect.keys import KeyKind, classify_key
from trailguard.detect.process import Detector, FileOutcome
from trailguard.errors import DecodeError, IngestError, PermanentError, TransientError
from trailguard.ingest.notifications import ObjectRef, parse_body
from trailguard.ingest.retry import retry_transient
from trailguard.ingest.s3 import ObjectStore
from trailguard.ingest.sqs import Message, SqsQueue
from trailguard.outputs.sink import DetectionSink
from trailguard.telemetry.logging import get_logger

log = get_logger(__name__)

FETCH_ATTEMPTS = 4
RELEASE_BASE_SECS = 15
RELEASE_CAP_SECS = 900


@dataclass
class IngestStats:
    """Counters the daemon reports (and tests read); metrics mirror these."""

    messages: dict[str, int] = field(default_factory=dict)  # outcome -> count
    objects: dict[str, int] = field(default_factory=dict)  # outcome -> count
    records: int = 0
    bytes_compressed: int = 0
    detections: int = 0
    duplicates: int = 0
    errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (stage, reason)

    def bump(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n


@dataclass(frozen=True)
class HandlerSettings:
    visibility_timeout_secs: int
    heartbeat_interval_secs: float
    max_object_bytes: int
    key_include: Sequence[re.Pattern[str]] = ()
    key_exclude: Sequence[re.Pattern[str]] = ()


class MessageHandler:
    def __init__(
        self,
        *,
        detector: Detector,
        store: ObjectStore,
        pool: DecodePool,
        sink: DetectionSink,
        object_slots: asyncio.Semaphore,
        stats: IngestStats,
    ) -> None:
        self._detector = detector
        self._store = store
        self._pool = pool
        self._sink = sink
        self._slots = object_slots
        self.stats = stats

    # -- entry point ---------------------------------------------------------------------------

    async def handle(self, queue: SqsQueue, message: Message, settings: HandlerSettings) -> str:
        """Process one message; returns its outcome (deleted, released, left, ...)."""
        bound = log.bind(queue=queue.url, message_id=message.message_id)
        parsed = parse_body(message.body)
        if parsed.kind == "unknown":
            self._error("parse", "unrecognised_body")
            bound.warning(
                "sqs.message_unrecognised",
                format=parsed.format,
                reason=parsed.reason,
                receive_count=message.receive_count,
            )
            return self._outcome("unrecognised")
        if parsed.kind == "test_event":
            await queue.delete(message)
            bound.info("sqs.test_event_acknowledged", format=parsed.format)
            return self._outcome("test_event")
        if parsed.kind == "api_call":
            assert parsed.record is not None
            source = EventBridgeSource(queue=queue.url, message_id=message.message_id)
            detection = self._detector.detect(parsed.record, source)
            self.stats.records += 1
            await self._commit([detection] if detection else [])
            await queue.delete(message)
            return self._outcome("deleted")
        return await self._handle_objects(queue, message, parsed.objects, settings)

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
    ) -> str:
        wanted: list[ObjectRef] = []
        for ref in refs:
            reason = self._wanted(ref.key, settings)
            if reason is None:
                wanted.append(ref)
            else:
                self.stats.bump(self.stats.objects, f"skipped_{reason}")
                log.debug("s3.object_skipped", bucket=ref.bucket, key=ref.key, reason=reason)
        if not wanted:
            await queue.delete(message)
            return self._outcome("deleted")

        heartbeat = asyncio.create_task(self._heartbeat(queue, message, settings))
        try:
            results = await asyncio.gather(
                *(self._process_object(ref, settings) for ref in wanted), return_exceptions=True
            )
            detections: list[Detection] = []
            failures: list[IngestError] = []
            for ref, result in zip(wanted, results, strict=True):
                if isinstance(result, IngestError):
                    failures.append(result)
                    self._object_failed(ref, result)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    detections.extend(result.detections)
            await self._commit(detections)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

        if not failures:
            await queue.delete(message)
            return self._outcome("deleted")
        if all(f.transient for f in failures):
            delay = int(
                min(RELEASE_CAP_SECS, RELEASE_BASE_SECS * 2 ** max(0, message.receive_count - 1))
            )
            await queue.set_visibility(message, delay)
            log.warning(
                "sqs.message_released",
                queue=queue.url,
                message_id=message.message_id,
                retry_in_secs=delay,
                receive_count=message.receive_count,
            )
            return self._outcome("released")
        log.warning(
            "sqs.message_left_for_redrive",
            queue=queue.url,
            message_id=message.message_id,
            receive_count=message.receive_count,
            failed_objects=len(failures),
        )
        return self._outcome("left_for_redrive")

    async def _process_object(self, ref: ObjectRef, settings: HandlerSettings) -> FileOutcome:
        started = time.perf_counter()
        async with self._slots:

            async def fetch() -> bytes:
                return await self._store.fetch(
                    ref.bucket, ref.key, max_bytes=settings.max_object_bytes
                )

            data = await retry_transient(
                fetch, attempts=FETCH_ATTEMPTS, what=f"s3://{ref.bucket}/{ref.key}"
            )
            name = f"s3://{ref.bucket}/{ref.key}"
            try:
                outcome = await self._pool.process(
                    data, source=S3Source(bucket=ref.bucket, key=ref.key), name=name, key=ref.key
                )
            except DecodeError as exc:
                raise PermanentError("decode", "undecodable", exc.reason) from exc
        decoded = outcome.decoded
        self.stats.records += decoded.records
        self.stats.bytes_compressed += len(data)
        self.stats.bump(
            self.stats.objects, f"skipped_{decoded.skipped}" if decoded.skipped else "ok"
        )
        log.info(
            "s3.object_processed",
            bucket=ref.bucket,
            key=ref.key,
            records=decoded.records,
            candidates=len(decoded.candidates),
            detections=len(outcome.detections),
            bad_records=len(decoded.bad_records),
            bytes=len(data),
            duration_secs=round(time.perf_counter() - started, 4),
        )
        return outcome

    def _object_failed(self, ref: ObjectRef, error: IngestError) -> None:
        kind = "transient" if isinstance(error, TransientError) else "permanent"
        self.stats.bump(self.stats.objects, f"failed_{kind}")
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

    # -- commit, heartbeat, bookkeeping ----------------------------------------------------------

    async def _commit(self, detections: list[Detection]) -> None:
        result = await self._sink.commit(detections)
        self.stats.detections += len(result.written)
        self.stats.duplicates += result.duplicates
        for detection in result.written:
            log.info(
                "detection",
                event_id=detection.event_id,
                event_name=detection.event_name,
                outcome=detection.outcome,
                severity=detection.severity,
                disposition=detection.disposition,
                rule=detection.rule,
                account_id=detection.account_id,
                actor_arn=detection.actor.arn,
            )
        if result.duplicates:
            log.debug("detection.duplicates_dropped", count=result.duplicates)

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
                log.debug("sqs.visibility_extended", message_id=message.message_id, secs=timeout)
            except IngestError as exc:
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

    def _outcome(self, outcome: str) -> str:
        self.stats.bump(self.stats.messages, outcome)
        return outcome
