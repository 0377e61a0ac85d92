"""Properties of the confirmation gate: no single forged field gets anything written.

For each action, a small real trail (CloudTrail holds it, as LookupEvents shows it) and one of its
records forged: a copy with exactly one confirmed field changed -- the document, a principal or
policy name, a policy ARN, a version id, set-as-default, the account, eventTime, eventName, the
actor's ARN, principal id, access key id or session issuer, or the eventID itself made the
removal's (issue 12 §1a).  trailguard is fed the forged copy instead of the real record (the
strongest position for an attacker: history holds only the forgery) and runs the action in
enforce mode.  Whatever hypothesis picks, the fake IAM records no write.  The control tests run
the same trails unforged and see the write happen, so the property can fail.

A fake IAM recording writes is enough here (pure logic); the attacks run end to end against
moto in tests/integration/test_forgery_moto.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import ACCOUNT, assumed_role_identity, make_record
from tests.remediation_support import (
    DOC_DENY_EC2,
    DOC_DENY_S3,
    FakeCloudTrail,
    config_toml,
    remediation_config,
)
from tests.unit.remediate.test_actions_confirm import FakeIam, FakePolicy, FakeRole, World, at
from trailguard.config import ActionName, Config
from trailguard.detect.detection import FileSource
from trailguard.detect.process import Detector
from trailguard.detect.record import Record
from trailguard.detect.rules import RuleSet
from trailguard.remediate.actions import ACTIONS, ActionContext, Deferred, same_document
from trailguard.remediate.planner import plan_jobs
from trailguard.state.policy_history_sqlite import SqliteHistoryStore

GUARD_ARN = f"arn:aws:iam::{ACCOUNT}:policy/team/Guardrail"
BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/DevBoundary"
WIDE = f"arn:aws:iam::{ACCOUNT}:policy/WideOpen"
QUARANTINE = f"arn:aws:iam::{ACCOUNT}:policy/TrailguardQuarantine"
DETECTOR = Detector(RuleSet.from_config(Config()))

Path_ = tuple[str, ...]


@dataclass(frozen=True)
class Mutation:
    """One confirmed field of one record, and the values a forger may put there."""

    field: str
    record: str  # which record of the trail: "removal" or "source"
    paths: tuple[Path_, ...]  # where the field sits (several: a flag in request and response)
    values: st.SearchStrategy[Any]


@dataclass(frozen=True)
class Scenario:
    action: ActionName
    setup: Callable[[FakeIam], None]
    #: the real trail, in order; the last record is the removal
    trail: Callable[[], list[dict[str, Any]]]
    source: int  # index in the trail of the record the write's content comes from
    mutations: tuple[Mutation, ...]
    extra: str = ""


# -- values ----------------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)
accounts = st.from_regex(r"[0-9]{12}", fullmatch=True)
times = st.integers(min_value=0, max_value=59).map(at)
documents = st.builds(
    lambda effect, action, resource: json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": effect, "Action": action, "Resource": resource}],
        }
    ),
    st.sampled_from(["Allow", "Deny"]),
    st.sampled_from(["*", "s3:*", "iam:*", "ec2:*", "s3:GetObject"]),
    st.sampled_from(["*", "arn:aws:s3:::bucket/*"]),
)
policy_arns = st.sampled_from([WIDE, BOUNDARY, GUARD_ARN, f"arn:aws:iam::{ACCOUNT}:policy/Other"])
version_ids = st.sampled_from(["v1", "v3", "v4", "v9"])
flags = st.booleans()
key_ids = st.from_regex(r"(AKIA|ASIA)[A-Z0-9]{16}", fullmatch=True)
principal_ids = st.from_regex(r"AROA[A-Z0-9]{10}:[a-z]{1,8}", fullmatch=True)
role_arns = names.map(lambda n: f"arn:aws:iam::{ACCOUNT}:role/{n}") | st.just(
    f"arn:aws:iam::{ACCOUNT}:role/prod-app"
)

REQUEST = ("requestParameters",)
IDENTITY = ("userIdentity",)
ISSUER = ("userIdentity", "sessionContext", "sessionIssuer", "arn")


def common(record: str, event_names: list[str]) -> tuple[Mutation, ...]:
    """Fields every record has: account, eventTime, eventName."""
    return (
        Mutation("account", record, (("recipientAccountId",),), accounts),
        Mutation("eventTime", record, (("eventTime",),), times),
        Mutation("eventName", record, (("eventName",),), st.sampled_from(event_names)),
    )


def actor(record: str) -> tuple[Mutation, ...]:
    """The identity of whoever made the record."""
    return (
        Mutation("actor ARN", record, ((*IDENTITY, "arn"),), role_arns),
        Mutation("principal id", record, ((*IDENTITY, "principalId"),), principal_ids),
        Mutation("access key id", record, ((*IDENTITY, "accessKeyId"),), key_ids),
        Mutation("issuer ARN", record, (ISSUER,), role_arns),
    )


# -- the trails ------------------------------------------------------------------------------


def inline_scenario() -> Scenario:
    def setup(iam: FakeIam) -> None:
        iam.roles["app"] = FakeRole()

    def trail() -> list[dict[str, Any]]:
        params = {"roleName": "app", "policyName": "guard", "policyDocument": DOC_DENY_S3}
        return [
            make_record("PutRolePolicy", params, event_id="put-1", event_time=at(0)),
            make_record(
                "DeleteRolePolicy",
                {"roleName": "app", "policyName": "guard"},
                event_id="del-1",
                event_time=at(30),
                user_identity=assumed_role_identity("ops", "alice"),
            ),
        ]

    put = "source"
    return Scenario(
        "restore_inline_policy",
        setup,
        trail,
        0,
        (
            Mutation("document", put, ((*REQUEST, "policyDocument"),), documents),
            Mutation("principal name", put, ((*REQUEST, "roleName"),), names),
            Mutation("policy name", put, ((*REQUEST, "policyName"),), names),
            Mutation("eventID", put, (("eventID",),), st.just("del-1")),
            *common(put, ["PutUserPolicy", "PutGroupPolicy", "DeleteRolePolicy"]),
            *common("removal", ["DeleteUserPolicy", "DeleteGroupPolicy"]),
            Mutation("principal name", "removal", ((*REQUEST, "roleName"),), names),
            *actor("removal"),
        ),
    )


def version_scenario() -> Scenario:
    def setup(iam: FakeIam) -> None:
        iam.policies[GUARD_ARN] = FakePolicy("Guardrail", "/team/", {"v1": DOC_DENY_S3}, "v1")

    def trail() -> list[dict[str, Any]]:
        return [
            make_record(
                "CreatePolicyVersion",
                {"policyArn": GUARD_ARN, "policyDocument": DOC_DENY_EC2, "setAsDefault": False},
                event_id="cpv-1",
                event_time=at(1),
                responseElements={"policyVersion": {"versionId": "v2", "isDefaultVersion": False}},
            ),
            make_record(
                "DeletePolicyVersion",
                {"policyArn": GUARD_ARN, "versionId": "v2"},
                event_id="dpv-1",
                event_time=at(30),
            ),
        ]

    create = "source"
    return Scenario(
        "restore_policy_version",
        setup,
        trail,
        0,
        (
            Mutation("document", create, ((*REQUEST, "policyDocument"),), documents),
            Mutation("policy ARN", create, ((*REQUEST, "policyArn"),), policy_arns),
            Mutation(
                "version id",
                create,
                (("responseElements", "policyVersion", "versionId"),),
                version_ids,
            ),
            Mutation(
                "set-as-default",
                create,
                (
                    (*REQUEST, "setAsDefault"),
                    ("responseElements", "policyVersion", "isDefaultVersion"),
                ),
                flags,
            ),
            Mutation("eventID", create, (("eventID",),), st.just("dpv-1")),
            *common(create, ["SetDefaultPolicyVersion", "DeletePolicyVersion", "CreatePolicy"]),
            *common("removal", ["SetDefaultPolicyVersion", "DeletePolicy"]),
            Mutation("version id", "removal", ((*REQUEST, "versionId"),), version_ids),
        ),
    )


def boundary_scenario() -> Scenario:
    def setup(iam: FakeIam) -> None:
        iam.roles["app"] = FakeRole()
        for arn in (BOUNDARY, WIDE, GUARD_ARN, f"arn:aws:iam::{ACCOUNT}:policy/Other"):
            iam.policies[arn] = FakePolicy(arn.rsplit("/", 1)[1], "/", {"v1": DOC_DENY_S3}, "v1")

    def trail() -> list[dict[str, Any]]:
        return [
            make_record(
                "PutRolePermissionsBoundary",
                {"roleName": "app", "permissionsBoundary": BOUNDARY},
                event_id="pb-1",
                event_time=at(0),
            ),
            make_record(
                "DeleteRolePermissionsBoundary",
                {"roleName": "app"},
                event_id="db-1",
                event_time=at(30),
            ),
        ]

    put = "source"
    return Scenario(
        "restore_permissions_boundary",
        setup,
        trail,
        0,
        (
            Mutation("policy ARN", put, ((*REQUEST, "permissionsBoundary"),), policy_arns),
            Mutation("principal name", put, ((*REQUEST, "roleName"),), names),
            Mutation("eventID", put, (("eventID",),), st.just("db-1")),
            *common(put, ["CreateRole", "PutUserPermissionsBoundary"]),
            *common("removal", ["DeleteUserPermissionsBoundary"]),
            *actor("removal"),
        ),
    )


def quarantine_scenario() -> Scenario:
    def setup(iam: FakeIam) -> None:
        for role in ("ops", "prod-app", "ci"):
            iam.roles[role] = FakeRole()

    def trail() -> list[dict[str, Any]]:
        return [
            make_record(
                "DetachRolePolicy",
                {"roleName": "ci", "policyArn": GUARD_ARN},
                event_id="det-1",
                event_time=at(30),
                user_identity=assumed_role_identity("ops", "alice"),
            )
        ]

    return Scenario(
        "quarantine_actor",
        setup,
        trail,
        0,
        (
            *actor("removal"),
            Mutation("actor type", "removal", ((*IDENTITY, "type"),), st.just("IAMUser")),
            Mutation(
                "MFA",
                "removal",
                ((*IDENTITY, "sessionContext", "attributes", "mfaAuthenticated"),),
                st.just("true"),
            ),
            Mutation("source IP", "removal", (("sourceIPAddress",),), st.just("203.0.113.9")),
            Mutation("policy ARN", "removal", ((*REQUEST, "policyArn"),), policy_arns),
            *common("removal", ["DetachUserPolicy", "DeleteRolePolicy", "DetachGroupPolicy"]),
        ),
        extra=f'quarantine_policy_arn = "{QUARANTINE}"\n',
    )


SCENARIOS = {
    "inline": inline_scenario(),
    "version": version_scenario(),
    "boundary": boundary_scenario(),
    "quarantine": quarantine_scenario(),
}


# -- running one trail -------------------------------------------------------------------------


def put_at(record: dict[str, Any], path: Path_, value: Any) -> None:
    node = record
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def read_at(record: dict[str, Any], path: Path_) -> Any:
    node: Any = record
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def changed(old: Any, new: Any, field: str) -> bool:
    """Whether ``new`` says something else than ``old`` (a document only if it means another)."""
    if field == "document":
        return not same_document(old, new)
    return bool(old != new)


async def run_trail(
    scenario: Scenario, fed: list[dict[str, Any]], real: list[dict[str, Any]]
) -> list[str]:
    """Feed ``fed`` to trailguard (CloudTrail holds ``real``), run the action on the last fed
    record in enforce mode; the IAM writes it made."""
    iam = FakeIam()
    scenario.setup(iam)
    with tempfile.TemporaryDirectory() as directory:
        async with await SqliteHistoryStore.open(Path(directory) / "h.sqlite3") as history:
            world = World(iam, FakeCloudTrail(), history)
            await world.trail(*fed, real=False)
            world.cloudtrail.add(*real)
            removal = msgspec.json.decode(json.dumps(fed[-1]).encode(), type=Record)
            detection = DETECTOR.detect(removal, FileSource("forged.json"))
            if detection is None:
                return iam.writes  # not even detected: nothing is planned
            config = remediation_config(
                config_toml(actions=f'"{scenario.action}"', extra=scenario.extra)
            )
            jobs = [
                j
                for j in plan_jobs(detection, config, now=world.clock())
                if j.action == scenario.action
            ]
            if not jobs:
                return iam.writes
            ctx = ActionContext(
                jobs[0],
                clients=world.clients,
                history=history,
                config=config,
                dry_run=False,
                clock=world.clock,
            )
            try:
                outcome = await ACTIONS[scenario.action](ctx)
            except Deferred:
                return iam.writes
            assert outcome.state in ("awaiting_approval", "skipped", "succeeded"), outcome
            return iam.writes


def forge(
    scenario: Scenario, mutation: Mutation, value: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """(what trailguard is fed, what CloudTrail holds): the trail with one record's field set to
    ``value``; None when that says nothing new."""
    real = scenario.trail()
    index = len(real) - 1 if mutation.record == "removal" else scenario.source
    forged = copy.deepcopy(real[index])
    if not any(changed(read_at(forged, p), value, mutation.field) for p in mutation.paths):
        return None
    for path in mutation.paths:
        put_at(forged, path, value)
    fed = [*real[:index], forged, *real[index + 1 :]]
    return fed, real


@st.composite
def forgeries(
    draw: st.DrawFn, scenario: Scenario
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    mutation = draw(st.sampled_from(scenario.mutations))
    value = draw(mutation.values)
    made = forge(scenario, mutation, value)
    if made is None:
        from hypothesis import assume

        assume(False)
    assert made is not None
    return f"{mutation.record} {mutation.field} = {value!r}", *made


def check(
    scenario: Scenario, forgery: tuple[str, list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    what, fed, real = forgery
    writes = asyncio.run(run_trail(scenario, fed, real))
    assert writes == [], f"forged {what}: IAM written {writes}"


PROPERTY = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


@PROPERTY
@given(forgeries(SCENARIOS["inline"]))
def test_no_forged_field_restores_an_inline_policy(
    forgery: tuple[str, list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    check(SCENARIOS["inline"], forgery)


@PROPERTY
@given(forgeries(SCENARIOS["version"]))
def test_no_forged_field_creates_a_policy_version(
    forgery: tuple[str, list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    check(SCENARIOS["version"], forgery)


@PROPERTY
@given(forgeries(SCENARIOS["boundary"]))
def test_no_forged_field_sets_a_boundary(
    forgery: tuple[str, list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    check(SCENARIOS["boundary"], forgery)


@PROPERTY
@given(forgeries(SCENARIOS["quarantine"]))
def test_no_forged_field_quarantines_anyone(
    forgery: tuple[str, list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    check(SCENARIOS["quarantine"], forgery)


EXPECTED_WRITES = {
    "inline": ["PutRolePolicy app guard"],
    "version": [f"CreatePolicyVersion {GUARD_ARN}"],
    "boundary": [f"PutRolePermissionsBoundary app {BOUNDARY}"],
    "quarantine": [f"AttachRolePolicy ops {QUARANTINE}"],
}


def test_control_the_unforged_trails_are_written() -> None:
    # The same trails, as CloudTrail recorded them: each action writes.  (So "no write" above
    # is the forgery's doing.)
    for name, scenario in SCENARIOS.items():
        real = scenario.trail()
        assert asyncio.run(run_trail(scenario, real, real)) == EXPECTED_WRITES[name], name


def test_every_field_the_issue_names_is_mutated() -> None:
    fields = {m.field for scenario in SCENARIOS.values() for m in scenario.mutations}
    assert {
        "document",
        "principal name",
        "policy name",
        "policy ARN",
        "version id",
        "set-as-default",
        "account",
        "eventTime",
        "eventName",
        "issuer ARN",
        "principal id",
        "access key id",
        "actor ARN",
        "eventID",
    } <= fields
