"""quarantine_actor with fake IAM and CloudTrail clients.

The event is confirmed through CloudTrail LookupEvents (by EventId) before anyone is quarantined,
so a forged log file cannot frame an innocent principal.  moto does not implement LookupEvents
(HTTP 500), so the integration test covers only the "cannot confirm -> wait for approval" path;
confirmation itself -- a matching event, a mismatching one, none yet -- is tested here.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from tests.factories import ACCOUNT, ATTACKER_ARN, assumed_role_identity
from tests.remediation_support import (
    FakeClock,
    FakeHistory,
    StaticClients,
    client_error,
    config_toml,
    detection,
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


class FakeCloudTrail:
    """LookupEvents answering from a dict of eventID -> CloudTrail's own record."""

    def __init__(self, events: dict[str, dict[str, Any]] | None = None) -> None:
        self.events = events or {}
        self.error: Exception | None = None
        self.calls: list[dict[str, Any]] = []

    async def lookup_events(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        [attribute] = kwargs["LookupAttributes"]
        assert attribute["AttributeKey"] == "EventId"
        found = self.events.get(attribute["AttributeValue"])
        if found is None:
            return {"Events": []}
        return {
            "Events": [
                {
                    "EventId": found["eventID"],
                    "EventName": found["eventName"],
                    "CloudTrailEvent": json.dumps(found),
                }
            ]
        }


def cloudtrail_copy(det: Detection, **changes: Any) -> dict[str, Any]:
    """CloudTrail's own copy of the event the detection came from."""
    record = {
        "eventID": det.event_id,
        "eventName": det.event_name,
        "userIdentity": {"arn": det.actor.arn},
    }
    record.update(changes)
    return record


def setup(
    det: Detection,
    cloudtrail: FakeCloudTrail,
    iam: FakeIam,
    *,
    mode: str = "enforce",
    extra: str = "",
    approved: bool = False,
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
        clock=FakeClock(),
    )


@pytest.fixture
def iam() -> FakeIam:
    return FakeIam()


async def test_a_confirmed_event_quarantines_the_user(iam: FakeIam) -> None:
    det = detection("DetachUserPolicy")
    cloudtrail = FakeCloudTrail({det.event_id or "": cloudtrail_copy(det)})
    ctx = setup(det, cloudtrail, iam)
    outcome = await quarantine_actor(ctx)
    assert (outcome.state, outcome.changed) == ("succeeded", True)
    assert iam.writes == [f"AttachUserPolicy mallory {DENY}"]
    [call] = cloudtrail.calls
    assert call["LookupAttributes"] == [{"AttributeKey": "EventId", "AttributeValue": det.event_id}]
    assert "confirmed" in ctx.audit[0].what


async def test_an_assumed_role_quarantines_the_role(iam: FakeIam) -> None:
    det = detection("DetachRolePolicy", user_identity=assumed_role_identity("deployer", "s1"))
    cloudtrail = FakeCloudTrail({det.event_id or "": cloudtrail_copy(det)})
    outcome = await quarantine_actor(setup(det, cloudtrail, iam))
    assert outcome.state == "succeeded"
    assert iam.writes == [f"AttachRolePolicy deployer {DENY}"]


@pytest.mark.parametrize(
    "changes",
    [
        {"eventName": "DetachRolePolicy"},
        {"userIdentity": {"arn": f"arn:aws:iam::{ACCOUNT}:user/someone-else"}},
    ],
    ids=["other-event-name", "other-actor"],
)
async def test_a_mismatching_event_is_not_acted_on(iam: FakeIam, changes: dict[str, Any]) -> None:
    # The log file says mallory did it; CloudTrail's own record says otherwise: forged file.
    det = detection("DetachUserPolicy")
    cloudtrail = FakeCloudTrail({det.event_id or "": cloudtrail_copy(det, **changes)})
    outcome = await quarantine_actor(setup(det, cloudtrail, iam))
    assert outcome.state == "awaiting_approval"
    assert outcome.reason is not None
    assert outcome.reason.startswith("unconfirmed: CloudTrail's own record differs")
    assert iam.writes == []


async def test_an_event_cloudtrail_does_not_show_yet_is_deferred(iam: FakeIam) -> None:
    det = detection("DetachUserPolicy")
    with pytest.raises(Deferred) as caught:
        await quarantine_actor(setup(det, FakeCloudTrail(), iam))
    assert (caught.value.reason, caught.value.final) == ("unconfirmed", "awaiting_approval")
    assert iam.writes == []


async def test_lookup_failure_waits_for_approval(iam: FakeIam) -> None:
    det = detection("DetachUserPolicy")
    cloudtrail = FakeCloudTrail()
    cloudtrail.error = client_error("AccessDeniedException", 400, "LookupEvents")
    outcome = await quarantine_actor(setup(det, cloudtrail, iam))
    assert outcome.state == "awaiting_approval"
    assert "AccessDeniedException" in (outcome.reason or "")
    assert iam.writes == []


async def test_confirm_event_verdicts() -> None:
    det = detection("DetachUserPolicy")
    cloudtrail = FakeCloudTrail({det.event_id or "": cloudtrail_copy(det)})
    ctx = setup(det, cloudtrail, FakeIam())
    assert (await confirm_event(ctx))[0] == "confirmed"
    cloudtrail.events.clear()
    assert (await confirm_event(ctx))[0] == "not_found"
    cloudtrail.error = RuntimeError("boom")
    assert (await confirm_event(ctx))[0] == "unavailable"


async def test_an_approved_job_acts_without_confirmation(iam: FakeIam) -> None:
    det = detection("DetachUserPolicy")
    cloudtrail = FakeCloudTrail()
    ctx = setup(det, cloudtrail, iam, approved=True)
    outcome = await quarantine_actor(ctx)
    assert outcome.state == "succeeded"
    assert cloudtrail.calls == []
    assert "without CloudTrail confirmation" in ctx.audit[0].what


async def test_allowlisted_actors_are_never_quarantined_even_when_approved(iam: FakeIam) -> None:
    det = detection("DetachUserPolicy")
    cloudtrail = FakeCloudTrail({det.event_id or "": cloudtrail_copy(det)})
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
    det = detection("DetachUserPolicy")
    cloudtrail = FakeCloudTrail({det.event_id or "": cloudtrail_copy(det)})
    outcome = await quarantine_actor(setup(det, cloudtrail, iam))
    assert (outcome.state, outcome.changed) == ("succeeded", False)
    assert iam.writes == []


async def test_dry_run_confirms_but_changes_nothing(iam: FakeIam) -> None:
    det = detection("DetachUserPolicy")
    cloudtrail = FakeCloudTrail({det.event_id or "": cloudtrail_copy(det)})
    ctx = setup(det, cloudtrail, iam, mode="dry-run")
    assert (await quarantine_actor(ctx)).state == "dry_run"
    assert iam.writes == []
    assert ctx.audit[-1].what.startswith("dry-run: would attach the quarantine policy")
    # Unconfirmed in dry-run: it says it would wait for approval.
    ctx = setup(det, FakeCloudTrail(), iam, mode="dry-run")
    assert (await quarantine_actor(ctx)).state == "dry_run"
    assert "would wait for approval" in ctx.audit[-1].what


async def test_deactivate_key_method(iam: FakeIam) -> None:
    det = detection("DetachUserPolicy")
    cloudtrail = FakeCloudTrail({det.event_id or "": cloudtrail_copy(det)})
    extra = 'quarantine_method = "deactivate_key"\n'
    outcome = await quarantine_actor(setup(det, cloudtrail, iam, extra=extra))
    assert (outcome.state, outcome.changed) == ("succeeded", True)
    assert iam.writes == [f"UpdateAccessKey {KEY} Inactive"]
    again = await quarantine_actor(setup(det, cloudtrail, iam, extra=extra))
    assert (again.state, again.changed) == ("succeeded", False)
    assert iam.writes == [f"UpdateAccessKey {KEY} Inactive"]


async def test_actor_gone_is_skipped(iam: FakeIam) -> None:
    iam.users.clear()
    det = detection("DetachUserPolicy")
    cloudtrail = FakeCloudTrail({det.event_id or "": cloudtrail_copy(det)})
    outcome = await quarantine_actor(setup(det, cloudtrail, iam))
    assert (outcome.state, outcome.reason) == ("skipped", "principal_gone")
