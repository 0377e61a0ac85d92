"""The restore actions confirm through CloudTrail LookupEvents what they are about to write.

History trusts the trail, and a trail file (or a queue message) can be forged: a PutRolePolicy
carrying an Allow-* document followed by a DeleteRolePolicy would otherwise make trailguard
"restore" the attacker's document onto an innocent role.  So before its first write each restore
action asks CloudTrail (the fake below answers LookupEvents from CloudTrail's own records) about
the removal and about every fact whose content it writes; only facts from `trailguard snapshot`
(read from IAM) need no lookup.  Unconfirmed means awaiting_approval and IAM untouched.

The history here is the real SQLite store, fed with the facts of raw CloudTrail records exactly
as the daemon feeds it; the IAM client is a fake holding one account's roles and managed policies.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.factories import ACCOUNT, make_record
from tests.remediation_support import (
    DOC_DENY_EC2,
    DOC_DENY_S3,
    T0,
    FakeClock,
    FakeCloudTrail,
    StaticClients,
    approved_plan_of,
    client_error,
    config_toml,
    detection_of,
    fact,
    one_job,
    remediation_config,
)
from trailguard.detect.digest import digest_of
from trailguard.detect.policy_facts import facts_from_record
from trailguard.detect.record import Record
from trailguard.remediate.actions import (
    ActionContext,
    ActionOutcome,
    Deferred,
    reattach_managed_policy,
    recreate_managed_policy,
    restore_inline_policy,
    restore_permissions_boundary,
    restore_policy_version,
)
from trailguard.remediate.jobs import Job, audit
from trailguard.state.ledger import SqliteEventLedger
from trailguard.state.policy_history_sqlite import SqliteHistoryStore

ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
GUARD_ARN = f"arn:aws:iam::{ACCOUNT}:policy/team/Guardrail"
BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/DevBoundary"
WIDE_BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/WideOpen"


def at(minute: int) -> str:
    """An eventTime on 2026-11-01 (17 days before the test clock): long visible in LookupEvents."""
    return f"2026-11-01T11:{minute:02d}:00Z"


def ago(seconds: float) -> str:
    return dt.datetime.fromtimestamp(T0 - seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# A fake IAM: roles (inline policies, attachments, boundary) and managed policies with versions
# ---------------------------------------------------------------------------------------------


@dataclass
class FakePolicy:
    name: str
    path: str
    versions: dict[str, str]
    default: str
    next_version: int = 2


@dataclass
class FakeRole:
    inline: dict[str, str] = field(default_factory=dict)
    attached: list[str] = field(default_factory=list)
    boundary: str | None = None


class FakeIam:
    def __init__(self) -> None:
        self.roles: dict[str, FakeRole] = {}
        self.policies: dict[str, FakePolicy] = {}
        self.writes: list[str] = []

    def _role(self, name: str, operation: str) -> FakeRole:
        if name not in self.roles:
            raise client_error("NoSuchEntity", 404, operation)
        return self.roles[name]

    def _policy(self, arn: str, operation: str) -> FakePolicy:
        if arn not in self.policies:
            raise client_error("NoSuchEntity", 404, operation)
        return self.policies[arn]

    async def get_role(self, *, RoleName: str) -> dict[str, Any]:
        role = self._role(RoleName, "GetRole")
        out: dict[str, Any] = {
            "RoleName": RoleName,
            "Arn": f"arn:aws:iam::{ACCOUNT}:role/{RoleName}",
        }
        if role.boundary is not None:
            out["PermissionsBoundary"] = {"PermissionsBoundaryArn": role.boundary}
        return {"Role": out}

    async def get_role_policy(self, *, RoleName: str, PolicyName: str) -> dict[str, Any]:
        role = self._role(RoleName, "GetRolePolicy")
        if PolicyName not in role.inline:
            raise client_error("NoSuchEntity", 404, "GetRolePolicy")
        return {"PolicyDocument": role.inline[PolicyName]}

    async def put_role_policy(
        self, *, RoleName: str, PolicyName: str, PolicyDocument: str
    ) -> dict[str, Any]:
        self.writes.append(f"PutRolePolicy {RoleName} {PolicyName}")
        self._role(RoleName, "PutRolePolicy").inline[PolicyName] = PolicyDocument
        return {}

    async def list_attached_role_policies(self, *, RoleName: str) -> dict[str, Any]:
        role = self._role(RoleName, "ListAttachedRolePolicies")
        return {"AttachedPolicies": [{"PolicyArn": a} for a in role.attached], "IsTruncated": False}

    async def attach_role_policy(self, *, RoleName: str, PolicyArn: str) -> dict[str, Any]:
        self.writes.append(f"AttachRolePolicy {RoleName} {PolicyArn}")
        self._role(RoleName, "AttachRolePolicy").attached.append(PolicyArn)
        return {}

    async def put_role_permissions_boundary(
        self, *, RoleName: str, PermissionsBoundary: str
    ) -> dict[str, Any]:
        self.writes.append(f"PutRolePermissionsBoundary {RoleName} {PermissionsBoundary}")
        self._role(RoleName, "PutRolePermissionsBoundary").boundary = PermissionsBoundary
        return {}

    async def get_policy(self, *, PolicyArn: str) -> dict[str, Any]:
        policy = self._policy(PolicyArn, "GetPolicy")
        return {
            "Policy": {"Arn": PolicyArn, "PolicyId": "ANPA0001", "DefaultVersionId": policy.default}
        }

    async def list_policy_versions(self, *, PolicyArn: str) -> dict[str, Any]:
        policy = self._policy(PolicyArn, "ListPolicyVersions")
        return {
            "Versions": [
                {"VersionId": v, "IsDefaultVersion": v == policy.default} for v in policy.versions
            ]
        }

    async def get_policy_version(self, *, PolicyArn: str, VersionId: str) -> dict[str, Any]:
        policy = self._policy(PolicyArn, "GetPolicyVersion")
        if VersionId not in policy.versions:
            raise client_error("NoSuchEntity", 404, "GetPolicyVersion")
        return {"PolicyVersion": {"Document": policy.versions[VersionId]}}

    async def create_policy_version(
        self, *, PolicyArn: str, PolicyDocument: str, SetAsDefault: bool
    ) -> dict[str, Any]:
        self.writes.append(f"CreatePolicyVersion {PolicyArn}")
        policy = self._policy(PolicyArn, "CreatePolicyVersion")
        version = f"v{policy.next_version}"
        policy.next_version += 1
        policy.versions[version] = PolicyDocument
        if SetAsDefault:
            policy.default = version
        return {"PolicyVersion": {"VersionId": version}}

    async def set_default_policy_version(self, *, PolicyArn: str, VersionId: str) -> dict[str, Any]:
        self.writes.append(f"SetDefaultPolicyVersion {PolicyArn} {VersionId}")
        self._policy(PolicyArn, "SetDefaultPolicyVersion").default = VersionId
        return {}

    async def create_policy(
        self, *, PolicyName: str, Path: str, PolicyDocument: str
    ) -> dict[str, Any]:
        arn = f"arn:aws:iam::{ACCOUNT}:policy{Path}{PolicyName}"
        self.writes.append(f"CreatePolicy {arn}")
        self.policies[arn] = FakePolicy(PolicyName, Path, {"v1": PolicyDocument}, "v1")
        return {"Policy": {"Arn": arn, "PolicyId": "ANPA0002"}}

    async def list_entities_for_policy(self, *, PolicyArn: str) -> dict[str, Any]:
        self._policy(PolicyArn, "ListEntitiesForPolicy")
        roles = [{"RoleName": n} for n, r in self.roles.items() if PolicyArn in r.attached]
        return {"PolicyRoles": roles, "PolicyUsers": [], "PolicyGroups": [], "IsTruncated": False}


# ---------------------------------------------------------------------------------------------
# The world: IAM, CloudTrail's own records, the history the (possibly forged) trail fed
# ---------------------------------------------------------------------------------------------


@dataclass
class World:
    iam: FakeIam
    cloudtrail: FakeCloudTrail
    history: SqliteHistoryStore
    clock: FakeClock = field(default_factory=FakeClock)
    ledger: SqliteEventLedger | None = None
    clients: StaticClients = field(init=False)

    def __post_init__(self) -> None:
        self.clients = StaticClients(self.iam, cloudtrail=self.cloudtrail)

    async def trail(self, *raws: dict[str, Any], real: bool = True) -> None:
        """Records reach trailguard (their facts go into history); ``real``: CloudTrail holds
        them too -- they happened.  A forged record is fed with ``real=False``."""
        for raw in raws:
            decoded = msgspec.json.decode(json.dumps(raw).encode(), type=Record)
            await self.history.record(facts_from_record(decoded))
            if real:
                self.cloudtrail.add(raw)

    def context(
        self,
        removal: dict[str, Any],
        action: str,
        *,
        mode: str = "enforce",
        extra: str = "",
        job: Job | None = None,
    ) -> ActionContext:
        config = remediation_config(config_toml(mode=mode, actions=f'"{action}"', extra=extra))
        return ActionContext(
            job or one_job(detection_of(removal), config, action),
            clients=self.clients,
            history=self.history,
            config=config,
            dry_run=mode == "dry-run",
            ledger=self.ledger,
            clock=self.clock,
        )

    async def observe(self, *raws: dict[str, Any]) -> None:
        """The records' digests go into the event ledger, as ingestion does."""
        assert self.ledger is not None
        digests = [
            digest_of(msgspec.json.decode(json.dumps(r).encode(), type=Record)) for r in raws
        ]
        await self.ledger.observe([d for d in digests if d is not None], path="s3")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with await SqliteHistoryStore.open(tmp_path / "history.sqlite3") as history:
        yield World(FakeIam(), FakeCloudTrail(), history)


