"""The policy history store: every policy document and attachment the trail (or a snapshot) showed.

:class:`PolicyHistoryStore` is the interface remediation reads ("what was the document of this
inline policy just before it was deleted?"); :class:`SqliteHistoryStore` implements it on one
SQLite file, with the conventions of :class:`~trailguard.state.sqlite.SqliteStore`: WAL journal
with ``synchronous=FULL`` (a ``record`` that returned survives a crash), one connection used only
from one dedicated worker thread, :class:`~trailguard.errors.StateError` for every storage failure.

Facts (:class:`~trailguard.detect.policy_facts.PolicyFact`) are kept as they came, keyed by
(eventID, fact identity): recording the same event again changes nothing.  Every query folds the
facts in **eventTime order** (files arrive out of order; ties broken by eventID), considering only
facts whose eventTime is strictly before ``before`` (None: all of them).  A snapshot's facts take
part like any other, with eventIDs ``snapshot:<time>:<account>:<n>`` and the snapshot's time.

Schema versioning does not use ``PRAGMA user_version`` (the dedup store owns it): the table
``meta (component, schema_version)`` holds one row per component, ``policy_history`` here, so
several components can live in one database file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec

from trailguard.detect.detection import policy_name_from_arn
from trailguard.detect.policy_facts import (
    PolicyFact,
    PrincipalKind,
    event_time_key,
    path_from_policy_arn,
)
from trailguard.errors import StateError
from trailguard.state.sqlite import SqliteStore, ensure_schema, transaction

__all__ = [
    "COMPONENT",
    "SCHEMA_VERSION",
    "ManagedPolicyState",
    "PolicyHistoryStore",
    "PolicyVersionState",
    "SqliteHistoryStore",
    "default_history_path",
]

COMPONENT: Final = "policy_history"
#: 2 added ``event_name`` (facts recorded by version 1 have none: confirmation cannot match them)
SCHEMA_VERSION: Final = 2
_END_OF_TIME: Final = "\uffff"  # sorts after every time key
_SEP: Final = "\x1f"  # joins the parts of a fact's identity


class ManagedPolicyState(msgspec.Struct, frozen=True, kw_only=True):
    """A customer managed policy as history knows it at some time.

    ``versions`` maps each version id known to exist then to its document (None when the
    document was not recorded, e.g. truncated by CloudTrail).  ``default_version_id`` is None
    when history does not know which version was the default.
    """

    policy_arn: str
    account_id: str
    policy_name: str | None
    path: str | None
    default_version_id: str | None
    default_document: str | None
    versions: dict[str, str | None]
    #: eventID and eventTime of the last fact folded into this state
    event_id: str
    event_time: str


class PolicyVersionState(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a managed policy at some time, and the fact that recorded its document."""

    policy_arn: str
    version_id: str
    document: str | None
    #: whether it was the default version then; None when history does not know
    is_default: bool | None
    #: the CreatePolicy / CreatePolicyVersion / snapshot fact that recorded the version
    fact: PolicyFact
    #: when it was the default: the fact that made it so (CreatePolicy, CreatePolicyVersion with
    #: setAsDefault, SetDefaultPolicyVersion, a snapshot); otherwise None
    default_fact: PolicyFact | None = None


