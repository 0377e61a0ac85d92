"""Planning: which remediation jobs a detection gets.  Pure: no I/O, no asyncio.

:func:`plan` applies, in order:

1. only detections with disposition ``alert`` and an eventID (the job id derives from it);
2. loop prevention: an event made by trailguard's own remediation identity is never remediated
   (:func:`is_own_identity`: the configured ``own_identity_arns`` and the role of
   ``role_arn_template``, matched against ``userIdentity.arn`` and the session issuer's ARN).
   trailguard's clients also send the user-agent marker ``trailguard/<version>``
   (:data:`trailguard.aws.USER_AGENT_EXTRA`); because a caller chooses its user agent, the marker
   alone decides only when no identity is configured -- otherwise a marker from another identity
   is flagged (``PlanResult.spoofed_marker``) and the event is planned normally;
3. every ``[[remediation.policies]]`` table that matches (rule, outcome, minimum severity,
   account) contributes its actions, each planned at most once;
4. an action that does not fit the event is dropped: the restore actions need a successful IAM
   removal of their kind with the names they act on, ``revert_policy_change`` a weakening
   change (a detection with a ``change``) with the names it acts on; ``quarantine_actor`` and
   ``audit_actor``
   need an IAM user or role as the actor (``audit_actor``: a user), and ``quarantine_actor``
   never an allowlisted one;
   ``notify`` needs a webhook or SNS topic; an action whose mode is ``off`` is not planned;
5. the mode: ``enforce`` and ``dry-run`` jobs start ``pending`` (a dry-run job reads live state
   and records what it would do), ``approve`` jobs start ``awaiting_approval``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Final

import msgspec

from trailguard.config import RemediationConfig, RemediationPolicy
from trailguard.detect.detection import Actor, Detection
from trailguard.detect.policy_facts import PrincipalKind
from trailguard.detect.rules import glob_regex
from trailguard.remediate.jobs import EventRef, Job, audit, job_id
from trailguard.vocabulary import (
    CHANGE_EVENT_NAMES,
    IAM_EVENT_SOURCE,
    RESTORE_ACTIONS,
    SEVERITY_RANK,
    ActionName,
)

__all__ = [
    "RESTORE_ACTIONS",
    "RESTORE_ACTION_FOR_EVENT",
    "PlanResult",
    "actor_principal",
    "actor_principal_of",
    "allowlisted",
    "is_allowlisted",
    "is_own_identity",
    "own_identity",
    "own_identity_globs",
    "plan",
    "plan_jobs",
]

RESTORE_ACTION_FOR_EVENT: Final[dict[str, ActionName]] = {
    "DeleteUserPolicy": "restore_inline_policy",
    "DeleteRolePolicy": "restore_inline_policy",
    "DeleteGroupPolicy": "restore_inline_policy",
    "DetachUserPolicy": "reattach_managed_policy",
    "DetachRolePolicy": "reattach_managed_policy",
    "DetachGroupPolicy": "reattach_managed_policy",
    "DeletePolicyVersion": "restore_policy_version",
    "DeletePolicy": "recreate_managed_policy",
    "DeleteUserPermissionsBoundary": "restore_permissions_boundary",
    "DeleteRolePermissionsBoundary": "restore_permissions_boundary",
}

# trailguard/<version> as aws.USER_AGENT_EXTRA writes it, anywhere in the user agent.
_MARKER: Final = re.compile(r"(?:^|[\s(])trailguard/\d")
_RANK: Final[dict[str, int]] = {str(k): v for k, v in SEVERITY_RANK.items()}
_ARN_ACCOUNT: Final = re.compile(r"arn:aws[a-z-]*:(?:iam|sts)::([0-9]{12}):")


class PlanResult(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`plan` decided: the jobs, and why anything was left out."""

    jobs: tuple[Job, ...] = ()
    skipped: str | None = None  # why the whole detection plans nothing
    dropped: tuple[tuple[str, str], ...] = ()  # (action, why) for actions left out
    spoofed_marker: bool = False  # trailguard's user-agent marker from another identity


def plan_jobs(
    detection: Detection, config: RemediationConfig, *, now: float | None = None
) -> list[Job]:
    """The jobs ``detection`` gets (see :func:`plan` for why some are left out)."""
    return list(plan(detection, config, now=now).jobs)


