"""revert_policy_change: put back what a weakening change replaced (issue 16), and nothing else.

The job's detection is a change (``Put*Policy``, ``CreatePolicyVersion`` with setAsDefault,
``SetDefaultPolicyVersion``, ``Put*PermissionsBoundary``) whose comparison with the previous
document said ``weakened`` (or ``possibly_weakened``); its ``change`` object names the previous
document's fact and hash.  The revert:

1. reads the history again at the change's own position (eventTime, then eventID) and goes on
   only if it still names the previous document the change was judged against (same event,
   same sha256): a fact that arrived since means the change may have to be judged anew --
   ``history_changed``, a person decides;
2. re-reads IAM: the weakened document must still be in place -- the inline policy holds the
   change's document, the default version is the one the change made default, the boundary is
   the one it set.  Already the previous one: nothing to do.  Anything else (changed again,
   removed): ``changed_since``, nothing is overwritten;
3. passes the confirmation gate with the change itself (every field of the detection), the
   change's own fact and the previous document's fact(s), exactly as the restore actions do
   (approval binds to the plan, the circuit breaker is asked before the first write);
4. writes: the previous inline document (Put*Policy); for a managed policy, the previous
   default again (SetDefaultPolicyVersion) while a version holding its document exists, else a
   new version with it (CreatePolicyVersion, setAsDefault; never past IAM's five versions --
   trailguard deletes none); the previous boundary ARN (Put*PermissionsBoundary);
5. reads back and checks.
"""

from __future__ import annotations

from trailguard.detect.changes import change_kind, document_sha256
from trailguard.detect.detection import PolicyChange
from trailguard.detect.policy_facts import PolicyFact
from trailguard.errors import PermanentError
from trailguard.remediate.actions.context import (
    _MAX_VERSIONS,
    _STAGE,
    PRINCIPALS,
    ActionContext,
    ActionOutcome,
    Deferred,
    _need,
    _principal_kind,
    same_document,
)
from trailguard.remediate.actions.gate import (
    BOUNDARY_SET,
    DEFAULT_CHOICE,
    INLINE_PUT,
    VERSION_DOCUMENT,
    confirm_before_write,
    fact_claim,
    removal_claim,
)
from trailguard.remediate.actions.restore import _boundary_of, _live_versions
from trailguard.remediate.jobs import planned_write

__all__ = ["revert_policy_change"]


async def revert_policy_change(ctx: ActionContext) -> ActionOutcome:
    change = ctx.job.detection.change
    if change is None:
        raise PermanentError(_STAGE, "incomplete_target", "the detection carries no change")
    own = await _own_fact(ctx, change)
    if own is None:
        return ctx.skipped(
            "no_history", f"the change (event {ctx.job.event_id}) is not in the policy history"
        )
    if change.kind == "inline":
        return await _revert_inline(ctx, change, own)
    if change.kind == "managed":
        return await _revert_managed(ctx, change, own)
    return await _revert_boundary(ctx, change, own)


def _through(event_id: str) -> str:
    """A position tie right after ``event_id``: what the history held *with* the change."""
    return event_id + "\x00"


async def _own_fact(ctx: ActionContext, change: PolicyChange) -> PolicyFact | None:
    """The change's own fact, as the history recorded it: the last fact of its kind up to and
    including the change's position (any other eventID there is not it)."""
    target = ctx.job.detection.target
    position = {"before": ctx.event_time, "before_event_id": _through(ctx.job.event_id)}
    found: PolicyFact | None = None
    if change.kind == "inline":
        kind = _principal_kind(target.kind, ("user", "role", "group"))
        found = await ctx.history.inline_policy(
            ctx.account_id,
            kind,
            _need(target.name, "principal"),
            _need(target.policy_name, "policy name"),
            **position,
        )
    elif change.kind == "boundary":
        kind = _principal_kind(target.kind, ("user", "role"))
        found = await ctx.history.boundary_put(
            ctx.account_id, kind, _need(target.name, "principal"), **position
        )
    elif change.new_version_id is not None:  # managed: the version the change made default
        version = await ctx.history.policy_version(
            _need(target.policy_arn, "policy ARN"), change.new_version_id, **position
        )
        if version is not None:
            found = version.fact if version.fact.event_id == ctx.job.event_id else None
            found = found or version.default_fact
    if found is None or found.event_id != ctx.job.event_id or change_kind(found) != change.kind:
        return None
    return found


