"""The policy history on one SQLite file: :class:`SqliteHistoryStore`.

It follows the SQLite stores' conventions (:class:`~trailguard.state.sqlite.SqliteStore`): WAL
journal with ``synchronous=FULL`` (a ``record`` that returned survives a crash), one connection
used only from one dedicated worker thread, :class:`~trailguard.errors.StateError` for every
storage failure.  What the facts mean and how they are folded is ``policy_history.py``'s.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from trailguard.detect.policy_facts import PolicyFact, PrincipalKind, event_time_key
from trailguard.state.policy_history import (
    COMPONENT,
    SCHEMA_VERSION,
    FoldedPolicy,
    ManagedPolicyState,
    PolicyHistoryStore,
    PolicyVersionState,
    attached_arns,
    attached_principals,
    attachment_account,
    before_key,
    check_facts,
    fold_managed,
    identity,
    version_state,
)
from trailguard.state.sqlite import (
    SqliteStore,
    component_version,
    ensure_component_schema,
    transaction,
)

__all__ = ["SqliteHistoryStore"]


_COLUMNS: Final = (
    "kind",
    "op",
    "account_id",
    "principal_kind",
    "principal_name",
    "policy_name",
    "policy_arn",
    "version_id",
    "document",
    "path",
    "set_as_default",
    "event_id",
    "event_time",
    "event_name",
)


_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM policy_fact"  # noqa: S608 - constant


_ORDER: Final = " ORDER BY time_key, event_id, seq"


_ORDER_DESC: Final = " ORDER BY time_key DESC, event_id DESC, seq DESC"


_MANAGED_KINDS: Final = "('managed_policy', 'policy_version', 'default_version')"


_INSERT: Final = (
    "INSERT INTO policy_fact (event_id, identity, time_key, seq, recorded_at, "  # noqa: S608
    + ", ".join(c for c in _COLUMNS if c != "event_id")
    + ") VALUES ("
    + ", ".join("?" * (len(_COLUMNS) + 4))
    + ") ON CONFLICT (event_id, identity) DO NOTHING"
)


class SqliteHistoryStore(SqliteStore, PolicyHistoryStore):
    """:class:`PolicyHistoryStore` on one SQLite file.  Build it with :meth:`open`."""

    _WHAT = "policy history"
    _THREAD = "trailguard-history"

    @classmethod
    async def open(
        cls, path: str | Path, *, clock: Callable[[], float] | None = None, durable: bool = True
    ) -> SqliteHistoryStore:
        """Open (creating it and its parent directory if needed) the store at ``path``.

        The file may hold other components' tables.  Raises :class:`StateError` when it cannot
        be created or opened, is not a SQLite database, or holds a policy history written by a
        newer trailguard.
        """
        db_path = Path(path)
        conn, executor = await cls._connect(db_path, _prepare, durable=durable)
        return cls(db_path, conn, executor, clock or time.time)

    # ------------------------------------------------------------------ the protocol

    async def record(self, facts: Sequence[PolicyFact]) -> int:
        rows = [_row(fact, seq) for seq, fact in enumerate(check_facts(facts))]
        if not rows:
            return 0
        return await self._run(self._insert, rows, self._clock())

    async def inline_policy(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        policy_name: str,
        *,
        before: str | None,
        before_event_id: str | None = None,
    ) -> PolicyFact | None:
        where, params = _position(before, before_event_id)
        rows = await self._run(
            self._select,
            _SELECT + " WHERE account_id = ? AND principal_kind = ? AND principal_name = ?"
            " AND kind = 'inline_policy' AND policy_name = ? AND op = 'put' AND "
            + where
            + _ORDER_DESC
            + " LIMIT 1",
            (account_id, principal_kind, principal_name, policy_name, *params),
        )
        return rows[0] if rows else None

    async def managed_policy(
        self, policy_arn: str, *, before: str | None, before_event_id: str | None = None
    ) -> ManagedPolicyState | None:
        folded = await self._fold_managed(policy_arn, before, before_event_id)
        return folded.state() if folded is not None else None

    async def policy_version(
        self,
        policy_arn: str,
        version_id: str,
        *,
        before: str | None = None,
        before_event_id: str | None = None,
    ) -> PolicyVersionState | None:
        return version_state(
            await self._fold_managed(policy_arn, before, before_event_id), version_id
        )

    async def attachments(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[tuple[PrincipalKind, str]]:
        facts = await self.attachment_facts(policy_arn, before=before, account_id=account_id)
        return attached_principals(facts)

    async def attachment_facts(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[PolicyFact]:
        key = before_key(before)
        account_id = attachment_account(policy_arn, account_id)
        return await self._run(
            self._select,
            _SELECT + " WHERE policy_arn = ? AND kind = 'attachment' AND account_id = ?"
            " AND time_key < ?" + _ORDER,
            (policy_arn, account_id, key),
        )

    async def attached_policies(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> list[str]:
        facts = await self._run(
            self._select,
            _SELECT + " WHERE account_id = ? AND principal_kind = ? AND principal_name = ?"
            " AND kind = 'attachment' AND time_key < ?" + _ORDER,
            (account_id, principal_kind, principal_name, before_key(before)),
        )
        return attached_arns(facts)

    async def boundary_fact(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> PolicyFact | None:
        rows = await self._run(
            self._select,
            _SELECT + " WHERE account_id = ? AND principal_kind = ? AND principal_name = ?"
            " AND kind = 'boundary' AND time_key < ?" + _ORDER_DESC + " LIMIT 1",
            (account_id, principal_kind, principal_name, before_key(before)),
        )
        if not rows or rows[0].op != "put":
            return None
        return rows[0]

    async def boundary_put(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
        before_event_id: str | None = None,
    ) -> PolicyFact | None:
        where, params = _position(before, before_event_id)
        rows = await self._run(
            self._select,
            _SELECT + " WHERE account_id = ? AND principal_kind = ? AND principal_name = ?"
            " AND kind = 'boundary' AND op = 'put' AND " + where + _ORDER_DESC + " LIMIT 1",
            (account_id, principal_kind, principal_name, *params),
        )
        return rows[0] if rows else None

    # ------------------------------------------------------------------ folding

    async def _fold_managed(
        self, policy_arn: str, before: str | None, before_event_id: str | None = None
    ) -> FoldedPolicy | None:
        where, params = _position(before, before_event_id)
        facts = await self._run(
            self._select,
            _SELECT + f" WHERE policy_arn = ? AND kind IN {_MANAGED_KINDS} AND " + where + _ORDER,
            (policy_arn, *params),
        )
        return fold_managed(policy_arn, facts)

    # ------------------------------------------------------------------ worker thread

    def _insert(self, rows: list[tuple[Any, ...]], now: float) -> int:
        before = self._conn.total_changes
        with transaction(self._conn):  # all or nothing
            self._conn.executemany(
                _INSERT,
                [(*row[:4], now, *row[4:]) for row in rows],
            )
        return self._conn.total_changes - before

    def _select(self, sql: str, params: tuple[object, ...]) -> list[PolicyFact]:
        return [_fact(row) for row in self._conn.execute(sql, params)]


def _position(before: str | None, before_event_id: str | None) -> tuple[str, tuple[str, ...]]:
    """The SQL condition (and its parameters) for "before this position in the fold's order":
    earlier eventTime, or -- with ``before_event_id`` -- the same eventTime and a lower eventID."""
    key = before_key(before)
    if before_event_id is None:
        return "time_key < ?", (key,)
    return "(time_key < ? OR (time_key = ? AND event_id < ?))", (key, key, before_event_id)


def _row(fact: PolicyFact, seq: int) -> tuple[Any, ...]:
    """(event_id, identity, time_key, seq, *the other columns in _COLUMNS order)."""
    key = event_time_key(fact.event_time)
    if key is None:
        raise ValueError(f"fact {fact.event_id!r}: eventTime {fact.event_time!r} is not a time")
    values: list[Any] = []
    for column in _COLUMNS:
        if column == "event_id":
            continue
        value = getattr(fact, column)
        values.append(int(value) if column == "set_as_default" and value is not None else value)
    return (fact.event_id, identity(fact), key, seq, *values)


def _fact(row: tuple[Any, ...]) -> PolicyFact:
    values = dict(zip(_COLUMNS, row, strict=True))
    if values["set_as_default"] is not None:
        values["set_as_default"] = bool(values["set_as_default"])
    return PolicyFact(**values)


_SCHEMA: Final = (
    "CREATE TABLE policy_fact ("
    " event_id TEXT NOT NULL,"
    " identity TEXT NOT NULL,"
    " time_key TEXT NOT NULL,"  # eventTime as a sortable UTC key (event_time_key)
    " seq INTEGER NOT NULL,"  # position in the batch recorded: orders one event's facts
    " recorded_at REAL NOT NULL,"  # arrival time, for operators; never used for ordering
    " kind TEXT NOT NULL,"
    " op TEXT NOT NULL,"
    " account_id TEXT NOT NULL,"
    " principal_kind TEXT,"
    " principal_name TEXT,"
    " policy_name TEXT,"
    " policy_arn TEXT,"
    " version_id TEXT,"
    " document TEXT,"
    " path TEXT,"
    " set_as_default INTEGER,"
    " event_time TEXT NOT NULL,"
    " event_name TEXT,"  # schema 2
    " PRIMARY KEY (event_id, identity))",
    "CREATE INDEX policy_fact_by_principal ON policy_fact"
    " (account_id, principal_kind, principal_name, kind, policy_name, time_key)",
    "CREATE INDEX policy_fact_by_policy ON policy_fact (policy_arn, kind, time_key)",
)


def _prepare(conn: sqlite3.Connection, where: str) -> None:
    ensure_component_schema(
        conn,
        where,
        component=COMPONENT,
        current=SCHEMA_VERSION,
        table="policy_fact",
        schema=_SCHEMA,
        name="policy history schema",
    )
    if component_version(conn, COMPONENT) < SCHEMA_VERSION:
        with transaction(conn):
            if component_version(conn, COMPONENT) == 1:  # read again under the write lock
                conn.execute("ALTER TABLE policy_fact ADD COLUMN event_name TEXT")
                conn.execute(
                    "UPDATE meta SET schema_version = ? WHERE component = ?",
                    (SCHEMA_VERSION, COMPONENT),
                )
