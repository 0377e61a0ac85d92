"""The one place detections become durable: dedup by eventID, write, fsync, remember.

(The dedup key is the eventID -- or eventID#digest for a detection flagged ``forgery_suspected``,
:func:`~trailguard.detect.detection.dedup_key`: each content of a conflicted event is reported.)

Order matters for the promises (at least once, no duplicate):

1. ask the dedup store which eventIDs are new;
2. write the new detections and fsync the output;
3. record their eventIDs in the dedup store;
4. only then may the caller delete the SQS message.

A crash between 2 and 3 would make the next delivery write the same detection again, so at
start-up :func:`recover_from_output` reads the tail of the output file and records the eventIDs
it already holds.  Commits are serialised by a lock: the same event arriving at the same moment
through S3 and EventBridge is written once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from trailguard.detect.detection import Detection, dedup_key
from trailguard.errors import TrailguardError
from trailguard.outputs.jsonl import JsonlWriter
from trailguard.state.dedup import DedupStore

RECOVERY_TAIL_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class CommitResult:
    written: list[Detection]
    duplicates: int


class DetectionSink:
    def __init__(self, writer: JsonlWriter, dedup: DedupStore) -> None:
        self._writer = writer
        self._dedup = dedup
        self._lock = asyncio.Lock()
        # Why the last commit failed (readiness reports it), or None after a success.
        self.last_failure: str | None = None

    async def commit(self, detections: Sequence[Detection]) -> CommitResult:
        if not detections:
            return CommitResult([], 0)
        try:
            result = await self._commit(detections)
        except TrailguardError as exc:
            self.last_failure = str(exc)
            raise
        self.last_failure = None
        return result

    async def _commit(self, detections: Sequence[Detection]) -> CommitResult:
        async with self._lock:
            keys = [_key(d) for d in detections]
            ids = [key for key in keys if key is not None]
            new = set(await self._dedup.filter_new(ids)) if ids else set()
            fresh: list[Detection] = []
            taken: list[str] = []
            for detection, key in zip(detections, keys, strict=True):
                if key is None:  # cannot be deduplicated; real CloudTrail always has one
                    fresh.append(detection)
                elif key in new:
                    new.discard(key)
                    taken.append(key)
                    fresh.append(detection)
            if fresh:
                await asyncio.to_thread(self._writer.write_batch, fresh)
            if taken:
                await self._dedup.record(taken)
            return CommitResult(fresh, len(detections) - len(fresh))


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