def put_inline(document: str = DOC_DENY_S3, **changes: Any) -> dict[str, Any]:
    params = {"roleName": "app", "policyName": "guard", "policyDocument": document}
    return make_record("PutRolePolicy", params, event_id="put-1", event_time=at(0)) | changes


def delete_inline(**changes: Any) -> dict[str, Any]:
    params = {"roleName": "app", "policyName": "guard"}
    return make_record("DeleteRolePolicy", params, event_id="del-1", event_time=at(30)) | changes


def confirmations(ctx: ActionContext) -> list[str]:
    return [
        f"{e.data['event_id']}:{e.data['confirmation']}"
        for e in ctx.audit
        if e.data is not None and "confirmation" in e.data
    ]


def assert_waits(outcome: ActionOutcome, *fragments: str) -> None:
    assert outcome.state == "awaiting_approval", outcome
    assert outcome.reason is not None
    assert outcome.reason.startswith("unconfirmed: ")
    for fragment in fragments:
        assert fragment in outcome.reason


# ---------------------------------------------------------------------------------------------
# restore_inline_policy: the forged-document attack
# ---------------------------------------------------------------------------------------------


async def test_confirmed_events_are_restored(world: World) -> None:
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(), delete_inline())
    ctx = world.context(delete_inline(), "restore_inline_policy")
    outcome = await restore_inline_policy(ctx)
    assert (outcome.state, outcome.changed) == ("succeeded", True)
    assert world.iam.roles["app"].inline == {"guard": DOC_DENY_S3}
    # Both the removal and the put the document came from, in the event's account, us-east-1.
    assert world.cloudtrail.looked_up == ["del-1", "put-1"]
    assert world.clients.cloudtrail_for == [(ACCOUNT, "us-east-1")] * 2
    assert confirmations(ctx) == ["del-1:confirmed", "put-1:confirmed"]