def plan(
    detection: Detection, config: RemediationConfig, *, now: float | None = None
) -> PlanResult:
    if detection.disposition != "alert":
        return PlanResult(skipped="suppressed")
    if not detection.event_id:
        return PlanResult(skipped="no_event_id")
    if is_own_identity(detection, config):
        return PlanResult(skipped="own_identity")
    marker = bool(detection.actor.user_agent and _MARKER.search(detection.actor.user_agent))
    identity_configured = bool(config.own_identity_arns or config.role_arn_template)
    if marker and not identity_configured:
        return PlanResult(skipped="own_user_agent")

    wanted: dict[ActionName, None] = {}
    for policy in config.policies:
        if _policy_matches(policy, detection):
            wanted.update(dict.fromkeys(policy.actions))
    if not wanted:
        return PlanResult(skipped="no_policy", spoofed_marker=marker)

    created = time.time() if now is None else now
    event = EventRef.from_detection(detection)
    jobs: list[Job] = []
    dropped: list[tuple[str, str]] = []
    for action in wanted:
        mode = config.action_mode(action)
        if mode == "off":
            dropped.append((action, "mode_off"))
            continue
        why_not, account, target_key = _fit(action, detection, config)
        if why_not is not None:
            dropped.append((action, why_not))
            continue
        notes = [audit("planned", f"planned in mode {mode} by rule {detection.rule}", at=created)]
        if marker:
            notes.append(
                audit(
                    "note",
                    "the event carries trailguard's user-agent marker but was not made by "
                    "trailguard's configured identity: treated as someone else's change",
                    at=created,
                )
            )
        jobs.append(
            Job(
                id=job_id(detection.event_id, action),
                action=action,
                state="awaiting_approval" if mode == "approve" else "pending",
                mode=mode,
                account_id=account,
                target_key=target_key,
                detection=event,
                created_at=created,
                updated_at=created,
                next_attempt_at=created,
                reason="approval required (mode approve)" if mode == "approve" else None,
                audit=tuple(notes),
            )
        )
    return PlanResult(jobs=tuple(jobs), dropped=tuple(dropped), spoofed_marker=marker)


# ---------------------------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------------------------


def _globs_match(globs: Iterable[str], arns: Iterable[str | None]) -> bool:
    patterns = [re.compile(glob_regex(g), re.DOTALL) for g in globs]
    return any(p.fullmatch(arn) for p in patterns for arn in arns if arn)


def own_identity_globs(config: RemediationConfig) -> tuple[str, ...]:
    """``own_identity_arns`` plus the role of ``role_arn_template`` in any account."""
    globs = list(config.own_identity_arns)
    if config.role_arn_template:
        globs.append(config.role_arn_template.replace("{account_id}", "*"))
    return tuple(globs)


def own_identity(actor: Actor, config: RemediationConfig) -> bool:
    """Whether ``actor`` is trailguard's own remediation identity."""
    return _globs_match(own_identity_globs(config), (actor.arn, actor.session_issuer_arn))


def allowlisted(actor: Actor, config: RemediationConfig) -> bool:
    """Whether ``actor`` is on ``allowlist_arns`` (never quarantined)."""
    return _globs_match(config.allowlist_arns, (actor.arn, actor.session_issuer_arn))


def is_own_identity(detection: Detection, config: RemediationConfig) -> bool:
    return own_identity(detection.actor, config)


def is_allowlisted(detection: Detection, config: RemediationConfig) -> bool:
    return allowlisted(detection.actor, config)


def actor_principal_of(actor: Actor) -> tuple[str, PrincipalKind, str] | None:
    """The acting IAM principal as (account, "user" | "role", name), or None (root, a service,
    a federated user, an unknown identity)."""
    kind: PrincipalKind
    if actor.type == "IAMUser" and actor.arn and ":user/" in actor.arn:
        arn = actor.arn
        kind = "user"
    elif actor.type == "AssumedRole" and actor.session_issuer_arn:
        arn = actor.session_issuer_arn
        kind = "role"
        if ":role/" not in arn:
            return None
    else:
        return None
    found = _ARN_ACCOUNT.match(arn)
    name = arn.rsplit("/", 1)[-1]
    if found is None or not name:
        return None
    return found[1], kind, name


