"""Remediation jobs: the record, the :class:`JobStore` interface and its SQLite implementation.

A job is one action planned for one CloudTrail event.  Its id is derived from the eventID and the
action (:func:`job_id`), so planning the same event twice -- SQS redelivery, a replay, the same
event by S3 and by EventBridge -- enqueues nothing new (``INSERT OR IGNORE``), and a job that has
run never runs again unless an operator asks (``retry``).

States::

    pending ──claim──► running ──► succeeded | dry_run | skipped (reason) | dead (error)
       ▲                  │ └────► failed (will retry at next_attempt_at) ──claim──► running
       │                  └──────► awaiting_approval (reason) ──approve──► pending
    awaiting_approval (mode "approve") ──approve──► pending       (cancel: ──► skipped "cancelled")

Approval binds to a plan: an action that waits for approval records what it would write
(:class:`WritePlan`: each IAM call with its target and exact content) and the plan's sha256 on the
job; ``approve`` binds the approval to that hash (``trailguard jobs approve ID --plan SHA``), and
it covers exactly that plan -- if the history or IAM changed so the action would now write
something else, the job waits again with the new plan (see ``remediate/confirm.py``).

A claim is a lease: a job whose worker died (``running`` with ``lease_until`` in the past) is
claimed again.  ``complete`` is fenced by the attempt number, so a worker that lost its lease
cannot overwrite the job another worker now holds.

:class:`SqliteJobStore` follows the SQLite stores' conventions (state/sqlite.py): one connection
used only from one worker thread, WAL with ``synchronous=FULL`` (durable when a call returns),
:class:`~trailguard.errors.StateError` for every storage failure.  Its tables live in the same
file as the dedup store (``[state] path``) and carry their own schema version in
``remediation_meta`` -- ``PRAGMA user_version`` belongs to the dedup store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar

import msgspec

from trailguard.config import ActionName, RemediationMode
from trailguard.detect.detection import Actor, Detection, Target
from trailguard.errors import StateError
from trailguard.state.sqlite import SqliteStore, ensure_schema, transaction
from trailguard.vocabulary import JOB_STATES, TERMINAL_STATES, JobState

__all__ = [
    "JOB_STATES",
    "TERMINAL_STATES",
    "AuditEntry",
    "EventRef",
    "Finding",
    "Job",
    "JobConflictError",
    "JobNotFoundError",
    "JobState",
    "JobStore",
    "PlanMismatchError",
    "PlannedWrite",
    "SqliteJobStore",
    "WritePlan",
    "audit",
    "job_id",
    "planned_write",
    "sha256_text",
]

_T = TypeVar("_T")

AuditStep = Literal["planned", "before", "plan", "did", "after", "note"]

SCHEMA_VERSION: Final = 1
_ID_HEX: Final = 32  # 128 bits of sha256


class JobNotFoundError(StateError):
    """No job has this id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r}")


class JobConflictError(StateError):
    """The job is not in a state that allows the operation (approve a succeeded job ...)."""

    def __init__(self, job_id: str, operation: str, state: str, allowed: Sequence[str]) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(
            f"job {job_id} is {state}: {operation} applies only to {', '.join(allowed)} jobs"
        )


class PlanMismatchError(StateError):
    """``approve --plan SHA`` named another plan than the one the job waits with."""

    def __init__(self, job_id: str, given: str, current: str | None) -> None:
        self.job_id = job_id
        self.given = given
        self.current = current
        if current is None:
            detail = "it has no plan yet (it has not run: approve it without --plan)"
        else:
            detail = (
                f"it now waits with plan {current} (the plan changed, or the hash is wrong: "
                "check `trailguard jobs show`)"
            )
        super().__init__(f"job {job_id}: --plan {given} is not the job's plan: {detail}")


# ---------------------------------------------------------------------------------------------
# The record
# ---------------------------------------------------------------------------------------------