async def test_a_document_that_differs_only_in_layout_is_confirmed(world: World) -> None:
    # "Equal after JSON normalisation": key order and whitespace do not matter.
    world.iam.roles["app"] = FakeRole()
    relaid = json.dumps(json.loads(DOC_DENY_S3), indent=4, sort_keys=True)
    await world.trail(put_inline(relaid), real=False)
    await world.trail(delete_inline())
    world.cloudtrail.add(put_inline(DOC_DENY_S3))
    outcome = await restore_inline_policy(world.context(delete_inline(), "restore_inline_policy"))
    assert outcome.state == "succeeded"


@pytest.mark.parametrize(
    ("cloudtrail_saw", "differs_in"),
    [
        (put_inline(DOC_DENY_S3), "policyDocument"),
        (None, "LookupEvents does not show the event"),
        (
            put_inline(
                requestParameters={
                    "roleName": "other",
                    "policyName": "guard",
                    "policyDocument": ALLOW_ALL,
                }
            ),
            "principal name (other)",
        ),
        (put_inline(ALLOW_ALL, errorCode="AccessDenied"), "errorCode (AccessDenied)"),
        (put_inline(ALLOW_ALL, eventTime="2026-10-01T11:00:00Z"), "eventTime"),
        (put_inline(ALLOW_ALL, eventSource="sts.amazonaws.com"), "eventSource"),
        (
            put_inline(
                ALLOW_ALL,
                eventName="PutUserPolicy",
                requestParameters={
                    "userName": "app",
                    "policyName": "guard",
                    "policyDocument": ALLOW_ALL,
                },
            ),
            "eventName (PutUserPolicy)",
        ),
    ],
    ids=[
        "other-document",
        "no-such-event",
        "other-role",
        "failed",
        "re-dated",
        "not-iam",
        "other-api",
    ],
)
async def test_a_forged_put_is_not_restored(
    world: World, cloudtrail_saw: dict[str, Any] | None, differs_in: str
) -> None:
    # The attacker's file: PutRolePolicy of an Allow-* document onto an innocent role, then its
    # (real or forged) deletion.  CloudTrail's own record of "put-1" says something else.
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(ALLOW_ALL), real=False)
    await world.trail(delete_inline())
    if cloudtrail_saw is not None:
        world.cloudtrail.add(cloudtrail_saw)
    ctx = world.context(delete_inline(), "restore_inline_policy")
    outcome = await restore_inline_policy(ctx)
    assert_waits(outcome, differs_in, "the put of its document (event put-1)")
    assert world.iam.writes == []
    assert world.iam.roles["app"].inline == {}
    assert ctx.audit[-1].data is not None
    assert ctx.audit[-1].data["unconfirmed"] == ["put-1"]


