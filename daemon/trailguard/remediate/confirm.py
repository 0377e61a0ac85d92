"""The confirmation gate: the one place that decides whether trailguard may write what the trail
says.  trailguard holds IAM write access, so this module is its security boundary; it depends on
no action and can be reviewed alone.

**The rule.**  An action may rely only on fields that CloudTrail's own answer for that eventID
confirms, field by field.  Every record a write depends on -- the removal, and each policy-history
fact whose content is written -- is a :class:`Claim`, confirmed on its own against exactly the
fields the action uses (:data:`RemovalField`, :data:`FactField`).  The gate asks CloudTrail
LookupEvents (by EventId, in the claim's account and region, through the clients the actions
use), derives the same fields from CloudTrail's record with the same extraction code the trail's
record went through (:func:`~trailguard.detect.detection.build_actor` /
:func:`~trailguard.detect.detection.build_target` for the removal,
:func:`~trailguard.detect.policy_facts.facts_from_record` for a fact) and compares each one.
A field present on one side and absent on the other is a mismatch.  One LookupEvents answer per
(eventID, account, region) is asked for and reused; every claim under that eventID is still
compared on its own (two claims under one eventID -- a forged Put carrying the removal's eventID
-- can never both match CloudTrail's single record).

**Conflicts.**  An eventID the event ledger (``state/ledger.py``) has seen with two contents is
never a source for a write, whatever CloudTrail says and even with ``confirm_events = false``:
nobody knows which content is real.  The job waits for an operator, and the reason names the
conflict.

**Approval binds to the plan.**  Before the gate, an action computes what it would write (each IAM
call with its target and exact content: :class:`~trailguard.remediate.jobs.PlannedWrite`); the gate
makes it a :class:`~trailguard.remediate.jobs.WritePlan` (with the events it rests on and their
conflicts) and hashes it.  An operator's approval (``trailguard jobs approve ID [--plan SHA]``)
covers that hash only: when the recomputed plan has the same hash, the gate lets it through
without (further) confirmation; any other plan waits for a new approval, and the audit record
says why.

Outcomes (:class:`GateDecision`): ``write`` (go ahead); ``recheck`` (every failure is an event
too young to show in LookupEvents yet: look again later); ``wait`` (``awaiting_approval``, the plan
recorded); ``dry_run_wait`` (dry-run: it would wait).  Facts of ``trailguard snapshot`` were read
from IAM itself and need no lookup (a trail record can never carry a ``snapshot:`` eventID).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import msgspec

from trailguard.aws import classify
from trailguard.config import RemediationConfig
from trailguard.detect.policy_facts import facts_from_record
from trailguard.detect.record import Record
from trailguard.detect.rules import IAM_EVENT_SOURCE
from trailguard.detect.times import event_time_key
from trailguard.remediate.claims import (
    ACTOR_FIELDS,
    DETECTION_FIELDS,
    EVENT_FIELDS,
    FACT_EVENT_FIELDS,
    FACT_FIELDS,
    IAM_EVENT_REGION,
    REMOVAL_FIELDS,
    SHOWN,
    Claim,
    Confirmation,
    FactField,
    FieldValue,
    RemovalField,
    fact_claim,
    fact_view,
    removal_claim,
    removal_view,
    removal_view_of_record,
)
from trailguard.remediate.jobs import (
    AuditEntry,
    AuditStep,
    Job,
    PlannedWrite,
    WritePlan,
    audit,
)
from trailguard.state.ledger import EventLedger, LedgerConflict

if TYPE_CHECKING:
    from types_aiobotocore_cloudtrail.client import CloudTrailClient

# The claims' names are re-exported: the gate is where callers look for them.
__all__ = [
    "ACTOR_FIELDS",
    "DETECTION_FIELDS",
    "EVENT_FIELDS",
    "FACT_EVENT_FIELDS",
    "FACT_FIELDS",
    "IAM_EVENT_REGION",
    "REMOVAL_FIELDS",
    "Claim",
    "Confirmation",
    "FactField",
    "GateDecision",
    "RemovalField",
    "confirm",
    "fact_claim",
    "fact_view",
    "lookup",
    "removal_claim",
    "removal_view",
    "removal_view_of_record",
]

_LOOKUP_DAYS: Final = 90  # LookupEvents shows the last 90 days of management events
_MIN_RECHECK_SECS: Final = 60.0
_STAGE: Final = "remediate"


# ---------------------------------------------------------------------------------------------
# CloudTrail's own record, and the field-by-field comparison
# ---------------------------------------------------------------------------------------------


class LookupClients(Protocol):
    async def cloudtrail(self, account_id: str, region: str) -> CloudTrailClient: ...


class Limiter(Protocol):
    async def acquire(self) -> None: ...


@dataclass(frozen=True)
class _Answer:
    """CloudTrail's answer for one (eventID, account, region): its record, or why none."""

    verdict: Literal["found", "not_found", "unavailable", "mismatch"]
    detail: str
    record: Record | None = None


