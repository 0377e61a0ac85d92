"""``trailguard replay PATH...``: local CloudTrail files through the same detector as the daemon.

Reads files and directories recursively, writes each detection once per eventID, and keeps a
summary.  Files named on the command line are always read, whatever their name; inside
directories, hidden entries are skipped and only names that CloudTrail data has (``.json``,
``.jsonl``, ``.ndjson``, each optionally ``.gz``, or a bare ``.gz``) are read -- the others (a
README, a LICENSE) are counted as skipped, not failed.  A file that cannot be read or decoded
is an error for that file alone: it is recorded with its reason and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from trailguard.detect.changes import ChangeCandidate, position
from trailguard.detect.detection import Detection, FileSource, dedup_key
from trailguard.detect.process import Detector, FileOutcome
from trailguard.errors import DecodeError
from trailguard.ingest.changes import ChangeJudge
from trailguard.ingest.forgery import check_ledger, flag_conflicts
from trailguard.observe import Observer
from trailguard.outputs.jsonl import JsonlWriter
from trailguard.state.policy_history import PolicyHistoryStore
from trailguard.telemetry.logging import get_logger, printable
from trailguard.telemetry.observers import LogObserver

if TYPE_CHECKING:
    from trailguard.decode_pool import DecodePool
    from trailguard.state.ledger import EventLedger

log = get_logger(__name__)

#: Worker processes start in ~0.3 s (a forkserver, then trailguard's imports in each): below
#: this much compressed input (~400 S3 deliveries, ~0.6 s of one core) one process is faster.
PARALLEL_MIN_BYTES = 64 << 20
#: Decode threads (``decode_in``: see decode_pool/) start at once: worth it from a few files.
PARALLEL_MIN_BYTES_THREADS = 1 << 20

#: Policy changes wait for the end of the run to be judged (their predecessors may be in files
#: read later); past this many bytes of them (a hostile or enormous input) the waiting ones are
#: judged at once against what has been read so far, and the run says so.
MAX_PENDING_CHANGE_BYTES = 64 << 20
#: Changes judged per :meth:`ChangeJudge.judge` call at the end: each call has its own
#: comparison budget, as a file's changes had.
CHANGES_PER_BATCH = 256

LOG_SUFFIXES = (".json", ".jsonl", ".ndjson", ".gz")
SKIP_NAME = "not a log file name"


@dataclass
class ReplaySummary:
    """Counts for the end-of-run summary (and for tests)."""

    files: int = 0
    files_read: int = 0
    records: int = 0
    bytes_decompressed: int = 0
    detections: Counter[tuple[str, str]] = field(default_factory=Counter)  # (disposition, outcome)
    duplicates: int = 0
    bad_records: int = 0
    facts: int = 0  # new policy facts recorded in the history
    conflicts: int = 0  # eventIDs the event ledger now knows with two contents (forgery)
    changes: Counter[str] = field(default_factory=Counter)  # policy changes by verdict
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> files
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    @property
    def detections_total(self) -> int:
        return sum(self.detections.values())

    def render(self) -> str:
        """The human summary printed to stderr at the end of a replay."""
        lines = [
            f"files: {self.files} ({self.files_read} read, {sum(self.skipped.values())} skipped, "
            f"{len(self.failed)} failed)",
            f"records: {self.records}"
            + (f" ({self.bad_records} malformed records ignored)" if self.bad_records else ""),
            f"detections: {self.detections_total}"
            + (f" (+{self.duplicates} duplicate eventIDs dropped)" if self.duplicates else ""),
        ]
        if self.facts:
            lines.append(f"policy history: {self.facts} new facts recorded")
        if self.changes:
            judged = ", ".join(
                f"{n} {verdict.replace('_', ' ')}"
                for verdict, n in sorted(self.changes.items())
                if n
            )
            lines.append(f"policy changes: {sum(self.changes.values())} judged ({judged})")
        if self.conflicts:
            lines.append(
                f"event ledger: {self.conflicts} eventIDs seen with two different contents "
                "(forgery suspected; see the ledger.conflict log lines)"
            )
        for disposition in ("alert", "suppressed"):
            for outcome in ("success", "failure"):
                n = self.detections.get((disposition, outcome), 0)
                if n:
                    lines.append(f"  {disposition:<10} {outcome:<8} {n}")
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"skipped ({reason}): {n}")
        for path, reason in self.failed:
            # A file or key name may hold a newline or an escape sequence: one line each.
            lines.append(f"FAILED {printable(path)}: {printable(reason)}")
        return "\n".join(lines)


def iter_files(paths: Iterable[str], summary: ReplaySummary) -> Iterator[Path]:
    """Files under ``paths`` in a stable order; a missing path is recorded as a failure."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if name.startswith("."):
                        continue
                    if name.lower().endswith(LOG_SUFFIXES):
                        yield Path(root, name)
                    else:
                        summary.files += 1
                        summary.skipped[SKIP_NAME] += 1
        elif path.exists():
            yield path
        else:
            summary.files += 1
            summary.failed.append((raw, "no such file or directory"))
            log.error("replay.file_failed", file=raw, reason="no such file or directory")