async def test_a_forged_removal_is_not_acted_on(world: World) -> None:
    # The put is real, the deletion is not: CloudTrail has no such event.
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline())
    await world.trail(delete_inline(), real=False)
    outcome = await restore_inline_policy(world.context(delete_inline(), "restore_inline_policy"))
    assert_waits(outcome, "LookupEvents does not show the event", "the removal DeleteRolePolicy")
    assert world.iam.writes == []


async def test_a_mismatching_removal_is_not_acted_on(world: World) -> None:
    # CloudTrail's DeleteRolePolicy "del-1" deleted another role's policy.
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline())
    await world.trail(delete_inline(), real=False)
    world.cloudtrail.add(
        delete_inline(requestParameters={"roleName": "other", "policyName": "guard"})
    )
    outcome = await restore_inline_policy(world.context(delete_inline(), "restore_inline_policy"))
    assert_waits(outcome, "requestParameters")
    assert world.iam.writes == []


async def test_an_ambiguous_document_is_not_confirmed(world: World) -> None:
    # Duplicate keys: Python's json keeps the last "Effect" (Deny, as CloudTrail's document
    # says), another parser may keep the first (Allow).  Only the exact text confirms it.
    world.iam.roles["app"] = FakeRole()
    ambiguous = (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Effect": "Deny",'
        ' "Action": "*", "Resource": "*"}]}'
    )
    real = ALLOW_ALL.replace('"Allow"', '"Deny"')
    assert json.loads(ambiguous) == json.loads(real)
    await world.trail(put_inline(ambiguous), real=False)
    await world.trail(delete_inline())
    world.cloudtrail.add(put_inline(real))
    outcome = await restore_inline_policy(world.context(delete_inline(), "restore_inline_policy"))
    assert_waits(outcome, "policyDocument")
    assert world.iam.writes == []


async def test_snapshot_facts_need_no_lookup(world: World) -> None:
    # trailguard snapshot read the document from IAM itself: only the removal is looked up.
    world.iam.roles["app"] = FakeRole()
    snapshot = fact(
        "inline_policy",
        event_id=f"snapshot:2026-11-01T10:00:00.000000Z:{ACCOUNT}:00000001",
        event_time="2026-11-01T10:00:00.000000Z",
        principal_kind="role",
        principal_name="app",
        policy_name="guard",
        document=DOC_DENY_S3,
    )
    await world.history.record([snapshot])
    await world.trail(delete_inline())
    ctx = world.context(delete_inline(), "restore_inline_policy")
    outcome = await restore_inline_policy(ctx)
    assert outcome.state == "succeeded"
    assert world.cloudtrail.looked_up == ["del-1"]
    assert any("read from IAM by trailguard snapshot" in e.what for e in ctx.audit)


async def test_a_log_file_cannot_pass_for_a_snapshot(world: World) -> None:
    forged = put_inline(ALLOW_ALL, eventID=f"snapshot:2026-11-01T10:00:00Z:{ACCOUNT}:00000001")
    decoded = msgspec.json.decode(json.dumps(forged).encode(), type=Record)
    assert facts_from_record(decoded) == []


@pytest.mark.parametrize(
    "error",
    [
        client_error("AccessDeniedException", 400, "LookupEvents"),
        client_error("ThrottlingException", 400, "LookupEvents"),
        RuntimeError("no CloudTrail endpoint"),
    ],
    ids=["denied", "throttled", "broken"],
)
async def test_lookup_failure_waits_for_approval(world: World, error: Exception) -> None:
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(), delete_inline())
    world.cloudtrail.error = error
    outcome = await restore_inline_policy(world.context(delete_inline(), "restore_inline_policy"))
    assert_waits(outcome, "LookupEvents failed")
    assert world.iam.writes == []


