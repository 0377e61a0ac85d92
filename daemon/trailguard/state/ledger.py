"""The event ledger: each eventID trailguard learnt from, with the content(s) it came with.

CloudTrail's eventIDs are unique.  A record whose eventID was already seen with *different*
content (its digest, ``detect/digest.py``) is a **conflict**: one of the two was forged -- written
to the trail bucket, sent to the queue -- and nothing tells which.  So a conflicted eventID is
never a source for a write: the confirmation gate (``remediate/confirm.py``) makes any job that
would rest on it wait for an operator, and ingestion reports it (log event ``ledger.conflict``,
metric ``trailguard_forgery_suspected_total``, ``forgery_suspected`` in the detection record).
The same content seen again (S3 and EventBridge, SQS redelivery, a replay) is not a conflict.

:class:`EventLedger` is the interface (a shared store -- DynamoDB, for several replicas -- can
implement it); :class:`SqliteEventLedger` implements it with the conventions of
:class:`~trailguard.state.sqlite.SqliteStore` (WAL, ``synchronous=FULL``: an ``observe`` that
returned survives a crash; one connection on one worker thread; :class:`StateError` for every
storage failure).  It lives in the policy history's file by default (its own table and its own
row in ``meta (component, schema_version)``).  Entries are never purged: a time limit would let a
forger wait it out, and the ledger holds one small row per IAM policy event.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final, Protocol

import msgspec

from trailguard.detect.digest import EventDigest
from trailguard.state.sqlite import SqliteStore, ensure_component_schema, transaction

__all__ = [
    "COMPONENT",
    "SCHEMA_VERSION",
    "EventLedger",
    "LedgerConflict",
    "LedgerEntry",
    "SqliteEventLedger",
]

COMPONENT: Final = "event_ledger"
SCHEMA_VERSION: Final = 1
_BATCH: Final = 500  # bound parameters per statement (SQLite's floor is 999)


class LedgerEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One content an eventID was seen with."""

    digest: str
    event_name: str | None
    account_id: str | None
    #: how it first arrived: "s3", "eventbridge" or "file" (a replay)
    path: str
    first_seen: float


class LedgerConflict(msgspec.Struct, frozen=True, kw_only=True):
    """An eventID seen with more than one content (first seen first)."""

    event_id: str
    entries: tuple[LedgerEntry, ...]
    #: :meth:`EventLedger.observe` only: this call added one of the contents
    new: bool = False

    @property
    def digests(self) -> tuple[str, ...]:
        return tuple(entry.digest for entry in self.entries)

    def describe(self) -> str:
        """For audit records and job reasons: ``eventID E seen with 2 contents (...)``."""
        seen = ", ".join(
            f"{entry.event_name or '?'} {entry.digest[:19]} via {entry.path}"
            for entry in self.entries
        )
        return f"eventID {self.event_id} seen with {len(self.entries)} different contents ({seen})"


class EventLedger(Protocol):
    """eventID -> the digests it was seen with; every method may raise :class:`StateError`."""

    async def observe(self, events: Sequence[EventDigest], *, path: str) -> list[LedgerConflict]:
        """Record each (eventID, digest) not recorded yet; durable when this returns.

        Returns the conflicts among the eventIDs of ``events`` (every one now known with more
        than one digest), ``new`` when this call added one of its digests.  ``path`` says how
        the records arrived ("s3", "eventbridge", "file").
        """
        ...

    async def conflicts(self, event_ids: Sequence[str]) -> dict[str, LedgerConflict]:
        """The conflicted eventIDs among ``event_ids``, by eventID."""
        ...

    async def close(self) -> None:
        """Release the ledger; idempotent."""
        ...


class SqliteEventLedger(SqliteStore):
    """:class:`EventLedger` on one SQLite file.  Build it with :meth:`open`."""

    _WHAT = "event ledger"
    _THREAD = "trailguard-ledger"

    @classmethod
    async def open(
        cls, path: str | Path, *, clock: Callable[[], float] | None = None
    ) -> SqliteEventLedger:
        """Open (creating it and its parent directory if needed) the ledger at ``path``; the
        file may hold other components (the policy history).  Raises :class:`StateError`."""
        db_path = Path(path)
        conn, executor = await cls._connect(db_path, _prepare)
        return cls(db_path, conn, executor, clock or time.time)

    async def observe(self, events: Sequence[EventDigest], *, path: str) -> list[LedgerConflict]:
        rows: list[tuple[str, str, str | None, str | None, str]] = []
        for event in events:
            if not isinstance(event, EventDigest):
                raise TypeError(f"events must be EventDigest, got {type(event).__name__}")
            rows.append((event.event_id, event.digest, event.event_name, event.account_id, path))
        if not rows:
            return []
        return await self._run(self._observe, rows, self._clock())

    async def conflicts(self, event_ids: Sequence[str]) -> dict[str, LedgerConflict]:
        wanted = list(dict.fromkeys(event_ids))
        if not wanted:
            return {}
        found = await self._run(self._select, wanted, frozenset[str]())
        return {conflict.event_id: conflict for conflict in found}

    # ------------------------------------------------------------------ worker thread

    def _observe(
        self, rows: list[tuple[str, str, str | None, str | None, str]], now: float
    ) -> list[LedgerConflict]:
        added: set[str] = set()
        with transaction(self._conn):
            for event_id, digest, event_name, account_id, path in rows:
                cursor = self._conn.execute(
                    "INSERT INTO event_ledger (event_id, digest, event_name, account_id, path,"
                    " first_seen) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (event_id, digest) DO NOTHING",
                    (event_id, digest, event_name, account_id, path, now),
                )
                if cursor.rowcount:
                    added.add(event_id)
            return self._select(list(dict.fromkeys(row[0] for row in rows)), frozenset(added))

    def _select(self, event_ids: list[str], added: frozenset[str]) -> list[LedgerConflict]:
        found: dict[str, list[LedgerEntry]] = {}
        for batch in _batches(event_ids, _BATCH):
            marks = ",".join("?" * len(batch))
            # The placeholders are generated; the values are bound, never interpolated.
            rows = self._conn.execute(
                "SELECT event_id, digest, event_name, account_id, path, first_seen"  # noqa: S608
                f" FROM event_ledger WHERE event_id IN ({marks})"
                " ORDER BY event_id, first_seen, digest",
                batch,
            )
            for event_id, digest, event_name, account_id, path, first_seen in rows:
                found.setdefault(event_id, []).append(
                    LedgerEntry(
                        digest=digest,
                        event_name=event_name,
                        account_id=account_id,
                        path=path,
                        first_seen=first_seen,
                    )
                )
        return [
            LedgerConflict(event_id=event_id, entries=tuple(entries), new=event_id in added)
            for event_id, entries in found.items()
            if len(entries) > 1
        ]


# ---------------------------------------------------------------------- helpers


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_SCHEMA: Final = (
    "CREATE TABLE event_ledger ("
    " event_id TEXT NOT NULL,"
    " digest TEXT NOT NULL,"  # detect/digest.py: sha256 of the canonical projection
    " event_name TEXT,"
    " account_id TEXT,"
    " path TEXT NOT NULL,"  # s3 | eventbridge | file
    " first_seen REAL NOT NULL,"  # arrival time, for operators
    " PRIMARY KEY (event_id, digest)) WITHOUT ROWID",
)


def _prepare(conn: sqlite3.Connection, where: str) -> None:
    ensure_component_schema(
        conn,
        where,
        component=COMPONENT,
        current=SCHEMA_VERSION,
        table="event_ledger",
        schema=_SCHEMA,
        name="event ledger schema",
    )