class LocalReplay:
    """Replays local files into a writer, dropping duplicate eventIDs across the whole run.

    With a policy history store, the policy facts the files hold are recorded in it too, and the
    policy changes among them are judged against it (weakening detections, as in the daemon:
    each change compared with what the history held just before it in eventTime order); with the
    event ledger the digests of their records (a conflict flags the detections of its eventID
    ``forgery_suspected``, as in the daemon).

    Unlike the daemon, which judges a change when it arrives, a replay judges its changes after
    the last file, when the history holds every fact the files carry: the files may be given in
    any order (two accounts' folders, a later delivery read first) and each change is still
    compared with its true predecessor.  Past :data:`MAX_PENDING_CHANGE_BYTES` of waiting changes
    they are judged at once (``replay.changes_judged_early``), so memory stays bounded.
    """

    def __init__(
        self,
        detector: Detector,
        writer: JsonlWriter,
        *,
        history: PolicyHistoryStore | None = None,
        ledger: EventLedger | None = None,
        observer: Observer | None = None,
        max_pending_bytes: int = MAX_PENDING_CHANGE_BYTES,
    ) -> None:
        self.detector = detector
        self.observer: Observer = observer if observer is not None else LogObserver()
        self.writer = writer
        self.history = history
        self.ledger = ledger
        self.changes = ChangeJudge(history, self.observer) if history is not None else None
        self.summary = ReplaySummary()
        self._seen: set[str] = set()
        #: the eventIDs of the policy changes judged so far: an event CloudTrail delivered in
        #: two files (or a file given twice) is judged and counted once, as it is written once
        self._judged: set[str] = set()
        #: the changes waiting for the end of the run, the eventIDs among them the ledger found
        #: in conflict, and their approximate size
        self._pending: list[ChangeCandidate] = []
        self._pending_conflicted: set[str] = set()
        self._pending_bytes = 0
        self._max_pending_bytes = max_pending_bytes
        self._judged_early = False

    def read(self, path: Path) -> tuple[str, bytes | None]:
        """A file's bytes (read in the loop's thread: local files, no other task waits), or
        None when it cannot be read (recorded as failed)."""
        self.summary.files += 1
        name = str(path)
        try:
            with path.open("rb") as handle:  # one byte past the limit: decode_file refuses it
                return name, handle.read(self.detector.limits.max_input_bytes + 1)
        except OSError as exc:
            self.fail(name, _cannot_read(exc))
            return name, None

    async def replay_file(self, path: Path) -> None:
        name, data = self.read(path)
        if data is None:
            return
        try:
            outcome = self.detector.process_file(
                data, source=FileSource(file=name), name=name, key=name
            )
        except DecodeError as exc:
            self.fail(name, exc.reason)
            return
        await self.account(name, outcome)

    async def replay_parallel(
        self, files: Iterable[Path], pool: DecodePool, tick: Callable[[], None]
    ) -> None:
        """Decode in the pool's workers (threads or processes), which read the files
        themselves, a few files ahead per worker; account for them in file order, so the output
        is the same as :meth:`replay_file` one by one."""
        from trailguard.decode_pool import DecodePoolBroken

        ahead: deque[tuple[str, asyncio.Future[FileOutcome]]] = deque()
        limit = 2 * pool.workers + 2

        async def settle() -> None:
            name, task = ahead.popleft()
            try:
                outcome = await task
            except OSError as exc:
                self.fail(name, _cannot_read(exc))
            except DecodeError as exc:
                self.fail(name, exc.reason)
            except DecodePoolBroken as exc:
                self.fail(name, str(exc))
            else:
                await self.account(name, outcome)
            tick()

        try:
            for path in files:
                self.summary.files += 1
                name = str(path)
                ahead.append(
                    (
                        name,
                        asyncio.ensure_future(
                            pool.process_path(
                                name, source=FileSource(file=name), name=name, key=name
                            )
                        ),
                    )
                )
                if len(ahead) >= limit:
                    await settle()
            while ahead:
                await settle()
        finally:
            for _, task in ahead:
                task.cancel()

    async def account(self, name: str, outcome: FileOutcome) -> None:
        """Count a decoded file, record its policy facts and write its new detections."""
        summary = self.summary
        detections = outcome.detections
        conflicted: dict[str, bool] = {}
        if self.ledger is not None and outcome.events:
            conflicted = await check_ledger(self.ledger, outcome.events, "file", self.observer)
            summary.conflicts += sum(1 for new in conflicted.values() if new)
            detections = flag_conflicts(detections, conflicted)
        if self.history is not None and outcome.facts:
            summary.facts += await self.history.record(outcome.facts)
        if self.changes is not None and outcome.changes:
            await self._hold(outcome.changes, conflicted)
        decoded = outcome.decoded
        summary.files_read += 1
        summary.records += decoded.records
        summary.bytes_decompressed += decoded.bytes_decompressed
        if decoded.skipped:
            summary.skipped[decoded.skipped] += 1
            log.debug("replay.file_skipped", file=name, reason=decoded.skipped)
        if decoded.bad_records:
            summary.bad_records += decoded.bad_record_count
            log.warning(
                "replay.records_malformed",
                file=name,
                count=decoded.bad_record_count,
                first=decoded.bad_records[0],
            )
        self._write(detections)

    def _write(self, detections: list[Detection]) -> None:
        fresh = self._dedup(detections)
        self.writer.write_batch(fresh)
        for detection in fresh:
            self.summary.detections[(detection.disposition, detection.outcome)] += 1

    async def _hold(self, changes: list[ChangeCandidate], conflicted: dict[str, bool]) -> None:
        """Keep a file's policy changes for the end of the run (each eventID once: CloudTrail
        may deliver an event in two files)."""
        for change in changes:
            event_id = change.fact.event_id
            if event_id in self._judged:
                continue
            self._judged.add(event_id)
            self._pending.append(change)
            if event_id in conflicted:
                self._pending_conflicted.add(event_id)
            self._pending_bytes += _pending_size(change)
        if self._pending_bytes > self._max_pending_bytes:
            if not self._judged_early:
                self._judged_early = True
                log.warning(
                    "replay.changes_judged_early",
                    changes=len(self._pending),
                    limit_bytes=self._max_pending_bytes,
                    reason="too many policy changes to keep for the end of the run: these are "
                    "compared with the files read so far (a predecessor in a later file is "
                    "missed); replay fewer files at a time, in time order",
                )
            await self.judge_pending()

    async def judge_pending(self) -> None:
        """Judge the changes held so far, in the history's order, and write their detections."""
        pending, conflicted = self._pending, self._pending_conflicted
        self._pending, self._pending_conflicted, self._pending_bytes = [], set(), 0
        if self.changes is None or not pending:
            return
        pending.sort(key=position)
        flags = dict.fromkeys(conflicted, True)
        for start in range(0, len(pending), CHANGES_PER_BATCH):
            judged = await self.changes.judge(pending[start : start + CHANGES_PER_BATCH])
            self.summary.changes.update(judged.counts)
            self._write(flag_conflicts(judged.detections, flags))

    def _dedup(self, detections: list[Detection]) -> list[Detection]:
        fresh: list[Detection] = []
        for detection in detections:
            key = dedup_key(detection.event_id, detection.event_digest, detection.forgery_suspected)
            if key is not None:
                if key in self._seen:
                    self.summary.duplicates += 1
                    continue
                self._seen.add(key)
            fresh.append(detection)
        return fresh

    def fail(self, name: str, reason: str) -> None:
        """Record a file that could not be read or decoded (the run goes on)."""
        self.summary.failed.append((name, reason))
        log.error("replay.file_failed", file=name, reason=reason)

    async def run(
        self,
        paths: Iterable[str],
        *,
        progress: TextIO | None = None,
        pool: Callable[[], DecodePool] | None = None,
        min_bytes: int | None = None,
    ) -> ReplaySummary:
        """Replay every file under ``paths``; a progress bar goes to ``progress`` if given.

        ``pool`` makes the decode workers when the input is big enough to repay starting them
        (``min_bytes``, by default :data:`PARALLEL_MIN_BYTES`); the result is the same either
        way.
        """
        if min_bytes is None:
            min_bytes = PARALLEL_MIN_BYTES
        files = list(iter_files(paths, self.summary))
        parallel = pool is not None and _total_size(files, min_bytes) >= min_bytes
        bar = None
        if progress is not None:
            from tqdm import tqdm  # imported only when a terminal shows it

            bar = tqdm(total=len(files), unit="file", file=progress, dynamic_ncols=True)

        def tick() -> None:
            if bar is not None:
                bar.set_postfix(
                    records=self.summary.records,
                    detections=self.summary.detections_total,
                    refresh=False,
                )
                bar.update(1)

        try:
            if parallel:
                assert pool is not None
                workers = pool()
                log.debug("replay.parallel", files=len(files), workers=workers.workers)
                try:
                    await self.replay_parallel(files, workers, tick)
                finally:
                    workers.shutdown()
            else:
                for path in files:
                    await self.replay_file(path)
                    tick()
            await self.judge_pending()
        finally:
            if bar is not None:
                bar.close()
        return self.summary


def _pending_size(change: ChangeCandidate) -> int:
    """About what a waiting change holds in memory: its document (in the fact and in the
    detection's request parameters) and the rest of its detection."""
    return 2 * len(change.fact.document or "") + 4096


def _cannot_read(exc: OSError) -> str:
    return f"cannot read: {exc.strerror or exc}"


def _total_size(files: Iterable[Path], enough: int) -> int:
    total = 0
    for path in files:
        with contextlib.suppress(OSError):  # reported when it is read
            total += path.stat().st_size
        if total >= enough:
            break
    return total
