"""Remediation jobs: the record, its audit, and the :class:`JobStore` interface (implemented on
SQLite in ``job_store.py``).

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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from typing import Any, Final, Literal, Protocol

import msgspec

from trailguard.config import ActionName, RemediationMode
from trailguard.detect.detection import Actor, Detection, PolicyChange, Target
from trailguard.errors import StateError
from trailguard.vocabulary import JOB_STATES, TERMINAL_STATES, JobState

__all__ = [
    "JOB_STATES",
    "TERMINAL_STATES",
    "AuditEntry",
    "CircuitOpen",
    "EventRef",
    "Finding",
    "Job",
    "JobConflictError",
    "JobNotFoundError",
    "JobState",
    "JobStore",
    "PlanMismatchError",
    "PlannedWrite",
    "WritePlan",
    "audit",
    "job_id",
    "planned_write",
    "sha256_text",
]


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
    #: a policy change's comparison (revert_policy_change reads it)
    change: PolicyChange | None = None

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


class CircuitOpen(msgspec.Struct, frozen=True, kw_only=True):
    """The circuit breaker's own detection-like record (one JSON line next to detections)."""

    type: str = "remediation.circuit_open"
    rule: str = "trailguard-remediation-circuit-open"
    severity: str = "high"
    time: str
    account_id: str | None
    target_key: str
    action: str
    job_id: str
    event_id: str
    restores_in_window: int
    max_restores: int
    window_secs: float
    message: str


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
        """Number of queued jobs (pending, awaiting_approval, running, failed: ``vocabulary``'s
        ``QUEUED_JOB_STATES``) by (action, state).  Terminal states are not counted: with a
        shared store that would read every job ever run."""
        ...

    async def oldest_due_age(self, now: float) -> float | None:
        """Seconds the oldest due pending/failed job has been waiting, or None."""
        ...

    async def restores_since(self, target_key: str, since: float) -> int:
        """How many jobs changed IAM for ``target_key`` at or after ``since`` (circuit breaker)."""
        ...

    async def close(self) -> None: ...
