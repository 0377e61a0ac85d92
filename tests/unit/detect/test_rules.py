"""The rule engine: the built-in pack, overrides, escalations and suppressions."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailguard.config import Config, parse_config
from trailguard.detect.record import Record
from trailguard.detect.rules import (
    DEFAULT_RULES,
    PRESETS,
    SEVERITIES,
    USER_AGENT_PRESETS,
    Match,
    RuleSet,
    UserAgentPreset,
    glob_regex,
)
from trailguard.vocabulary import CHANGE_EVENT_NAMES

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT / "tests" / "data" / "corpus"
ACCOUNT = "111122223333"
USER_ARN = f"arn:aws:iam::{ACCOUNT}:user/mallory"
CI_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer/run-42"
TERRAFORM_UA = (
    "APN/1.0 HashiCorp/1.0 Terraform/1.5.7 (+https://www.terraform.io)"
    " terraform-provider-aws/5.31.0 (+https://registry.terraform.io/providers/hashicorp/aws)"
    " aws-sdk-go-v2/1.24.0 os/linux"
    " lang/go#1.21.5 md/GOOS#linux md/GOARCH#amd64 api/iam#1.28.5"
)
OLD_TERRAFORM_UA = (
    "aws-sdk-go/1.44.122 (go1.19.3; linux; amd64) APN/1.0 HashiCorp/1.0 Terraform/1.3.6"
)
PULUMI_UA = "APN/1.0 Pulumi/1.0 PulumiAwsNative/0.99 aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21.5"
CLI_UA = (
    "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.debian.12 command/iam.delete-role-policy"
)

# requestParameters per API as the IAM API reference names them.
PARAMS: dict[str, dict[str, str]] = {
    "DeleteUserPolicy": {"userName": "alice", "policyName": "s3-read"},
    "DeleteRolePolicy": {"roleName": "app", "policyName": "inline-deny"},
    "DeleteGroupPolicy": {"groupName": "devs", "policyName": "deny-prod"},
    "DeletePolicy": {"policyArn": f"arn:aws:iam::{ACCOUNT}:policy/team/Guard"},
    "DeletePolicyVersion": {"policyArn": f"arn:aws:iam::{ACCOUNT}:policy/Guard", "versionId": "v2"},
    "DetachUserPolicy": {"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
    "DetachRolePolicy": {"roleName": "ci", "policyArn": f"arn:aws:iam::{ACCOUNT}:policy/DenyAll"},
    "DetachGroupPolicy": {"groupName": "ops", "policyArn": "arn:aws:iam::aws:policy/PowerUser"},
    "DeleteUserPermissionsBoundary": {"userName": "carol"},
    "DeleteRolePermissionsBoundary": {"roleName": "lambda-exec"},
}
# (rule id, severity on success, severity on failure) with the default config.
EXPECTED: dict[str, tuple[str, str, str]] = {
    "DeleteUserPolicy": ("iam-delete-user-policy", "high", "medium"),
    "DeleteRolePolicy": ("iam-delete-role-policy", "high", "medium"),
    "DeleteGroupPolicy": ("iam-delete-group-policy", "high", "medium"),
    "DeletePolicy": ("iam-delete-policy", "high", "medium"),
    "DeletePolicyVersion": ("iam-delete-policy-version", "medium", "low"),
    "DetachUserPolicy": ("iam-detach-user-policy", "high", "medium"),
    "DetachRolePolicy": ("iam-detach-role-policy", "high", "medium"),
    "DetachGroupPolicy": ("iam-detach-group-policy", "high", "medium"),
    # Boundary removal escalates failures to high as well.
    "DeleteUserPermissionsBoundary": ("iam-delete-user-permissions-boundary", "high", "high"),
    "DeleteRolePermissionsBoundary": ("iam-delete-role-permissions-boundary", "high", "high"),
}


def identity(
    arn: str = USER_ARN,
    *,
    type: str | None = None,
    invoked_by: str | None = None,
    mfa: str | bool | None = None,
    issuer_arn: str | None = None,
) -> dict[str, Any]:
    kind = type or ("AssumedRole" if ":assumed-role/" in arn else "IAMUser")
    ident: dict[str, Any] = {"type": kind, "arn": arn, "accountId": ACCOUNT, "principalId": "P"}
    if invoked_by is not None:
        ident["invokedBy"] = invoked_by
    if mfa is not None or issuer_arn is not None:
        ident["sessionContext"] = {
            "attributes": {"mfaAuthenticated": mfa, "creationDate": "2026-11-01T10:00:00Z"},
            "sessionIssuer": {"type": "Role", "arn": issuer_arn},
        }
    return ident


def record(event_name: str | None = "DeleteRolePolicy", **fields: Any) -> Record:
    """A record as CloudTrail writes it (camelCase keys); keyword arguments override fields."""
    data: dict[str, Any] = {
        "eventVersion": "1.09",
        "eventName": event_name,
        "eventSource": "iam.amazonaws.com",
        "eventID": "4f0a5c2e-0000-4000-8000-000000000001",
        "eventTime": "2026-11-01T12:00:00Z",
        "awsRegion": "us-east-1",
        "recipientAccountId": ACCOUNT,
        "userIdentity": identity(),
        "sourceIPAddress": "198.51.100.7",
        "userAgent": CLI_UA,
        "requestParameters": PARAMS.get(event_name or "", {}),
    }
    data.update(fields)
    return msgspec.convert({k: v for k, v in data.items() if v is not None}, Record)


def failed(event_name: str = "DeleteRolePolicy", **fields: Any) -> Record:
    return record(event_name, errorCode="AccessDenied", errorMessage="not authorized", **fields)


def ruleset(toml: str = "") -> RuleSet:
    return RuleSet.from_config(parse_config(toml, file="t.toml"))


DEFAULT = RuleSet.from_config(Config())


# --------------------------------------------------------------------------------------------
# The built-in pack
# --------------------------------------------------------------------------------------------


def test_builtin_pack_has_one_rule_per_api() -> None:
    removals = [r for r in DEFAULT_RULES if not r.verdicts]
    assert {r.event_names[0]: r.id for r in removals} == {k: v[0] for k, v in EXPECTED.items()}
    assert all(len(r.event_names) == 1 for r in removals)
    assert all(r.event_source == "iam.amazonaws.com" for r in DEFAULT_RULES)
    assert all(
        SEVERITIES.index(r.severity_success) > SEVERITIES.index(r.severity_failure)
        for r in DEFAULT_RULES
    )
    assert DEFAULT.event_names == frozenset(PARAMS) | frozenset(CHANGE_EVENT_NAMES)


def test_the_change_rules_judge_every_change_api_by_verdict() -> None:
    changes = {r.id: r for r in DEFAULT_RULES if r.verdicts}
    assert set(changes) == {"iam-policy-weakened", "iam-policy-possibly-weakened"}
    assert changes["iam-policy-weakened"].verdicts == ("weakened",)
    assert changes["iam-policy-possibly-weakened"].verdicts == ("possibly_weakened",)
    for rule in changes.values():
        assert rule.event_names == CHANGE_EVENT_NAMES
        assert rule.outcomes == ("success",)
    assert DEFAULT.change_event_names == frozenset(CHANGE_EVENT_NAMES)


@pytest.mark.parametrize("api", list(PARAMS))
def test_each_api_success(api: str) -> None:
    rule, success, _ = EXPECTED[api]
    assert DEFAULT.evaluate(record(api)) == Match(rule, success, "success", "alert", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("api", list(PARAMS))
def test_each_api_failure(api: str) -> None:
    rule, _, failure = EXPECTED[api]
    assert DEFAULT.evaluate(failed(api)) == Match(rule, failure, "failure", "alert", None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [{"errorCode": "NoSuchEntity"}, {"errorMessage": "The role with name x cannot be found."}],
)
def test_error_code_or_message_alone_is_a_failure(fields: dict[str, str]) -> None:
    match = DEFAULT.evaluate(record("DeleteUserPolicy", **fields))
    assert match is not None
    assert match.outcome == "failure"


@pytest.mark.parametrize(
    ("event_name", "event_source"),
    [
        ("DeletePolicy", "organizations.amazonaws.com"),
        ("DetachPolicy", "organizations.amazonaws.com"),
        ("DeleteBucketPolicy", "s3.amazonaws.com"),
        ("DeleteAccountPasswordPolicy", "iam.amazonaws.com"),
        ("DeleteRolePolicy", "sts.amazonaws.com"),
        ("DeleteRolePolicy", "IAM.amazonaws.com"),
        ("DeleteRolePolicy", None),
        ("deleterolepolicy", "iam.amazonaws.com"),
        ("PutRolePolicy", "iam.amazonaws.com"),
        ("AttachRolePolicy", "iam.amazonaws.com"),
        ("DeleteResourcePolicy", "secretsmanager.amazonaws.com"),
        ("DeleteKeyPolicy", "kms.amazonaws.com"),
        (None, "iam.amazonaws.com"),
    ],
)
def test_look_alikes_do_not_match(event_name: str | None, event_source: str | None) -> None:
    assert DEFAULT.evaluate(record(event_name, eventSource=event_source)) is None


def test_sparse_records_do_not_crash() -> None:
    for data in (
        {},
        {"eventName": "DeleteRolePolicy"},
        {"eventName": "DeleteRolePolicy", "eventSource": "iam.amazonaws.com"},
        {
            "eventName": "DetachRolePolicy",
            "eventSource": "iam.amazonaws.com",
            "userIdentity": {},
            "requestParameters": {"policyArn": 7},
            "sessionCredentialFromConsole": "true",
        },
    ):
        rec = msgspec.convert(data, Record)
        everything = ruleset(
            '[[suppress]]\nactor_arn = ["arn:*:*:*:*:*"]\nidentity_type = ["IAMUser"]\n'
            'invoked_by = ["*"]\nuser_agent = ["x"]\nsource_ip = ["0.0.0.0/0"]\n'
            'account_id = ["111122223333"]\nuser_agent_preset = ["terraform", "pulumi",'
            ' "cloudformation", "aws-service-linked-role"]\n'
        )
        for rules in (DEFAULT, everything):
            match = rules.evaluate(rec)
            assert match is None or match.disposition == "alert"


def test_matches_are_precomputed() -> None:
    first = DEFAULT.evaluate(record())
    assert first is not None
    assert DEFAULT.evaluate(record()) is first


# --------------------------------------------------------------------------------------------
# Overrides, added rules, several rules
# --------------------------------------------------------------------------------------------


def test_disable_a_builtin_rule() -> None:
    rules = ruleset('[[rules]]\nid = "iam-delete-policy-version"\nenabled = false\n')
    assert rules.evaluate(record("DeletePolicyVersion")) is None
    assert "DeletePolicyVersion" not in rules.event_names
    assert rules.evaluate(record("DeletePolicy")) is not None
    assert len(rules.rules) == len(DEFAULT_RULES)  # still listed, just disabled


def test_override_severities_keeps_the_rest() -> None:
    rules = ruleset('[[rules]]\nid = "iam-detach-role-policy"\nseverity_success = "critical"\n')
    assert rules.evaluate(record("DetachRolePolicy")) == Match(
        "iam-detach-role-policy", "critical", "success", "alert", None
    )
    assert rules.evaluate(failed("DetachRolePolicy")) == Match(
        "iam-detach-role-policy", "medium", "failure", "alert", None
    )


def test_override_outcomes() -> None:
    rules = ruleset('[[rules]]\nid = "iam-delete-user-policy"\noutcomes = ["success"]\n')
    assert rules.evaluate(failed("DeleteUserPolicy")) is None
    assert rules.evaluate(record("DeleteUserPolicy")) is not None
    rules = ruleset('[[rules]]\nid = "iam-delete-user-policy"\noutcomes = ["failure"]\n')
    assert rules.evaluate(record("DeleteUserPolicy")) is None
    assert rules.evaluate(failed("DeleteUserPolicy")) is not None


def test_add_a_rule_for_another_service() -> None:
    rules = ruleset(
        '[[rules]]\nid = "org-scp-removal"\nevent_names = ["DetachPolicy", "DeletePolicy"]\n'
        'event_source = "organizations.amazonaws.com"\nseverity_success = "critical"\n'
    )
    org = record("DeletePolicy", eventSource="organizations.amazonaws.com")
    assert rules.evaluate(org) == Match("org-scp-removal", "critical", "success", "alert", None)
    assert rules.evaluate(failed("DetachPolicy", eventSource="organizations.amazonaws.com")) == (
        Match("org-scp-removal", "medium", "failure", "alert", None)
    )
    # IAM's DeletePolicy still goes to the built-in rule.
    match = rules.evaluate(record("DeletePolicy"))
    assert match is not None
    assert match.rule == "iam-delete-policy"
    assert {"DetachPolicy", "DeletePolicy"} <= rules.event_names


def test_highest_severity_wins_and_ties_go_to_the_first() -> None:
    higher = ruleset(
        '[[rules]]\nid = "watch-role-policy"\nevent_names = ["DeleteRolePolicy"]\n'
        'severity_success = "critical"\nseverity_failure = "low"\n'
    )
    assert higher.evaluate(record()) == Match(
        "watch-role-policy", "critical", "success", "alert", None
    )
    # On failure the built-in's medium beats the added rule's low.
    assert higher.evaluate(failed()) == Match(
        "iam-delete-role-policy", "medium", "failure", "alert", None
    )
    tie = ruleset('[[rules]]\nid = "same"\nevent_names = ["DeleteRolePolicy"]\n')
    match = tie.evaluate(record())
    assert match is not None
    assert match.rule == "iam-delete-role-policy"
    two_added = ruleset(
        '[[rules]]\nid = "iam-delete-role-policy"\nenabled = false\n'
        '[[rules]]\nid = "a"\nevent_names = ["DeleteRolePolicy"]\n'
        '[[rules]]\nid = "b"\nevent_names = ["DeleteRolePolicy"]\n'
    )
    match = two_added.evaluate(record())
    assert match is not None
    assert match.rule == "a"


def test_a_disabled_rule_never_wins() -> None:
    rules = ruleset(
        '[[rules]]\nid = "iam-delete-role-policy"\nenabled = false\n'
        '[[rules]]\nid = "quiet"\nevent_names = ["DeleteRolePolicy"]\nseverity_success = "low"\n'
    )
    assert rules.evaluate(record()) == Match("quiet", "low", "success", "alert", None)


# --------------------------------------------------------------------------------------------
# Escalations
# --------------------------------------------------------------------------------------------

ROOT_ARN = f"arn:aws:iam::{ACCOUNT}:root"
AWS_POLICY = "arn:aws:iam::aws:policy"
OWN_POLICY = f"arn:aws:iam::{ACCOUNT}:policy"


@pytest.mark.parametrize(
    "ident",
    [identity(ROOT_ARN, type="Root"), identity(ROOT_ARN, type="IAMUser"), {"type": "Root"}],
    ids=["root-type", "root-arn", "type-only"],
)
def test_root_escalates_to_critical(ident: dict[str, Any]) -> None:
    for rec in (record(userIdentity=ident), failed(userIdentity=ident)):
        match = DEFAULT.evaluate(rec)
        assert match is not None
        assert match.severity == "critical"


@pytest.mark.parametrize(
    ("console", "mfa", "severity"),
    [
        ("true", "false", "high"),
        (True, False, "high"),
        ("true", None, "high"),
        ("TRUE", "False", "high"),
        ("true", "true", "low"),
        (True, True, "low"),
        ("false", "false", "low"),
        (None, "false", "low"),
    ],
)
def test_console_without_mfa(console: Any, mfa: Any, severity: str) -> None:
    # DeletePolicyVersion fails at "low", so any escalation shows.
    ident = identity(CI_ARN, mfa=mfa, issuer_arn=f"arn:aws:iam::{ACCOUNT}:role/ci-deployer")
    rec = failed("DeletePolicyVersion", userIdentity=ident, sessionCredentialFromConsole=console)
    match = DEFAULT.evaluate(rec)
    assert match is not None
    assert match.severity == severity


@pytest.mark.parametrize(
    ("api", "params"),
    [
        ("DetachUserPolicy", {"policyArn": f"{AWS_POLICY}/AWSCompromisedKeyQuarantineV3"}),
        ("DetachGroupPolicy", {"policyArn": f"{AWS_POLICY}/AWSCompromisedKeyQuarantine"}),
        ("DeleteUserPolicy", {"userName": "u", "policyName": "AWSCompromisedKeyQuarantineV2"}),
        ("DetachRolePolicy", {"policyArn": f"{AWS_POLICY}/awscompromisedkeyquarantinev2"}),
        ("DeletePolicy", {"policyArn": f"{OWN_POLICY}/a/b/AWSCompromisedKeyQuarantineX"}),
    ],
)
def test_guardrail_policy_removal_is_critical(api: str, params: dict[str, str]) -> None:
    for rec in (record(api, requestParameters=params), failed(api, requestParameters=params)):
        match = DEFAULT.evaluate(rec)
        assert match is not None
        assert match.severity == "critical"


@pytest.mark.parametrize(
    "params",
    [
        {"policyArn": "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2/extra"},
        {"policyArn": f"arn:aws:iam::{ACCOUNT}:policy/MyAWSCompromisedKeyQuarantine"},
        {"policyName": "ReadOnly"},
        {"policyName": 12},
        {},
    ],
)
def test_other_policies_are_not_guardrails(params: dict[str, Any]) -> None:
    match = DEFAULT.evaluate(record("DetachUserPolicy", requestParameters=params))
    assert match is not None
    assert match.severity == "high"


def test_configured_guardrail_policies() -> None:
    rules = ruleset('[severity]\nguardrail_policies = ["Deny?ll", "org-guardrail-*"]\n')
    for params in (
        {"policyArn": f"arn:aws:iam::{ACCOUNT}:policy/DenyAll"},
        {"roleName": "r", "policyName": "org-guardrail-s3"},
    ):
        match = rules.evaluate(failed("DetachRolePolicy", requestParameters=params))
        assert match is not None
        assert match.severity == "critical"
    # The default glob is replaced, not extended.
    quarantine = {"policyArn": "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"}
    match = rules.evaluate(failed("DetachUserPolicy", requestParameters=quarantine))
    assert match is not None
    assert match.severity == "medium"
    none = ruleset("[severity]\nguardrail_policies = []\n")
    match = none.evaluate(failed("DetachRolePolicy", requestParameters=quarantine))
    assert match is not None
    assert match.severity == "medium"


def test_escalation_never_lowers_and_info_disables() -> None:
    rules = ruleset(
        '[severity]\nroot = "info"\npermissions_boundary_removal = "info"\n'
        '[[rules]]\nid = "iam-delete-role-policy"\nseverity_success = "critical"\n'
    )
    root = identity(ROOT_ARN, type="Root")
    match = rules.evaluate(record(userIdentity=root))
    assert match is not None
    assert match.severity == "critical"  # not lowered to info
    match = rules.evaluate(failed(userIdentity=root))
    assert match is not None
    assert match.severity == "medium"  # root escalation off
    match = rules.evaluate(failed("DeleteRolePermissionsBoundary"))
    assert match is not None
    assert match.severity == "medium"  # boundary escalation off


def test_escalations_apply_to_added_rules() -> None:
    rules = ruleset(
        '[[rules]]\nid = "iam-attach"\nevent_names = ["AttachRolePolicy"]\n'
        'severity_success = "low"\n'
    )
    match = rules.evaluate(record("AttachRolePolicy", userIdentity=identity(ROOT_ARN, type="Root")))
    assert match == Match("iam-attach", "critical", "success", "alert", None)


# --------------------------------------------------------------------------------------------
# Suppressions
# --------------------------------------------------------------------------------------------


def suppressed_by(rules: RuleSet, rec: Record) -> str | None:
    match = rules.evaluate(rec)
    assert match is not None
    assert (match.disposition == "suppressed") == (match.suppressed_by is not None)
    return match.suppressed_by


def one(fields: str) -> RuleSet:
    return ruleset('[[suppress]]\nname = "s"\n' + fields)


@pytest.mark.parametrize(
    ("fields", "hit", "miss"),
    [
        (
            'actor_arn = ["arn:aws:sts::111122223333:assumed-role/ci-deployer/*"]',
            {"userIdentity": identity(CI_ARN)},
            {"userIdentity": identity(f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer-x/r")},
        ),
        (
            'actor_arn = ["arn:aws:iam::111122223333:user/?allory"]',
            {},
            {"userIdentity": identity(f"arn:aws:iam::{ACCOUNT}:user/MALLORY")},
        ),
        (
            'actor_arn = ["arn:aws:iam::111122223333:user/[m]allory"]',  # [ is literal
            {"userIdentity": identity(f"arn:aws:iam::{ACCOUNT}:user/[m]allory")},
            {},
        ),
        (
            'identity_type = ["Root", "AWSService"]',
            {"userIdentity": {"type": "AWSService", "invokedBy": "sso.amazonaws.com"}},
            {"userIdentity": {"arn": USER_ARN}},
        ),
        (
            'invoked_by = ["*.amazonaws.com"]',
            {"userIdentity": identity(invoked_by="cloudformation.amazonaws.com")},
            {"userIdentity": identity(invoked_by="AWS Internal")},
        ),
        (
            'user_agent = ["^aws-cli/2\\\\.", "boto3"]',
            {},
            {"userAgent": "Boto3/1.34 md/Botocore#1.34"},
        ),
        (
            'user_agent = ["(?i)boto3"]',
            {"userAgent": "Boto3/1.34 md/Botocore#1.34"},
            {"userAgent": None},
        ),
        (
            'source_ip = ["198.51.100.0/24", "2001:db8::/32"]',
            {"sourceIPAddress": "2001:db8::17"},
            {"sourceIPAddress": "203.0.113.9"},
        ),
        (
            'source_ip = ["0.0.0.0/0", "::/0"]',
            {"sourceIPAddress": "192.0.2.1"},
            {"sourceIPAddress": "cloudformation.amazonaws.com"},
        ),
        (
            'source_ip = ["10.0.0.0/8"]',
            {"sourceIPAddress": "10.1.2.3"},
            {"sourceIPAddress": "AWS Internal"},
        ),
        (
            'account_id = ["111122223333", "444455556666"]',
            {},
            {"recipientAccountId": "999999999999"},
        ),
        (
            'account_id = ["111122223333"]',
            {},
            {"recipientAccountId": None},
        ),
    ],
)
def test_each_suppression_field(fields: str, hit: dict[str, Any], miss: dict[str, Any]) -> None:
    rules = one(fields + "\n")
    assert suppressed_by(rules, record(**hit)) == "suppress[0] (s)"
    assert suppressed_by(rules, failed(**hit)) == "suppress[0] (s)"
    assert suppressed_by(rules, record(**miss)) is None


PRESET_CASES: dict[UserAgentPreset, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "terraform": (
        [
            {"userAgent": TERRAFORM_UA},
            {"userAgent": OLD_TERRAFORM_UA},
            {"userAgent": "APN/1.0 HashiCorp/1.0 OpenTofu/1.6.0 terraform-provider-aws/5.40.0"},
        ],
        [{"userAgent": CLI_UA}, {"userAgent": "terraform"}, {"userAgent": None}],
    ),
    "pulumi": (
        [
            {"userAgent": PULUMI_UA},
            {"userAgent": "APN/1.0 Pulumi/3.100.0 PulumiAwsNative/0.90.0"},
        ],
        [{"userAgent": TERRAFORM_UA}, {"userAgent": "pulumi"}],
    ),
    "cloudformation": (
        [
            {
                "userAgent": "cloudformation.amazonaws.com",
                "sourceIPAddress": "cloudformation.amazonaws.com",
                "userIdentity": identity(CI_ARN, invoked_by="cloudformation.amazonaws.com"),
            }
        ],
        [
            # A forged user agent without AWS's invokedBy does not match.
            {"userAgent": "cloudformation.amazonaws.com"},
            {
                "userAgent": CLI_UA,
                "userIdentity": identity(CI_ARN, invoked_by="cloudformation.amazonaws.com"),
            },
        ],
    ),
    "aws-service-linked-role": (
        [
            {"userIdentity": {"type": "AWSService", "invokedBy": "sso.amazonaws.com"}},
            {
                "userIdentity": identity(
                    f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSServiceRoleForSSO/sso-session"
                )
            },
            {
                "userIdentity": identity(
                    f"arn:aws-us-gov:sts::{ACCOUNT}:assumed-role/AWSServiceRoleForConfig/s"
                )
            },
            {
                "userIdentity": identity(
                    f"arn:aws:sts::{ACCOUNT}:assumed-role/svc/s",
                    issuer_arn=f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/"
                    "sso.amazonaws.com/AWSServiceRoleForSSO",
                    mfa="false",
                )
            },
        ],
        [
            {"userIdentity": identity(CI_ARN)},
            {"userIdentity": identity(f"arn:aws:iam::{ACCOUNT}:user/AWSServiceRoleForSSO")},
            {"userAgent": "AWSServiceRoleForSSO"},
        ],
    ),
}


def test_every_preset_has_cases() -> None:
    assert set(PRESET_CASES) == set(USER_AGENT_PRESETS) == set(PRESETS)
    assert set(USER_AGENT_PRESETS) == set(typing.get_args(UserAgentPreset))


@pytest.mark.parametrize("preset", USER_AGENT_PRESETS)
def test_presets(preset: UserAgentPreset) -> None:
    rules = one(f'user_agent_preset = ["{preset}"]\n')
    hits, misses = PRESET_CASES[preset]
    for fields in hits:
        assert suppressed_by(rules, record(**fields)) == "suppress[0] (s)", fields
    for fields in misses:
        assert suppressed_by(rules, record(**fields)) is None, fields


def test_fields_are_anded_and_values_ored() -> None:
    rules = one(
        'actor_arn = ["arn:aws:sts::111122223333:assumed-role/ci-deployer/*",'
        ' "arn:aws:sts::111122223333:assumed-role/release/*"]\n'
        'user_agent_preset = ["terraform", "pulumi"]\n'
    )
    ci, release = identity(CI_ARN), identity(f"arn:aws:sts::{ACCOUNT}:assumed-role/release/x")
    assert suppressed_by(rules, record(userIdentity=ci, userAgent=TERRAFORM_UA))
    assert suppressed_by(rules, record(userIdentity=release, userAgent=PULUMI_UA))
    # Right role, wrong tool; right tool, wrong role: both alert.
    assert suppressed_by(rules, record(userIdentity=ci, userAgent=CLI_UA)) is None
    assert suppressed_by(rules, record(userAgent=TERRAFORM_UA)) is None


def test_user_agent_and_preset_are_separate_fields() -> None:
    rules = one('user_agent = ["linux"]\nuser_agent_preset = ["terraform"]\n')
    assert suppressed_by(rules, record(userAgent=TERRAFORM_UA))  # both match
    assert suppressed_by(rules, record(userAgent=OLD_TERRAFORM_UA))  # "linux" too
    assert suppressed_by(rules, record(userAgent="aws-cli Linux")) is None


def test_suppressed_events_keep_rule_severity_and_outcome() -> None:
    rules = one("user_agent_preset = [\"terraform\"]\nactor_arn = ['arn:aws:iam::*:root']\n")
    root = identity(ROOT_ARN, type="Root")
    match = rules.evaluate(failed("DetachRolePolicy", userIdentity=root, userAgent=TERRAFORM_UA))
    assert match == Match(
        "iam-detach-role-policy", "critical", "failure", "suppressed", "suppress[0] (s)"
    )


def test_labels_global_first_then_rule_own() -> None:
    rules = ruleset(
        '[[suppress]]\nuser_agent = ["never-matches-anything"]\n'
        '[[suppress]]\nname = "tf"\nuser_agent_preset = ["terraform"]\n'
        '[[rules]]\nid = "iam-delete-role-policy"\n'
        '[[rules.suppress]]\nidentity_type = ["Root"]\n'
        '[[rules.suppress]]\nname = "ci"\n'
        'actor_arn = ["arn:aws:sts::*:assumed-role/ci-deployer/*"]\n'
    )
    assert suppressed_by(rules, record(userIdentity=identity(CI_ARN))) == (
        "rules[iam-delete-role-policy].suppress[1] (ci)"
    )
    assert suppressed_by(rules, record(userIdentity={"type": "Root"})) == (
        "rules[iam-delete-role-policy].suppress[0]"
    )
    # Matches the global one and the rule's own: the global one is named.
    both = record(userIdentity=identity(CI_ARN), userAgent=TERRAFORM_UA)
    assert suppressed_by(rules, both) == "suppress[1] (tf)"
    # The rule's own suppressions do not apply to other rules.
    assert suppressed_by(rules, record("DetachRolePolicy", userIdentity=identity(CI_ARN))) is None
    assert suppressed_by(rules, record("DetachRolePolicy", userAgent=TERRAFORM_UA)) == (
        "suppress[1] (tf)"
    )


def test_the_example_config_suppressions() -> None:
    from trailguard.config import load_config

    rules = RuleSet.from_config(load_config(ROOT / "config" / "trailguard.example.toml"))
    ci = identity(f"arn:aws:sts::123456789012:assumed-role/ci-deployer/gh-{1234}")
    assert suppressed_by(rules, record(userIdentity=ci, userAgent=TERRAFORM_UA)) == (
        "suppress[0] (terraform-ci)"
    )
    # The attacker sending Terraform's user agent is not suppressed.
    assert suppressed_by(rules, record(userAgent=TERRAFORM_UA)) is None


# --------------------------------------------------------------------------------------------
# Globs
# --------------------------------------------------------------------------------------------


def test_glob_regex() -> None:
    assert glob_regex("a*b?c.d") == "a.*b.c\\.d"
    assert glob_regex("a*", segment=True) == "a[^/]*"
    assert glob_regex("[x]") == "\\[x\\]"


# --------------------------------------------------------------------------------------------
# The corpus: real and published records
# --------------------------------------------------------------------------------------------


def _samples() -> list[dict[str, Any]]:
    path = CORPUS / "samples.jsonl"
    if not path.exists():
        pytest.skip("corpus not present")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_corpus_samples() -> None:
    removals = frozenset(PARAMS)
    positives = failures = 0
    for sample in _samples():
        raw = sample["record"]
        rec = msgspec.convert(raw, Record)
        match = DEFAULT.evaluate(rec)
        is_removal = raw.get("eventSource") == "iam.amazonaws.com" and raw.get("eventName") in (
            removals
        )
        if sample["expected_policy_removal"]:
            assert match is not None, sample["source"]
            assert match.outcome == "success"
            positives += 1
        elif is_removal:
            assert match is not None, sample["source"]
            assert match.outcome == "failure"
            failures += 1
        else:
            assert match is None, sample["source"]
    assert positives >= 1
    assert failures >= 1


def test_stratus_red_team_logs_match_nothing() -> None:
    folder = CORPUS / "stratus-red-team"
    if not folder.exists():
        pytest.skip("corpus not present")
    count = 0
    for path in sorted(folder.glob("*.json")):
        for raw in json.loads(path.read_text()):
            count += 1
            assert DEFAULT.evaluate(msgspec.convert(raw, Record)) is None, path.name
    assert count > 0


# --------------------------------------------------------------------------------------------
# Robustness
# --------------------------------------------------------------------------------------------

_TEXT = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.sampled_from(
        ["true", "false", "Root", "AWSService", ROOT_ARN, CI_ARN, TERRAFORM_UA, "::1", "10.0.0.1"]
    ),
)
_NAMES = st.one_of(st.sampled_from([*PARAMS, "DeleteBucketPolicy"]), st.text(max_size=20))


@settings(max_examples=300, deadline=None)
@given(
    name=_NAMES,
    source=st.one_of(st.just("iam.amazonaws.com"), _TEXT),
    type_=_TEXT,
    arn=_TEXT,
    ua=_TEXT,
    ip=_TEXT,
    console=st.one_of(_TEXT, st.booleans()),
    mfa=st.one_of(_TEXT, st.booleans()),
    error=_TEXT,
    params=st.dictionaries(
        st.sampled_from(["policyName", "policyArn", "x"]),
        st.one_of(_TEXT, st.integers(), st.lists(st.integers(), max_size=2)),
    ),
)
def test_arbitrary_records_never_crash(
    name: str,
    source: str | None,
    type_: str | None,
    arn: str | None,
    ua: str | None,
    ip: str | None,
    console: str | bool | None,
    mfa: str | bool | None,
    error: str | None,
    params: dict[str, Any],
) -> None:
    rec = msgspec.convert(
        {
            "eventName": name,
            "eventSource": source,
            "userIdentity": {
                "type": type_,
                "arn": arn,
                "invokedBy": ua,
                "sessionContext": {"attributes": {"mfaAuthenticated": mfa}},
            },
            "userAgent": ua,
            "sourceIPAddress": ip,
            "sessionCredentialFromConsole": console,
            "errorCode": error,
            "requestParameters": params,
        },
        Record,
    )
    for rules in (DEFAULT, EVERYTHING):
        match = rules.evaluate(rec)
        if match is not None:
            assert match.severity in SEVERITIES
            assert match.outcome == ("failure" if error else "success")


EVERYTHING = RuleSet.from_config(
    parse_config(
        '[[suppress]]\nuser_agent_preset = ["terraform", "pulumi", "cloudformation",'
        ' "aws-service-linked-role"]\n[[suppress]]\nsource_ip = ["0.0.0.0/0", "::/0"]\n'
        'actor_arn = ["arn:*:*:*:*:*"]\n[[suppress]]\nidentity_type = ["Root"]\n'
        'invoked_by = ["*"]\n',
        file="t.toml",
    )
)