async def test_an_event_not_visible_yet_is_looked_up_again(world: World) -> None:
    # LookupEvents shows an event some minutes after it happened: a removal a minute old that it
    # does not show yet is looked for again (the runner's retry), no sooner than a minute on.
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline())
    removal = delete_inline(eventTime=ago(60))
    await world.trail(removal, real=False)
    ctx = world.context(removal, "restore_inline_policy")
    with pytest.raises(Deferred) as caught:
        await restore_inline_policy(ctx)
    assert (caught.value.reason, caught.value.final) == ("unconfirmed", "awaiting_approval")
    # 840 s of the 900 s wait are left for max_attempts = 3: one look every 280 s.
    assert caught.value.retry_after == pytest.approx(280.0)
    assert "(yet)" in caught.value.detail
    assert world.iam.writes == []
    # Once it shows, the next attempt acts.
    world.cloudtrail.add(removal)
    world.clock.now += 280
    assert (await restore_inline_policy(world.context(removal, "restore_inline_policy"))).changed


async def test_dry_run_records_what_it_would_confirm(world: World) -> None:
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(), delete_inline())
    ctx = world.context(delete_inline(), "restore_inline_policy", mode="dry-run")
    assert (await restore_inline_policy(ctx)).state == "dry_run"
    assert confirmations(ctx) == ["del-1:confirmed", "put-1:confirmed"]
    assert ctx.audit[-1].what.startswith("dry-run: would put inline policy guard back")
    # Forged: dry-run says it would wait for approval (and does not defer).
    world.cloudtrail.events.pop("put-1")
    ctx = world.context(delete_inline(), "restore_inline_policy", mode="dry-run")
    assert (await restore_inline_policy(ctx)).state == "dry_run"
    assert ctx.audit[-1].what.startswith("dry-run: would wait for approval before putting guard")
    assert world.iam.writes == []


async def test_an_operator_approval_of_the_plan_acts(world: World) -> None:
    # The put is older than anything LookupEvents shows (say); the operator checks the plan --
    # the exact document and target -- and approves it.
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(), real=False)
    await world.trail(delete_inline())
    first = world.context(delete_inline(), "restore_inline_policy")
    assert (await restore_inline_policy(first)).state == "awaiting_approval"
    assert first.plan is not None
    [write] = first.plan.writes
    assert (write.call, write.target, write.document) == ("PutRolePolicy", "role/app", DOC_DENY_S3)
    assert first.plan.events == ("del-1", "put-1")
    approved = approved_plan_of(first.job, first.plan)
    ctx = world.context(delete_inline(), "restore_inline_policy", job=approved)
    outcome = await restore_inline_policy(ctx)
    assert outcome.state == "succeeded"
    assert world.iam.roles["app"].inline == {"guard": DOC_DENY_S3}
    # The approval covers exactly that plan: nothing is looked up again.
    assert world.cloudtrail.looked_up == ["del-1", "put-1"]
    assert any(f"approved plan {first.plan.sha256}" in e.what for e in ctx.audit)


async def test_an_approval_covers_only_the_plan_it_was_given_for(world: World) -> None:
    # Approve plan A (the real document), then the history changes (a forged put, later than
    # the real one, lands before the removal): the plan becomes B, which nobody approved.
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(), real=False)
    await world.trail(delete_inline())
    first = world.context(delete_inline(), "restore_inline_policy")
    assert (await restore_inline_policy(first)).state == "awaiting_approval"
    approved = approved_plan_of(first.job, first.plan)
    await world.trail(put_inline(ALLOW_ALL, eventID="put-x", eventTime=at(10)), real=False)
    ctx = world.context(delete_inline(), "restore_inline_policy", job=approved)
    outcome = await restore_inline_policy(ctx)
    assert_waits(outcome, "put-x")
    assert world.iam.writes == []
    assert ctx.plan is not None
    assert first.plan is not None
    assert ctx.plan.sha256 != first.plan.sha256
    assert ctx.plan.writes[0].document == ALLOW_ALL
    assert any("the plan changed since the approval" in e.what for e in ctx.audit)