async def _ask(clients: LookupClients, limiter: Limiter, claim: Claim) -> _Answer:
    try:
        cloudtrail = await clients.cloudtrail(claim.account_id, claim.region)
        await limiter.acquire()
        found = await cloudtrail.lookup_events(
            LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": claim.event_id}],
            MaxResults=1,
        )
    except Exception as exc:  # noqa: BLE001 - every failure means "not confirmed"
        reason = classify(exc, stage=_STAGE, what="LookupEvents")
        return _Answer("unavailable", f"LookupEvents failed: {reason.detail}")
    events = found.get("Events", [])
    if not events:
        return _Answer("not_found", "LookupEvents does not show the event")
    got = events[0]
    try:
        record = msgspec.json.decode(got.get("CloudTrailEvent") or "{}", type=Record)
    except msgspec.DecodeError:
        return _Answer("mismatch", "CloudTrail's own record of the event cannot be read")
    if got.get("EventId") != claim.event_id or record.event_id != claim.event_id:
        return _Answer("mismatch", "CloudTrail's own record differs in eventID")
    return _Answer("found", "CloudTrail LookupEvents shows the event", record)


def differences(claim: Claim, record: Record) -> list[str]:
    """The fields of ``claim`` that CloudTrail's ``record`` does not confirm, as the audit
    record shows them: ``name (CloudTrail's value)``."""
    if claim.kind == "removal":
        actual = removal_view_of_record(record)
    else:
        if record.event_source != IAM_EVENT_SOURCE:
            return [f"eventSource ({record.event_source})"]
        if record.failed:
            return [f"errorCode ({record.error_code})"]
        derived = facts_from_record(record)
        if len(derived) != 1:
            return [f"requestParameters (no policy fact in CloudTrail's {record.event_name})"]
        actual = fact_view(derived[0])
    problems: list[str] = []
    for name in claim.fields:
        want, got = claim.expected.get(name), actual.get(name)
        same = _same_text_document(want, got) if name == "document" else want == got
        if not same:
            shown = SHOWN.get(name, name)
            problems.append(shown if name == "document" else f"{shown} ({_show(got)})")
    return problems


def _show(value: FieldValue) -> str:
    if value is None:
        return "absent"
    return str(value).lower() if isinstance(value, bool) else value


def _same_text_document(a: FieldValue, b: FieldValue) -> bool:
    """Equal policy documents after JSON normalisation; a document with a duplicate key is
    ambiguous (parsers disagree on which value wins) and equals only its exact text."""
    if not isinstance(a, str) or not isinstance(b, str) or a == b:
        return a == b

    def strict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise ValueError("duplicate key")
        return out

    try:
        return bool(
            json.loads(a, object_pairs_hook=strict) == json.loads(b, object_pairs_hook=strict)
        )
    except (ValueError, RecursionError):
        return False


