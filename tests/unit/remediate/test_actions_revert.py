"""revert_policy_change: the previous inline document, default version or boundary goes back --
only while the weakened one is live, only what CloudTrail confirms, planned only for changes.

The history is the real SQLite store fed by the trail as the daemon feeds it; the detection is
made by the daemon's own path (Detector -> history -> ChangeJudge); IAM is the fake of
tests/unit/test_actions_confirm.py; CloudTrail's LookupEvents the fake of remediation_support.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.change_support import (
    GUARDED,
    GUARDED_RELAID,
    NARROW_BOUNDARY,
    UNGUARDED,
    WIDE_BOUNDARY,
    create_policy,
    create_version,
    feed,
    policy_arn,
    put_boundary,
    put_role_policy,
    set_default,
)
from tests.remediation_support import (
    FakeClock,
    FakeCloudTrail,
    StaticClients,
    approved_plan_of,
    config_toml,
    one_job,
    remediation_config,
)
from tests.unit.remediate.test_actions_confirm import FakeIam, FakePolicy, FakeRole
from trailguard.detect.detection import Detection
from trailguard.remediate.actions import ActionContext, ActionOutcome, revert_policy_change
from trailguard.remediate.jobs import Job
from trailguard.remediate.planner import plan
from trailguard.state.policy_history_sqlite import SqliteHistoryStore

REVERT = '"revert_policy_change"'


class World:
    def __init__(self, history: SqliteHistoryStore) -> None:
        self.history = history
        self.iam = FakeIam()
        self.cloudtrail = FakeCloudTrail()
        self.clients = StaticClients(self.iam, cloudtrail=self.cloudtrail)

    async def trail(self, *raws: dict[str, Any], real: bool = True) -> Detection | None:
        """One delivery: facts recorded, changes judged; ``real``: CloudTrail shows them."""
        if real:
            self.cloudtrail.add(*raws)
        judged = await feed(self.history, *raws)
        return judged.detections[-1] if judged.detections else None

    def context(
        self, detection: Detection, *, mode: str = "enforce", job: Job | None = None
    ) -> ActionContext:
        config = remediation_config(config_toml(mode=mode, actions=REVERT))
        return ActionContext(
            job or one_job(detection, config, "revert_policy_change"),
            clients=self.clients,
            history=self.history,
            config=config,
            dry_run=mode == "dry-run",
            clock=FakeClock(),
        )


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with await SqliteHistoryStore.open(tmp_path / "history.sqlite3") as history:
        yield World(history)


def confirmations(ctx: ActionContext) -> list[str]:
    return [
        f"{e.data['event_id']}:{e.data['confirmation']}"
        for e in ctx.audit
        if e.data is not None and "confirmation" in e.data
    ]


async def weakened_inline(w: World) -> Detection:
    w.iam.roles["app"] = FakeRole(inline={"guard": UNGUARDED})
    await w.trail(put_role_policy(GUARDED, 0, "put-1"))
    detection = await w.trail(put_role_policy(UNGUARDED, 1, "put-2"))
    assert detection is not None
    return detection


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


async def test_a_weakening_change_plans_a_revert_with_the_restores_target_key(
    world: World,
) -> None:
    detection = await weakened_inline(world)
    job = one_job(
        detection, remediation_config(config_toml(actions=REVERT)), "revert_policy_change"
    )
    assert job.target_key == "123456789012:role/app:inline/guard"
    assert job.detection.change == detection.change  # the job carries the comparison


async def test_only_changes_get_a_revert(world: World) -> None:
    from tests.remediation_support import detection as removal

    config = remediation_config(config_toml(actions=REVERT))
    result = plan(removal("DeleteRolePolicy"), config)
    assert result.jobs == ()
    assert result.dropped == (("revert_policy_change", "not_a_change"),)


async def test_a_suppressed_or_own_change_plans_nothing(world: World) -> None:
    detection = await weakened_inline(world)
    config = remediation_config(config_toml(actions=REVERT))
    suppressed = msgspec.structs.replace(detection, disposition="suppressed")
    assert plan(suppressed, config).skipped == "suppressed"
    # trailguard's own revert, seen in the trail again, is never acted on
    own = remediation_config(
        config_toml(actions=REVERT, extra='own_identity_arns = ["arn:aws:iam::*:user/mallory"]')
    )
    assert plan(detection, own).skipped == "own_identity"


async def test_managed_and_boundary_target_keys(world: World) -> None:
    await world.trail(
        create_policy("Guard", GUARDED, 0, "create"),
        create_policy("Narrow", NARROW_BOUNDARY, 0, "narrow"),
        create_policy("Wide", WIDE_BOUNDARY, 0, "wide"),
        put_boundary("app", "Narrow", 0, "b-1"),
    )
    managed = await world.trail(create_version("Guard", UNGUARDED, "v2", 1, "v2"))
    boundary = await world.trail(put_boundary("app", "Wide", 2, "b-2"))
    assert managed is not None
    assert boundary is not None
    config = remediation_config(config_toml(actions=REVERT))
    assert one_job(managed, config, "revert_policy_change").target_key == (
        f"{policy_arn('Guard')}:versions"
    )
    assert one_job(boundary, config, "revert_policy_change").target_key == (
        "123456789012:role/app:boundary"
    )


# ---------------------------------------------------------------------------------------------
# Inline policies
# ---------------------------------------------------------------------------------------------


async def test_the_previous_inline_document_goes_back(world: World) -> None:
    detection = await weakened_inline(world)
    ctx = world.context(detection)
    outcome = await revert_policy_change(ctx)
    assert (outcome.state, outcome.changed) == ("succeeded", True)
    assert world.iam.roles["app"].inline == {"guard": GUARDED}
    assert world.iam.writes == ["PutRolePolicy app guard"]
    # the change (every field of the detection, and its own document) and the previous put
    assert confirmations(ctx) == ["put-2:confirmed", "put-2:confirmed", "put-1:confirmed"]
    assert world.cloudtrail.looked_up == ["put-2", "put-1"]  # one lookup per event
    assert ctx.plan is not None
    (write,) = ctx.plan.writes
    assert (write.call, write.target, write.document) == ("PutRolePolicy", "role/app", GUARDED)
    # running it again changes nothing
    again = await revert_policy_change(world.context(detection))
    assert (again.state, again.reason, again.changed) == ("succeeded", "already_in_place", False)


async def test_dry_run_writes_nothing(world: World) -> None:
    detection = await weakened_inline(world)
    outcome = await revert_policy_change(world.context(detection, mode="dry-run"))
    assert outcome.state == "dry_run"
    assert world.iam.writes == []


async def test_a_policy_changed_again_is_not_overwritten(world: World) -> None:
    detection = await weakened_inline(world)
    other = GUARDED.replace("secret", "private")
    world.iam.roles["app"].inline["guard"] = other
    outcome = await revert_policy_change(world.context(detection))
    assert (outcome.state, outcome.reason) == ("skipped", "changed_since")
    assert world.iam.roles["app"].inline["guard"] == other
    # ... nor one removed since (putting it back is restore_inline_policy's business)
    del world.iam.roles["app"].inline["guard"]
    gone = await revert_policy_change(world.context(detection))
    assert (gone.state, gone.reason) == ("skipped", "changed_since")
    assert world.iam.writes == []


async def test_a_layout_change_of_the_live_document_is_still_the_weakened_one(
    world: World,
) -> None:
    detection = await weakened_inline(world)
    world.iam.roles["app"].inline["guard"] = msgspec.json.format(UNGUARDED, indent=2)
    outcome = await revert_policy_change(world.context(detection))
    assert outcome.state == "succeeded"


async def test_history_that_changed_since_the_judgement_stops_the_revert(world: World) -> None:
    """A fact that arrived later, between the two puts, is now the previous document: the
    change was judged against something else, so a person decides."""
    detection = await weakened_inline(world)
    await world.trail(
        put_role_policy(GUARDED_RELAID, 0, "put-0b", event_time="2026-11-01T12:00:30Z")
    )
    outcome = await revert_policy_change(world.context(detection))
    assert (outcome.state, outcome.reason) == ("skipped", "history_changed")
    assert world.iam.writes == []


async def test_a_forged_previous_put_is_never_written(world: World) -> None:
    """A forged file holds a put of an Allow-* document and the real weakening after it: the
    revert would write the forgery -- CloudTrail does not know it, so the job waits."""
    allow_all = (
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
    )
    world.iam.roles["app"] = FakeRole(inline={"guard": UNGUARDED})
    deny_all = (
        '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}'
    )
    await world.trail(put_role_policy(deny_all, 0, "forged-put"), real=False)
    detection = await world.trail(put_role_policy(allow_all, 1, "real-put"))
    assert detection is not None
    world.iam.roles["app"].inline["guard"] = allow_all
    outcome = await revert_policy_change(world.context(detection))
    assert outcome.state == "awaiting_approval"
    assert outcome.reason is not None
    assert "forged-put" in outcome.reason
    assert world.iam.writes == []


async def test_a_forged_weakening_is_never_reverted(world: World) -> None:
    detection = await weakened_inline(world)
    world.cloudtrail.events.pop("put-2")  # CloudTrail never saw it
    outcome = await revert_policy_change(world.context(detection))
    assert outcome.state == "awaiting_approval"
    assert world.iam.writes == []


async def test_an_approved_plan_is_written(world: World) -> None:
    detection = await weakened_inline(world)
    world.cloudtrail.events.pop("put-1")
    ctx = world.context(detection)
    waiting: ActionOutcome = await revert_policy_change(ctx)
    assert waiting.state == "awaiting_approval"
    approved = approved_plan_of(ctx.job, ctx.plan)
    done = await revert_policy_change(world.context(detection, job=approved))
    assert done.state == "succeeded"
    assert world.iam.roles["app"].inline == {"guard": GUARDED}


# ---------------------------------------------------------------------------------------------
# Managed policies
# ---------------------------------------------------------------------------------------------


async def test_the_previous_default_version_is_made_default_again(world: World) -> None:
    arn = policy_arn("Guard")
    world.iam.policies[arn] = FakePolicy(
        "Guard", "/", {"v1": GUARDED, "v2": UNGUARDED}, "v2", next_version=3
    )
    await world.trail(create_policy("Guard", GUARDED, 0, "create"))
    detection = await world.trail(create_version("Guard", UNGUARDED, "v2", 1, "v2-weak"))
    assert detection is not None
    ctx = world.context(detection)
    outcome = await revert_policy_change(ctx)
    assert (outcome.state, outcome.changed) == ("succeeded", True)
    assert world.iam.policies[arn].default == "v1"
    assert world.iam.writes == [f"SetDefaultPolicyVersion {arn} v1"]
    assert confirmations(ctx) == [
        "v2-weak:confirmed",
        "v2-weak:confirmed",
        "create:confirmed",
        "create:confirmed",
    ]


async def test_a_rollback_is_rolled_forward(world: World) -> None:
    arn = policy_arn("Guard")
    world.iam.policies[arn] = FakePolicy(
        "Guard", "/", {"v1": UNGUARDED, "v2": GUARDED}, "v1", next_version=3
    )
    await world.trail(
        create_policy("Guard", UNGUARDED, 0, "create"),
        create_version("Guard", GUARDED, "v2", 1, "v2-fix"),
    )
    detection = await world.trail(set_default("Guard", "v1", 2, "rollback"))
    assert detection is not None
    outcome = await revert_policy_change(world.context(detection))
    assert outcome.state == "succeeded"
    assert world.iam.policies[arn].default == "v2"


async def test_a_deleted_previous_version_is_created_again(world: World) -> None:
    arn = policy_arn("Guard")
    world.iam.policies[arn] = FakePolicy("Guard", "/", {"v2": UNGUARDED}, "v2", next_version=3)
    await world.trail(create_policy("Guard", GUARDED, 0, "create"))
    detection = await world.trail(create_version("Guard", UNGUARDED, "v2", 1, "v2-weak"))
    assert detection is not None
    outcome = await revert_policy_change(world.context(detection))
    assert outcome.state == "succeeded"
    policy = world.iam.policies[arn]
    assert policy.default == "v3"
    assert policy.versions["v3"] == GUARDED
    assert world.iam.writes == [f"CreatePolicyVersion {arn}"]


async def test_five_versions_and_none_holds_the_previous_document(world: World) -> None:
    arn = policy_arn("Guard")
    versions = {f"v{n}": UNGUARDED.replace("data", f"data{n}") for n in range(2, 7)}
    world.iam.policies[arn] = FakePolicy("Guard", "/", versions, "v6", next_version=7)
    await world.trail(create_policy("Guard", GUARDED, 0, "create"))
    detection = await world.trail(create_version("Guard", versions["v6"], "v6", 1, "v6-weak"))
    assert detection is not None
    outcome = await revert_policy_change(world.context(detection))
    assert (outcome.state, outcome.reason) == ("skipped", "version_limit")
    assert world.iam.writes == []


async def test_a_default_moved_on_since_is_not_overwritten(world: World) -> None:
    arn = policy_arn("Guard")
    world.iam.policies[arn] = FakePolicy(
        "Guard", "/", {"v1": GUARDED, "v2": UNGUARDED, "v3": GUARDED}, "v3", next_version=4
    )
    await world.trail(create_policy("Guard", GUARDED, 0, "create"))
    detection = await world.trail(create_version("Guard", UNGUARDED, "v2", 1, "v2-weak"))
    assert detection is not None
    outcome = await revert_policy_change(world.context(detection))
    # someone put the previous document back as v3: nothing to do
    assert (outcome.state, outcome.reason) == ("succeeded", "already_in_place")
    world.iam.policies[arn].versions["v3"] = WIDE_BOUNDARY
    moved = await revert_policy_change(world.context(detection))
    assert (moved.state, moved.reason) == ("skipped", "changed_since")
    assert world.iam.writes == []


# ---------------------------------------------------------------------------------------------
# Permissions boundaries
# ---------------------------------------------------------------------------------------------


async def boundary_world(w: World) -> Detection:
    w.iam.roles["app"] = FakeRole(boundary=policy_arn("Wide"))
    for name, doc in (("Narrow", NARROW_BOUNDARY), ("Wide", WIDE_BOUNDARY)):
        w.iam.policies[policy_arn(name)] = FakePolicy(name, "/", {"v1": doc}, "v1")
    await w.trail(
        create_policy("Narrow", NARROW_BOUNDARY, 0, "narrow"),
        create_policy("Wide", WIDE_BOUNDARY, 0, "wide"),
        put_boundary("app", "Narrow", 1, "set-narrow"),
    )
    detection = await w.trail(put_boundary("app", "Wide", 2, "set-wide"))
    assert detection is not None
    return detection


async def test_the_previous_boundary_goes_back(world: World) -> None:
    detection = await boundary_world(world)
    ctx = world.context(detection)
    outcome = await revert_policy_change(ctx)
    assert (outcome.state, outcome.changed) == ("succeeded", True)
    assert world.iam.roles["app"].boundary == policy_arn("Narrow")
    assert confirmations(ctx) == [
        "set-wide:confirmed",
        "set-wide:confirmed",
        "set-narrow:confirmed",
    ]


async def test_a_boundary_changed_again_is_not_overwritten(world: World) -> None:
    detection = await boundary_world(world)
    world.iam.roles["app"].boundary = None  # removed since: a restore's business
    outcome = await revert_policy_change(world.context(detection))
    assert (outcome.state, outcome.reason) == ("skipped", "changed_since")
    assert world.iam.writes == []


async def test_a_previous_boundary_policy_that_is_gone_waits(world: World) -> None:
    from trailguard.remediate.actions import Deferred

    detection = await boundary_world(world)
    del world.iam.policies[policy_arn("Narrow")]
    with pytest.raises(Deferred, match="does not exist"):
        await revert_policy_change(world.context(detection))
    assert world.iam.writes == []
