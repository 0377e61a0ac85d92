"""The restore actions: each puts back what one kind of removal took away, and nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trailguard.detect.detection import policy_name_from_arn
from trailguard.detect.policy_facts import PolicyFact, PrincipalKind, path_from_policy_arn
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
    ATTACHMENT,
    BOUNDARY_SET,
    DEFAULT_CHOICE,
    INLINE_PUT,
    VERSION_DOCUMENT,
    confirm_before_write,
    fact_claim,
    removal_claim,
)
from trailguard.remediate.jobs import (
    PlannedWrite,
    planned_write,
)

if TYPE_CHECKING:
    pass

# ---------------------------------------------------------------------------------------------
# restore_inline_policy: Delete{User,Role,Group}Policy
# ---------------------------------------------------------------------------------------------


async def restore_inline_policy(ctx: ActionContext) -> ActionOutcome:
    target = ctx.job.detection.target
    kind = _principal_kind(target.kind, ("user", "role", "group"))
    name = _need(target.name, "principal")
    policy_name = _need(target.policy_name, "policy name")
    if await ctx.principal(kind, name) is None:
        return ctx.skipped("principal_gone", f"{kind} {name} no longer exists")
    fact = await ctx.history.inline_policy(
        ctx.account_id, kind, name, policy_name, before=ctx.event_time
    )
    if fact is None:
        return ctx.skipped("no_history", f"no document of {policy_name} on {kind} {name} recorded")
    if fact.document is None:
        return ctx.skipped(
            "document_unknown",
            f"the last put of {policy_name} (event {fact.event_id}) has no usable document",
        )
    live = await ctx.inline_document(kind, name, policy_name)
    ctx.record(
        "before",
        f"inline policy {policy_name} on {kind} {name}: {'present' if live else 'absent'}",
        document=live,
    )
    if live is not None:
        if same_document(live, fact.document):
            return ctx.noop(f"{policy_name} on {kind} {name} has the recorded document")
        return ctx.skipped(
            "changed_since",
            f"{kind} {name} has a different {policy_name} now; it is not overwritten",
        )
    document = fact.document
    call = PRINCIPALS[kind].call_name("put_inline")
    refused = await confirm_before_write(
        ctx,
        [
            removal_claim(ctx),
            fact_claim(ctx, fact, INLINE_PUT, "the put of its document"),
        ],
        [planned_write(call, f"{kind}/{name}", document=document, policyName=policy_name)],
        f"putting {policy_name} back on {kind} {name}",
    )
    if refused is not None:
        return refused
    planned = {
        "document": document,
        "from_event_id": fact.event_id,
        "from_event_time": fact.event_time,
    }
    if ctx.dry_run:
        return ctx.would(f"put inline policy {policy_name} back on {kind} {name}", **planned)
    await ctx.put_inline(kind, name, policy_name, document)
    ctx.record("did", f"put inline policy {policy_name} on {kind} {name}", **planned)
    after = await ctx.inline_document(kind, name, policy_name)
    ctx.record("after", f"inline policy {policy_name} on {kind} {name}", document=after)
    if after is None or not same_document(after, document):
        raise PermanentError(_STAGE, "verify_failed", "the document read back differs")
    return ActionOutcome(state="succeeded", changed=True)


# ---------------------------------------------------------------------------------------------
# reattach_managed_policy: Detach{User,Role,Group}Policy
# ---------------------------------------------------------------------------------------------


async def reattach_managed_policy(ctx: ActionContext) -> ActionOutcome:
    target = ctx.job.detection.target
    kind = _principal_kind(target.kind, ("user", "role", "group"))
    name = _need(target.name, "principal")
    policy_arn = _need(target.policy_arn, "policy ARN")
    if await ctx.principal(kind, name) is None:
        return ctx.skipped("principal_gone", f"{kind} {name} no longer exists")
    iam = await ctx.iam()
    if await ctx.find(iam.get_policy, PolicyArn=policy_arn) is None:
        ctx.record("before", f"policy {policy_arn} does not exist")
        if ctx.dry_run:
            return ctx.would(f"attach {policy_arn} to {kind} {name} once the policy exists again")
        # DeletePolicy follows the detaches it needs: recreate_managed_policy may bring it back.
        raise Deferred("policy_gone", f"{policy_arn} does not exist (waiting for a recreate)")
    attached = await ctx.attached_policy_arns(kind, name)
    ctx.record("before", f"policies attached to {kind} {name}", attached=attached)
    if policy_arn in attached:
        return ctx.noop(f"{policy_arn} is attached to {kind} {name}")
    # A confirmed, successful Detach proves the attachment existed: it is all there is to check.
    refused = await confirm_before_write(
        ctx,
        [removal_claim(ctx)],
        [
            planned_write(
                PRINCIPALS[kind].call_name("attach"), f"{kind}/{name}", policyArn=policy_arn
            )
        ],
        f"attaching {policy_arn} to {kind} {name} again",
    )
    if refused is not None:
        return refused
    if ctx.dry_run:
        return ctx.would(f"attach {policy_arn} to {kind} {name} again", policy_arn=policy_arn)
    await ctx.attach(kind, name, policy_arn)
    ctx.record("did", f"attached {policy_arn} to {kind} {name}", policy_arn=policy_arn)
    after = await ctx.attached_policy_arns(kind, name)
    ctx.record("after", f"policies attached to {kind} {name}", attached=after)
    if policy_arn not in after:
        raise PermanentError(_STAGE, "verify_failed", f"{policy_arn} is not attached after all")
    return ActionOutcome(state="succeeded", changed=True)


# ---------------------------------------------------------------------------------------------
# restore_policy_version: DeletePolicyVersion
# ---------------------------------------------------------------------------------------------


async def restore_policy_version(ctx: ActionContext) -> ActionOutcome:
    target = ctx.job.detection.target
    policy_arn = _need(target.policy_arn, "policy ARN")
    version_id = _need(target.version_id, "version id")
    iam = await ctx.iam()
    policy = await ctx.find(iam.get_policy, PolicyArn=policy_arn)
    if policy is None:
        return ctx.skipped("policy_gone", f"{policy_arn} no longer exists")
    recorded = await ctx.history.policy_version(policy_arn, version_id, before=ctx.event_time)
    if recorded is None:
        return ctx.skipped("no_history", f"no document of {policy_arn} {version_id} recorded")
    if recorded.document is None:
        return ctx.skipped(
            "document_unknown", f"{policy_arn} {version_id} was recorded without its document"
        )
    # IAM refuses to delete the default version, so history normally says "not default" here;
    # "default" means history saw it as the default just before (a default change it missed).
    # A SetDefaultPolicyVersion followed by the deletion is indistinguishable from a routine
    # rotation, so the default is not moved back in that case (the audit record says which
    # version is the default).
    was_default = recorded.is_default is True
    live = await _live_versions(ctx, policy_arn)
    default_now = next((v for v, (_, is_default) in live.items() if is_default), None)
    ctx.record(
        "before",
        f"{policy_arn}: versions {sorted(live)}, default {default_now}",
        versions={v: doc for v, (doc, _) in live.items()},
    )
    holder = next(
        (v for v, (doc, _) in live.items() if same_document(doc, recorded.document)), None
    )
    document = recorded.document
    claims = [
        removal_claim(ctx),
        fact_claim(ctx, recorded.fact, VERSION_DOCUMENT, "the creation of its document"),
    ]
    if was_default and recorded.default_fact is not None:
        claims.append(
            fact_claim(
                ctx, recorded.default_fact, DEFAULT_CHOICE, "the choice of it as the default"
            )
        )
    if holder is not None:
        if not was_default or live[holder][1]:
            return ctx.noop(f"version {holder} of {policy_arn} has the recorded document")
        refused = await confirm_before_write(
            ctx,
            claims,
            [planned_write("SetDefaultPolicyVersion", policy_arn, versionId=holder)],
            f"making {holder} of {policy_arn} the default again",
        )
        if refused is not None:
            return refused
        if ctx.dry_run:
            return ctx.would(f"make {holder} (the restored document) the default again")
        await ctx.call(iam.set_default_policy_version, PolicyArn=policy_arn, VersionId=holder)
        ctx.record("did", f"set {holder} as the default version of {policy_arn} again")
        return ActionOutcome(state="succeeded", changed=True)
    if len(live) >= _MAX_VERSIONS:
        return ctx.skipped(
            "version_limit",
            f"{policy_arn} already has {len(live)} versions (IAM's limit) and trailguard never "
            "deletes one",
        )
    refused = await confirm_before_write(
        ctx,
        claims,
        [
            planned_write(
                "CreatePolicyVersion", policy_arn, document=document, setAsDefault=was_default
            )
        ],
        f"recreating version {version_id} of {policy_arn}",
    )
    if refused is not None:
        return refused
    planned = {
        "document": document,
        "deleted_version_id": version_id,
        "set_as_default": was_default,
        "from_event_id": recorded.fact.event_id,
    }
    if ctx.dry_run:
        return ctx.would(
            f"create a new version of {policy_arn} with {version_id}'s document", **planned
        )
    created = await ctx.call(
        iam.create_policy_version,
        PolicyArn=policy_arn,
        PolicyDocument=document,
        SetAsDefault=was_default,
    )
    new_id = created["PolicyVersion"].get("VersionId")
    ctx.record(
        "did",
        f"created version {new_id} of {policy_arn} with the document of deleted version "
        f"{version_id} (IAM assigns a new version id)",
        new_version_id=new_id,
        **planned,
    )
    after = await _live_versions(ctx, policy_arn)
    ctx.record("after", f"{policy_arn}: versions {sorted(after)}", new_version_id=new_id)
    if new_id not in after or not same_document(after[new_id][0], document):
        raise PermanentError(_STAGE, "verify_failed", f"version {new_id} reads back differently")
    if not was_default and default_now is not None:
        ctx.record("note", f"the default version stays {default_now}")
    return ActionOutcome(state="succeeded", changed=True)


async def _live_versions(ctx: ActionContext, policy_arn: str) -> dict[str, tuple[object, bool]]:
    """version id -> (document, is default); ListPolicyVersions has no documents in AWS."""
    iam = await ctx.iam()
    listed = await ctx.call(iam.list_policy_versions, PolicyArn=policy_arn)
    versions: dict[str, tuple[object, bool]] = {}
    for version in listed["Versions"]:
        version_id = version.get("VersionId")
        if not version_id:
            continue
        got = await ctx.find(iam.get_policy_version, PolicyArn=policy_arn, VersionId=version_id)
        if got is None:
            continue
        versions[version_id] = (
            got["PolicyVersion"].get("Document"),
            bool(version.get("IsDefaultVersion")),
        )
    return versions


# ---------------------------------------------------------------------------------------------
# recreate_managed_policy: DeletePolicy
# ---------------------------------------------------------------------------------------------


async def recreate_managed_policy(ctx: ActionContext) -> ActionOutcome:
    target = ctx.job.detection.target
    policy_arn = _need(target.policy_arn, "policy ARN")
    state = await ctx.history.managed_policy(policy_arn, before=ctx.event_time)
    if state is None:
        return ctx.skipped("no_history", f"no record of {policy_arn} before its deletion")
    default = (
        await ctx.history.policy_version(
            policy_arn, state.default_version_id, before=ctx.event_time
        )
        if state.default_version_id
        else None
    )
    if state.default_document is None or default is None:
        return ctx.skipped(
            "document_unknown", f"the default document of {policy_arn} was not recorded"
        )
    name = state.policy_name or policy_name_from_arn(policy_arn)
    path = state.path or path_from_policy_arn(policy_arn) or "/"
    if not name:
        return ctx.skipped("no_history", f"the name of {policy_arn} is not known")
    if not policy_arn.endswith(f":policy{path}{name}"):
        return ctx.skipped(
            "inconsistent_history", f"history's path and name {path}{name} do not make {policy_arn}"
        )
    entities = await _entities_to_reattach(ctx, policy_arn)
    iam = await ctx.iam()
    live = await ctx.find(iam.get_policy, PolicyArn=policy_arn)
    attached_now: set[tuple[PrincipalKind, str]] = set()
    if live is not None:
        live_policy = live["Policy"]
        default_id = live_policy.get("DefaultVersionId")
        version = (
            await ctx.find(iam.get_policy_version, PolicyArn=policy_arn, VersionId=default_id)
            if default_id
            else None
        )
        document = None if version is None else version["PolicyVersion"].get("Document")
        ctx.record(
            "before",
            f"{policy_arn} exists (policy id {live_policy.get('PolicyId')})",
            document=document,
        )
        if not same_document(document, state.default_document):
            return ctx.skipped(
                "changed_since",
                f"{policy_arn} exists again with a different document; it is not overwritten",
            )
        attached_now = await _entities_of(ctx, policy_arn)
    else:
        ctx.record("before", f"{policy_arn} does not exist")
    missing: list[tuple[PrincipalKind, str, PolicyFact]] = []
    for kind, principal_name, source in entities:
        if (kind, principal_name) in attached_now:
            continue
        if await ctx.principal(kind, principal_name) is None:
            ctx.record("note", f"not reattached to {kind} {principal_name}: it no longer exists")
            continue
        missing.append((kind, principal_name, source))
    if live is not None and not missing:
        return ctx.noop(f"{policy_arn} exists with the recorded document and attachments")
    # The document written is the one the claimed fact carries (history's state folds to it).
    document = default.fact.document
    if document is None or document != state.default_document:
        return ctx.skipped(
            "inconsistent_history", f"the default document of {policy_arn} is not consistent"
        )
    claims = [removal_claim(ctx)]
    writes: list[PlannedWrite] = []
    if live is None:
        claims.append(
            fact_claim(ctx, default.fact, VERSION_DOCUMENT, "the creation of its default document")
        )
        if default.default_fact is not None:
            claims.append(
                fact_claim(ctx, default.default_fact, DEFAULT_CHOICE, "the choice of that default")
            )
        writes.append(
            planned_write("CreatePolicy", policy_arn, document=document, policyName=name, path=path)
        )
    claims.extend(
        fact_claim(
            ctx,
            source,
            ATTACHMENT,
            f"the attachment to {kind} {principal_name}"
            if source.op == "put"
            else f"the detach from {kind} {principal_name} before the deletion",
        )
        for kind, principal_name, source in missing
    )
    writes.extend(
        planned_write(
            PRINCIPALS[kind].call_name("attach"), f"{kind}/{principal_name}", policyArn=policy_arn
        )
        for kind, principal_name, _ in missing
    )
    reattach = [f"{k}/{n}" for k, n, _ in missing]
    refused = await confirm_before_write(
        ctx,
        claims,
        writes,
        f"recreating {policy_arn}" if live is None else f"reattaching {policy_arn}",
    )
    if refused is not None:
        return refused
    if live is None:
        planned = {
            "policy_name": name,
            "path": path,
            "document": document,
            "reattach": reattach,
            "from_event_id": default.fact.event_id,
        }
        if ctx.dry_run:
            return ctx.would(
                f"recreate {policy_arn} (same name, path and document; IAM gives it a new "
                "policy id) and reattach it",
                **planned,
            )
        created = await ctx.call(
            iam.create_policy,
            PolicyName=name,
            Path=path,
            PolicyDocument=document,
        )
        new = created["Policy"]
        if new.get("Arn") != policy_arn:
            raise PermanentError(
                _STAGE, "verify_failed", f"recreated as {new.get('Arn')}, not {policy_arn}"
            )
        ctx.record(
            "did",
            f"recreated {policy_arn}: the ARN is the same, the policy id is new "
            f"({new.get('PolicyId')}); anything that referred to the old policy id will not "
            "match it",
            new_policy_id=new.get("PolicyId"),
            **planned,
        )
    elif ctx.dry_run:
        return ctx.would(f"reattach {policy_arn}", reattach=reattach)
    if not missing:
        return ActionOutcome(state="succeeded", changed=True)
    for kind, principal_name, _ in missing:
        await ctx.attach(kind, principal_name, policy_arn)
        ctx.record("did", f"attached {policy_arn} to {kind} {principal_name}")
    after = await _entities_of(ctx, policy_arn)
    ctx.record(
        "after", f"{policy_arn} attached to", entities=[f"{k}/{n}" for k, n in sorted(after)]
    )
    if any((kind, n) not in after for kind, n, _ in missing):
        raise PermanentError(_STAGE, "verify_failed", "an attachment is missing after reattaching")
    return ActionOutcome(state="succeeded", changed=True)


async def _entities_to_reattach(
    ctx: ActionContext, policy_arn: str
) -> list[tuple[PrincipalKind, str, PolicyFact]]:
    """The entities the policy was attached to before its deletion, each with the fact that
    says so (its last attach, or the detach that preceded the deletion).

    IAM refuses DeletePolicy while the policy is attached, so the deletion is preceded by
    detaches: the entities are those still attached then, plus those detached in the run of
    detaches since the last attach.
    """
    facts = await ctx.history.attachment_facts(policy_arn, before=ctx.event_time)
    last: dict[tuple[PrincipalKind, str], PolicyFact] = {}
    for fact in facts:
        if fact.principal_kind is not None and fact.principal_name is not None:
            last[(fact.principal_kind, fact.principal_name)] = fact
    entities = [(k, n, fact) for (k, n), fact in sorted(last.items()) if fact.op == "put"]
    trailing: list[tuple[PrincipalKind, str, PolicyFact]] = []
    for fact in reversed(facts):
        if fact.op != "delete":
            break
        if fact.principal_kind is not None and fact.principal_name is not None:
            trailing.append((fact.principal_kind, fact.principal_name, fact))
    known = {(k, n) for k, n, _ in entities}
    for kind, principal_name, fact in reversed(trailing):
        if (kind, principal_name) not in known:
            known.add((kind, principal_name))
            entities.append((kind, principal_name, fact))
    return entities


async def _entities_of(ctx: ActionContext, policy_arn: str) -> set[tuple[PrincipalKind, str]]:
    iam = await ctx.iam()
    found: set[tuple[PrincipalKind, str]] = set()
    marker: str | None = None
    while True:
        extra: dict[str, Any] = {"Marker": marker} if marker else {}
        page = await ctx.call(iam.list_entities_for_policy, PolicyArn=policy_arn, **extra)
        found.update(
            ("user", u["UserName"]) for u in page.get("PolicyUsers", []) if "UserName" in u
        )
        found.update(
            ("role", r["RoleName"]) for r in page.get("PolicyRoles", []) if "RoleName" in r
        )
        found.update(
            ("group", g["GroupName"]) for g in page.get("PolicyGroups", []) if "GroupName" in g
        )
        marker = page.get("Marker")
        if not page.get("IsTruncated") or not marker:
            return found


# ---------------------------------------------------------------------------------------------
# restore_permissions_boundary: Delete{User,Role}PermissionsBoundary
# ---------------------------------------------------------------------------------------------


async def restore_permissions_boundary(ctx: ActionContext) -> ActionOutcome:
    target = ctx.job.detection.target
    kind = _principal_kind(target.kind, ("user", "role"))
    name = _need(target.name, "principal")
    principal = await ctx.principal(kind, name)
    if principal is None:
        return ctx.skipped("principal_gone", f"{kind} {name} no longer exists")
    live = _boundary_of(principal)
    ctx.record("before", f"permissions boundary of {kind} {name}: {live or 'none'}")
    source = await ctx.history.boundary_fact(ctx.account_id, kind, name, before=ctx.event_time)
    desired = None if source is None else source.policy_arn
    if source is None or desired is None:
        return ctx.skipped("no_history", f"no boundary of {kind} {name} recorded")
    if live == desired:
        return ctx.noop(f"{kind} {name} has boundary {desired}")
    if live is not None:
        return ctx.skipped(
            "changed_since", f"{kind} {name} has another boundary now ({live}); not overwritten"
        )
    iam = await ctx.iam()
    if await ctx.find(iam.get_policy, PolicyArn=desired) is None:
        if ctx.dry_run:
            return ctx.would(
                f"set the permissions boundary of {kind} {name} to {desired} once that policy "
                "exists again"
            )
        raise Deferred("policy_gone", f"boundary policy {desired} does not exist")
    refused = await confirm_before_write(
        ctx,
        [
            removal_claim(ctx),
            fact_claim(ctx, source, BOUNDARY_SET, "the setting of the boundary"),
        ],
        [
            planned_write(
                PRINCIPALS[kind].call_name("put_boundary"),
                f"{kind}/{name}",
                permissionsBoundary=desired,
            )
        ],
        f"setting the permissions boundary of {kind} {name} to {desired}",
    )
    if refused is not None:
        return refused
    if ctx.dry_run:
        return ctx.would(f"set the permissions boundary of {kind} {name} to {desired}")
    await ctx.put_boundary(kind, name, desired)
    ctx.record("did", f"set the permissions boundary of {kind} {name} to {desired}")
    after = await ctx.principal(kind, name)
    after_boundary = None if after is None else _boundary_of(after)
    ctx.record("after", f"permissions boundary of {kind} {name}: {after_boundary or 'none'}")
    if after_boundary != desired:
        raise PermanentError(_STAGE, "verify_failed", "the boundary reads back differently")
    return ActionOutcome(state="succeeded", changed=True)


def _boundary_of(principal: dict[str, Any]) -> str | None:
    boundary = principal.get("PermissionsBoundary") or {}
    arn = boundary.get("PermissionsBoundaryArn") if isinstance(boundary, dict) else None
    return arn if isinstance(arn, str) and arn else None