async def lookup(
    clients: LookupClients,
    limiter: Limiter,
    claim: Claim,
    cache: dict[tuple[str, str, str], _Answer] | None = None,
) -> tuple[Confirmation, str]:
    """Whether CloudTrail confirms ``claim``, field by field.  ``cache``: answers already asked
    for, by (eventID, account, region) -- the comparison is made for every claim all the same."""
    key = (claim.event_id, claim.account_id, claim.region)
    answer = cache.get(key) if cache is not None else None
    if answer is None:
        answer = await _ask(clients, limiter, claim)
        if cache is not None:
            cache[key] = answer
    if answer.record is None:
        missing: Confirmation = "not_found" if answer.verdict == "not_found" else "unavailable"
        return ("mismatch" if answer.verdict == "mismatch" else missing), answer.detail
    problems = differences(claim, answer.record)
    if problems:
        return "mismatch", "CloudTrail's own record differs in " + ", ".join(problems)
    return "confirmed", "CloudTrail LookupEvents shows the same event"


# ---------------------------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided; ``audit`` is what the job's audit record gets, in order."""

    action: Literal["write", "recheck", "wait", "dry_run_wait"]
    plan: WritePlan
    audit: tuple[AuditEntry, ...]
    reason: str | None = None
    retry_after: float | None = None
    #: "write" because an operator approved exactly this plan (the circuit breaker, which
    #: guards automatic restores, does not apply then)
    by_approval: bool = False

    @property
    def plan_sha256(self) -> str:
        return self.plan.sha256


async def confirm(
    claims: Sequence[Claim],
    writes: Sequence[PlannedWrite],
    *,
    job: Job,
    config: RemediationConfig,
    clients: LookupClients,
    limiter: Limiter,
    ledger: EventLedger | None,
    clock: Callable[[], float],
    dry_run: bool,
    doing: str,
) -> GateDecision:
    """The gate before an action's first write (see the module docstring).

    ``claims``: every record the writes depend on; ``writes``: exactly what the action is about
    to send; ``doing`` completes "before ..." in the audit record.
    """
    entries: list[AuditEntry] = []

    def note(step: AuditStep, what: str, **data: Any) -> None:
        entries.append(
            audit(step, what, {k: v for k, v in data.items() if v is not None} or None, at=clock())
        )

    sourced = [claim for claim in claims if not claim.from_snapshot]
    conflicts: Mapping[str, LedgerConflict] = (
        await ledger.conflicts([claim.event_id for claim in sourced]) if ledger is not None else {}
    )
    plan = WritePlan(
        action=job.action,
        account_id=job.account_id or "",
        writes=tuple(writes),
        events=tuple(dict.fromkeys(claim.event_id for claim in claims)),
        conflicts=tuple(dict.fromkeys(c.event_id for c in sourced if c.event_id in conflicts)),
    )
    sha = plan.sha256
    if job.approved_plan is not None:
        if job.approved_plan == sha:
            note(
                "note",
                f"an operator approved plan {sha}: {doing} without further confirmation of "
                "its events",
                plan_sha256=sha,
                events=list(plan.events),
            )
            return GateDecision("write", plan, tuple(entries), by_approval=True)
        note(
            "note",
            f"the plan changed since the approval (approved {job.approved_plan}, now {sha}): "
            "that approval does not cover it",
            approved_plan=job.approved_plan,
            plan_sha256=sha,
        )
    if not config.confirm_events:
        note(
            "note",
            "confirm_events = false: acting without CloudTrail confirmation",
            events=[claim.event_id for claim in sourced],
        )
    failures: list[tuple[Claim, Confirmation]] = []
    details: list[str] = []
    conflicted: dict[str, tuple[LedgerConflict, list[str]]] = {}
    cache: dict[tuple[str, str, str], _Answer] = {}
    for claim in claims:
        where = f"{claim.label} (event {claim.event_id})"
        if claim.from_snapshot:
            note("before", f"{where}: read from IAM by trailguard snapshot, nothing to confirm")
            continue
        conflict = conflicts.get(claim.event_id)
        if conflict is not None:
            note(
                "before",
                f"{where}: conflict: {conflict.describe()}: never a source for a write",
                confirmation="conflict",
                event_id=claim.event_id,
            )
            failures.append((claim, "conflict"))
            conflicted.setdefault(claim.event_id, (conflict, []))[1].append(claim.label)
        if not config.confirm_events:
            continue
        # Looked up even when conflicted: the audit tells the operator which content
        # CloudTrail confirms.
        verdict, detail = await lookup(clients, limiter, claim, cache)
        note(
            "before",
            f"confirmation of {where}: {verdict}: {detail}",
            confirmation=verdict,
            event_id=claim.event_id,
        )
        if verdict != "confirmed":
            if verdict == "not_found":
                detail = _not_found_detail(clock(), config, claim, detail)
            if conflict is None:
                failures.append((claim, verdict))
            details.append(f"{detail} ({where})")
    if not failures:
        return GateDecision("write", plan, tuple(entries))
    parts = [
        f"conflict: {conflict.describe()}, which {' and '.join(labels)} rest on"
        for conflict, labels in conflicted.values()
    ]
    if details:
        parts.append(f"unconfirmed: {'; '.join(details)}")
    reason = "; ".join(parts)
    if dry_run:
        return GateDecision("dry_run_wait", plan, tuple(entries), reason=reason)
    ids = [claim.event_id for claim, _ in failures]
    recheck = _recheck_after(clock(), config, job.attempts, failures)
    if recheck is not None:
        note(
            "note",
            f"not visible in LookupEvents yet: looking again in {recheck:.0f} s at the earliest",
            unconfirmed=ids,
        )
        return GateDecision("recheck", plan, tuple(entries), reason=reason, retry_after=recheck)
    note(
        "note",
        f"waiting for approval before {doing}: "
        + (
            "the event ledger knows an event it rests on with two contents"
            if conflicted
            else "CloudTrail does not confirm what the trail says"
        )
        + f"; approve exactly this plan with --plan {sha}",
        unconfirmed=ids,
        plan_sha256=sha,
        plan=msgspec.json.decode(msgspec.json.encode(plan)),
    )
    return GateDecision("wait", plan, tuple(entries), reason=reason)


