"""The IAM policies shipped in config/iam/: valid JSON policies, and a remediation role that can
only put things back (no Delete*, no Detach*, no wildcard actions)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from tests.conftest import ROOT
from trailguard.remediate.actions.context import PRINCIPALS

IAM_DIR = ROOT / "config" / "iam"
POLICIES = sorted(IAM_DIR.glob("*.json"))
ACTION = re.compile(r"[a-z0-9-]+:[A-Za-z0-9]+")

# The actions and the confirmation gate (which makes the LookupEvents calls).
ACTIONS_SOURCES = [
    *sorted((ROOT / "daemon" / "trailguard" / "remediate" / "actions").glob("*.py")),
    ROOT / "daemon" / "trailguard" / "remediate" / "confirm.py",
]


def calls_in_actions() -> set[str]:
    """Every AWS call remediate/actions/ and remediate/confirm.py make, as IAM actions."""
    source = "\n".join(path.read_text() for path in ACTIONS_SOURCES)
    session = botocore.session.get_session()
    names = {
        service: {xform_name(op): op for op in session.get_service_model(service).operation_names}
        for service in ("iam", "cloudtrail")
    }
    found = re.findall(r"\b(iam|cloudtrail)\.([a-z_]+)\b", source)
    # The calls made per principal kind through the PRINCIPALS table (getattr by name).
    found += [("iam", call) for api in PRINCIPALS.values() for call in api.calls.values()]
    return {f"{service}:{names[service][method]}" for service, method in found}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((IAM_DIR / name).read_text())
    return data


def actions(statement: dict[str, Any]) -> list[str]:
    value = statement.get("Action", [])
    return [value] if isinstance(value, str) else list(value)


def allowed(policy: dict[str, Any]) -> set[str]:
    return {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in actions(s)}


def test_the_expected_files_are_shipped() -> None:
    names = {p.name for p in POLICIES}
    assert {"ingest-role.json", "remediation-role.json", "remediation-trust-policy.json"} <= names
    assert (IAM_DIR / "README.md").is_file()


@pytest.mark.parametrize("path", POLICIES, ids=[p.name for p in POLICIES])
def test_every_file_is_a_well_formed_policy(path: Path) -> None:
    policy = json.loads(path.read_text())
    assert policy["Version"] == "2012-10-17"
    sids = [s.get("Sid") for s in policy["Statement"]]
    assert len(sids) == len(set(sids))
    for statement in policy["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny")
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Principal", "Condition"}
        for action in actions(statement):
            assert ACTION.fullmatch(action), action


def test_remediation_role_has_no_delete_detach_or_wildcard() -> None:
    policy = load("remediation-role.json")
    for statement in policy["Statement"]:
        for action in actions(statement):
            assert "*" not in action, action
            assert "?" not in action, action
            name = action.split(":", 1)[1]
            assert not name.startswith(("Delete", "Detach")), action
    assert all("NotAction" not in s for s in policy["Statement"])


def test_remediation_role_allows_exactly_what_the_actions_call() -> None:
    calls = calls_in_actions()
    assert "iam:PutRolePolicy" in calls  # the scan works
    assert "cloudtrail:LookupEvents" in calls
    assert allowed(load("remediation-role.json")) == calls


def test_remediation_role_cannot_grant_trailguard_itself_more() -> None:
    policy = load("remediation-role.json")
    [deny] = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert "iam:PutRolePolicy" in actions(deny)
    assert "arn:aws:iam::*:role/trailguard-remediation" in deny["Resource"]


def test_ingest_role_is_read_only_towards_iam() -> None:
    granted = allowed(load("ingest-role.json"))
    iam = {a for a in granted if a.startswith("iam:")}
    assert iam
    assert all(a.split(":", 1)[1].startswith(("Get", "List")) for a in iam), iam
    assert not any("*" in a for a in granted)
    assert {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        "s3:GetObject",
        "s3:ListBucket",
        "kms:Decrypt",
        "cloudtrail:LookupEvents",
        "iam:GetAccountAuthorizationDetails",
    } <= granted


def test_trust_policy_names_one_principal_and_the_session_name() -> None:
    trust = load("remediation-trust-policy.json")
    [statement] = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRole"
    assert set(statement["Principal"]) == {"AWS"}
    assert statement["Condition"]["StringEquals"]["sts:RoleSessionName"] == "trailguard-remediation"


def test_queue_policy_admits_only_the_trail_sources() -> None:
    """A message in the queue is trusted as far as this policy allows (README "Threat model"):
    S3, SNS and EventBridge may send, each only for its one source ARN; everyone else is
    denied, including principals of the account whose own IAM policies would allow it."""
    policy = load("sqs-queue-policy.json")
    allows = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert {s["Principal"]["Service"] for s in allows} == {
        "s3.amazonaws.com",
        "sns.amazonaws.com",
        "events.amazonaws.com",
    }
    sources = set()
    for statement in allows:
        assert actions(statement) == ["sqs:SendMessage"]
        [arn] = [statement["Condition"]["ArnEquals"]["aws:SourceArn"]]
        sources.add(arn)
    [deny] = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny["Principal"] == "*"
    assert actions(deny) == ["sqs:SendMessage"]
    # ArnNotEquals is true when aws:SourceArn is absent: a direct SendMessage is denied.
    assert set(deny["Condition"]["ArnNotEquals"]["aws:SourceArn"]) == sources
    resources = {s["Resource"] for s in policy["Statement"]}
    assert resources == {load("ingest-role.json")["Statement"][0]["Resource"]}