def _history_changed(
    change: PolicyChange, previous: PolicyFact | None, document: str | None
) -> str | None:
    """Why the history's previous document is no longer the one the change was judged
    against, or None when it still is."""
    if previous is None or document is None:
        return "the history no longer holds the previous document the change was compared with"
    if previous.event_id != change.previous_event_id:
        return (
            f"the history now names event {previous.event_id} as the previous document, not "
            f"{change.previous_event_id} (a fact arrived since): judge the change again"
        )
    if document_sha256(document) != change.previous_document_sha256:
        return f"the previous document (event {previous.event_id}) is not the one compared"
    return None


# ---------------------------------------------------------------------------------------------
# An inline policy: Put{User,Role,Group}Policy
# ---------------------------------------------------------------------------------------------


async def _revert_inline(
    ctx: ActionContext, change: PolicyChange, own: PolicyFact
) -> ActionOutcome:
    target = ctx.job.detection.target
    kind = _principal_kind(target.kind, ("user", "role", "group"))
    name = _need(target.name, "principal")
    policy_name = _need(target.policy_name, "policy name")
    if await ctx.principal(kind, name) is None:
        return ctx.skipped("principal_gone", f"{kind} {name} no longer exists")
    previous = await ctx.history.inline_policy(
        ctx.account_id,
        kind,
        name,
        policy_name,
        before=ctx.event_time,
        before_event_id=ctx.job.event_id,
    )
    document = previous.document if previous is not None else None
    problem = _history_changed(change, previous, document)
    if problem is not None:
        return ctx.skipped("history_changed", problem)
    assert previous is not None
    assert document is not None
    if own.document is None:
        return ctx.skipped(
            "document_unknown",
            "the change's own record carries no readable document: whether it is still in place "
            "cannot be told",
        )
    live = await ctx.inline_document(kind, name, policy_name)
    ctx.record(
        "before",
        f"inline policy {policy_name} on {kind} {name}: {'present' if live else 'absent'}",
        document=live,
    )
    if live is None:
        return ctx.skipped(
            "changed_since",
            f"{policy_name} is no longer on {kind} {name} (its removal is a restore's business)",
        )
    if same_document(live, document):
        return ctx.noop(f"{policy_name} on {kind} {name} has the previous document")
    if not same_document(live, own.document):
        return ctx.skipped(
            "changed_since",
            f"{policy_name} on {kind} {name} changed again since the weakening change; "
            "it is not overwritten",
        )
    call = PRINCIPALS[kind].call_name("put_inline")
    refused = await confirm_before_write(
        ctx,
        [
            removal_claim(ctx, "the change"),
            fact_claim(ctx, own, INLINE_PUT, "the change's own document"),
            fact_claim(ctx, previous, INLINE_PUT, "the put of the previous document"),
        ],
        [planned_write(call, f"{kind}/{name}", document=document, policyName=policy_name)],
        f"putting the previous {policy_name} back on {kind} {name}",
    )
    if refused is not None:
        return refused
    planned = {
        "document": document,
        "from_event_id": previous.event_id,
        "from_event_time": previous.event_time,
        "weakened_by": ctx.job.event_id,
    }
    if ctx.dry_run:
        return ctx.would(f"put the previous {policy_name} back on {kind} {name}", **planned)
    await ctx.put_inline(kind, name, policy_name, document)
    ctx.record("did", f"put the previous {policy_name} back on {kind} {name}", **planned)
    after = await ctx.inline_document(kind, name, policy_name)
    ctx.record("after", f"inline policy {policy_name} on {kind} {name}", document=after)
    if after is None or not same_document(after, document):
        raise PermanentError(_STAGE, "verify_failed", "the document read back differs")
    return ActionOutcome(state="succeeded", changed=True)


# ---------------------------------------------------------------------------------------------
# A managed policy's default version: CreatePolicyVersion (setAsDefault), SetDefaultPolicyVersion
# ---------------------------------------------------------------------------------------------