async def test_an_approval_before_any_lookup_does_not_vouch_for_the_trail(world: World) -> None:
    # Mode "approve": approved before trailguard asked CloudTrail -- still confirmed first.
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(ALLOW_ALL), real=False)
    await world.trail(delete_inline())
    config = remediation_config(config_toml(mode="approve", actions='"restore_inline_policy"'))
    job = one_job(detection_of(delete_inline()), config, "restore_inline_policy")
    job = msgspec.structs.replace(
        job, approved=True, audit=(*job.audit, audit("note", "approved by alice"))
    )
    ctx = world.context(delete_inline(), "restore_inline_policy", job=job)
    assert_waits(await restore_inline_policy(ctx), "put-1")
    assert world.iam.writes == []


async def test_confirm_events_off_trusts_the_trail(world: World) -> None:
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(), delete_inline(), real=False)
    ctx = world.context(delete_inline(), "restore_inline_policy", extra="confirm_events = false\n")
    assert (await restore_inline_policy(ctx)).state == "succeeded"
    assert world.cloudtrail.calls == []
    assert any(e.what.startswith("confirm_events = false") for e in ctx.audit)


# ---------------------------------------------------------------------------------------------
# The other restore actions
# ---------------------------------------------------------------------------------------------


def managed(name: str = "Guardrail", path: str = "/team/") -> FakePolicy:
    return FakePolicy(name, path, {"v1": DOC_DENY_S3}, "v1")


def create_policy(minute: int = 0, document: str = DOC_DENY_S3) -> dict[str, Any]:
    return make_record(
        "CreatePolicy",
        {"policyName": "Guardrail", "path": "/team/", "policyDocument": document},
        event_id="create-1",
        event_time=at(minute),
        responseElements={"policy": {"arn": GUARD_ARN, "defaultVersionId": "v1"}},
    )


def role_event(name: str, event_id: str, minute: int, role: str = "app") -> dict[str, Any]:
    params = {"roleName": role, "policyArn": GUARD_ARN}
    return make_record(name, params, event_id=event_id, event_time=at(minute))


async def test_reattach_confirms_the_detach(world: World) -> None:
    world.iam.roles["app"] = FakeRole()
    world.iam.policies[GUARD_ARN] = managed()
    detach = role_event("DetachRolePolicy", "det-1", 10)
    # Forged: the policy was never attached (the attach is forged too), CloudTrail knows nothing.
    await world.trail(role_event("AttachRolePolicy", "att-1", 5), detach, real=False)
    outcome = await reattach_managed_policy(world.context(detach, "reattach_managed_policy"))
    assert_waits(outcome, "the removal DetachRolePolicy (event det-1)")
    assert world.iam.writes == []
    # Real: a successful Detach proves the attachment existed; that is all there is to confirm.
    world.cloudtrail.add(detach)
    ctx = world.context(detach, "reattach_managed_policy")
    assert (await reattach_managed_policy(ctx)).state == "succeeded"
    assert world.iam.roles["app"].attached == [GUARD_ARN]
    assert world.cloudtrail.looked_up == ["det-1", "det-1"]


async def test_recreate_confirms_the_document_and_every_attachment(world: World) -> None:
    world.iam.roles["app"] = FakeRole()
    world.iam.roles["innocent"] = FakeRole()
    deletion = make_record(
        "DeletePolicy", {"policyArn": GUARD_ARN}, event_id="delpol-1", event_time=at(30)
    )
    await world.trail(
        create_policy(),
        role_event("AttachRolePolicy", "att-1", 1),
        role_event("DetachRolePolicy", "det-1", 20),
        deletion,
    )
    # Forged: "innocent" had the policy attached too -- trailguard would attach it to them.
    await world.trail(role_event("AttachRolePolicy", "att-x", 2, role="innocent"), real=False)
    ctx = world.context(deletion, "recreate_managed_policy")
    outcome = await recreate_managed_policy(ctx)
    assert_waits(outcome, "the attachment to role innocent (event att-x)")
    assert world.iam.writes == []
    assert confirmations(ctx) == [
        "delpol-1:confirmed",
        "create-1:confirmed",  # the creation of its default document ...
        "create-1:confirmed",  # ... and the choice of that default: the same event, two claims
        "att-x:not_found",  # still attached when the policy was deleted, says the forgery
        "det-1:confirmed",  # detached just before the deletion (IAM requires it)
    ]
    # One LookupEvents answer per eventID, each claim compared with it on its own.
    assert world.cloudtrail.looked_up == ["delpol-1", "create-1", "att-x", "det-1"]
    # Once "innocent" no longer exists, the forged attachment has nothing to act on: the rest is
    # confirmed and put back (policy first, then the attachment).
    world.iam.roles.pop("innocent")
    ctx = world.context(deletion, "recreate_managed_policy")
    assert (await recreate_managed_policy(ctx)).state == "succeeded"
    assert world.iam.writes == [f"CreatePolicy {GUARD_ARN}", f"AttachRolePolicy app {GUARD_ARN}"]