class PolicyHistoryStore(Protocol):
    """Policy facts in eventTime order; every method may raise :class:`StateError`.

    ``before`` is an eventTime (``2026-11-01T12:00:00Z``): only facts strictly earlier count;
    None counts them all.  A ``before`` that is not a time raises ValueError.  With
    ``before_event_id`` as well, facts at that very eventTime whose eventID sorts lower count
    too: the position of one event in the order the history folds (eventTime, then eventID), so
    that a change can be compared with the fact just before it even within one second.
    """

    async def record(self, facts: Sequence[PolicyFact]) -> int:
        """Store ``facts``; durable when this returns.  Returns how many were new.

        Idempotent: a fact whose (eventID, identity) is already stored is ignored.
        """
        ...

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
        """The last put of this inline policy before ``before`` (its ``document`` may be None:
        the latest put is known but its document is not), or None if no put is known."""
        ...

    async def managed_policy(
        self, policy_arn: str, *, before: str | None, before_event_id: str | None = None
    ) -> ManagedPolicyState | None:
        """The managed policy as of ``before``; None if unknown or deleted by then."""
        ...

    async def policy_version(
        self,
        policy_arn: str,
        version_id: str,
        *,
        before: str | None = None,
        before_event_id: str | None = None,
    ) -> PolicyVersionState | None:
        """One version as of ``before``; None if not known to exist then."""
        ...

    async def attachments(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[tuple[PrincipalKind, str]]:
        """The (principal kind, name) pairs the policy was attached to as of ``before``.

        ``account_id`` defaults to the account in the ARN; an AWS managed policy
        (``arn:aws:iam::aws:policy/...``) is attached in many accounts, so it needs one.
        """
        ...

    async def attachment_facts(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[PolicyFact]:
        """Every attach/detach of the policy before ``before``, in eventTime order.

        IAM refuses DeletePolicy while a policy is attached, so the entities to reattach after a
        deletion are those attached before the detaches that preceded it: this timeline shows
        them.
        """
        ...

    async def attached_policies(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> list[str]:
        """The managed policy ARNs attached to the principal as of ``before`` (sorted)."""
        ...

    async def boundary(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> str | None:
        """The permissions-boundary policy ARN set on the principal as of ``before``."""
        ...

    async def boundary_fact(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> PolicyFact | None:
        """The fact that set the boundary :meth:`boundary` returns (Put*PermissionsBoundary,
        CreateUser/CreateRole or a snapshot); None when no boundary is set as of ``before``."""
        ...

    async def boundary_put(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
        before_event_id: str | None = None,
    ) -> PolicyFact | None:
        """The last fact that set a boundary on the principal before ``before``, even one
        removed since (as :meth:`inline_policy` ignores deletes): what a new boundary is
        compared with.  None when no boundary was ever seen set."""
        ...

    async def close(self) -> None:
        """Release the store; idempotent."""
        ...


def default_history_path(state_path: str | Path) -> Path:
    """Where the history lives when ``[history] path`` is not set: next to ``[state] path``.

    ``/var/lib/trailguard/state.sqlite3`` -> ``/var/lib/trailguard/state.history.sqlite3``.
    """
    path = Path(state_path)
    return path.with_name(f"{path.stem}.history{path.suffix}")


# --------------------------------------------------------------------------------------------
# The SQLite implementation
# --------------------------------------------------------------------------------------------

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


class SqliteHistoryStore(SqliteStore):
    """:class:`PolicyHistoryStore` on one SQLite file.  Build it with :meth:`open`."""

    _WHAT = "policy history"
    _THREAD = "trailguard-history"

    @classmethod
    async def open(
        cls, path: str | Path, *, clock: Callable[[], float] | None = None
    ) -> SqliteHistoryStore:
        """Open (creating it and its parent directory if needed) the store at ``path``.

        The file may hold other components' tables.  Raises :class:`StateError` when it cannot
        be created or opened, is not a SQLite database, or holds a policy history written by a
        newer trailguard.
        """
        db_path = Path(path)
        conn, executor = await cls._connect(db_path, _prepare)
        return cls(db_path, conn, executor, clock or time.time)

    # ------------------------------------------------------------------ the protocol

    async def record(self, facts: Sequence[PolicyFact]) -> int:
        rows = [_row(fact, seq) for seq, fact in enumerate(_check_facts(facts))]
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
        before_key = _before_key(before)
        account_id = attachment_account(policy_arn, account_id)
        return await self._run(
            self._select,
            _SELECT + " WHERE policy_arn = ? AND kind = 'attachment' AND account_id = ?"
            " AND time_key < ?" + _ORDER,
            (policy_arn, account_id, before_key),
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
            (account_id, principal_kind, principal_name, _before_key(before)),
        )
        return attached_arns(facts)

    async def boundary(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> str | None:
        fact = await self.boundary_fact(account_id, principal_kind, principal_name, before=before)
        return None if fact is None else fact.policy_arn

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
            (account_id, principal_kind, principal_name, _before_key(before)),
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
    ) -> _Managed | None:
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


@dataclass
class _Managed:
    """A managed policy's state while facts are folded in."""

    policy_arn: str
    account_id: str
    policy_name: str | None
    path: str | None
    default: str | None = None
    default_source: PolicyFact | None = None  # the fact that made ``default`` the default
    versions: dict[str, str | None] = field(default_factory=dict)
    sources: dict[str, PolicyFact] = field(default_factory=dict)
    last: PolicyFact | None = None

    @classmethod
    def empty(cls, policy_arn: str, fact: PolicyFact) -> _Managed:
        return cls(
            policy_arn=policy_arn,
            account_id=fact.account_id,
            policy_name=fact.policy_name or policy_name_from_arn(policy_arn),
            path=fact.path or path_from_policy_arn(policy_arn),
            last=fact,
        )

    def add_version(self, fact: PolicyFact) -> None:
        self.last = fact
        if fact.version_id is not None:
            self.versions[fact.version_id] = fact.document
            self.sources[fact.version_id] = fact
        if fact.set_as_default:
            self.default = fact.version_id  # None: a new default whose id is not known
            self.default_source = fact

    def apply(self, fact: PolicyFact) -> None:
        if fact.kind == "policy_version" and fact.op == "put":
            self.add_version(fact)
            return
        self.last = fact
        if fact.kind == "policy_version":  # DeletePolicyVersion (IAM refuses the default one)
            if fact.version_id is not None:
                self.versions.pop(fact.version_id, None)
                self.sources.pop(fact.version_id, None)
                if self.default == fact.version_id:
                    self.default = None
                    self.default_source = None
        elif fact.kind == "default_version":
            self.default = fact.version_id
            self.default_source = fact

    def state(self) -> ManagedPolicyState:
        assert self.last is not None
        return ManagedPolicyState(
            policy_arn=self.policy_arn,
            account_id=self.account_id,
            policy_name=self.policy_name,
            path=self.path,
            default_version_id=self.default,
            default_document=self.versions.get(self.default) if self.default else None,
            versions=dict(self.versions),
            event_id=self.last.event_id,
            event_time=self.last.event_time,
        )


# ---------------------------------------------------------------------- folding, shared
# (with the DynamoDB store, state/dynamo/history.py: both fold the same facts the same way)


def fold_managed(policy_arn: str, facts: Iterable[PolicyFact]) -> _Managed | None:
    """A managed policy's state after ``facts`` (its managed_policy, policy_version and
    default_version facts in (time_key, eventID, seq) order); None if unknown or deleted."""
    state: _Managed | None = None
    for fact in facts:
        if fact.kind == "managed_policy":
            if fact.op == "delete":
                state = None
                continue
            state = _Managed.empty(policy_arn, fact)  # CreatePolicy or a snapshot: anew
            state.add_version(fact)
            continue
        if state is None:  # versions of a policy whose creation history did not see
            state = _Managed.empty(policy_arn, fact)
        state.apply(fact)
    return state


def version_state(folded: _Managed | None, version_id: str) -> PolicyVersionState | None:
    """One version of a folded managed policy, or None if not known to exist."""
    if folded is None or version_id not in folded.versions:
        return None
    return PolicyVersionState(
        policy_arn=folded.policy_arn,
        version_id=version_id,
        document=folded.versions[version_id],
        is_default=None if folded.default is None else folded.default == version_id,
        fact=folded.sources[version_id],
        default_fact=folded.default_source if folded.default == version_id else None,
    )


def attached_principals(facts: Iterable[PolicyFact]) -> list[tuple[PrincipalKind, str]]:
    """The principals a policy's attach/detach facts (in order) leave it attached to."""
    attached: dict[tuple[PrincipalKind, str], bool] = {}
    for fact in facts:
        if fact.principal_kind is None or fact.principal_name is None:
            continue
        attached[(fact.principal_kind, fact.principal_name)] = fact.op == "put"
    return sorted(key for key, on in attached.items() if on)


def attached_arns(facts: Iterable[PolicyFact]) -> list[str]:
    """The policies a principal's attach/detach facts (in order) leave attached to it."""
    attached: dict[str, bool] = {}
    for fact in facts:
        if fact.policy_arn is not None:
            attached[fact.policy_arn] = fact.op == "put"
    return sorted(arn for arn, on in attached.items() if on)


def attachment_account(policy_arn: str, account_id: str | None) -> str:
    """The account whose attachments of ``policy_arn`` are asked for: ``account_id``, else the
    ARN's (an AWS managed policy is attached in many accounts: it needs one)."""
    if account_id is not None:
        return account_id
    owner = policy_arn.split(":", 5)[4] if policy_arn.count(":") >= 5 else ""
    if owner == "aws":
        raise ValueError(
            f"{policy_arn} is an AWS managed policy, attached in many accounts: give account_id"
        )
    return owner


def before_key(before: str | None) -> str:
    """The time key facts must sort strictly below (``before`` None: after every fact)."""
    return _before_key(before)


def identity(fact: PolicyFact) -> str:
    """What makes two facts of one event the same fact (the document is not part of it)."""
    return _identity(fact)


def check_facts(facts: Sequence[PolicyFact]) -> Sequence[PolicyFact]:
    return _check_facts(facts)


# ---------------------------------------------------------------------- helpers


def _before_key(before: str | None) -> str:
    if before is None:
        return _END_OF_TIME
    key = event_time_key(before)
    if key is None:
        raise ValueError(f"before must be an eventTime such as 2026-11-01T12:00:00Z: {before!r}")
    return key


def _position(before: str | None, before_event_id: str | None) -> tuple[str, tuple[str, ...]]:
    """The SQL condition (and its parameters) for "before this position in the fold's order":
    earlier eventTime, or -- with ``before_event_id`` -- the same eventTime and a lower eventID."""
    key = _before_key(before)
    if before_event_id is None:
        return "time_key < ?", (key,)
    return "(time_key < ? OR (time_key = ? AND event_id < ?))", (key, key, before_event_id)


def _check_facts(facts: Sequence[PolicyFact]) -> Sequence[PolicyFact]:
    for fact in facts:
        if not isinstance(fact, PolicyFact):
            raise TypeError(f"facts must be PolicyFact, got {type(fact).__name__}")
    return facts


def _identity(fact: PolicyFact) -> str:
    """What makes two facts of one event the same fact (the document is not part of it)."""
    parts = (
        fact.kind,
        fact.op,
        fact.account_id,
        fact.principal_kind,
        fact.principal_name,
        fact.policy_name,
        fact.policy_arn,
        fact.version_id,
    )
    return _SEP.join(part or "" for part in parts)


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
    return (fact.event_id, _identity(fact), key, seq, *values)


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
    ensure_schema(
        conn,
        where,
        version=_schema_version,
        current=SCHEMA_VERSION,
        create=_create,
        name="policy history schema",
        table="policy_fact",
    )
    if _schema_version(conn) < SCHEMA_VERSION:
        with transaction(conn):
            if _schema_version(conn) == 1:  # read again under the write lock
                conn.execute("ALTER TABLE policy_fact ADD COLUMN event_name TEXT")
                conn.execute(
                    "UPDATE meta SET schema_version = ? WHERE component = ?",
                    (SCHEMA_VERSION, COMPONENT),
                )


def _schema_version(conn: sqlite3.Connection) -> int:
    """This component's schema version, or 0 when the file has none yet."""
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone():
        return 0
    row = conn.execute(
        "SELECT schema_version FROM meta WHERE component = ?", (COMPONENT,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _create(conn: sqlite3.Connection, where: str) -> None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'policy_fact'").fetchone():
        raise StateError(f"{where}: a 'policy_fact' table not made by trailguard")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS meta (component TEXT PRIMARY KEY NOT NULL,"
        " schema_version INTEGER NOT NULL) WITHOUT ROWID"
    )
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO meta (component, schema_version) VALUES (?, ?)",
        (COMPONENT, SCHEMA_VERSION),
    )