async def _revert_managed(
    ctx: ActionContext, change: PolicyChange, own: PolicyFact
) -> ActionOutcome:
    policy_arn = _need(ctx.job.detection.target.policy_arn, "policy ARN")
    iam = await ctx.iam()
    if await ctx.find(iam.get_policy, PolicyArn=policy_arn) is None:
        return ctx.skipped("policy_gone", f"{policy_arn} no longer exists")
    position = {"before": ctx.event_time, "before_event_id": ctx.job.event_id}
    state = await ctx.history.managed_policy(policy_arn, **position)
    previous_id = state.default_version_id if state is not None else None
    previous = (
        await ctx.history.policy_version(policy_arn, previous_id, **position)
        if previous_id is not None
        else None
    )
    document = previous.document if previous is not None else None
    problem = _history_changed(change, previous.fact if previous is not None else None, document)
    if problem is not None:
        return ctx.skipped("history_changed", problem)
    assert previous is not None
    assert document is not None
    # What the change made the default: the version it names (SetDefaultPolicyVersion) or
    # created (CreatePolicyVersion's responseElements), else -- unknown id -- its document.
    new_id = own.version_id
    new_document = own.document if own.kind == "policy_version" else None
    live = await _live_versions(ctx, policy_arn)
    default_now = next((v for v, (_, is_default) in live.items() if is_default), None)
    ctx.record(
        "before",
        f"{policy_arn}: versions {sorted(live)}, default {default_now}",
        versions={v: doc for v, (doc, _) in live.items()},
    )
    if default_now is not None and same_document(live[default_now][0], document):
        return ctx.noop(f"the default version of {policy_arn} has the previous document")
    if new_id is not None:
        still = default_now == new_id
    else:
        still = (
            default_now is not None
            and new_document is not None
            and same_document(live[default_now][0], new_document)
        )
    if not still:
        return ctx.skipped(
            "changed_since",
            f"the default version of {policy_arn} is {default_now} now, not "
            f"{new_id or 'the version the change created'}; it is not overwritten",
        )
    claims = [
        removal_claim(ctx, "the change"),
        fact_claim(
            ctx,
            own,
            VERSION_DOCUMENT if own.kind == "policy_version" else DEFAULT_CHOICE,
            "the change's own version",
        ),
        fact_claim(ctx, previous.fact, VERSION_DOCUMENT, "the creation of the previous default"),
    ]
    if previous.default_fact is not None:
        claims.append(
            fact_claim(
                ctx, previous.default_fact, DEFAULT_CHOICE, "the choice of it as the default"
            )
        )
    holder = (
        previous.version_id
        if previous.version_id in live and same_document(live[previous.version_id][0], document)
        else next((v for v, (doc, _) in live.items() if same_document(doc, document)), None)
    )
    if holder is not None:
        refused = await confirm_before_write(
            ctx,
            claims,
            [planned_write("SetDefaultPolicyVersion", policy_arn, versionId=holder)],
            f"making {holder} of {policy_arn} the default again",
        )
        if refused is not None:
            return refused
        if ctx.dry_run:
            return ctx.would(
                f"make {holder} (the previous document) the default version of {policy_arn} again",
                version_id=holder,
                weakened_by=ctx.job.event_id,
            )
        await ctx.call(iam.set_default_policy_version, PolicyArn=policy_arn, VersionId=holder)
        ctx.record("did", f"set {holder} as the default version of {policy_arn} again")
        after = await _live_versions(ctx, policy_arn)
        default_after = next((v for v, (_, d) in after.items() if d), None)
        ctx.record("after", f"{policy_arn}: default {default_after}")
        if default_after != holder:
            raise PermanentError(_STAGE, "verify_failed", f"the default is {default_after}")
        return ActionOutcome(state="succeeded", changed=True)
    if len(live) >= _MAX_VERSIONS:
        return ctx.skipped(
            "version_limit",
            f"{policy_arn} has {len(live)} versions (IAM's limit) and none holds the previous "
            "document; trailguard never deletes one",
        )
    refused = await confirm_before_write(
        ctx,
        claims,
        [planned_write("CreatePolicyVersion", policy_arn, document=document, setAsDefault=True)],
        f"creating a version of {policy_arn} with the previous default's document",
    )
    if refused is not None:
        return refused
    planned = {
        "document": document,
        "previous_version_id": previous.version_id,
        "from_event_id": previous.fact.event_id,
        "weakened_by": ctx.job.event_id,
    }
    if ctx.dry_run:
        return ctx.would(
            f"create a new default version of {policy_arn} with the document of "
            f"{previous.version_id} (deleted since)",
            **planned,
        )
    created = await ctx.call(
        iam.create_policy_version, PolicyArn=policy_arn, PolicyDocument=document, SetAsDefault=True
    )
    created_id = created["PolicyVersion"].get("VersionId")
    ctx.record(
        "did",
        f"created version {created_id} of {policy_arn} as the default, with the document of "
        f"{previous.version_id}",
        new_version_id=created_id,
        **planned,
    )
    after = await _live_versions(ctx, policy_arn)
    ctx.record("after", f"{policy_arn}: versions {sorted(after)}", new_version_id=created_id)
    if created_id not in after or not after[created_id][1]:
        raise PermanentError(_STAGE, "verify_failed", f"{created_id} is not the default")
    if not same_document(after[created_id][0], document):
        raise PermanentError(_STAGE, "verify_failed", f"{created_id} reads back differently")
    return ActionOutcome(state="succeeded", changed=True)