async def test_recreate_does_not_create_a_forged_document(world: World) -> None:
    deletion = make_record(
        "DeletePolicy", {"policyArn": GUARD_ARN}, event_id="delpol-1", event_time=at(30)
    )
    await world.trail(create_policy(document=ALLOW_ALL), real=False)
    await world.trail(deletion)
    world.cloudtrail.add(create_policy(document=DOC_DENY_S3))
    outcome = await recreate_managed_policy(world.context(deletion, "recreate_managed_policy"))
    assert_waits(outcome, "policyDocument", "create-1")
    assert world.iam.writes == []


async def test_restore_version_confirms_the_default_choice(world: World) -> None:
    world.iam.policies[GUARD_ARN] = managed()  # v2 is gone, v1 is the default
    create_v2 = make_record(
        "CreatePolicyVersion",
        {"policyArn": GUARD_ARN, "policyDocument": DOC_DENY_EC2, "setAsDefault": False},
        event_id="cpv-1",
        event_time=at(1),
        responseElements={"policyVersion": {"versionId": "v2", "isDefaultVersion": False}},
    )
    delete_v2 = make_record(
        "DeletePolicyVersion",
        {"policyArn": GUARD_ARN, "versionId": "v2"},
        event_id="dpv-1",
        event_time=at(30),
    )
    await world.trail(create_policy(), create_v2, delete_v2)
    # Forged: "v2 was the default" -- trailguard would make its document the policy's default.
    forged_default = make_record(
        "SetDefaultPolicyVersion",
        {"policyArn": GUARD_ARN, "versionId": "v2"},
        event_id="sdv-x",
        event_time=at(2),
    )
    await world.trail(forged_default, real=False)
    outcome = await restore_policy_version(world.context(delete_v2, "restore_policy_version"))
    assert_waits(outcome, "the choice of it as the default (event sdv-x)")
    assert world.iam.writes == []


async def test_restore_version_confirms_the_document(world: World) -> None:
    world.iam.policies[GUARD_ARN] = managed()
    create_v2 = make_record(
        "CreatePolicyVersion",
        {"policyArn": GUARD_ARN, "policyDocument": DOC_DENY_EC2, "setAsDefault": False},
        event_id="cpv-1",
        event_time=at(1),
        responseElements={"policyVersion": {"versionId": "v2", "isDefaultVersion": False}},
    )
    delete_v2 = make_record(
        "DeletePolicyVersion",
        {"policyArn": GUARD_ARN, "versionId": "v2"},
        event_id="dpv-1",
        event_time=at(30),
    )
    await world.trail(create_policy(), create_v2, delete_v2)
    ctx = world.context(delete_v2, "restore_policy_version")
    assert (await restore_policy_version(ctx)).state == "succeeded"
    assert confirmations(ctx) == ["dpv-1:confirmed", "cpv-1:confirmed"]
    assert world.iam.policies[GUARD_ARN].versions["v2"] == DOC_DENY_EC2


async def test_boundary_confirms_the_event_that_set_it(world: World) -> None:
    world.iam.roles["app"] = FakeRole()
    world.iam.policies[BOUNDARY] = managed("DevBoundary", "/")
    world.iam.policies[WIDE_BOUNDARY] = managed("WideOpen", "/")
    put = make_record(
        "PutRolePermissionsBoundary",
        {"roleName": "app", "permissionsBoundary": WIDE_BOUNDARY},
        event_id="pb-1",
        event_time=at(0),
    )
    removal = make_record(
        "DeleteRolePermissionsBoundary", {"roleName": "app"}, event_id="db-1", event_time=at(30)
    )
    await world.trail(put, real=False)
    await world.trail(removal)
    world.cloudtrail.add(
        put | {"requestParameters": {"roleName": "app", "permissionsBoundary": BOUNDARY}}
    )
    outcome = await restore_permissions_boundary(
        world.context(removal, "restore_permissions_boundary")
    )
    assert_waits(outcome, "policy ARN", "pb-1")
    assert world.iam.writes == []


# ---------------------------------------------------------------------------------------------
# Conflicts: an eventID the event ledger knows with two contents
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def ledgered(tmp_path: Path, world: World) -> AsyncIterator[World]:
    async with await SqliteEventLedger.open(tmp_path / "history.sqlite3") as ledger:
        world.ledger = ledger
        yield world


