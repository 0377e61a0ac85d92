"""The built-in rule pack: one rule per IAM policy-removal API, with its severities, and two
rules for policy changes that take permissions' limits away (weakened, possibly weakened).

A ``[[rules]]`` entry in the config with the same id overrides fields of a rule here; the config
module builds the effective rules from both.  Data only: it imports nothing of trailguard but
the shared vocabulary.
"""

from __future__ import annotations

from typing import Final

import msgspec

from trailguard.vocabulary import (
    CHANGE_EVENT_NAMES,
    IAM_EVENT_SOURCE,
    OUTCOMES,
    ChangeVerdict,
    Outcome,
    Severity,
)

__all__ = ["CHANGE_RULE_IDS", "DEFAULT_RULES", "BuiltinRule"]


class BuiltinRule(msgspec.Struct, frozen=True, kw_only=True):
    """One rule of the built-in pack.  A ``[[rules]]`` entry with the same id overrides fields."""

    id: str
    description: str
    event_names: tuple[str, ...]
    event_source: str = IAM_EVENT_SOURCE
    outcomes: tuple[Outcome, ...] = OUTCOMES
    severity_success: Severity
    severity_failure: Severity
    #: empty: the rule matches records (a removal); else a *change rule*: it matches a policy
    #: change (CHANGE_EVENT_NAMES) whose comparison with the previous document gave one of these
    verdicts: tuple[ChangeVerdict, ...] = ()


def _builtin(
    rule_id: str, event_name: str, description: str, success: Severity, failure: Severity
) -> BuiltinRule:
    return BuiltinRule(
        id=rule_id,
        description=description,
        event_names=(event_name,),
        severity_success=success,
        severity_failure=failure,
    )


# Severities: a successful removal is high (it may have taken away a Deny or a guardrail); a
# failed attempt is medium (probing shows as failures).  DeletePolicyVersion is one step lower:
# IAM refuses to delete a policy's default version, so a successful call never changes what a
# principal may do.  Boundary removals are raised to `[severity] permissions_boundary_removal`
# (high) for both outcomes by the escalation.
DEFAULT_RULES: Final[tuple[BuiltinRule, ...]] = (
    _builtin(
        "iam-delete-user-policy",
        "DeleteUserPolicy",
        "An inline policy was deleted from an IAM user",
        "high",
        "medium",
    ),
    _builtin(
        "iam-delete-role-policy",
        "DeleteRolePolicy",
        "An inline policy was deleted from an IAM role",
        "high",
        "medium",
    ),
    _builtin(
        "iam-delete-group-policy",
        "DeleteGroupPolicy",
        "An inline policy was deleted from an IAM group",
        "high",
        "medium",
    ),
    _builtin(
        "iam-delete-policy",
        "DeletePolicy",
        "A customer managed IAM policy was deleted",
        "high",
        "medium",
    ),
    _builtin(
        "iam-delete-policy-version",
        "DeletePolicyVersion",
        "A non-default version of a managed IAM policy was deleted",
        "medium",
        "low",
    ),
    _builtin(
        "iam-detach-user-policy",
        "DetachUserPolicy",
        "A managed policy was detached from an IAM user",
        "high",
        "medium",
    ),
    _builtin(
        "iam-detach-role-policy",
        "DetachRolePolicy",
        "A managed policy was detached from an IAM role",
        "high",
        "medium",
    ),
    _builtin(
        "iam-detach-group-policy",
        "DetachGroupPolicy",
        "A managed policy was detached from an IAM group",
        "high",
        "medium",
    ),
    _builtin(
        "iam-delete-user-permissions-boundary",
        "DeleteUserPermissionsBoundary",
        "The permissions boundary was removed from an IAM user",
        "high",
        "medium",
    ),
    _builtin(
        "iam-delete-role-permissions-boundary",
        "DeleteRolePermissionsBoundary",
        "The permissions boundary was removed from an IAM role",
        "high",
        "medium",
    ),
    # Changes: compared with the previous document (detect/changes.py).  A failed call changed
    # nothing, so only successful ones.  "possibly_weakened" (the engine could not decide: policy
    # variables, ForAnyValue, a work limit, a document it cannot read) is one step lower.
    BuiltinRule(
        id="iam-policy-weakened",
        description="A policy change allows requests the previous document did not (a Deny "
        "dropped or narrowed, an Allow widened or added, a Condition removed, a wider boundary, "
        "a rollback to a more permissive version)",
        event_names=CHANGE_EVENT_NAMES,
        outcomes=("success",),
        severity_success="high",
        severity_failure="medium",
        verdicts=("weakened",),
    ),
    BuiltinRule(
        id="iam-policy-possibly-weakened",
        description="A policy change the comparison could not prove harmless (constructs it "
        "cannot decide, or its work limits)",
        event_names=CHANGE_EVENT_NAMES,
        outcomes=("success",),
        severity_success="medium",
        severity_failure="low",
        verdicts=("possibly_weakened",),
    ),
)

#: The built-in change rules' ids.
CHANGE_RULE_IDS: Final[frozenset[str]] = frozenset(r.id for r in DEFAULT_RULES if r.verdicts)
