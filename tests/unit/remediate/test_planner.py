"""plan_jobs: which jobs a detection gets -- policies, fitting, modes, loop prevention,
allowlist, and idempotent ids."""

from __future__ import annotations

import msgspec
import pytest

from tests.factories import ACCOUNT, REMOVALS, assumed_role_identity, iam_user_identity
from tests.remediation_support import ALL_RESTORES, T0, config_toml, detection, remediation_config
from trailguard.aws import USER_AGENT_EXTRA
from trailguard.detect.detection import Detection
from trailguard.remediate.jobs import job_id
from trailguard.remediate.planner import RESTORE_ACTION_FOR_EVENT, plan, plan_jobs

EVERYTHING = ALL_RESTORES + ', "quarantine_actor", "audit_actor", "notify"'
NOTIFY = '[remediation.notify]\nwebhook_url = "https://hooks.example.com/T0/SECRET"\n'


def actions(det: Detection, toml: str) -> dict[str, str]:
    return {job.action: job.state for job in plan_jobs(det, remediation_config(toml), now=T0)}


@pytest.mark.parametrize("event_name", sorted(REMOVALS))
def test_each_removal_plans_exactly_its_restore_action(event_name: str) -> None:
    det = detection(event_name)
    planned = actions(det, config_toml(actions=ALL_RESTORES))
    assert planned == {RESTORE_ACTION_FOR_EVENT[event_name]: "pending"}


def test_job_fields() -> None:
    det = detection("DeleteRolePolicy", event_id="evt-42")
    [job] = plan_jobs(det, remediation_config(config_toml()), now=T0)
    assert job.id == job_id("evt-42", "restore_inline_policy")
    assert job.account_id == ACCOUNT
    assert job.target_key == f"{ACCOUNT}:role/app-role:inline/inline-guard"
    assert (job.state, job.mode, job.attempts, job.next_attempt_at) == ("pending", "enforce", 0, T0)
    assert job.detection.event_id == "evt-42"
    assert job.detection.target.policy_name == "inline-guard"
    assert job.audit[0].step == "planned"


def test_planning_twice_gives_the_same_ids() -> None:
    det = detection("DeleteRolePolicy")
    config = remediation_config(config_toml(actions=EVERYTHING, extra=NOTIFY))
    first = [j.id for j in plan_jobs(det, config, now=T0)]
    assert first == [j.id for j in plan_jobs(det, config, now=T0 + 999)]
    assert len(set(first)) == len(first) == 4  # restore, quarantine, audit, notify


def test_suppressed_detections_plan_nothing() -> None:
    det = detection(
        "DeleteRolePolicy",
        user_identity=assumed_role_identity("ci-deployer", "run-1"),
        user_agent="APN/1.0 HashiCorp/1.0 Terraform/1.5.7 terraform-provider-aws/5.31.0",
    )
    # The default rules have no suppression: mark it suppressed as the rule engine would.
    det = msgspec.structs.replace(det, disposition="suppressed", suppressed_by="suppress[0]")
    result = plan(det, remediation_config(config_toml()), now=T0)
    assert result.jobs == ()
    assert result.skipped == "suppressed"


def test_nothing_without_a_policy_or_an_event_id() -> None:
    det = detection("DeleteRolePolicy")
    assert plan(det, remediation_config(""), now=T0).skipped == "no_policy"
    no_id = msgspec.structs.replace(det, event_id=None)
    assert plan(no_id, remediation_config(config_toml()), now=T0).skipped == "no_event_id"


def test_policy_matching_rules_outcomes_severity_accounts() -> None:
    det = detection("DeletePolicyVersion")  # medium severity
    base = 'actions = ["restore_policy_version"]\n'

    def with_policy(body: str) -> dict[str, str]:
        return actions(det, '[remediation]\nmode = "enforce"\n[[remediation.policies]]\n' + body)

    assert with_policy('rules = ["iam-delete-policy-version"]\nmin_severity = "medium"\n' + base)
    assert not with_policy('rules = ["iam-delete-policy-version"]\n' + base)  # default high
    assert not with_policy('rules = ["iam-delete-policy"]\nmin_severity = "low"\n' + base)
    assert not with_policy('rules = ["*"]\nmin_severity = "low"\noutcomes = ["failure"]\n' + base)
    assert with_policy(f'rules = ["*"]\nmin_severity = "low"\naccounts = ["{ACCOUNT}"]\n' + base)
    assert not with_policy(
        'rules = ["*"]\nmin_severity = "low"\naccounts = ["111122223333"]\n' + base
    )


def test_actions_of_several_matching_policies_are_merged_once() -> None:
    det = detection("DeleteRolePolicy")
    toml = (
        '[remediation]\nmode = "enforce"\n'
        '[[remediation.policies]]\nrules = ["*"]\n'
        'actions = ["restore_inline_policy", "audit_actor"]\n'
        '[[remediation.policies]]\nrules = ["iam-delete-role-policy"]\nactions = ["audit_actor"]\n'
    )
    assert sorted(actions(det, toml)) == ["audit_actor", "restore_inline_policy"]


def test_failed_removals_get_no_restore_but_may_get_audit_and_notify() -> None:
    det = detection("DeleteRolePolicy", error_code="AccessDenied")
    toml = (
        '[remediation]\nmode = "enforce"\n'
        '[[remediation.policies]]\nrules = ["*"]\noutcomes = ["success", "failure"]\n'
        'min_severity = "low"\nactions = [' + EVERYTHING + "]\n" + NOTIFY
    )
    result = plan(det, remediation_config(toml), now=T0)
    assert sorted(j.action for j in result.jobs) == ["audit_actor", "notify", "quarantine_actor"]
    assert ("restore_inline_policy", "removal_failed") in result.dropped