def actor_principal(detection: Detection) -> tuple[str, PrincipalKind, str] | None:
    return actor_principal_of(detection.actor)


# ---------------------------------------------------------------------------------------------
# Matching and fitting
# ---------------------------------------------------------------------------------------------


def _policy_matches(policy: RemediationPolicy, detection: Detection) -> bool:
    if "*" not in policy.rules and detection.rule not in policy.rules:
        return False
    if detection.outcome not in policy.outcomes:
        return False
    rank = _RANK.get(detection.severity)
    if rank is None or rank < _RANK[policy.min_severity]:
        return False
    return policy.accounts is None or detection.account_id in policy.accounts


def _fit(
    action: ActionName, detection: Detection, config: RemediationConfig
) -> tuple[str | None, str | None, str]:
    """(why the action does not fit or None, the account it acts in, its target key)."""
    target = detection.target
    account = detection.account_id
    if action == "revert_policy_change":
        if detection.change is None or detection.event_name not in CHANGE_EVENT_NAMES:
            return "not_a_change", None, ""
    elif (
        action in RESTORE_ACTIONS
        and RESTORE_ACTION_FOR_EVENT.get(detection.event_name or "") != action
    ):
        return "not_this_event", None, ""
    if action in RESTORE_ACTIONS:
        if detection.event_source != IAM_EVENT_SOURCE:
            return "not_iam", None, ""
        if detection.outcome != "success":
            return "removal_failed", None, ""
        if not account:
            return "no_account", None, ""
    if action == "restore_inline_policy":
        if (
            target.kind not in ("user", "role", "group")
            or not target.name
            or not target.policy_name
        ):
            return "incomplete_target", None, ""
        return None, account, f"{account}:{target.kind}/{target.name}:inline/{target.policy_name}"
    if action == "reattach_managed_policy":
        if target.kind not in ("user", "role", "group") or not target.name or not target.policy_arn:
            return "incomplete_target", None, ""
        return None, account, f"{account}:{target.kind}/{target.name}:attached/{target.policy_arn}"
    if action == "restore_policy_version":
        if not target.policy_arn or not target.version_id:
            return "incomplete_target", None, ""
        return None, account, f"{target.policy_arn}:versions"
    if action == "recreate_managed_policy":
        if not target.policy_arn:
            return "incomplete_target", None, ""
        return None, account, target.policy_arn
    if action == "restore_permissions_boundary":
        if target.kind not in ("user", "role") or not target.name:
            return "incomplete_target", None, ""
        return None, account, f"{account}:{target.kind}/{target.name}:boundary"
    if action == "revert_policy_change":
        # The same target keys as the restores: the circuit breaker counts a pipeline that
        # keeps deleting a policy and one that keeps weakening it as one fight.
        assert detection.change is not None
        changed = detection.change.kind
        if changed == "managed":
            if not target.policy_arn:
                return "incomplete_target", None, ""
            return None, account, f"{target.policy_arn}:versions"
        if changed == "boundary":
            if target.kind not in ("user", "role") or not target.name or not target.policy_arn:
                return "incomplete_target", None, ""
            return None, account, f"{account}:{target.kind}/{target.name}:boundary"
        if (
            target.kind not in ("user", "role", "group")
            or not target.name
            or not target.policy_name
        ):
            return "incomplete_target", None, ""
        return None, account, f"{account}:{target.kind}/{target.name}:inline/{target.policy_name}"
    if action in ("quarantine_actor", "audit_actor"):
        principal = actor_principal(detection)
        if principal is None:
            return "actor_not_iam_principal", None, ""
        actor_account, kind, name = principal
        if action == "quarantine_actor" and is_allowlisted(detection, config):
            return "allowlisted", None, ""
        if action == "audit_actor" and kind != "user":
            return "actor_not_user", None, ""
        prefix = "quarantine" if action == "quarantine_actor" else "audit"
        return None, actor_account, f"{actor_account}:{kind}/{name}:{prefix}"
    # notify
    if config.notify.webhook_url is None and config.notify.sns_topic_arn is None:
        return "no_notify_target", None, ""
    return None, account, f"notify:{detection.event_id}"
