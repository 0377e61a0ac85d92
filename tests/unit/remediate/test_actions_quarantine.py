"""quarantine_actor with fake IAM and CloudTrail clients.

The event is confirmed through CloudTrail LookupEvents (by EventId) before anyone is quarantined,
so a forged log file cannot frame an innocent principal.  moto does not implement LookupEvents
(HTTP 500), so the integration test covers only the "cannot confirm -> wait for approval" path;
confirmation itself -- a matching event, a mismatching one, none yet -- is tested here (and for
the restore actions in test_actions_confirm.py).  CloudTrail's own copy of an event is the raw
record the detection was made from, changed where a test says CloudTrail saw something else.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from tests.factories import ACCOUNT, ATTACKER_ARN, assumed_role_identity, make_record
from tests.remediation_support import (
    T0,
    FakeClock,
    FakeCloudTrail,
    FakeHistory,
    StaticClients,
    approved_plan_of,
    client_error,
    config_toml,
    detection_of,
    one_job,
    remediation_config,
)
from trailguard.detect.detection import Detection
from trailguard.remediate.actions import ActionContext, Deferred, confirm_event, quarantine_actor

DENY = f"arn:aws:iam::{ACCOUNT}:policy/TrailguardQuarantine"
KEY = "AKIAEXAMPLEKEY000001"


class FakeIam:
    def __init__(self) -> None:
        self.users = {"mallory": [KEY]}
        self.roles = {"deployer"}
        self.attached: dict[tuple[str, str], list[str]] = {}
        self.key_status = {KEY: "Active"}
        self.writes: list[str] = []

    async def get_user(self, *, UserName: str) -> dict[str, Any]:
        if UserName not in self.users:
            raise client_error("NoSuchEntity", 404, "GetUser")
        return {"User": {"UserName": UserName}}

    async def get_role(self, *, RoleName: str) -> dict[str, Any]:
        if RoleName not in self.roles:
            raise client_error("NoSuchEntity", 404, "GetRole")
        return {"Role": {"RoleName": RoleName}}

    def _attached(self, kind: str, name: str) -> dict[str, Any]:
        arns = self.attached.get((kind, name), [])
        return {"AttachedPolicies": [{"PolicyArn": a} for a in arns], "IsTruncated": False}

    async def list_attached_user_policies(self, *, UserName: str) -> dict[str, Any]:
        return self._attached("user", UserName)

    async def list_attached_role_policies(self, *, RoleName: str) -> dict[str, Any]:
        return self._attached("role", RoleName)

    async def attach_user_policy(self, *, UserName: str, PolicyArn: str) -> dict[str, Any]:
        self.writes.append(f"AttachUserPolicy {UserName} {PolicyArn}")
        self.attached.setdefault(("user", UserName), []).append(PolicyArn)
        return {}

    async def attach_role_policy(self, *, RoleName: str, PolicyArn: str) -> dict[str, Any]:
        self.writes.append(f"AttachRolePolicy {RoleName} {PolicyArn}")
        self.attached.setdefault(("role", RoleName), []).append(PolicyArn)
        return {}

    async def list_access_keys(self, *, UserName: str) -> dict[str, Any]:
        return {
            "AccessKeyMetadata": [
                {"AccessKeyId": k, "Status": self.key_status[k], "UserName": UserName}
                for k in self.users.get(UserName, [])
            ]
        }

    async def update_access_key(
        self, *, UserName: str, AccessKeyId: str, Status: str
    ) -> dict[str, Any]:
        self.writes.append(f"UpdateAccessKey {AccessKeyId} {Status}")
        self.key_status[AccessKeyId] = Status
        return {}


def event(name: str = "DetachUserPolicy", **kwargs: Any) -> tuple[dict[str, Any], Detection]:
    """A raw CloudTrail record (CloudTrail's own copy of it) and the detection made of it."""
    raw = make_record(name, **kwargs)
    return raw, detection_of(raw)


def cloudtrail_copy(raw: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """CloudTrail's own record of the event, where it differs from the file."""
    return {**raw, **changes}


def setup(
    det: Detection,
    cloudtrail: FakeCloudTrail,
    iam: FakeIam,
    *,
    mode: str = "enforce",
    extra: str = "",
    approved: bool = False,
    clock: FakeClock | None = None,
) -> ActionContext:
    config = remediation_config(
        config_toml(
            mode=mode,
            actions='"quarantine_actor"',
            extra=f'quarantine_policy_arn = "{DENY}"\n{extra}',
        )
    )
    job = one_job(det, config, "quarantine_actor")
    if approved:
        job = msgspec.structs.replace(job, approved=True)
    return ActionContext(
        job,
        clients=StaticClients(iam, cloudtrail=cloudtrail),
        history=FakeHistory(),
        config=config,
        dry_run=mode == "dry-run",
        clock=clock or FakeClock(),
    )


@pytest.fixture
def iam() -> FakeIam:
    return FakeIam()


async def test_a_confirmed_event_quarantines_the_user(iam: FakeIam) -> None:
    raw, det = event()
    cloudtrail = FakeCloudTrail(raw)
    ctx = setup(det, cloudtrail, iam)
    outcome = await quarantine_actor(ctx)
    assert (outcome.state, outcome.changed) == ("succeeded", True)
    assert iam.writes == [f"AttachUserPolicy mallory {DENY}"]
    [call] = cloudtrail.calls
    assert call["LookupAttributes"] == [{"AttributeKey": "EventId", "AttributeValue": det.event_id}]
    assert "confirmed" in ctx.audit[0].what
    # Asked in the account and region that recorded the event.
    assert isinstance(ctx.clients, StaticClients)
    assert ctx.clients.cloudtrail_for == [(ACCOUNT, "us-east-1")]


async def test_an_assumed_role_quarantines_the_role(iam: FakeIam) -> None:
    raw, det = event("DetachRolePolicy", user_identity=assumed_role_identity("deployer", "s1"))
    outcome = await quarantine_actor(setup(det, FakeCloudTrail(raw), iam))
    assert outcome.state == "succeeded"
    assert iam.writes == [f"AttachRolePolicy deployer {DENY}"]


@pytest.mark.parametrize(
    "changes",
    [
        {"eventName": "DetachRolePolicy"},
        {"userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/someone-else"}},
        {"errorCode": "AccessDenied"},
        {"eventTime": "2026-10-01T12:00:00Z"},
        {"requestParameters": {"userName": "bob", "policyArn": DENY}},
    ],
    ids=["other-event-name", "other-actor", "failed", "other-time", "other-target"],
)
async def test_a_mismatching_event_is_not_acted_on(iam: FakeIam, changes: dict[str, Any]) -> None:
    # The log file says mallory did it; CloudTrail's own record says otherwise: forged file.
    raw, det = event()
    outcome = await quarantine_actor(
        setup(det, FakeCloudTrail(cloudtrail_copy(raw, **changes)), iam)
    )
    assert outcome.state == "awaiting_approval"
    assert outcome.reason is not None
    assert outcome.reason.startswith("unconfirmed: CloudTrail's own record differs")
    assert iam.writes == []


async def test_an_event_cloudtrail_does_not_show_yet_is_deferred(iam: FakeIam) -> None:
    a_minute_ago = dt.datetime.fromtimestamp(T0 - 60, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _, det = event(event_time=a_minute_ago)
    with pytest.raises(Deferred) as caught:
        await quarantine_actor(setup(det, FakeCloudTrail(), iam, clock=FakeClock(T0)))
    assert (caught.value.reason, caught.value.final) == ("unconfirmed", "awaiting_approval")
    assert caught.value.retry_after is not None
    assert iam.writes == []


async def test_an_old_event_cloudtrail_does_not_show_waits_for_approval(iam: FakeIam) -> None:
    _, det = event()  # 2026-11-01, 17 days before the clock: it would be visible by now
    outcome = await quarantine_actor(setup(det, FakeCloudTrail(), iam))
    assert outcome.state == "awaiting_approval"
    assert "LookupEvents does not show the event" in (outcome.reason or "")
    assert iam.writes == []


async def test_lookup_failure_waits_for_approval(iam: FakeIam) -> None:
    _, det = event()
    cloudtrail = FakeCloudTrail()
    cloudtrail.error = client_error("AccessDeniedException", 400, "LookupEvents")
    outcome = await quarantine_actor(setup(det, cloudtrail, iam))
    assert outcome.state == "awaiting_approval"
    assert "AccessDeniedException" in (outcome.reason or "")
    assert iam.writes == []


async def test_confirm_event_verdicts() -> None:
    raw, det = event()
    cloudtrail = FakeCloudTrail(raw)
    ctx = setup(det, cloudtrail, FakeIam())
    assert (await confirm_event(ctx))[0] == "confirmed"
    cloudtrail.events.clear()
    assert (await confirm_event(ctx))[0] == "not_found"
    cloudtrail.error = RuntimeError("boom")
    assert (await confirm_event(ctx))[0] == "unavailable"


async def test_an_approval_of_the_plan_acts(iam: FakeIam) -> None:
    _, det = event()
    cloudtrail = FakeCloudTrail()
    first = setup(det, cloudtrail, iam)
    assert (await quarantine_actor(first)).state == "awaiting_approval"
    # The operator saw "unconfirmed" and the plan (attach the quarantine policy to mallory) and
    # approved exactly that plan.
    assert first.plan is not None
    assert [(w.call, w.target) for w in first.plan.writes] == [("AttachUserPolicy", "user/mallory")]
    ctx = ActionContext(
        approved_plan_of(first.job, first.plan),
        clients=first.clients,
        history=first.history,
        config=first.config,
        dry_run=False,
        clock=FakeClock(),
    )
    outcome = await quarantine_actor(ctx)
    assert outcome.state == "succeeded"
    assert len(cloudtrail.calls) == 1  # only the first run asked
    assert f"approved plan {first.plan.sha256}" in ctx.audit[0].what


async def test_an_approval_before_any_lookup_still_needs_confirmation(iam: FakeIam) -> None:
    # Mode "approve": the operator approved before trailguard asked CloudTrail.  That approval
    # does not vouch for the file: the event is still confirmed, and a forgery waits again.
    _, det = event()
    cloudtrail = FakeCloudTrail()
    ctx = setup(det, cloudtrail, iam, approved=True)
    outcome = await quarantine_actor(ctx)
    assert outcome.state == "awaiting_approval"
    assert len(cloudtrail.calls) == 1
    assert iam.writes == []


async def test_allowlisted_actors_are_never_quarantined_even_when_approved(iam: FakeIam) -> None:
    raw, det = event()
    cloudtrail = FakeCloudTrail(raw)
    # Planned before mallory was allowlisted; the action checks again when it runs.
    planned = setup(det, cloudtrail, iam, approved=True)
    allowlisting = remediation_config(
        config_toml(
            actions='"quarantine_actor"',
            extra=f'quarantine_policy_arn = "{DENY}"\nallowlist_arns = ["{ATTACKER_ARN}"]\n',
        )
    )
    ctx = ActionContext(
        planned.job,
        clients=planned.clients,
        history=planned.history,
        config=allowlisting,
        dry_run=False,
    )
    outcome = await quarantine_actor(ctx)
    assert (outcome.state, outcome.reason) == ("skipped", "allowlisted")
    assert iam.writes == []


async def test_already_quarantined_is_a_no_op(iam: FakeIam) -> None:
    iam.attached[("user", "mallory")] = [DENY]
    raw, det = event()
    outcome = await quarantine_actor(setup(det, FakeCloudTrail(raw), iam))
    assert (outcome.state, outcome.changed) == ("succeeded", False)
    assert iam.writes == []


async def test_dry_run_confirms_but_changes_nothing(iam: FakeIam) -> None:
    raw, det = event()
    ctx = setup(det, FakeCloudTrail(raw), iam, mode="dry-run")
    assert (await quarantine_actor(ctx)).state == "dry_run"
    assert iam.writes == []
    assert ctx.audit[-1].what.startswith("dry-run: would attach the quarantine policy")
    # Unconfirmed in dry-run: it says it would wait for approval.
    ctx = setup(det, FakeCloudTrail(), iam, mode="dry-run")
    assert (await quarantine_actor(ctx)).state == "dry_run"
    assert "would wait for approval" in ctx.audit[-1].what


async def test_confirm_events_off_trusts_the_file(iam: FakeIam) -> None:
    _, det = event()
    cloudtrail = FakeCloudTrail()
    ctx = setup(det, cloudtrail, iam, extra="confirm_events = false\n")
    outcome = await quarantine_actor(ctx)
    assert outcome.state == "succeeded"
    assert cloudtrail.calls == []
    assert "confirm_events = false" in ctx.audit[0].what


async def test_deactivate_key_method(iam: FakeIam) -> None:
    raw, det = event()
    cloudtrail = FakeCloudTrail(raw)
    extra = 'quarantine_method = "deactivate_key"\n'
    outcome = await quarantine_actor(setup(det, cloudtrail, iam, extra=extra))
    assert (outcome.state, outcome.changed) == ("succeeded", True)
    assert iam.writes == [f"UpdateAccessKey {KEY} Inactive"]
    again = await quarantine_actor(setup(det, cloudtrail, iam, extra=extra))
    assert (again.state, again.changed) == ("succeeded", False)
    assert iam.writes == [f"UpdateAccessKey {KEY} Inactive"]


async def test_actor_gone_is_skipped(iam: FakeIam) -> None:
    iam.users.clear()
    raw, det = event()
    outcome = await quarantine_actor(setup(det, FakeCloudTrail(raw), iam))
    assert (outcome.state, outcome.reason) == ("skipped", "principal_gone")
