"""The remediation job store on SQLite: :class:`SqliteJobStore` (the :class:`JobStore` of
``remediate/jobs.py`` for one process, or several on one host sharing the file).

It follows the SQLite stores' conventions (state/sqlite.py): one connection used only from one
worker thread, WAL with ``synchronous=FULL`` (durable when a call returns),
:class:`~trailguard.errors.StateError` for every storage failure.  Its tables live in the same
file as the dedup store (``[state] path``) and carry their own schema version in
``remediation_meta`` -- ``PRAGMA user_version`` belongs to the dedup store.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from trailguard.errors import StateError
from trailguard.remediate.jobs import (
    SCHEMA_VERSION,
    Job,
    JobConflictError,
    JobNotFoundError,
    JobState,
    PlanMismatchError,
    audit,
)
from trailguard.state.sqlite import SqliteStore, ensure_schema, transaction
from trailguard.vocabulary import QUEUED_JOB_STATES

__all__ = ["SqliteJobStore", "change_for", "normalise_sha256"]

_T = TypeVar("_T")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Job)

_APPROVABLE: Final = ("awaiting_approval",)
_RETRYABLE: Final = ("failed", "dead", "skipped", "dry_run")
_CANCELLABLE: Final = ("pending", "awaiting_approval", "failed")


class SqliteJobStore(SqliteStore):
    """:class:`JobStore` on the state SQLite file.  Build it with :meth:`open`."""

    _WHAT = "job store"
    _THREAD = "trailguard-jobs"

    @classmethod
    async def open(
        cls, path: str | Path, *, create: bool = True, clock: Callable[[], float] = time.time
    ) -> SqliteJobStore:
        """Open the store at ``path``, creating its tables if needed.

        ``create=False`` refuses a file that does not exist (the ``jobs`` commands: a typo in
        ``[state] path`` should not make an empty database).  Raises :class:`StateError`.
        """
        db_path = Path(path)
        conn, executor = await cls._connect(db_path, _prepare, create=create)
        return cls(db_path, conn, executor, clock)

    # ------------------------------------------------------------------ the protocol

    async def enqueue_many(self, jobs: Sequence[Job]) -> int:
        if not jobs:
            return 0
        rows = [_row(job) for job in jobs]
        return await self._run(self._insert, rows)

    async def claim_due(self, now: float, limit: int, *, lease_secs: float) -> list[Job]:
        if limit <= 0:
            return []
        return await self._run(self._claim, now, limit, now + lease_secs)

    async def complete(self, job: Job) -> bool:
        return await self._run(self._complete, job)

    async def get(self, job_id: str) -> Job | None:
        return await self._run(self._get, job_id)

    async def list_jobs(
        self, *, states: Sequence[JobState] | None = None, limit: int = 100
    ) -> list[Job]:
        wanted = list(states) if states else None
        return await self._run(self._list, wanted, limit)

    async def approve(
        self, job_id: str, *, now: float, by: str = "operator", plan_sha256: str | None = None
    ) -> Job:
        change, allowed = change_for("approve", now=now, by=by, plan_sha256=plan_sha256)
        return await self._run(self._transition, job_id, "approve", allowed, change)

    async def retry(self, job_id: str, *, now: float, by: str = "operator") -> Job:
        change, allowed = change_for("retry", now=now, by=by)
        return await self._run(self._transition, job_id, "retry", allowed, change)

    async def cancel(self, job_id: str, *, now: float, by: str = "operator") -> Job:
        change, allowed = change_for("cancel", now=now, by=by)
        return await self._run(self._transition, job_id, "cancel", allowed, change)

    async def counts(self) -> dict[tuple[str, str], int]:
        return await self._run(self._counts)

    async def oldest_due_age(self, now: float) -> float | None:
        oldest = await self._run(self._oldest_due, now)
        return None if oldest is None else max(0.0, now - oldest)

    async def restores_since(self, target_key: str, since: float) -> int:
        return await self._run(self._restores_since, target_key, since)

    # ------------------------------------------------------------------ worker thread

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        try:
            return await super()._run(fn, *args)
        except msgspec.DecodeError as exc:
            raise StateError(f"job store {self._path}: unreadable job: {exc}") from exc

    def _insert(self, rows: list[tuple[object, ...]]) -> int:
        with transaction(self._conn):
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO remediation_jobs (id, action, state, account_id,"
                " target_key, attempts, next_attempt_at, lease_until, created_at, updated_at,"
                " changed_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self._conn.total_changes - before

    def _claim(self, now: float, limit: int, lease_until: float) -> list[Job]:
        with transaction(self._conn):
            rows = self._conn.execute(
                "SELECT body FROM remediation_jobs"
                " WHERE (state IN ('pending', 'failed') AND next_attempt_at <= ?)"
                " OR (state = 'running' AND lease_until <= ?)"
                " ORDER BY next_attempt_at, created_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            claimed: list[Job] = []
            for (body,) in rows:
                job = _decoder.decode(body)
                job = msgspec.structs.replace(
                    job,
                    state="running",
                    attempts=job.attempts + 1,
                    lease_until=lease_until,
                    updated_at=now,
                )
                self._update(job)
                claimed.append(job)
            return claimed

    def _complete(self, job: Job) -> bool:
        with transaction(self._conn):
            row = self._conn.execute(
                "SELECT state, attempts FROM remediation_jobs WHERE id = ?", (job.id,)
            ).fetchone()
            if row is None or row[0] != "running" or row[1] != job.attempts:
                return False
            if job.state != "running":
                job = msgspec.structs.replace(job, lease_until=None)
            self._update(job)
            return True

    def _update(self, job: Job) -> None:
        changed_at = job.updated_at if job.changed and job.state == "succeeded" else None
        self._conn.execute(
            "UPDATE remediation_jobs SET state = ?, attempts = ?, next_attempt_at = ?,"
            " lease_until = ?, updated_at = ?, changed_at = coalesce(?, changed_at), body = ?"
            " WHERE id = ?",
            (
                job.state,
                job.attempts,
                job.next_attempt_at,
                job.lease_until,
                job.updated_at,
                changed_at,
                _encoder.encode(job),
                job.id,
            ),
        )

    def _get(self, job_id: str) -> Job | None:
        row = self._conn.execute(
            "SELECT body FROM remediation_jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return None if row is None else _decoder.decode(row[0])

    def _list(self, states: list[str] | None, limit: int) -> list[Job]:
        if states:
            marks = ",".join("?" * len(states))
            # The placeholders are generated; the values are bound, never interpolated.
            rows = self._conn.execute(
                f"SELECT body FROM remediation_jobs WHERE state IN ({marks})"  # noqa: S608
                " ORDER BY created_at DESC, id LIMIT ?",
                (*states, limit),
            )
        else:
            rows = self._conn.execute(
                "SELECT body FROM remediation_jobs ORDER BY created_at DESC, id LIMIT ?", (limit,)
            )
        return [_decoder.decode(body) for (body,) in rows]

    def _transition(
        self,
        job_id: str,
        operation: str,
        allowed: Sequence[str],
        change: Callable[[Job], Job],
    ) -> Job:
        with transaction(self._conn):
            job = self._get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            if job.state not in allowed:
                raise JobConflictError(job_id, operation, job.state, allowed)
            job = change(job)
            self._update(job)
            return job

    def _counts(self) -> dict[tuple[str, str], int]:
        marks = ",".join("?" * len(QUEUED_JOB_STATES))
        # The placeholders are generated; the values are bound, never interpolated.
        rows = self._conn.execute(
            "SELECT action, state, count(*) FROM remediation_jobs"  # noqa: S608
            f" WHERE state IN ({marks}) GROUP BY action, state",
            QUEUED_JOB_STATES,
        )
        return {(action, state): count for action, state, count in rows}

    def _oldest_due(self, now: float) -> float | None:
        row = self._conn.execute(
            "SELECT min(next_attempt_at) FROM remediation_jobs"
            " WHERE state IN ('pending', 'failed') AND next_attempt_at <= ?",
            (now,),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def _restores_since(self, target_key: str, since: float) -> int:
        row = self._conn.execute(
            "SELECT count(*) FROM remediation_jobs WHERE target_key = ? AND changed_at >= ?",
            (target_key, since),
        ).fetchone()
        return int(row[0])


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def change_for(
    operation: str, *, now: float, by: str, plan_sha256: str | None = None
) -> tuple[Callable[[Job], Job], tuple[str, ...]]:
    """What an operator's ``approve``, ``retry`` or ``cancel`` does to a job, and the states it
    applies to: one definition for every job store (SQLite here, DynamoDB in
    ``state/dynamo/jobs.py``)."""
    if operation == "approve":
        given = normalise_sha256(plan_sha256) if plan_sha256 is not None else None

        def approve(job: Job) -> Job:
            current = job.plan_sha256
            if given is not None and given != current:
                raise PlanMismatchError(job.id, given, current)
            if current is None:
                note = audit(
                    "note",
                    f"approved by {by} (no plan yet: it runs, and any write it "
                    "cannot confirm waits for another approval)",
                    at=now,
                )
            else:
                note = audit(
                    "note", f"approved by {by}: plan {current}", {"plan_sha256": current}, at=now
                )
            return msgspec.structs.replace(
                job,
                state="pending",
                approved=True,
                approved_plan=current,
                reason=None,
                next_attempt_at=now,
                updated_at=now,
                audit=(*job.audit, note),
            )

        return approve, _APPROVABLE
    if operation == "retry":

        def retry(job: Job) -> Job:
            return msgspec.structs.replace(
                job,
                state="pending",
                attempts=0,
                reason=None,
                error=None,
                next_attempt_at=now,
                updated_at=now,
                audit=(*job.audit, audit("note", f"retry requested by {by}", at=now)),
            )

        return retry, _RETRYABLE
    if operation == "cancel":

        def cancel(job: Job) -> Job:
            return msgspec.structs.replace(
                job,
                state="skipped",
                reason="cancelled",
                updated_at=now,
                audit=(*job.audit, audit("note", f"cancelled by {by}", at=now)),
            )

        return cancel, _CANCELLABLE
    raise ValueError(f"unknown job operation {operation!r}")


def normalise_sha256(value: str) -> str:
    """``sha256:<hex>`` from what an operator typed (with or without the prefix, any case)."""
    text = value.strip().lower()
    return text if text.startswith("sha256:") else f"sha256:{text}"


def _row(job: Job) -> tuple[object, ...]:
    return (
        job.id,
        job.action,
        job.state,
        job.account_id,
        job.target_key,
        job.attempts,
        job.next_attempt_at,
        job.lease_until,
        job.created_at,
        job.updated_at,
        None,
        _encoder.encode(job),
    )


_SCHEMA: Final = (
    "CREATE TABLE remediation_meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)",
    "CREATE TABLE remediation_jobs ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " action TEXT NOT NULL,"
    " state TEXT NOT NULL,"
    " account_id TEXT,"
    " target_key TEXT NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " next_attempt_at REAL NOT NULL,"
    " lease_until REAL,"
    " created_at REAL NOT NULL,"
    " updated_at REAL NOT NULL,"
    " changed_at REAL,"
    " body BLOB NOT NULL)",
    "CREATE INDEX remediation_jobs_due ON remediation_jobs (state, next_attempt_at)",
    "CREATE INDEX remediation_jobs_created ON remediation_jobs (created_at)",
    "CREATE INDEX remediation_jobs_target ON remediation_jobs (target_key, changed_at)",
)


def _prepare(conn: sqlite3.Connection, where: str) -> None:
    ensure_schema(
        conn,
        where,
        version=_schema_version,
        current=SCHEMA_VERSION,
        create=_create,
        name="job schema",
    )


def _schema_version(conn: sqlite3.Connection) -> int:
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'remediation_meta'"
    ).fetchone():
        return 0
    row = conn.execute("SELECT value FROM remediation_meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _create(conn: sqlite3.Connection, where: str) -> None:
    if conn.execute(
        "SELECT 1 FROM sqlite_master WHERE name IN ('remediation_meta', 'remediation_jobs')"
    ).fetchone():
        raise StateError(f"{where}: a remediation_jobs table of unknown shape")
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO remediation_meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