# ---------------------------------------------------------------------------------------------
# A permissions boundary: Put{User,Role}PermissionsBoundary
# ---------------------------------------------------------------------------------------------


async def _revert_boundary(
    ctx: ActionContext, change: PolicyChange, own: PolicyFact
) -> ActionOutcome:
    target = ctx.job.detection.target
    kind = _principal_kind(target.kind, ("user", "role"))
    name = _need(target.name, "principal")
    new_arn = _need(target.policy_arn, "boundary ARN")
    principal = await ctx.principal(kind, name)
    if principal is None:
        return ctx.skipped("principal_gone", f"{kind} {name} no longer exists")
    previous = await ctx.history.boundary_put(
        ctx.account_id, kind, name, before=ctx.event_time, before_event_id=ctx.job.event_id
    )
    if (
        previous is None
        or previous.policy_arn is None
        or previous.event_id != change.previous_event_id
        or previous.policy_arn != change.previous_policy_arn
    ):
        return ctx.skipped(
            "history_changed",
            "the history no longer names the previous boundary the change was compared with: "
            "judge the change again",
        )
    desired = previous.policy_arn
    live = _boundary_of(principal)
    ctx.record("before", f"permissions boundary of {kind} {name}: {live or 'none'}")
    if live == desired:
        return ctx.noop(f"{kind} {name} has the previous boundary {desired}")
    if live != new_arn:
        return ctx.skipped(
            "changed_since",
            f"{kind} {name} has boundary {live or 'none'} now, not the one the change set "
            f"({new_arn}); it is not overwritten",
        )
    iam = await ctx.iam()
    if await ctx.find(iam.get_policy, PolicyArn=desired) is None:
        if ctx.dry_run:
            return ctx.would(f"set the boundary of {kind} {name} back to {desired} once it exists")
        raise Deferred("policy_gone", f"the previous boundary policy {desired} does not exist")
    refused = await confirm_before_write(
        ctx,
        [
            removal_claim(ctx, "the change"),
            fact_claim(ctx, own, BOUNDARY_SET, "the change's own boundary"),
            fact_claim(ctx, previous, BOUNDARY_SET, "the setting of the previous boundary"),
        ],
        [
            planned_write(
                PRINCIPALS[kind].call_name("put_boundary"),
                f"{kind}/{name}",
                permissionsBoundary=desired,
            )
        ],
        f"setting the permissions boundary of {kind} {name} back to {desired}",
    )
    if refused is not None:
        return refused
    if ctx.dry_run:
        return ctx.would(
            f"set the permissions boundary of {kind} {name} back to {desired}",
            weakened_by=ctx.job.event_id,
        )
    await ctx.put_boundary(kind, name, desired)
    ctx.record("did", f"set the permissions boundary of {kind} {name} back to {desired}")
    after = await ctx.principal(kind, name)
    after_boundary = None if after is None else _boundary_of(after)
    ctx.record("after", f"permissions boundary of {kind} {name}: {after_boundary or 'none'}")
    if after_boundary != desired:
        raise PermanentError(_STAGE, "verify_failed", "the boundary reads back differently")
    return ActionOutcome(state="succeeded", changed=True)
