"""The remediation actions: each undoes one kind of policy removal (or a weakening change), or
reports on the actor.

Every action is idempotent and follows the same steps:

1. re-read the live IAM state (``before`` in the job's audit record);
2. a principal that no longer exists means ``skipped`` with the reason; a desired state that
   already holds means ``succeeded`` with ``changed=False`` -- running a job twice changes
   nothing;
3. in dry-run, record what it *would* do (``plan``) and return ``dry_run`` -- nothing changes;
4. otherwise make the change (``did``), read the state again (``after``) and check it.

Nothing is ever overwritten: when something different already sits where the removed policy was
(a new document under the same inline-policy name, another boundary), the action is skipped
(``changed_since``) -- someone changed it after the removal and a human should decide.

Nothing is written on the trail's word alone: a log file or queue message can be forged.  Before
its first write an action computes exactly what it would write (its :class:`PlannedWrite` list)
and names the records those writes rest on and the fields of each it uses (its claims: the
removal, and every history fact whose content it writes -- the Put*/Create*/Attach*/Set* event a
document, attachment or boundary came from); the confirmation gate (``remediate/confirm.py``, the
one place that decides) checks each claim field by field against CloudTrail's own record, refuses
any event the event ledger knows with two contents, and binds an operator's approval to the
plan's sha256.  An event that cannot be confirmed (not found, different from what the file says,
LookupEvents failing, a conflict) leaves the job ``awaiting_approval`` with the reason and the
plan; one that is merely not visible *yet* (younger than ``confirm_wait_secs``) is looked up
again on a later attempt.

Failures are raised as :class:`~trailguard.errors.TransientError` (try again later: throttling,
5xx, timeouts) or :class:`~trailguard.errors.PermanentError` (AccessDenied, a malformed
document); :class:`Deferred` asks for a later attempt for a reason that is not an error (a
policy that a recreate job may bring back, an event LookupEvents does not show yet).
"""

from __future__ import annotations

from typing import Final

from trailguard.remediate.actions.actor import audit_actor, quarantine_actor
from trailguard.remediate.actions.context import (
    Action,
    ActionContext,
    ActionOutcome,
    ClientSource,
    Deferred,
    NoRoleForAccount,
    RateLimiter,
    same_document,
)
from trailguard.remediate.actions.gate import (
    CLAIMS,
    confirm_before_write,
    confirm_event,
    fact_claim,
    removal_claim,
)
from trailguard.remediate.actions.notify import notify
from trailguard.remediate.actions.restore import (
    reattach_managed_policy,
    recreate_managed_policy,
    restore_inline_policy,
    restore_permissions_boundary,
    restore_policy_version,
)
from trailguard.remediate.actions.revert import revert_policy_change
from trailguard.vocabulary import ActionName

__all__ = [
    "ACTIONS",
    "CLAIMS",
    "Action",
    "ActionContext",
    "ActionOutcome",
    "ClientSource",
    "Deferred",
    "NoRoleForAccount",
    "RateLimiter",
    "audit_actor",
    "confirm_before_write",
    "confirm_event",
    "fact_claim",
    "notify",
    "quarantine_actor",
    "reattach_managed_policy",
    "recreate_managed_policy",
    "removal_claim",
    "restore_inline_policy",
    "restore_permissions_boundary",
    "restore_policy_version",
    "revert_policy_change",
    "same_document",
]

ACTIONS: Final[dict[ActionName, Action]] = {
    "restore_inline_policy": restore_inline_policy,
    "reattach_managed_policy": reattach_managed_policy,
    "restore_policy_version": restore_policy_version,
    "recreate_managed_policy": recreate_managed_policy,
    "restore_permissions_boundary": restore_permissions_boundary,
    "revert_policy_change": revert_policy_change,
    "quarantine_actor": quarantine_actor,
    "audit_actor": audit_actor,
    "notify": notify,
}
