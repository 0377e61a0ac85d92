"""Each action's side of the confirmation gate (remediate/confirm.py): which records it rests on,
which of their fields it uses (:data:`CLAIMS`), and the call that passes the gate before the
first write."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from trailguard.detect.policy_facts import PolicyFact
from trailguard.remediate import confirm as gate
from trailguard.remediate.actions.context import ActionContext, ActionOutcome, Deferred
from trailguard.remediate.confirm import (
    DETECTION_FIELDS,
    FACT_EVENT_FIELDS,
    Claim,
    Confirmation,
    FactField,
)
from trailguard.remediate.jobs import (
    PlannedWrite,
)
from trailguard.vocabulary import ActionName

if TYPE_CHECKING:
    pass

# Each action's claims: the records its writes rest on and the fields of each it uses (the
# README's "Threat model" shows the same table).  The removal -- the job's own event -- is always
# compared field by field with the detection the job was planned from (DETECTION_FIELDS: the
# planner decided on all of them); a history fact with the fact CloudTrail's own record yields,
# in the fields below.
INLINE_PUT: Final[tuple[FactField, ...]] = (
    *FACT_EVENT_FIELDS,
    "principalKind",
    "principalName",
    "policyName",
    "document",
)
VERSION_DOCUMENT: Final[tuple[FactField, ...]] = (
    *FACT_EVENT_FIELDS,
    "policyName",
    "policyArn",
    "path",
    "versionId",
    "document",
    "setAsDefault",
)
DEFAULT_CHOICE: Final[tuple[FactField, ...]] = (
    *FACT_EVENT_FIELDS,
    "policyArn",
    "versionId",
    "setAsDefault",
)
ATTACHMENT: Final[tuple[FactField, ...]] = (
    *FACT_EVENT_FIELDS,
    "principalKind",
    "principalName",
    "policyArn",
)
BOUNDARY_SET: Final[tuple[FactField, ...]] = (
    *FACT_EVENT_FIELDS,
    "principalKind",
    "principalName",
    "policyArn",
)
#: action -> (record, fields) for every claim it may make; the README's table, checked by a test
CLAIMS: Final[dict[ActionName, tuple[tuple[str, tuple[str, ...]], ...]]] = {
    "restore_inline_policy": (("removal", DETECTION_FIELDS), ("Put*Policy", INLINE_PUT)),
    "reattach_managed_policy": (("removal", DETECTION_FIELDS),),
    "restore_policy_version": (
        ("removal", DETECTION_FIELDS),
        ("CreatePolicyVersion / CreatePolicy", VERSION_DOCUMENT),
        ("the event that made it the default", DEFAULT_CHOICE),
    ),
    "recreate_managed_policy": (
        ("removal", DETECTION_FIELDS),
        ("CreatePolicy / CreatePolicyVersion of the default", VERSION_DOCUMENT),
        ("the event that made it the default", DEFAULT_CHOICE),
        ("Attach*Policy / Detach*Policy of each entity", ATTACHMENT),
    ),
    "restore_permissions_boundary": (
        ("removal", DETECTION_FIELDS),
        ("Put*PermissionsBoundary / CreateUser / CreateRole", BOUNDARY_SET),
    ),
    # The change itself, its own fact, and the previous document's fact(s); which of the rows
    # below depends on the change's kind (inline, managed, boundary).
    "revert_policy_change": (
        ("the change", DETECTION_FIELDS),
        ("the change's own Put*Policy", INLINE_PUT),
        ("the previous Put*Policy of the same name", INLINE_PUT),
        ("the change's own CreatePolicyVersion", VERSION_DOCUMENT),
        ("the change's own SetDefaultPolicyVersion", DEFAULT_CHOICE),
        ("CreatePolicyVersion / CreatePolicy of the previous default", VERSION_DOCUMENT),
        ("the event that made it the default", DEFAULT_CHOICE),
        ("the change's own Put*PermissionsBoundary", BOUNDARY_SET),
        (
            "Put*PermissionsBoundary / CreateUser / CreateRole of the previous boundary",
            BOUNDARY_SET,
        ),
    ),
    "quarantine_actor": (("the event", DETECTION_FIELDS),),
}


def removal_claim(ctx: ActionContext, label: str = "the removal") -> Claim:
    """The job's own event (the removal, or the event whose actor quarantine_actor acts on),
    every field of the detection it was planned from."""
    return gate.removal_claim(
        ctx.job.detection, fields=DETECTION_FIELDS, label=label, account_id=ctx.account_id
    )


def fact_claim(
    ctx: ActionContext, fact: PolicyFact, fields: Sequence[FactField], label: str
) -> Claim:
    """A history fact whose content an action is about to write."""
    return gate.fact_claim(fact, fields=fields, label=label, region=ctx.job.detection.aws_region)


async def confirm_before_write(
    ctx: ActionContext, claims: Sequence[Claim], writes: Sequence[PlannedWrite], doing: str
) -> ActionOutcome | None:
    """Pass the gate (:func:`trailguard.remediate.confirm.confirm`) before the first write:
    None means go ahead with exactly ``writes``; otherwise the outcome to return instead.

    The gate's audit lines go to the job's audit record and its plan to the job
    (``ctx.plan``); an event merely not visible in LookupEvents yet raises :class:`Deferred`.
    """
    decision = await gate.confirm(
        claims,
        writes,
        job=ctx.job,
        config=ctx.config,
        clients=ctx.clients,
        limiter=ctx.limiter,
        ledger=ctx.ledger,
        clock=ctx.clock,
        dry_run=ctx.dry_run,
        doing=doing,
    )
    ctx.audit.extend(decision.audit)
    ctx.plan = decision.plan
    if decision.action == "write":
        if decision.by_approval or ctx.dry_run or ctx.breaker is None:
            return None
        # The circuit breaker guards every automatic restore, including one whose approved
        # plan changed and whose new plan CloudTrail confirmed: only the exact plan an operator
        # approved goes through an open circuit.
        tripped = await ctx.breaker()
        if tripped is None:
            return None
        ctx.record("note", tripped)
        return ActionOutcome(state="skipped", reason="circuit_open")
    reason = decision.reason or "unconfirmed"
    if decision.action == "dry_run_wait":
        return ctx.would(f"wait for approval before {doing}: {reason}")
    if decision.action == "recheck":
        raise Deferred(
            "unconfirmed", reason, final="awaiting_approval", retry_after=decision.retry_after
        )
    return ActionOutcome(state="awaiting_approval", reason=reason)


async def confirm_event(ctx: ActionContext) -> tuple[Confirmation, str]:
    """Whether CloudTrail confirms the job's own event, every field quarantine_actor uses."""
    claim = removal_claim(ctx, "the event")
    return await gate.lookup(ctx.clients, ctx.limiter, claim)
