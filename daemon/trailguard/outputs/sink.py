"""The one place detections become durable: claim by eventID, write, fsync, record.

(The dedup key is the eventID -- or eventID#digest for a detection flagged ``forgery_suspected``,
:func:`~trailguard.detect.detection.dedup_key`: each content of a conflicted event is reported.)

Order matters for the promises (at least once, reported once):

1. claim the keys in the dedup store (:meth:`~trailguard.state.dedup.DedupStore.claim`: the new
   ones become this writer's; with several replicas a claim is a conditional write with a lease);
2. write the claimed detections and fsync the output;
3. record them in the dedup store at once (the **crash window** is the time between 2 and 3:
   :class:`~trailguard.observe.DedupRecorded` measures it);
4. only then may the caller delete the SQS message.

A key another replica has claimed and not recorded yet is waited for briefly
(:data:`HELD_WAIT_SECS`); still held, the commit raises
:class:`~trailguard.state.dedup.ClaimHeldError` after writing its own claims, so the message
comes back later, when the other replica has recorded it or its lease has run out (then this
replica takes the claim over and writes it: ``taken_over``).

A crash between 2 and 3 would make the next delivery write the same detection again, so at
start-up :func:`recover_from_output` reads the tail of the output file and records the eventIDs
it already holds; with several replicas a replica that stays dead longer than the lease leaves
its claims to the others, who write those lines again (counted:
``trailguard_dedup_takeovers_total``).  Commits are serialised by a lock: the same event
arriving at the same moment through S3 and EventBridge is written once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from trailguard.detect.detection import Detection, dedup_key
from trailguard.errors import TrailguardError
from trailguard.observe import DedupRecorded, Observer
from trailguard.outputs.jsonl import JsonlWriter
from trailguard.state.dedup import Claim, ClaimHeldError, DedupStore

RECOVERY_TAIL_BYTES = 8 << 20
#: How long a commit waits for keys another replica is writing, before leaving the message for
#: later; and how often it looks.
HELD_WAIT_SECS: Final = 2.0
HELD_POLL_SECS: Final = 0.25


@dataclass(frozen=True, slots=True)
class CommitResult:
    written: list[Detection]
    duplicates: int


class DetectionSink:
    def __init__(
        self, writer: JsonlWriter, dedup: DedupStore, *, observer: Observer | None = None
    ) -> None:
        self._writer = writer
        self._dedup = dedup
        self._observer = observer
        self._lock = asyncio.Lock()
        # Why the last commit failed (readiness reports it), or None after a success.
        self.last_failure: str | None = None

    async def commit(self, detections: Sequence[Detection]) -> CommitResult:
        if not detections:
            return CommitResult([], 0)
        try:
            result = await self._commit(detections)
        except ClaimHeldError:
            raise  # another replica is writing them: not a failure of this one
        except TrailguardError as exc:
            self.last_failure = str(exc)
            raise
        self.last_failure = None
        return result

    async def _commit(self, detections: Sequence[Detection]) -> CommitResult:
        async with self._lock:
            keys = [_key(d) for d in detections]
            pending = list(dict.fromkeys(key for key in keys if key is not None))
            unkeyed = [d for d, key in zip(detections, keys, strict=True) if key is None]
            written: list[Detection] = []
            held: list[str] = []
            loop = asyncio.get_running_loop()
            give_up = loop.time() + HELD_WAIT_SECS
            first = True
            while first or pending:
                claim = await self._dedup.claim(pending) if pending else None
                new = set(claim.new) if claim is not None else set()
                fresh = [*unkeyed] if first else []
                for detection, key in zip(detections, keys, strict=True):
                    if key is not None and key in new:
                        new.discard(key)  # one line per key, the first of its detections
                        fresh.append(detection)
                await self._write(fresh, claim)
                written += fresh
                first = False
                held = claim.held if claim is not None else []
                if not held or loop.time() >= give_up:
                    break
                await asyncio.sleep(HELD_POLL_SECS)  # another replica is writing them
                pending = held
            if held:
                raise ClaimHeldError(
                    f"{len(held)} eventID(s) are being written by another replica "
                    f"(e.g. {held[0]!r}): the message is tried again later"
                )
            return CommitResult(written, len(detections) - len(written))

    async def _write(self, fresh: list[Detection], claim: Claim | None) -> None:
        """Write and fsync ``fresh``, then record the claimed keys at once (the crash window)."""
        if fresh:
            await asyncio.to_thread(self._writer.write_batch, fresh)
        if claim is None or not claim.new:
            return
        written_at = time.monotonic()
        await self._dedup.record(claim.new)
        if self._observer is not None:
            self._observer.observe(
                DedupRecorded(len(claim.new), time.monotonic() - written_at, len(claim.taken_over))
            )


def _key(detection: Detection) -> str | None:
    return dedup_key(detection.event_id, detection.event_digest, detection.forgery_suspected)


class _IdOnly(msgspec.Struct):
    event_id: str | None = None
    event_digest: str | None = None
    forgery_suspected: bool = False


def read_tail_event_ids(path: str, *, tail_bytes: int = RECOVERY_TAIL_BYTES) -> list[str]:
    """Dedup keys (eventIDs, :func:`dedup_key`) of the detections in the last ``tail_bytes`` of
    a JSONL output file."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start = max(0, size - tail_bytes)
            handle.seek(start)
            data = handle.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first line may be cut by the seek
    decoder = msgspec.json.Decoder(_IdOnly)
    ids: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            seen = decoder.decode(line)
        except msgspec.DecodeError:
            continue  # a torn last line from a crash mid-write
        key = dedup_key(seen.event_id, seen.event_digest, seen.forgery_suspected)
        if key is not None:
            ids.append(key)
    return ids


def repair_torn_tail(path: str) -> bool:
    """End a file cut mid-line (crash mid-write) with a newline so the next line starts clean."""
    try:
        with open(path, "rb+") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return False
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return False
            handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())
            return True
    except FileNotFoundError:
        return False


async def recover_from_output(path: str, dedup: DedupStore) -> int:
    """Record the eventIDs already in the output; returns how many were found."""
    if path == "-":
        return 0
    await asyncio.to_thread(repair_torn_tail, path)
    ids = await asyncio.to_thread(read_tail_event_ids, path)
    if ids:
        await dedup.record(ids)
    return len(ids)