class EventRef(msgspec.Struct, frozen=True, kw_only=True):
    """The detection a job was planned from: the detection record's JSON, field for field.

    (``Detection`` itself cannot be decoded by msgspec -- its ``source`` is an untagged union of
    Structs -- so the job keeps ``source`` as a plain object.)
    """

    event_id: str
    event_time: str | None = None
    event_name: str | None = None
    event_source: str | None = None
    aws_region: str | None = None
    account_id: str | None = None
    actor: Actor
    target: Target
    outcome: str
    error_code: str | None = None
    severity: str
    rule: str
    disposition: str
    suppressed_by: str | None = None
    source: dict[str, str] | None = None
    event_digest: str | None = None
    forgery_suspected: bool = False

    @classmethod
    def from_detection(cls, detection: Detection) -> EventRef:
        return msgspec.convert(msgspec.to_builtins(detection), cls)


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a job's audit record.

    ``step``: ``planned`` (enqueued), ``before`` (live state read before acting), ``plan`` (what
    the action would do / is about to do), ``did`` (a write it made), ``after`` (live state read
    after acting), ``note`` (anything else: approvals, retries, the circuit breaker).
    """

    at: str
    step: AuditStep
    what: str
    data: dict[str, Any] | None = None


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """A hygiene finding of ``audit_actor`` (``code`` is stable, for queries and metrics)."""

    code: str
    severity: str
    subject: str
    detail: str


_plan_encoder = msgspec.json.Encoder(order="sorted")


def sha256_text(text: str) -> str:
    """``sha256:<hex>`` of a text's UTF-8 bytes (a document exactly as it will be sent)."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class PlannedWrite(msgspec.Struct, frozen=True, kw_only=True):
    """One IAM call an action is about to make, with exactly what it sends.

    ``call``: the IAM API (``PutRolePolicy`` ...); ``target``: what it changes (``role/app``, a
    policy ARN); ``params``: everything else it sends but the document; ``document``: the policy
    text exactly as it will be sent, and its sha256.
    """

    call: str
    target: str
    params: dict[str, str | bool | None] = msgspec.field(default_factory=dict)
    document: str | None = None
    document_sha256: str | None = None


def planned_write(
    call: str, target: str, *, document: str | None = None, **params: str | bool | None
) -> PlannedWrite:
    return PlannedWrite(
        call=call,
        target=target,
        params=params,
        document=document,
        document_sha256=None if document is None else sha256_text(document),
    )


class WritePlan(msgspec.Struct, frozen=True, kw_only=True):
    """What one run of an action would write, computed before the confirmation gate.

    An operator's approval binds to :attr:`sha256`: it covers this plan and no other.
    """

    action: str
    account_id: str
    writes: tuple[PlannedWrite, ...]
    #: the events the plan rests on (eventIDs of the removal and of every history fact whose
    #: content is written), in the order the gate confirms them
    events: tuple[str, ...]
    #: the eventIDs among ``events`` the event ledger knows with two contents (the gate fills
    #: this in): a new conflict changes the plan, so an older approval does not cover it
    conflicts: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        """``sha256:<hex>`` of the plan as canonical JSON (sorted keys)."""
        return "sha256:" + hashlib.sha256(_plan_encoder.encode(self)).hexdigest()


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """One action for one event.  Times are Unix seconds."""

    id: str
    action: ActionName
    state: JobState
    mode: RemediationMode  # what it was planned with; "approve" jobs act once approved
    account_id: str | None  # the account whose IAM the action reads and writes
    target_key: str  # what it restores, e.g. "123456789012:role/app:inline/guard"
    detection: EventRef
    created_at: float
    updated_at: float
    next_attempt_at: float
    attempts: int = 0
    lease_until: float | None = None
    approved: bool = False
    changed: bool = False  # the last run changed IAM
    reason: str | None = None  # why skipped / awaiting approval
    error: str | None = None  # the last failure
    audit: tuple[AuditEntry, ...] = ()
    findings: tuple[Finding, ...] = ()
    #: what the last run would write (set when the action got as far as planning a write)
    plan: WritePlan | None = None
    plan_sha256: str | None = None
    #: the plan an operator approved (``approve``); None: no approval of a plan
    approved_plan: str | None = None

    @property
    def event_id(self) -> str:
        return self.detection.event_id


