"""The actions on the actor of a removal: quarantine it, or audit its credentials."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from trailguard.errors import PermanentError
from trailguard.remediate.actions.context import _STAGE, PRINCIPALS, ActionContext, ActionOutcome
from trailguard.remediate.actions.gate import confirm_before_write, removal_claim
from trailguard.remediate.jobs import (
    Finding,
    planned_write,
)
from trailguard.remediate.planner import actor_principal_of, allowlisted, own_identity

if TYPE_CHECKING:
    pass

# ---------------------------------------------------------------------------------------------
# quarantine_actor
# ---------------------------------------------------------------------------------------------


async def quarantine_actor(ctx: ActionContext) -> ActionOutcome:
    event = ctx.job.detection
    principal = actor_principal_of(event.actor)
    if principal is None:
        return ctx.skipped("actor_not_iam_principal", "the actor is not an IAM user or role")
    if allowlisted(event.actor, ctx.config):
        return ctx.skipped("allowlisted", f"{event.actor.arn} is on allowlist_arns")
    if own_identity(event.actor, ctx.config):
        return ctx.skipped("own_identity", "the actor is trailguard's own identity")
    _, kind, name = principal
    live = await ctx.principal(kind, name)
    if live is None:
        return ctx.skipped("principal_gone", f"{kind} {name} no longer exists")
    key_id = event.actor.access_key_id
    policy_arn = ctx.config.quarantine_policy_arn
    by_key = (
        ctx.config.quarantine_method == "deactivate_key"
        and kind == "user"
        and key_id is not None
        and key_id.startswith("AKIA")
    )
    write = (
        planned_write("UpdateAccessKey", f"user/{name}", accessKeyId=key_id, status="Inactive")
        if by_key
        else planned_write(
            PRINCIPALS[kind].call_name("attach"), f"{kind}/{name}", policyArn=policy_arn
        )
    )
    # A forged file must not be able to frame anyone: CloudTrail must confirm the event, and
    # every identity field quarantine reads (the session issuer is the role it quarantines).
    refused = await confirm_before_write(
        ctx,
        [removal_claim(ctx, "the event")],
        [write],
        f"quarantining {kind} {name}",
    )
    if refused is not None:
        return refused
    if by_key and key_id is not None:
        return await _deactivate_key(ctx, name, key_id)
    attached = await ctx.attached_policy_arns(kind, name)
    ctx.record("before", f"policies attached to {kind} {name}", attached=attached)
    if policy_arn in attached:
        return ctx.noop(f"{policy_arn} is attached to {kind} {name}")
    if ctx.dry_run:
        return ctx.would(f"attach the quarantine policy {policy_arn} to {kind} {name}")
    await ctx.attach(kind, name, policy_arn)
    ctx.record("did", f"attached the quarantine policy {policy_arn} to {kind} {name}")
    after = await ctx.attached_policy_arns(kind, name)
    ctx.record("after", f"policies attached to {kind} {name}", attached=after)
    if policy_arn not in after:
        raise PermanentError(_STAGE, "verify_failed", "the quarantine policy is not attached")
    return ActionOutcome(state="succeeded", changed=True)


async def _deactivate_key(ctx: ActionContext, user: str, key_id: str) -> ActionOutcome:
    iam = await ctx.iam()
    keys = await ctx.call(iam.list_access_keys, UserName=user)
    status = next(
        (k.get("Status") for k in keys["AccessKeyMetadata"] if k.get("AccessKeyId") == key_id),
        None,
    )
    ctx.record("before", f"access key {key_id} of user {user}: {status or 'absent'}")
    if status is None:
        return ctx.skipped("key_gone", f"user {user} has no access key {key_id}")
    if status == "Inactive":
        return ctx.noop(f"access key {key_id} is inactive")
    if ctx.dry_run:
        return ctx.would(f"deactivate access key {key_id} of user {user}")
    await ctx.call(iam.update_access_key, UserName=user, AccessKeyId=key_id, Status="Inactive")
    ctx.record("did", f"deactivated access key {key_id} of user {user}")
    return ActionOutcome(state="succeeded", changed=True)


# ---------------------------------------------------------------------------------------------
# audit_actor
# ---------------------------------------------------------------------------------------------


async def audit_actor(ctx: ActionContext) -> ActionOutcome:
    event = ctx.job.detection
    principal = actor_principal_of(event.actor)
    if principal is None or principal[1] != "user":
        return ctx.skipped("actor_not_user", "the actor is not an IAM user: nothing to audit")
    user = principal[2]
    iam = await ctx.iam()
    if await ctx.find(iam.get_user, UserName=user) is None:
        return ctx.skipped("principal_gone", f"user {user} no longer exists")
    now = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC)

    def finding(code: str, severity: str, subject: str, detail: str) -> None:
        ctx.findings.append(Finding(code=code, severity=severity, subject=subject, detail=detail))

    mfa = await ctx.call(iam.list_mfa_devices, UserName=user)
    has_mfa = bool(mfa["MFADevices"])
    login = await ctx.find(iam.get_login_profile, UserName=user)
    ctx.record("before", f"user {user}: MFA {has_mfa}, console password {login is not None}")
    if not has_mfa:
        finding(
            "no_mfa",
            "high" if login is not None else "medium",
            f"user/{user}",
            "no MFA device is registered",
        )
    if login is not None:
        if not has_mfa:
            finding(
                "console_password_without_mfa",
                "high",
                f"user/{user}",
                "the user can sign in to the console with a password alone",
            )
        policy = await ctx.find(iam.get_account_password_policy)
        if policy is None:
            finding(
                "no_password_policy",
                "medium",
                f"account/{ctx.account_id}",
                "the account has no password policy",
            )
    keys = await ctx.call(iam.list_access_keys, UserName=user)
    max_age = dt.timedelta(days=ctx.config.access_key_max_age_days)
    max_unused = dt.timedelta(days=ctx.config.access_key_max_unused_days)
    for key in keys["AccessKeyMetadata"]:
        key_id = key.get("AccessKeyId")
        created = key.get("CreateDate")
        if not key_id or key.get("Status") != "Active" or created is None:
            continue
        age = now - created
        if age > max_age:
            finding(
                "access_key_old",
                "medium",
                f"access-key/{key_id}",
                f"active access key is {age.days} days old (limit {max_age.days})",
            )
        used = await ctx.call(iam.get_access_key_last_used, AccessKeyId=key_id)
        last = used.get("AccessKeyLastUsed", {}).get("LastUsedDate")
        idle = now - (last or created)
        if idle > max_unused:
            finding(
                "access_key_unused",
                "low",
                f"access-key/{key_id}",
                f"active access key {'never used' if last is None else 'unused'} for "
                f"{idle.days} days (limit {max_unused.days})",
            )
    ctx.record(
        "after" if not ctx.dry_run else "plan",
        f"audit of user {user}: {len(ctx.findings)} finding(s)",
        findings=[f.code for f in ctx.findings],
    )
    return ActionOutcome(state="dry_run" if ctx.dry_run else "succeeded")
