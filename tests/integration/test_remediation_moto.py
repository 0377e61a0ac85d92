"""Remediation against a real moto server's IAM, end to end below the SQS layer.

For every removal type moto implements: real IAM state (users, roles, groups, managed policies,
versions, attachments, a role's permissions boundary) is created in moto; the CloudTrail records
of that state being made are fed through the pure core as the daemon does (policy facts into the
real SQLite policy history, detections from the default rules); the removal is done in moto and
its record fed too; then the job runner (real aiobotocore clients, the real SQLite job store) runs
the planned jobs.

Checked: enforce mode puts back exactly the document / attachment / version / boundary; dry-run
changes nothing in IAM and records the plan; a second delivery of the same event enqueues
nothing, and running the restore again changes nothing; trailguard's own events and suppressed
events never act; quarantine waits for approval when CloudTrail cannot confirm the event (moto
does not implement LookupEvents: HTTP 500 -- exactly the "unconfirmed" path; confirmation itself
is tested with a fake client in tests/unit/remediate/test_actions_quarantine.py); audit
findings; the cross-account role; the circuit breaker; SNS notification.

CloudTrail confirmation of the restores (``[remediation] confirm_events``): moto's LookupEvents
answers HTTP 500, so the restore scenarios run with ``confirm_events = false`` (they are about
putting back exactly what was removed; the confirmation gate is tested in
tests/unit/remediate/test_actions_confirm.py, and end to end in
tests/integration/test_forgery_moto.py).
test_a_forged_file_writes_nothing runs it here too: moto's IAM through the fault proxy, whose
LookupEvents stand-in has never heard of the crafted records.

moto lacks Put/DeleteUserPermissionsBoundary (HTTP 500), so the user-boundary path is tested
below the HTTP layer with a fake IAM client (tests/unit/remediate/test_actions_boundary.py).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import msgspec
import pytest

from tests.factories import ACCOUNT, ATTACKER_ARN, assumed_role_identity, make_record
from tests.integration.conftest import Boto3Clients, MotoServer
from tests.integration.proxy import FaultProxy, LookupEventsStandIn
from tests.remediation_support import (
    ALL_RESTORES,
    DOC_DENY_EC2,
    DOC_DENY_S3,
    FakeClock,
)
from trailguard.config import Config, parse_config
from trailguard.detect.detection import Detection, FileSource
from trailguard.detect.policy_facts import facts_from_record
from trailguard.detect.process import Detector
from trailguard.detect.record import Record
from trailguard.detect.rules import RuleSet
from trailguard.remediate.jobs import CircuitOpen, Job, iso
from trailguard.remediate.service import Remediation
from trailguard.state.policy_history_sqlite import SqliteHistoryStore
from trailguard.telemetry.observers import Tally

if TYPE_CHECKING:
    from mypy_boto3_iam.client import IAMClient

pytestmark = pytest.mark.integration

OTHER_ACCOUNT = "111122223333"
ROLE_TEMPLATE = "arn:aws:iam::{account_id}:role/trailguard-remediation"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": []})


# ---------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------


@dataclass
class Harness:
    iam: IAMClient
    config: Config
    history: SqliteHistoryStore
    remediation: Remediation
    clock: FakeClock
    account: str = ACCOUNT
    detector: Detector = field(init=False)
    circuit: list[CircuitOpen] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _minute: Any = field(default_factory=lambda: itertools.count(0))

    def __post_init__(self) -> None:
        self.detector = Detector(RuleSet.from_config(self.config))

    def rec(self, event_name: str, params: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """A CloudTrail record with a fresh eventID and a later eventTime than the last."""
        minute = next(self._minute)
        kwargs.setdefault("event_id", f"evt-{next(self._ids):04d}")
        kwargs.setdefault("event_time", f"2026-11-01T{10 + minute // 60:02d}:{minute % 60:02d}:00Z")
        kwargs.setdefault("recipientAccountId", self.account)
        return make_record(event_name, params, **kwargs)

    async def feed(self, *records: dict[str, Any]) -> tuple[list[Detection], int]:
        """What the daemon does per file: facts into the history, detections, jobs enqueued."""
        detections: list[Detection] = []
        for raw in records:
            record = msgspec.json.decode(json.dumps(raw).encode(), type=Record)
            await self.history.record(facts_from_record(record))
            found = self.detector.detect(record, FileSource("moto-test.json"))
            if found is not None:
                detections.append(found)
        new = await self.remediation.plan_and_enqueue(detections)
        return detections, new

    async def run(self, rounds: int = 3) -> list[Job]:
        """Run every due job; between rounds let time pass so retries come due."""
        for _ in range(rounds):
            await self.remediation.runner.run_once()
            self.clock.now += 3600
        return await self.remediation.store.list_jobs(limit=1000)

    async def jobs_for(self, event_id: str) -> list[Job]:
        return [
            j for j in await self.remediation.store.list_jobs(limit=1000) if j.event_id == event_id
        ]


def harness_config(
    moto: MotoServer, tmp_path: Path, toml: str, endpoint_url: str | None = None
) -> Config:
    text = (
        f'[aws]\nregion = "us-east-1"\nendpoint_url = "{endpoint_url or moto.endpoint_url}"\n'
        f'[state]\npath = "{tmp_path / "state.sqlite3"}"\n{toml}'
    )
    return parse_config(text, file="moto-test.toml")


def remediation_toml(
    mode: str = "enforce",
    actions: str = ALL_RESTORES,
    extra: str = "",
    *,
    confirm_events: bool = False,
) -> str:
    # confirm_events = false unless a test asks: moto's CloudTrail LookupEvents answers HTTP 500,
    # so no event could ever be confirmed here (see the module docstring).
    return (
        f'[remediation]\nmode = "{mode}"\nmax_attempts = 4\nbackoff_base_secs = 1.0\n'
        f"backoff_cap_secs = 60.0\niam_rate_per_sec = 100.0\n"
        f"confirm_events = {str(confirm_events).lower()}\n{extra}\n"
        f'[[remediation.policies]]\nrules = ["*"]\nmin_severity = "low"\nactions = [{actions}]\n'
    )


@asynccontextmanager
async def harness(
    moto: MotoServer,
    aws: Boto3Clients,
    tmp_path: Path,
    toml: str,
    *,
    iam: IAMClient | None = None,
    endpoint_url: str | None = None,
) -> AsyncIterator[Harness]:
    """``endpoint_url``: where trailguard's AWS clients go (the fault proxy, for its
    LookupEvents stand-in); moto itself by default."""
    config = harness_config(moto, tmp_path, toml, endpoint_url)
    clock = FakeClock(time.time())
    circuit: list[CircuitOpen] = []
    tally = Tally()

    async def on_circuit_open(record: CircuitOpen) -> None:
        circuit.append(record)

    async with AsyncExitStack() as stack:
        history = await stack.enter_async_context(
            await SqliteHistoryStore.open(tmp_path / "history.sqlite3")
        )
        remediation = await stack.enter_async_context(
            Remediation.open(
                config,
                history=history,
                on_circuit_open=on_circuit_open,
                observer=tally,
                clock=clock,
            )
        )
        yield Harness(
            iam=iam or aws.iam,
            config=config,
            history=history,
            remediation=remediation,
            clock=clock,
            circuit=circuit,
            tally=tally,
        )


# ---------------------------------------------------------------------------------------------
# The removal scenarios
# ---------------------------------------------------------------------------------------------

_CAP = {"user": "User", "role": "Role", "group": "Group"}


def create_principal(iam: IAMClient, kind: str, name: str) -> None:
    if kind == "user":
        iam.create_user(UserName=name)
    elif kind == "role":
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
    else:
        iam.create_group(GroupName=name)


def create_policy_record(h: Harness, name: str, path: str, document: str) -> dict[str, Any]:
    created = h.iam.create_policy(PolicyName=name, Path=path, PolicyDocument=document)["Policy"]
    return h.rec(
        "CreatePolicy",
        {"policyName": name, "path": path, "policyDocument": document},
        responseElements={
            "policy": {
                "policyName": name,
                "policyId": created["PolicyId"],
                "arn": created["Arn"],
                "path": path,
                "defaultVersionId": "v1",
                "attachmentCount": 0,
                "isAttachable": True,
            }
        },
    )


def policy_arn(h: Harness, name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{h.account}:policy{path}{name}"


@dataclass(frozen=True)
class Scenario:
    id: str
    action: str
    arrange: Callable[[Harness], list[dict[str, Any]]]
    remove: Callable[[Harness], list[dict[str, Any]]]
    observe: Callable[[Harness], object]


def inline(kind: str) -> Scenario:
    name = {"user": "alice", "role": "app-role", "group": "devs"}[kind]
    param = f"{kind}Name"
    cap = _CAP[kind]

    def arrange(h: Harness) -> list[dict[str, Any]]:
        create_principal(h.iam, kind, name)
        getattr(h.iam, f"put_{kind}_policy")(
            **{f"{cap}Name": name, "PolicyName": "guard", "PolicyDocument": DOC_DENY_S3}
        )
        return [
            h.rec(
                f"Put{cap}Policy",
                {param: name, "policyName": "guard", "policyDocument": DOC_DENY_S3},
            )
        ]

    def remove(h: Harness) -> list[dict[str, Any]]:
        getattr(h.iam, f"delete_{kind}_policy")(**{f"{cap}Name": name, "PolicyName": "guard"})
        return [h.rec(f"Delete{cap}Policy", {param: name, "policyName": "guard"})]

    def observe(h: Harness) -> object:
        try:
            got = getattr(h.iam, f"get_{kind}_policy")(
                **{f"{cap}Name": name, "PolicyName": "guard"}
            )
        except h.iam.exceptions.NoSuchEntityException:
            return None
        return got["PolicyDocument"]

    return Scenario(f"Delete{cap}Policy", "restore_inline_policy", arrange, remove, observe)


def attached(kind: str) -> Scenario:
    name = {"user": "bob", "role": "ci", "group": "ops"}[kind]
    param = f"{kind}Name"
    cap = _CAP[kind]

    def arrange(h: Harness) -> list[dict[str, Any]]:
        create_principal(h.iam, kind, name)
        created = create_policy_record(h, "Guardrail", "/team/", DOC_DENY_S3)
        arn = policy_arn(h, "Guardrail", "/team/")
        getattr(h.iam, f"attach_{kind}_policy")(**{f"{cap}Name": name, "PolicyArn": arn})
        return [created, h.rec(f"Attach{cap}Policy", {param: name, "policyArn": arn})]

    def remove(h: Harness) -> list[dict[str, Any]]:
        arn = policy_arn(h, "Guardrail", "/team/")
        getattr(h.iam, f"detach_{kind}_policy")(**{f"{cap}Name": name, "PolicyArn": arn})
        return [h.rec(f"Detach{cap}Policy", {param: name, "policyArn": arn})]

    def observe(h: Harness) -> object:
        listed = getattr(h.iam, f"list_attached_{kind}_policies")(**{f"{cap}Name": name})
        return sorted(p["PolicyArn"] for p in listed["AttachedPolicies"])

    return Scenario(f"Detach{cap}Policy", "reattach_managed_policy", arrange, remove, observe)


def _versions(h: Harness, arn: str) -> object:
    try:
        listed = h.iam.list_policy_versions(PolicyArn=arn)["Versions"]
    except h.iam.exceptions.NoSuchEntityException:
        return None
    out = []
    for version in listed:
        got = h.iam.get_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
        out.append(
            (
                json.dumps(got["PolicyVersion"]["Document"], sort_keys=True),
                version["IsDefaultVersion"],
            )
        )
    return sorted(out)


def version_scenario() -> Scenario:
    def arrange(h: Harness) -> list[dict[str, Any]]:
        created = create_policy_record(h, "Boundary", "/", DOC_DENY_S3)
        arn = policy_arn(h, "Boundary")
        h.iam.create_policy_version(PolicyArn=arn, PolicyDocument=DOC_DENY_EC2, SetAsDefault=False)
        return [
            created,
            h.rec(
                "CreatePolicyVersion",
                {"policyArn": arn, "policyDocument": DOC_DENY_EC2, "setAsDefault": False},
                responseElements={"policyVersion": {"versionId": "v2", "isDefaultVersion": False}},
            ),
        ]

    def remove(h: Harness) -> list[dict[str, Any]]:
        arn = policy_arn(h, "Boundary")
        h.iam.delete_policy_version(PolicyArn=arn, VersionId="v2")
        return [h.rec("DeletePolicyVersion", {"policyArn": arn, "versionId": "v2"})]

    return Scenario(
        "DeletePolicyVersion",
        "restore_policy_version",
        arrange,
        remove,
        lambda h: _versions(h, policy_arn(h, "Boundary")),
    )


def delete_policy_scenario() -> Scenario:
    def arrange(h: Harness) -> list[dict[str, Any]]:
        create_principal(h.iam, "role", "app")
        create_principal(h.iam, "user", "carol")
        created = create_policy_record(h, "Guardrail", "/team/", DOC_DENY_S3)
        arn = policy_arn(h, "Guardrail", "/team/")
        h.iam.attach_role_policy(RoleName="app", PolicyArn=arn)
        h.iam.attach_user_policy(UserName="carol", PolicyArn=arn)
        return [
            created,
            h.rec("AttachRolePolicy", {"roleName": "app", "policyArn": arn}),
            h.rec("AttachUserPolicy", {"userName": "carol", "policyArn": arn}),
        ]

    def remove(h: Harness) -> list[dict[str, Any]]:
        # IAM refuses DeletePolicy while the policy is attached: detach first, as an attacker must.
        arn = policy_arn(h, "Guardrail", "/team/")
        h.iam.detach_role_policy(RoleName="app", PolicyArn=arn)
        h.iam.detach_user_policy(UserName="carol", PolicyArn=arn)
        h.iam.delete_policy(PolicyArn=arn)
        return [
            h.rec("DetachRolePolicy", {"roleName": "app", "policyArn": arn}),
            h.rec("DetachUserPolicy", {"userName": "carol", "policyArn": arn}),
            h.rec("DeletePolicy", {"policyArn": arn}),
        ]

    def observe(h: Harness) -> object:
        arn = policy_arn(h, "Guardrail", "/team/")
        try:
            policy = h.iam.get_policy(PolicyArn=arn)["Policy"]
        except h.iam.exceptions.NoSuchEntityException:
            return None
        doc = h.iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
        entities = h.iam.list_entities_for_policy(PolicyArn=arn)
        return (
            policy["Path"],
            doc["PolicyVersion"]["Document"],
            sorted(r["RoleName"] for r in entities["PolicyRoles"]),
            sorted(u["UserName"] for u in entities["PolicyUsers"]),
        )

    return Scenario("DeletePolicy", "recreate_managed_policy", arrange, remove, observe)


def role_boundary_scenario() -> Scenario:
    def arrange(h: Harness) -> list[dict[str, Any]]:
        create_principal(h.iam, "role", "lambda-exec")
        created = create_policy_record(h, "DevBoundary", "/", DOC_DENY_S3)
        arn = policy_arn(h, "DevBoundary")
        h.iam.put_role_permissions_boundary(RoleName="lambda-exec", PermissionsBoundary=arn)
        return [
            created,
            h.rec(
                "PutRolePermissionsBoundary",
                {"roleName": "lambda-exec", "permissionsBoundary": arn},
            ),
        ]

    def remove(h: Harness) -> list[dict[str, Any]]:
        h.iam.delete_role_permissions_boundary(RoleName="lambda-exec")
        return [h.rec("DeleteRolePermissionsBoundary", {"roleName": "lambda-exec"})]

    def observe(h: Harness) -> object:
        role = h.iam.get_role(RoleName="lambda-exec")["Role"]
        return role.get("PermissionsBoundary", {}).get("PermissionsBoundaryArn")

    return Scenario(
        "DeleteRolePermissionsBoundary", "restore_permissions_boundary", arrange, remove, observe
    )


SCENARIOS = [
    inline("user"),
    inline("role"),
    inline("group"),
    attached("user"),
    attached("role"),
    attached("group"),
    version_scenario(),
    delete_policy_scenario(),
    role_boundary_scenario(),
]
IDS = [s.id for s in SCENARIOS]


def restore_job(jobs: list[Job], scenario: Scenario) -> Job:
    matching = [
        j for j in jobs if j.action == scenario.action and j.detection.event_name == scenario.id
    ]
    assert len(matching) == 1, [(j.action, j.detection.event_name, j.state) for j in jobs]
    return matching[0]


# ---------------------------------------------------------------------------------------------
# Enforce, dry-run, twice
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
async def test_enforce_restores_exactly(
    scenario: Scenario, clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    async with harness(clean_moto, boto3_session_clients, tmp_path, remediation_toml()) as h:
        await h.feed(*scenario.arrange(h))
        intact = scenario.observe(h)
        await h.feed(*scenario.remove(h))
        assert scenario.observe(h) != intact
        jobs = await h.run()
        assert scenario.observe(h) == intact
        job = restore_job(jobs, scenario)
        assert job.state == "succeeded", (job.reason, job.error, job.audit)
        assert job.changed
        steps = [entry.step for entry in job.audit]
        assert steps[0] == "planned"
        assert {"before", "did", "after"} <= set(steps)
        # Every job the scenario planned ended well (the DeletePolicy scenario's reattach jobs
        # wait for the recreate, then find the attachments in place).
        assert {j.state for j in jobs} == {"succeeded"}, [
            (j.action, j.state, j.reason) for j in jobs
        ]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
async def test_dry_run_changes_nothing_and_records_the_plan(
    scenario: Scenario, clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    async with harness(
        clean_moto, boto3_session_clients, tmp_path, remediation_toml(mode="dry-run")
    ) as h:
        await h.feed(*scenario.arrange(h))
        await h.feed(*scenario.remove(h))
        removed = scenario.observe(h)
        jobs = await h.run(rounds=5)
        assert scenario.observe(h) == removed
        job = restore_job(jobs, scenario)
        assert job.state == "dry_run", (job.reason, job.error, job.audit)
        assert not job.changed
        plan = [entry for entry in job.audit if entry.step == "plan"]
        assert len(plan) == 1
        assert plan[0].what.startswith("dry-run: would ")
        assert not any(entry.step == "did" for j in jobs for entry in j.audit)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
async def test_a_second_delivery_changes_nothing(
    scenario: Scenario, clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    async with harness(clean_moto, boto3_session_clients, tmp_path, remediation_toml()) as h:
        await h.feed(*scenario.arrange(h))
        removal = scenario.remove(h)
        _, new = await h.feed(*removal)
        assert new >= 1
        first = restore_job(await h.run(), scenario)
        restored = scenario.observe(h)
        # The same records again (SQS redelivery, a replay): nothing new is enqueued ...
        _, again = await h.feed(*removal)
        assert again == 0
        # ... and even a fresh job for the same event (another id) finds the state in place.
        rerun = msgspec.structs.replace(
            first,
            id=first.id[:-4] + "beef",
            state="pending",
            attempts=0,
            audit=(),
            changed=False,
            next_attempt_at=h.clock(),
        )
        assert await h.remediation.store.enqueue_many([rerun]) == 1
        await h.run(rounds=1)
        done = await h.remediation.store.get(rerun.id)
        assert done is not None
        assert (done.state, done.changed, done.reason) == ("succeeded", False, "already_in_place")
        assert not any(entry.step == "did" for entry in done.audit)
        assert scenario.observe(h) == restored


# ---------------------------------------------------------------------------------------------
# Never acting on trailguard's own or on suppressed events
# ---------------------------------------------------------------------------------------------


async def test_trailguards_own_events_never_act(
    clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    toml = remediation_toml(
        extra='role_arn_template = ""\nown_identity_arns = '
        '["arn:aws:sts::*:assumed-role/trailguard-remediation/*"]\n'
    )
    scenario = inline("role")
    async with harness(clean_moto, boto3_session_clients, tmp_path, toml) as h:
        await h.feed(*scenario.arrange(h))
        h.iam.delete_role_policy(RoleName="app-role", PolicyName="guard")
        own = h.rec(
            "DeleteRolePolicy",
            {"roleName": "app-role", "policyName": "guard"},
            user_identity=assumed_role_identity("trailguard-remediation", "tg-1"),
        )
        marker_only = h.rec(
            "DeleteRolePolicy",
            {"roleName": "app-role", "policyName": "guard"},
            user_agent="aiobotocore/2.13 md/Botocore#1.34 trailguard/0.1.0",
        )
        detections, new = await h.feed(own)
        assert len(detections) == 1  # detected and reported ...
        assert new == 0  # ... but never remediated
        # The marker from an identity that is not trailguard's is a spoof: remediated anyway.
        _, spoofed = await h.feed(marker_only)
        assert spoofed == 1
        await h.run()
        assert scenario.observe(h) is not None


async def test_without_a_configured_identity_the_marker_alone_prevents_action(
    clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    scenario = inline("role")
    async with harness(clean_moto, boto3_session_clients, tmp_path, remediation_toml()) as h:
        await h.feed(*scenario.arrange(h))
        h.iam.delete_role_policy(RoleName="app-role", PolicyName="guard")
        record = h.rec(
            "DeleteRolePolicy",
            {"roleName": "app-role", "policyName": "guard"},
            user_agent="aiobotocore/2.13 trailguard/0.1.0",
        )
        assert (await h.feed(record))[1] == 0
        assert await h.run() == []
        assert scenario.observe(h) is None


async def test_suppressed_events_never_act(
    clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    toml = remediation_toml() + f'[[suppress]]\nname = "janitor"\nactor_arn = ["{ATTACKER_ARN}"]\n'
    scenario = inline("user")
    async with harness(clean_moto, boto3_session_clients, tmp_path, toml) as h:
        await h.feed(*scenario.arrange(h))
        detections, new = await h.feed(*scenario.remove(h))
        assert [d.disposition for d in detections] == ["suppressed"]
        assert new == 0
        assert await h.run() == []
        assert scenario.observe(h) is None


# ---------------------------------------------------------------------------------------------
# quarantine_actor and audit_actor
# ---------------------------------------------------------------------------------------------


def create_attacker(iam: IAMClient) -> str:
    iam.create_user(UserName="mallory")
    iam.create_login_profile(UserName="mallory", Password="Not-a-real-pw-123!")
    return iam.create_access_key(UserName="mallory")["AccessKey"]["AccessKeyId"]


async def test_quarantine_waits_for_approval_when_cloudtrail_cannot_confirm(
    clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    iam = boto3_session_clients.iam
    deny = iam.create_policy(PolicyName="TrailguardQuarantine", PolicyDocument=DOC_DENY_S3)
    deny_arn = deny["Policy"]["Arn"]
    toml = remediation_toml(
        actions='"quarantine_actor"',
        extra=f'quarantine_policy_arn = "{deny_arn}"\n',
        confirm_events=True,
    )
    scenario = inline("role")
    async with harness(clean_moto, boto3_session_clients, tmp_path, toml) as h:
        create_attacker(iam)
        await h.feed(*scenario.arrange(h))
        [detection], _ = await h.feed(*scenario.remove(h))
        # moto has no LookupEvents (HTTP 500): the event cannot be confirmed.
        [job] = await h.run(rounds=1)
        assert job.state == "awaiting_approval", (job.reason, job.error)
        assert job.reason is not None
        assert job.reason.startswith("unconfirmed: LookupEvents failed")
        assert iam.list_attached_user_policies(UserName="mallory")["AttachedPolicies"] == []
        # The job waits with its plan: attach the quarantine policy to mallory.
        assert job.plan is not None
        assert [(w.call, w.target) for w in job.plan.writes] == [
            ("AttachUserPolicy", "user/mallory")
        ]
        # An operator looks and approves that plan: now it acts, and says why.
        await h.remediation.store.approve(
            job.id, now=h.clock(), by="test", plan_sha256=job.plan_sha256
        )
        [job] = await h.run(rounds=1)
        assert job.state == "succeeded"
        attached = iam.list_attached_user_policies(UserName="mallory")["AttachedPolicies"]
        assert [p["PolicyArn"] for p in attached] == [deny_arn]
        assert any(f"an operator approved plan {job.plan_sha256}" in e.what for e in job.audit)
        assert detection.actor.arn == ATTACKER_ARN


ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


@pytest.mark.parametrize("cloudtrail_knows_them", [False, True], ids=["forged", "genuine"])
async def test_a_forged_file_writes_nothing(
    cloudtrail_knows_them: bool,
    clean_moto: MotoServer,
    boto3_session_clients: Boto3Clients,
    tmp_path: Path,
) -> None:
    """A crafted pair of records -- PutRolePolicy of an Allow-* document onto an innocent role,
    then its DeleteRolePolicy -- through the detector, the policy history and the job runner in
    enforce mode, against moto's IAM.  CloudTrail (a fake LookupEvents) has no such events: the
    role gets nothing and the job waits for an operator.  The "genuine" run is the control:
    had CloudTrail recorded the same two events, the document would be put back."""
    toml = remediation_toml(confirm_events=True)
    with FaultProxy(clean_moto.endpoint_url) as proxy:
        cloudtrail = proxy.serve_lookup_events()
        async with harness(
            clean_moto, boto3_session_clients, tmp_path, toml, endpoint_url=proxy.endpoint_url
        ) as h:
            await forged_file_scenario(h, cloudtrail, cloudtrail_knows_them)


async def forged_file_scenario(
    h: Harness, cloudtrail: LookupEventsStandIn, cloudtrail_knows_them: bool
) -> None:
    create_principal(h.iam, "role", "innocent")
    put = h.rec(
        "PutRolePolicy",
        {"roleName": "innocent", "policyName": "admin", "policyDocument": ALLOW_ALL},
        event_time=iso(h.clock() - 7200),
    )
    delete = h.rec(
        "DeleteRolePolicy",
        {"roleName": "innocent", "policyName": "admin"},
        event_time=iso(h.clock() - 3600),
    )
    if cloudtrail_knows_them:
        cloudtrail.add(put, delete)
    _, new = await h.feed(put, delete)
    assert new == 1
    [job] = await h.run()
    assert cloudtrail.looked_up == [delete["eventID"], put["eventID"]]
    policies = h.iam.list_role_policies(RoleName="innocent")["PolicyNames"]
    if cloudtrail_knows_them:
        assert job.state == "succeeded", (job.reason, job.error)
        assert policies == ["admin"]
        return
    assert job.state == "awaiting_approval", (job.reason, job.error)
    assert job.reason is not None
    assert job.reason.startswith("unconfirmed: LookupEvents does not show the event")
    assert policies == []
    assert not any(entry.step == "did" for entry in job.audit)


async def test_audit_actor_reports_hygiene_findings(
    clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    iam = boto3_session_clients.iam
    toml = remediation_toml(actions='"audit_actor"', extra="access_key_max_age_days = 30\n")
    scenario = inline("role")
    async with harness(clean_moto, boto3_session_clients, tmp_path, toml) as h:
        key = create_attacker(iam)
        await h.feed(*scenario.arrange(h))
        await h.feed(*scenario.remove(h))
        h.clock.now += 100 * 86400  # the key is 100 days old and was never used
        [job] = await h.run(rounds=1)
        assert job.state == "succeeded"
        assert sorted((f.code, f.subject) for f in job.findings) == [
            ("access_key_old", f"access-key/{key}"),
            ("access_key_unused", f"access-key/{key}"),
            ("console_password_without_mfa", "user/mallory"),
            ("no_mfa", "user/mallory"),
            ("no_password_policy", f"account/{ACCOUNT}"),
        ]
        assert h.tally.findings["no_mfa"] == 1
        # Read-only: nothing changed.
        assert (
            iam.list_access_keys(UserName="mallory")["AccessKeyMetadata"][0]["Status"] == "Active"
        )


# ---------------------------------------------------------------------------------------------
# Cross-account, circuit breaker, notify
# ---------------------------------------------------------------------------------------------


def other_account_iam(moto: MotoServer) -> IAMClient:
    """boto3 IAM in OTHER_ACCOUNT: moto keys its state by the assumed role's account."""
    sts = boto3.client("sts", endpoint_url=moto.endpoint_url, region_name="us-east-1")
    creds = sts.assume_role(
        RoleArn=ROLE_TEMPLATE.format(account_id=OTHER_ACCOUNT), RoleSessionName="test-arrange"
    )["Credentials"]
    return boto3.client(
        "iam",
        endpoint_url=moto.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


async def test_cross_account_through_the_role_template(
    clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    other = other_account_iam(clean_moto)
    toml = remediation_toml(extra=f'role_arn_template = "{ROLE_TEMPLATE}"\n')
    scenario = inline("role")
    async with harness(clean_moto, boto3_session_clients, tmp_path, toml, iam=other) as h:
        h.account = OTHER_ACCOUNT
        await h.feed(*scenario.arrange(h))
        await h.feed(*scenario.remove(h))
        [job] = await h.run()
        assert (job.account_id, job.state) == (OTHER_ACCOUNT, "succeeded")
        assert scenario.observe(h) is not None
        # Nothing happened in the daemon's own account.
        assert boto3_session_clients.iam.list_roles()["Roles"] == []


async def test_another_account_without_a_role_is_skipped(
    clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    other = other_account_iam(clean_moto)
    scenario = inline("role")
    async with harness(
        clean_moto, boto3_session_clients, tmp_path, remediation_toml(), iam=other
    ) as h:
        h.account = OTHER_ACCOUNT
        await h.feed(*scenario.arrange(h))
        await h.feed(*scenario.remove(h))
        [job] = await h.run()
        assert (job.state, job.reason) == ("skipped", "no_role_for_account")
        assert scenario.observe(h) is None


async def test_circuit_breaker_stops_fighting(
    clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    toml = remediation_toml(
        extra="[remediation.circuit_breaker]\nmax_restores = 2\nwindow_secs = 86400.0\n"
    )
    scenario = inline("role")
    async with harness(clean_moto, boto3_session_clients, tmp_path, toml) as h:
        await h.feed(*scenario.arrange(h))
        states = []
        for _ in range(3):  # "the pipeline" deletes it again after each restore
            [detection], _ = await h.feed(*scenario.remove(h))
            await h.run(rounds=1)
            [job] = await h.jobs_for(detection.event_id or "")
            states.append((job.state, job.reason))
        assert states == [("succeeded", None), ("succeeded", None), ("skipped", "circuit_open")]
        assert scenario.observe(h) is None  # left alone the third time
        [record] = h.circuit
        assert record.restores_in_window == 2
        assert record.target_key == f"{ACCOUNT}:role/app-role:inline/guard"
        assert h.tally.circuit_open == 1


async def test_notify_publishes_to_sns(
    clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> None:
    aws = boto3_session_clients
    topic = aws.sns.create_topic(Name="trailguard-alerts")["TopicArn"]
    queue_url = aws.sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    aws.sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    toml = remediation_toml(
        mode="dry-run",
        actions='"notify"',
        extra='[remediation.action_modes]\nnotify = "enforce"\n'
        f'[remediation.notify]\nsns_topic_arn = "{topic}"\n',
    )
    scenario = inline("group")
    async with harness(clean_moto, aws, tmp_path, toml) as h:
        await h.feed(*scenario.arrange(h))
        [detection], _ = await h.feed(*scenario.remove(h))
        [job] = await h.run(rounds=1)
        assert job.state == "succeeded"
        messages = aws.sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
        body = json.loads(messages[0]["Body"])
        assert body["event_id"] == detection.event_id
        assert body["event_name"] == "DeleteGroupPolicy"
        assert body["target"]["name"] == "devs"
        assert body["job_id"] == job.id
