"""The persistent dedup store: which keys (CloudTrail eventIDs) were already handled.

:class:`DedupStore` is the interface the daemon uses; :class:`SqliteDedupStore` implements it on
one SQLite file so a single daemon survives restarts; ``state/dynamo/dedup.py`` implements it on
the shared table for several replicas.

Writers **claim** keys (:meth:`DedupStore.claim`) before they write a detection and **record**
them once it is durable.  With one process (SQLite) a claim is "which keys are new"; with several
replicas a claim is a conditional write with a lease, so two replicas that receive the same event
at once (by S3 and by EventBridge, or a redelivery) do not both write it (docs/DYNAMODB.md).

SQLite details (the plumbing is :class:`~trailguard.state.sqlite.SqliteStore`'s): WAL journal with
``synchronous=FULL``, so a ``record`` that returned survives a crash or power loss; one
connection, used only from one dedicated worker thread, so the event loop never blocks on disk
and calls are serialised without locks.  Entries live ``ttl_seconds``:
an entry recorded at ``t`` is seen while ``clock() < t + ttl_seconds`` and new again afterwards
(``purge_expired`` deletes such entries).  Long key lists are split into batches that stay below
SQLite's limit on bound parameters.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from trailguard.errors import StateError
from trailguard.state.sqlite import SqliteStore, ensure_schema, transaction

__all__ = ["Claim", "ClaimHeldError", "DedupStore", "SqliteDedupStore", "check_keys"]

SCHEMA_VERSION: Final = 1
_BATCH: Final = 500  # bound parameters per statement (SQLite's floor is 999)
_PURGE_BATCH: Final = 5000  # rows per purge transaction, so other calls interleave


@dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`DedupStore.claim` answered, key by key (each key in exactly one list but
    ``taken_over``, which is part of ``new``)."""

    #: claimed by this call: write them, then :meth:`DedupStore.record` them
    new: list[str] = field(default_factory=list)
    #: being written by another replica right now (claimed, not recorded, its lease running)
    held: list[str] = field(default_factory=list)
    #: among ``new``: keys another writer had claimed and never recorded before its lease ran
    #: out -- it died between its claim and its record, perhaps after writing the line (the
    #: one way an event is reported twice: counted, ``trailguard_dedup_takeovers_total``)
    taken_over: list[str] = field(default_factory=list)


class ClaimHeldError(StateError):
    """Some keys stayed claimed by another replica that has not recorded them: the message is
    tried again later (by then the other replica recorded them, or its lease ran out)."""


class DedupStore(Protocol):
    """Remembers keys for a while; every method may raise :class:`StateError`."""

    async def claim(self, keys: Sequence[str]) -> Claim:
        """Claim the keys not yet recorded, for this writer: the caller writes those in
        ``new`` and then records them.  A key repeated within ``keys`` counts once."""
        ...

    async def filter_new(self, keys: Sequence[str]) -> list[str]:
        """The keys not yet recorded (or recorded longer ago than the TTL).

        Order is kept and a key repeated within ``keys`` is returned once.
        """
        ...

    async def record(self, keys: Sequence[str]) -> None:
        """Mark ``keys`` as seen now; durable when this returns."""
        ...

    async def purge_expired(self) -> int:
        """Delete entries older than the TTL; returns how many were deleted."""
        ...

    async def close(self) -> None:
        """Release the store; idempotent."""
        ...


class SqliteDedupStore(SqliteStore):
    """:class:`DedupStore` on one SQLite file.  Build it with :meth:`open`."""

    _WHAT = "dedup store"
    _THREAD = "trailguard-dedup"

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        ttl_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(path, conn, executor, clock)
        self._ttl = ttl_seconds

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> SqliteDedupStore:
        """Open (creating it and its parent directory if needed) the store at ``path``.

        Raises :class:`StateError` when the file cannot be created or opened, is not a SQLite
        database, or holds a schema this version does not know.
        """
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
        db_path = Path(path)
        conn, executor = await cls._connect(db_path, _prepare)
        return cls(db_path, conn, executor, ttl_seconds, clock)

    # ------------------------------------------------------------------ the protocol

    async def claim(self, keys: Sequence[str]) -> Claim:
        # One process: the sink serialises its commits, so "new" is a claim.
        return Claim(new=await self.filter_new(keys))

    async def filter_new(self, keys: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(check_keys(keys)))
        if not wanted:
            return []
        fresh_after = self._clock() - self._ttl
        seen = await self._run(self._select_seen, wanted, fresh_after)
        return [key for key in wanted if key not in seen]

    async def record(self, keys: Sequence[str]) -> None:
        wanted = list(dict.fromkeys(check_keys(keys)))
        if not wanted:
            return
        await self._run(self._insert, wanted, self._clock())

    async def purge_expired(self) -> int:
        expired_at = self._clock() - self._ttl
        total = 0
        # One transaction per batch: other calls get the worker thread between batches.
        while True:
            deleted = await self._run(self._delete_expired, expired_at)
            total += deleted
            if deleted < _PURGE_BATCH:
                return total

    # ------------------------------------------------------------------ worker thread

    def _select_seen(self, keys: list[str], fresh_after: float) -> set[str]:
        seen: set[str] = set()
        for batch in _batches(keys, _BATCH):
            marks = ",".join("?" * len(batch))
            # The placeholders are generated; the values are bound, never interpolated.
            rows = self._conn.execute(
                f"SELECT key FROM seen WHERE key IN ({marks}) AND seen_at > ?",  # noqa: S608
                (*batch, fresh_after),
            )
            seen.update(row[0] for row in rows)
        return seen

    def _insert(self, keys: list[str], now: float) -> None:
        with transaction(self._conn):  # every batch in one transaction: all or nothing
            for batch in _batches(keys, _BATCH):
                self._conn.executemany(
                    "INSERT INTO seen (key, seen_at) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET seen_at = excluded.seen_at",
                    [(key, now) for key in batch],
                )

    def _delete_expired(self, expired_at: float) -> int:
        with transaction(self._conn):
            cur = self._conn.execute(
                "DELETE FROM seen WHERE key IN (SELECT key FROM seen WHERE seen_at <= ? LIMIT ?)",
                (expired_at, _PURGE_BATCH),
            )
            return cur.rowcount


# ---------------------------------------------------------------------- helpers


def _prepare(conn: sqlite3.Connection, where: str) -> None:
    ensure_schema(
        conn, where, version=_version, current=SCHEMA_VERSION, create=_create, table="seen"
    )


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _create(conn: sqlite3.Connection, where: str) -> None:
    if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise StateError(f"{where}: a SQLite database, but not a dedup store")
    conn.execute(
        "CREATE TABLE seen (key TEXT PRIMARY KEY NOT NULL, seen_at REAL NOT NULL) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX seen_by_time ON seen (seen_at)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def check_keys(keys: Sequence[str]) -> Sequence[str]:
    if isinstance(keys, str):  # a str is a Sequence[str]: almost certainly a caller's bug
        raise TypeError("keys must be a sequence of strings, not a string")
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"keys must be strings, got {type(key).__name__}")
    return keys


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