def test_modes_and_overrides() -> None:
    det = detection("DeleteRolePolicy")
    extra = (
        NOTIFY + '[remediation.action_modes]\nnotify = "enforce"\naudit_actor = "off"\n'
        'quarantine_actor = "approve"\n'
    )
    planned = plan_jobs(
        det,
        remediation_config(config_toml(mode="dry-run", actions=EVERYTHING, extra=extra)),
        now=T0,
    )
    by_action = {j.action: (j.state, j.mode) for j in planned}
    assert by_action == {
        "restore_inline_policy": ("pending", "dry-run"),
        "quarantine_actor": ("awaiting_approval", "approve"),
        "notify": ("pending", "enforce"),
    }
    quarantine = next(j for j in planned if j.action == "quarantine_actor")
    assert quarantine.reason == "approval required (mode approve)"


def test_default_mode_is_dry_run() -> None:
    det = detection("DeleteRolePolicy")
    toml = '[[remediation.policies]]\nrules = ["*"]\nactions = ["restore_inline_policy"]\n'
    [job] = plan_jobs(det, remediation_config(toml), now=T0)
    assert (job.state, job.mode) == ("pending", "dry-run")


def test_notify_needs_a_destination() -> None:
    det = detection("DeleteRolePolicy")
    result = plan(det, remediation_config(config_toml(actions='"notify"')), now=T0)
    assert result.jobs == ()
    assert result.dropped == (("notify", "no_notify_target"),)


# -- loop prevention ----------------------------------------------------------------------------

OWN_ROLE = "arn:aws:iam::{account_id}:role/trailguard-remediation"


def test_events_by_the_role_of_the_template_are_never_remediated() -> None:
    det = detection(
        "DeleteRolePolicy", user_identity=assumed_role_identity("trailguard-remediation", "tg")
    )
    toml = config_toml(actions=EVERYTHING, extra=f'role_arn_template = "{OWN_ROLE}"\n' + NOTIFY)
    result = plan(det, remediation_config(toml), now=T0)
    assert result.jobs == ()
    assert result.skipped == "own_identity"


def test_events_by_configured_own_identities_are_never_remediated() -> None:
    arn = f"arn:aws:iam::{ACCOUNT}:user/trailguard"
    det = detection("DetachRolePolicy", user_identity=iam_user_identity(arn))
    toml = config_toml(extra='own_identity_arns = ["arn:aws:iam::*:user/trailguard"]\n')
    assert plan(det, remediation_config(toml), now=T0).skipped == "own_identity"


def test_user_agent_marker_alone_counts_only_without_a_configured_identity() -> None:
    det = detection("DeleteRolePolicy", user_agent=f"aiobotocore/2.13 {USER_AGENT_EXTRA}")
    assert plan(det, remediation_config(config_toml()), now=T0).skipped == "own_user_agent"
    # With an identity configured, the marker from someone else is a spoof: remediate anyway.
    toml = config_toml(extra=f'role_arn_template = "{OWN_ROLE}"\n')
    result = plan(det, remediation_config(toml), now=T0)
    assert result.spoofed_marker
    assert [j.action for j in result.jobs] == ["restore_inline_policy"]
    assert "user-agent marker" in result.jobs[0].audit[-1].what


def test_a_lookalike_marker_is_not_the_marker() -> None:
    det = detection("DeleteRolePolicy", user_agent="my-trailguard/1.0 notreally")
    result = plan(det, remediation_config(config_toml()), now=T0)
    assert len(result.jobs) == 1
    assert not result.spoofed_marker


# -- actors ------------------------------------------------------------------------------------


def test_allowlisted_actors_are_never_quarantined() -> None:
    det = detection(
        "DetachUserPolicy", user_identity=assumed_role_identity("break-glass", "oncall")
    )
    toml = config_toml(
        actions='"quarantine_actor", "audit_actor"',
        extra=f'allowlist_arns = ["arn:aws:iam::{ACCOUNT}:role/break-glass"]\n',
    )
    result = plan(det, remediation_config(toml), now=T0)
    assert result.jobs == ()
    assert set(result.dropped) == {
        ("quarantine_actor", "allowlisted"),
        ("audit_actor", "actor_not_user"),  # the hygiene checks are about IAM users
    }


def test_quarantine_targets_the_acting_principal_in_its_own_account() -> None:
    role = assumed_role_identity("deployer", "s1")
    role["sessionContext"]["sessionIssuer"]["arn"] = "arn:aws:iam::111122223333:role/deployer"
    det = detection("DetachUserPolicy", user_identity=role)
    [job] = plan_jobs(det, remediation_config(config_toml(actions='"quarantine_actor"')), now=T0)
    assert job.account_id == "111122223333"
    assert job.target_key == "111122223333:role/deployer:quarantine"


def test_root_and_services_cannot_be_quarantined_or_audited() -> None:
    root = {"type": "Root", "arn": f"arn:aws:iam::{ACCOUNT}:root", "accountId": ACCOUNT}
    det = detection("DeleteUserPolicy", user_identity=root)
    result = plan(det, remediation_config(config_toml(actions='"quarantine_actor", "audit_actor"')))
    assert result.jobs == ()
    assert set(result.dropped) == {
        ("quarantine_actor", "actor_not_iam_principal"),
        ("audit_actor", "actor_not_iam_principal"),
    }


def test_restore_needs_the_names_it_acts_on() -> None:
    det = detection("DeleteRolePolicy", {"roleName": "app-role"})  # no policyName
    result = plan(det, remediation_config(config_toml()), now=T0)
    assert result.jobs == ()
    assert ("restore_inline_policy", "incomplete_target") in result.dropped
