"""restore_permissions_boundary below the HTTP layer, with a fake IAM client.

moto does not implement PutUserPermissionsBoundary / DeleteUserPermissionsBoundary (its server
answers HTTP 500), so the user path cannot be tested against moto; the role path is tested
against moto in tests/integration/test_remediation_moto.py and here too, for symmetry.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.factories import ACCOUNT
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
from trailguard.errors import PermanentError
from trailguard.remediate.actions import ActionContext, Deferred, restore_permissions_boundary

BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/DevBoundary"
OTHER = f"arn:aws:iam::{ACCOUNT}:policy/OtherBoundary"


def no_such_entity(operation: str) -> ClientError:
    return client_error("NoSuchEntity", 404, operation)


class FakeIam:
    """Users and roles with an optional boundary; managed policies by ARN."""

    def __init__(self) -> None:
        self.users: dict[str, str | None] = {}
        self.roles: dict[str, str | None] = {}
        self.policies: set[str] = {BOUNDARY, OTHER}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_put: ClientError | None = None

    @staticmethod
    def _principal(name: str, arn: str, boundary: str | None, key: str) -> dict[str, Any]:
        out: dict[str, Any] = {key: name, "Arn": arn}
        if boundary is not None:
            out["PermissionsBoundary"] = {
                "PermissionsBoundaryType": "PermissionsBoundaryPolicy",
                "PermissionsBoundaryArn": boundary,
            }
        return out

    async def get_user(self, *, UserName: str) -> dict[str, Any]:
        self.calls.append(("GetUser", {"UserName": UserName}))
        if UserName not in self.users:
            raise no_such_entity("GetUser")
        arn = f"arn:aws:iam::{ACCOUNT}:user/{UserName}"
        return {"User": self._principal(UserName, arn, self.users[UserName], "UserName")}

    async def get_role(self, *, RoleName: str) -> dict[str, Any]:
        self.calls.append(("GetRole", {"RoleName": RoleName}))
        if RoleName not in self.roles:
            raise no_such_entity("GetRole")
        arn = f"arn:aws:iam::{ACCOUNT}:role/{RoleName}"
        return {"Role": self._principal(RoleName, arn, self.roles[RoleName], "RoleName")}

    async def get_policy(self, *, PolicyArn: str) -> dict[str, Any]:
        self.calls.append(("GetPolicy", {"PolicyArn": PolicyArn}))
        if PolicyArn not in self.policies:
            raise no_such_entity("GetPolicy")
        return {"Policy": {"Arn": PolicyArn}}

    async def put_user_permissions_boundary(
        self,
        *,
        UserName: str,
        PermissionsBoundary: str,
    ) -> dict[str, Any]:
        self.calls.append(("PutUserPermissionsBoundary", {"UserName": UserName}))
        if self.fail_put is not None:
            raise self.fail_put
        self.users[UserName] = PermissionsBoundary
        return {}

    async def put_role_permissions_boundary(
        self,
        *,
        RoleName: str,
        PermissionsBoundary: str,
    ) -> dict[str, Any]:
        self.calls.append(("PutRolePermissionsBoundary", {"RoleName": RoleName}))
        self.roles[RoleName] = PermissionsBoundary
        return {}

    def writes(self) -> list[str]:
        return [name for name, _ in self.calls if name.startswith("Put")]


def context(
    event_name: str, params: dict[str, str], iam: FakeIam, history: FakeHistory, mode: str
) -> ActionContext:
    # These tests are about the boundary itself; CloudTrail confirmation of the removal and of the
    # event that set the boundary is tested in test_actions_confirm.py.
    config = remediation_config(
        config_toml(
            mode=mode, actions='"restore_permissions_boundary"', extra="confirm_events = false\n"
        )
    )
    job = one_job(detection(event_name, params), config, "restore_permissions_boundary")
    return ActionContext(
        job,
        clients=StaticClients(iam),
        history=history,
        config=config,
        dry_run=mode == "dry-run",
        clock=FakeClock(),
    )


USER_EVENT = ("DeleteUserPermissionsBoundary", {"userName": "carol"})
ROLE_EVENT = ("DeleteRolePermissionsBoundary", {"roleName": "lambda-exec"})


@pytest.fixture
def iam() -> FakeIam:
    fake = FakeIam()
    fake.users["carol"] = None  # the boundary was just deleted
    fake.roles["lambda-exec"] = None
    return fake


@pytest.fixture
def history() -> FakeHistory:
    fake = FakeHistory()
    fake.boundaries[(ACCOUNT, "user", "carol")] = BOUNDARY
    fake.boundaries[(ACCOUNT, "role", "lambda-exec")] = BOUNDARY
    return fake


async def test_user_boundary_is_put_back(iam: FakeIam, history: FakeHistory) -> None:
    ctx = context(*USER_EVENT, iam, history, "enforce")
    outcome = await restore_permissions_boundary(ctx)
    assert (outcome.state, outcome.changed) == ("succeeded", True)
    assert iam.users["carol"] == BOUNDARY
    assert iam.writes() == ["PutUserPermissionsBoundary"]
    assert [e.step for e in ctx.audit] == ["before", "note", "did", "after"]
    assert ctx.audit[1].what.startswith("confirm_events = false: acting without")
    # The history was asked for the boundary as it was just before the removal event.
    assert history.queries == [("boundary", "2026-11-01T12:00:00Z")]


async def test_role_boundary_is_put_back(iam: FakeIam, history: FakeHistory) -> None:
    outcome = await restore_permissions_boundary(context(*ROLE_EVENT, iam, history, "enforce"))
    assert outcome.state == "succeeded"
    assert iam.roles["lambda-exec"] == BOUNDARY


async def test_running_twice_changes_nothing(iam: FakeIam, history: FakeHistory) -> None:
    await restore_permissions_boundary(context(*USER_EVENT, iam, history, "enforce"))
    ctx = context(*USER_EVENT, iam, history, "enforce")
    outcome = await restore_permissions_boundary(ctx)
    assert (outcome.state, outcome.changed, outcome.reason) == (
        "succeeded",
        False,
        "already_in_place",
    )
    assert iam.writes() == ["PutUserPermissionsBoundary"]  # only the first run wrote


async def test_dry_run_reads_and_records_the_plan(iam: FakeIam, history: FakeHistory) -> None:
    ctx = context(*USER_EVENT, iam, history, "dry-run")
    outcome = await restore_permissions_boundary(ctx)
    assert outcome.state == "dry_run"
    assert iam.writes() == []
    assert iam.users["carol"] is None
    assert ctx.audit[-1].step == "plan"
    assert BOUNDARY in ctx.audit[-1].what


async def test_another_boundary_now_is_not_overwritten(iam: FakeIam, history: FakeHistory) -> None:
    iam.users["carol"] = OTHER
    outcome = await restore_permissions_boundary(context(*USER_EVENT, iam, history, "enforce"))
    assert (outcome.state, outcome.reason) == ("skipped", "changed_since")
    assert iam.writes() == []


async def test_principal_gone_is_skipped(iam: FakeIam, history: FakeHistory) -> None:
    del iam.users["carol"]
    outcome = await restore_permissions_boundary(context(*USER_EVENT, iam, history, "enforce"))
    assert (outcome.state, outcome.reason) == ("skipped", "principal_gone")


async def test_no_history_is_skipped(iam: FakeIam) -> None:
    outcome = await restore_permissions_boundary(
        context(*USER_EVENT, iam, FakeHistory(), "enforce")
    )
    assert (outcome.state, outcome.reason) == ("skipped", "no_history")


async def test_missing_boundary_policy_is_deferred(iam: FakeIam, history: FakeHistory) -> None:
    iam.policies.discard(BOUNDARY)
    with pytest.raises(Deferred) as caught:
        await restore_permissions_boundary(context(*USER_EVENT, iam, history, "enforce"))
    assert caught.value.reason == "policy_gone"
    assert iam.writes() == []


async def test_access_denied_is_permanent(iam: FakeIam, history: FakeHistory) -> None:
    iam.fail_put = client_error("AccessDenied", 403, "PutUserPermissionsBoundary")
    with pytest.raises(PermanentError, match="AccessDenied"):
        await restore_permissions_boundary(context(*USER_EVENT, iam, history, "enforce"))