async def test_a_conflicted_event_is_never_a_source_even_unconfirmed(ledgered: World) -> None:
    # confirm_events = false trusts the trail -- but not an eventID seen with two contents.
    world = ledgered
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(), delete_inline(), real=False)
    await world.observe(put_inline(), delete_inline(), put_inline(ALLOW_ALL))
    ctx = world.context(delete_inline(), "restore_inline_policy", extra="confirm_events = false\n")
    outcome = await restore_inline_policy(ctx)
    assert outcome.state == "awaiting_approval"
    assert outcome.reason is not None
    assert outcome.reason.startswith("conflict: eventID put-1 seen with 2 different contents")
    assert "which the put of its document rest on" in outcome.reason
    assert world.iam.writes == []
    assert world.cloudtrail.calls == []
    assert ctx.plan is not None
    assert ctx.plan.conflicts == ("put-1",)


async def test_a_conflict_waits_even_when_cloudtrail_confirms_one_content(ledgered: World) -> None:
    # CloudTrail shows the real put: still nobody can say the history's copy is that one.
    world = ledgered
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(), delete_inline())
    await world.observe(put_inline(), delete_inline(), put_inline(ALLOW_ALL))
    ctx = world.context(delete_inline(), "restore_inline_policy")
    outcome = await restore_inline_policy(ctx)
    assert outcome.state == "awaiting_approval"
    assert world.iam.writes == []
    # The audit says what CloudTrail confirms, for the operator.
    assert confirmations(ctx) == ["del-1:confirmed", "put-1:conflict", "put-1:confirmed"]


async def test_the_same_content_twice_is_no_conflict_for_the_gate(ledgered: World) -> None:
    world = ledgered
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(), delete_inline())
    await world.observe(put_inline(), delete_inline(), put_inline(), delete_inline())
    outcome = await restore_inline_policy(world.context(delete_inline(), "restore_inline_policy"))
    assert outcome.state == "succeeded"


async def test_a_conflict_found_after_the_approval_needs_a_new_one(ledgered: World) -> None:
    # Approved while the put was merely unconfirmed; then a second content of it shows up: the
    # plan now says so (its hash changes), so the old approval does not cover it.
    world = ledgered
    world.iam.roles["app"] = FakeRole()
    await world.trail(put_inline(), real=False)
    await world.trail(delete_inline())
    first = world.context(delete_inline(), "restore_inline_policy")
    assert (await restore_inline_policy(first)).state == "awaiting_approval"
    approved = approved_plan_of(first.job, first.plan)
    await world.observe(put_inline(), put_inline(ALLOW_ALL))
    ctx = world.context(delete_inline(), "restore_inline_policy", job=approved)
    outcome = await restore_inline_policy(ctx)
    assert outcome.state == "awaiting_approval"
    assert world.iam.writes == []
    assert ctx.plan is not None
    assert first.plan is not None
    assert ctx.plan.writes == first.plan.writes  # the same document ...
    assert ctx.plan.sha256 != first.plan.sha256  # ... but not the same plan
    # Approving the new plan (conflict and all) is the operator's call: then it is written.
    again = approved_plan_of(ctx.job, ctx.plan)
    final = world.context(delete_inline(), "restore_inline_policy", job=again)
    assert (await restore_inline_policy(final)).state == "succeeded"
    assert world.iam.roles["app"].inline == {"guard": DOC_DENY_S3}


def test_every_writing_action_declares_its_claims_and_the_readme_shows_them() -> None:
    from tests.conftest import ROOT
    from trailguard.remediate.actions import CLAIMS
    from trailguard.remediate.confirm import DETECTION_FIELDS, FACT_FIELDS
    from trailguard.vocabulary import WRITING_ACTIONS

    assert set(CLAIMS) == WRITING_ACTIONS
    for action, claims in CLAIMS.items():
        (_, fields), *facts = claims
        assert fields == DETECTION_FIELDS, action  # the removal: every field of the detection
        for _, fact_fields in facts:
            assert set(fact_fields) <= set(FACT_FIELDS)
            assert {"eventName", "eventTime", "account", "change"} <= set(fact_fields), action
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("**What each action confirms.**") :]
    table = table[: table.index("**One eventID, two contents.**")]
    rows = {line.split("|")[1].strip().strip("`") for line in table.splitlines() if "| `" in line}
    assert rows == set(CLAIMS)