def job_id(event_id: str, action: str) -> str:
    """The idempotency key of ``action`` for the event ``event_id``."""
    return hashlib.sha256(f"{event_id}:{action}".encode()).hexdigest()[:_ID_HEX]


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def audit(
    step: AuditStep, what: str, data: dict[str, Any] | None = None, *, at: float | None = None
) -> AuditEntry:
    return AuditEntry(at=iso(time.time() if at is None else at), step=step, what=what, data=data)


# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------


class JobStore(Protocol):
    """Durable jobs; every method may raise :class:`StateError`."""

    async def enqueue_many(self, jobs: Sequence[Job]) -> int:
        """Add jobs whose id is not stored yet; durable on return.  Returns how many were new."""
        ...

    async def claim_due(self, now: float, limit: int, *, lease_secs: float) -> list[Job]:
        """Atomically move up to ``limit`` due jobs (pending or failed with ``next_attempt_at <=
        now``, or running with an expired lease) to running, ``attempts + 1``, leased until
        ``now + lease_secs``; oldest due first."""
        ...

    async def complete(self, job: Job) -> bool:
        """Store ``job`` (its new state, audit, ...) if this attempt still holds it: the row must
        be running with the same ``attempts``.  False when the lease was lost."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def list_jobs(
        self, *, states: Sequence[JobState] | None = None, limit: int = 100
    ) -> list[Job]:
        """Newest first."""
        ...

    async def approve(
        self, job_id: str, *, now: float, by: str = "operator", plan_sha256: str | None = None
    ) -> Job:
        """awaiting_approval -> pending (approved), the approval bound to the job's current plan.

        ``plan_sha256`` (optional) must be that plan's hash.  Raises JobNotFoundError,
        JobConflictError, PlanMismatchError.
        """
        ...

    async def retry(self, job_id: str, *, now: float, by: str = "operator") -> Job:
        """failed/dead/skipped/dry_run -> pending, attempts reset to 0."""
        ...

    async def cancel(self, job_id: str, *, now: float, by: str = "operator") -> Job:
        """pending/awaiting_approval/failed -> skipped ("cancelled")."""
        ...

    async def counts(self) -> dict[tuple[str, str], int]:
        """Number of jobs by (action, state)."""
        ...

    async def oldest_due_age(self, now: float) -> float | None:
        """Seconds the oldest due pending/failed job has been waiting, or None."""
        ...

    async def restores_since(self, target_key: str, since: float) -> int:
        """How many jobs changed IAM for ``target_key`` at or after ``since`` (circuit breaker)."""
        ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------------------------

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
        given = normalise_sha256(plan_sha256) if plan_sha256 is not None else None

        def change(job: Job) -> Job:
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

        return await self._run(self._transition, job_id, "approve", _APPROVABLE, change)

    async def retry(self, job_id: str, *, now: float, by: str = "operator") -> Job:
        def change(job: Job) -> Job:
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

        return await self._run(self._transition, job_id, "retry", _RETRYABLE, change)

    async def cancel(self, job_id: str, *, now: float, by: str = "operator") -> Job:
        def change(job: Job) -> Job:
            return msgspec.structs.replace(
                job,
                state="skipped",
                reason="cancelled",
                updated_at=now,
                audit=(*job.audit, audit("note", f"cancelled by {by}", at=now)),
            )

        return await self._run(self._transition, job_id, "cancel", _CANCELLABLE, change)

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
        rows = self._conn.execute(
            "SELECT action, state, count(*) FROM remediation_jobs GROUP BY action, state"
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