def _epoch(event_time: str | None) -> float | None:
    key = event_time_key(event_time)
    if key is None:
        return None
    return dt.datetime.strptime(key, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def _not_found_detail(now: float, config: RemediationConfig, claim: Claim, detail: str) -> str:
    at = _epoch(claim.event_time)
    if at is None:
        return detail
    age = now - at
    if age < config.confirm_wait_secs:
        return f"{detail} (yet)"
    if age > _LOOKUP_DAYS * 86400:
        return (
            f"{detail}: it is {int(age // 86400)} days old and LookupEvents keeps {_LOOKUP_DAYS} "
            "(`trailguard snapshot` facts need no confirmation)"
        )
    return detail


def _recheck_after(
    now: float,
    config: RemediationConfig,
    attempts: int,
    failures: Sequence[tuple[Claim, Confirmation]],
) -> float | None:
    """Seconds until the next look, when every failure is an event too recent to be visible in
    LookupEvents yet (younger than ``confirm_wait_secs``): the remaining attempts are spread over
    what is left of that wait, at least a minute apart.  None: no point in looking again."""
    wait = config.confirm_wait_secs
    ends: list[float] = []
    for claim, verdict in failures:
        at = _epoch(claim.event_time)
        if verdict != "not_found" or at is None or now - at >= wait:
            return None
        ends.append(min(at, now) + wait)  # an eventTime in the future waits no longer
    remaining = max(ends) - now
    attempts_left = max(1, config.max_attempts - attempts)
    return min(remaining, max(_MIN_RECHECK_SECS, remaining / attempts_left))
