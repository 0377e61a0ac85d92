"""config/aws/trailguard.yaml: cfn-lint passes, and the template cannot drift from config/iam/,
deploy/k8s/ or docs/DYNAMODB.md.

The template is read with a YAML loader that knows CloudFormation's short tags, then resolved
-- Ref, Fn::GetAtt, Fn::Sub, Fn::If with its conditions, AWS::NoValue -- with parameter values
equal to the placeholders of config/iam/*.json.  Every IAM document in the template must then
equal its JSON file exactly (statement order, Sids, actions, resources, conditions), and every
JSON file must have its document in the template.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any, Final

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

from tests.conftest import ROOT
from tests.deploy_support import config_text, k8s_config, the
from tests.integration.tools import require_tool
from trailguard.config import Config
from trailguard.detect.policy_facts import HISTORY_EVENT_NAMES
from trailguard.detect.rules import DEFAULT_RULES

TEMPLATE: Final = ROOT / "config" / "aws" / "trailguard.yaml"
IAM: Final = ROOT / "config" / "iam"
DYNAMODB_DOC: Final = ROOT / "docs" / "DYNAMODB.md"

ACCOUNT: Final = "123456789012"  # the account of config/iam's queue, bucket, key and topics
DAEMON_ACCOUNT: Final = "111111111111"  # config/iam's account of the daemon's role
REGION: Final = "us-east-1"
#: The parameters that turn the template into config/iam's placeholders.
PLACEHOLDERS: Final = {
    "TrailBucketArn": "arn:aws:s3:::example-cloudtrail-bucket",
    "TrailKmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-0000-0000-000000000000",
    "DeliveryTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:cloudtrail-deliveries",
    "AlertTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:trailguard-alerts",
    "CreateEventBridgeRule": "true",
    "EksOidcProvider": "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
    "KedaOperatorRoleName": "keda-operator",
    "CreateMemberRoles": "true",
    "RemediationExternalId": "replace-with-the-external_id-from-trailguard.toml",
}
#: The parameters without a default, with values of the shape they need.
REQUIRED: Final = {
    "TrailBucketArn": PLACEHOLDERS["TrailBucketArn"],
    "EksOidcProvider": PLACEHOLDERS["EksOidcProvider"],
    "RemediationExternalId": "an-external-id",
}


# --------------------------------------------------------------------------------------------
# Reading and resolving the template
# --------------------------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # untyped base class
    """YAML with CloudFormation's short-form tags, as their long form (``!Ref X`` ->
    ``{"Ref": "X"}``; ``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``)."""


def _tag(name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    return construct


for _short in ("Ref", "Condition"):
    CfnLoader.add_constructor(f"!{_short}", _tag(_short))
for _short in (
    "GetAtt",
    "Sub",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
    "Join",
    "Select",
    "Split",
    "FindInMap",
    "Base64",
    "GetAZs",
    "ImportValue",
    "Cidr",
):
    CfnLoader.add_constructor(f"!{_short}", _tag(f"Fn::{_short}"))


def load_template() -> dict[str, Any]:
    template: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    return template


_NO_VALUE: Final = object()


class Stack:
    """The template resolved for one set of parameter values, in one account and region."""

    def __init__(self, parameters: dict[str, str], *, account: str = ACCOUNT) -> None:
        self.template = load_template()
        self.account = account
        self.values: dict[str, str] = {}
        for name, spec in self.template["Parameters"].items():
            value = parameters.get(name, spec.get("Default"))
            assert value is not None, f"parameter {name} has no value"
            if "AllowedValues" in spec:
                assert value in spec["AllowedValues"], (name, value)
            if "AllowedPattern" in spec:
                assert re.fullmatch(spec["AllowedPattern"], value), (name, value)
            self.values[name] = value
        assert set(parameters) <= set(self.values), "unknown parameters"

    # -- conditions -----------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        return self._truth(self.template["Conditions"][name])

    def _truth(self, node: Any) -> bool:
        ((fn, args),) = node.items()
        if fn == "Fn::Equals":
            left, right = (self.resolve(a) for a in args)
            return bool(left == right)
        if fn == "Fn::Not":
            return not self._truth(args[0])
        if fn == "Fn::And":
            return all(self._truth(a) for a in args)
        if fn == "Fn::Or":
            return any(self._truth(a) for a in args)
        if fn == "Condition":
            return self.condition(args)
        raise AssertionError(f"condition function {fn} not understood")

    # -- values -------------------------------------------------------------------------------

    def exists(self, logical_id: str) -> bool:
        condition = self.template["Resources"][logical_id].get("Condition")
        return condition is None or self.condition(condition)

    def properties(self, logical_id: str) -> dict[str, Any]:
        assert self.exists(logical_id), f"{logical_id} is not created with these parameters"
        props: dict[str, Any] = self.resolve(self.template["Resources"][logical_id]["Properties"])
        return props

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::AccountId": self.account,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
            "AWS::NoValue": _NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.values:
            return self.values[name]
        resource = self.template["Resources"][name]
        props = self.properties(name)
        kind = resource["Type"]
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{self.account}/{props['QueueName']}"
        if kind == "AWS::DynamoDB::Table":
            return props["TableName"]
        if kind == "AWS::IAM::Role":
            return props["RoleName"]
        raise AssertionError(f"Ref to a {kind} not understood")

    def getatt(self, name: str, attribute: str) -> str:
        kind = self.template["Resources"][name]["Type"]
        props = self.properties(name)
        assert attribute == "Arn", f"{name}.{attribute} not understood"
        service, resource = {
            "AWS::SQS::Queue": ("sqs", "{QueueName}"),
            "AWS::DynamoDB::Table": ("dynamodb", "table/{TableName}"),
            "AWS::IAM::Role": ("iam", "role/{RoleName}"),
            "AWS::Events::Rule": ("events", "rule/{Name}"),
        }[kind]
        region = "" if service == "iam" else REGION
        return f"arn:aws:{service}:{region}:{self.account}:" + resource.format(**props)

    def sub(self, text: str, extra: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in extra:
                return str(extra[inner])
            if "." in inner and not inner.startswith("AWS::"):
                resource, attribute = inner.split(".", 1)
                return self.getatt(resource, attribute)
            return str(self.ref(inner))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, args),) = node.items()
            if key == "Ref":
                return self.ref(args)
            if key == "Fn::GetAtt":
                return self.getatt(*args)
            if key == "Fn::Sub":
                if isinstance(args, str):
                    return self.sub(args, {})
                text, variables = args
                return self.sub(text, {k: self.resolve(v) for k, v in variables.items()})
            if key == "Fn::If":
                name, yes, no = args
                return self.resolve(yes if self.condition(name) else no)
            if key == "Fn::Join":
                separator, parts = args
                return separator.join(self.resolve(parts))
            assert not key.startswith("Fn::"), f"{key} not understood"
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not _NO_VALUE}

    # -- helpers --------------------------------------------------------------------------

    def policy(self, logical_id: str, name: str) -> dict[str, Any]:
        (document,) = [
            p["PolicyDocument"]
            for p in self.properties(logical_id)["Policies"]
            if p["PolicyName"] == name
        ]
        return document  # type: ignore[no-any-return]


def iam_file(name: str) -> dict[str, Any]:
    """A config/iam/ document, with the daemon's account set to the stack's: the template puts
    the daemon's role in the same account as the queue and the table."""
    text = (IAM / name).read_text().replace(DAEMON_ACCOUNT, ACCOUNT)
    document: dict[str, Any] = json.loads(text)
    return document


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack(PLACEHOLDERS)


# --------------------------------------------------------------------------------------------
# cfn-lint
# --------------------------------------------------------------------------------------------


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("cfn-lint")
    # -c I: informational checks too (explicit deletion policies for stateful resources, ...)
    return subprocess.run(
        [tool, "--format", "parseable", "-c", "I", "--", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cfn_lint_passes() -> None:
    result = cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_cfn_lint_catches_a_broken_copy(tmp_path: Path) -> None:
    """cfn-lint really reads the template: a misspelt property and an IAM action that does not
    exist (there is no dynamodb:TransactWriteItems permission) both fail it."""
    broken = tmp_path / "broken.yaml"
    text = TEMPLATE.read_text()
    broken.write_text(
        text.replace("VisibilityTimeout: 300", "VisibilityTimout: 300", 1).replace(
            "- dynamodb:ConditionCheckItem", "- dynamodb:TransactWriteItems", 1
        )
    )
    result = cfn_lint(broken)
    assert result.returncode != 0
    assert "VisibilityTimout" in result.stdout
    assert "transactwriteitems" in result.stdout.lower()


# --------------------------------------------------------------------------------------------
# IAM documents: the template and config/iam/ are one
# --------------------------------------------------------------------------------------------

#: config/iam file -> where its document is in the template
DOCUMENTS: Final = {
    "ingest-role.json": ("DaemonRole", "policy", "trailguard-ingest"),
    "dynamodb-state-policy.json": ("DaemonRole", "policy", "trailguard-dynamodb-state"),
    "remediation-role.json": ("RemediationRole", "policy", "trailguard-remediation"),
    "remediation-trust-policy.json": ("RemediationRole", "trust", ""),
    "snapshot-role.json": ("SnapshotRole", "policy", "trailguard-snapshot"),
    "sqs-queue-policy.json": ("QueuePolicy", "document", ""),
    "keda-scaler-policy.json": ("KedaScalerPolicy", "document", ""),
}


def template_document(stack: Stack, logical_id: str, where: str, name: str) -> dict[str, Any]:
    if where == "policy":
        return stack.policy(logical_id, name)
    props = stack.properties(logical_id)
    key = "AssumeRolePolicyDocument" if where == "trust" else "PolicyDocument"
    document: dict[str, Any] = props[key]
    return document


def test_every_iam_file_has_its_document_in_the_template() -> None:
    assert {p.name for p in IAM.glob("*.json")} == set(DOCUMENTS)


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_template_document_equals_the_iam_file(stack: Stack, name: str) -> None:
    logical_id, where, policy_name = DOCUMENTS[name]
    assert template_document(stack, logical_id, where, policy_name) == iam_file(name)


def test_the_daemon_role_holds_the_ingest_policy_plus_the_dynamodb_statements_only(
    stack: Stack,
) -> None:
    policies = stack.properties("DaemonRole")["Policies"]
    assert [p["PolicyName"] for p in policies] == ["trailguard-ingest", "trailguard-dynamodb-state"]
    assert "ManagedPolicyArns" not in stack.properties("DaemonRole")
    for logical_id in ("RemediationRole", "SnapshotRole"):
        assert "ManagedPolicyArns" not in stack.properties(logical_id)
    assert stack.properties("KedaScalerPolicy")["Roles"] == ["keda-operator"]


def test_optional_sources_drop_out_of_the_documents() -> None:
    """With only the required parameters: no KMS, topic, alert topic, rule, member roles or
    KEDA policy -- and the queue's Deny lists the bucket alone."""
    minimal = Stack({**REQUIRED, "CreateEventBridgeRule": "false", "CreateMemberRoles": "false"})
    ingest = minimal.policy("DaemonRole", "trailguard-ingest")
    sids = [s["Sid"] for s in ingest["Statement"]]
    full = [s["Sid"] for s in iam_file("ingest-role.json")["Statement"]]
    assert sids == [s for s in full if s not in {"DecryptSseKmsTrailFiles", "PublishNotifications"}]
    queue_policy = minimal.properties("QueuePolicy")["PolicyDocument"]["Statement"]
    assert [s["Sid"] for s in queue_policy] == [
        "S3DeliveryNotificationsFromTheTrailBucket",
        "NobodyElseSendsMessages",
    ]
    assert queue_policy[1]["Condition"]["ArnNotEquals"]["aws:SourceArn"] == [
        PLACEHOLDERS["TrailBucketArn"]
    ]
    for logical_id in ("IamApiCallsRule", "RemediationRole", "SnapshotRole", "KedaScalerPolicy"):
        assert not minimal.exists(logical_id), logical_id
    # A bucket owned by another account is named as the S3 statement's source account.
    other = Stack({**REQUIRED, "TrailBucketOwner": "444455556666"})
    s3 = other.properties("QueuePolicy")["PolicyDocument"]["Statement"][0]
    assert s3["Condition"]["StringEquals"] == {"aws:SourceAccount": "444455556666"}


def test_irsa_trust_admits_exactly_the_deployments_service_account(stack: Stack) -> None:
    trust = json.loads(stack.properties("DaemonRole")["AssumeRolePolicyDocument"])
    (statement,) = trust["Statement"]
    provider = PLACEHOLDERS["EksOidcProvider"]
    assert statement["Principal"] == {
        "Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{provider}"
    }
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    account = the("ServiceAccount")["metadata"]
    assert statement["Condition"] == {
        "StringEquals": {
            f"{provider}:sub": f"system:serviceaccount:{account['namespace']}:{account['name']}",
            f"{provider}:aud": "sts.amazonaws.com",
        }
    }
    # The service account's IRSA annotation names this role.
    assert account["annotations"]["eks.amazonaws.com/role-arn"] == stack.getatt("DaemonRole", "Arn")


# --------------------------------------------------------------------------------------------
# The queue, the rule and the table agree with the Kubernetes config
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config() -> Config:
    return k8s_config()


def test_queue_matches_the_config_and_the_scaled_object(stack: Stack, config: Config) -> None:
    (source,) = config.sources.sqs
    assert stack.ref("Queue") == source.queue_url
    (trigger,) = the("ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["queueURL"] == stack.ref("Queue")
    queue = stack.properties("Queue")
    assert queue["VisibilityTimeout"] == source.visibility_timeout_secs
    assert queue["ReceiveMessageWaitTimeSeconds"] == source.wait_time_secs
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": stack.getatt("DeadLetterQueue", "Arn"),
        "maxReceiveCount": 5,
    }
    assert queue["SqsManagedSseEnabled"] is True
    # No message outlives trailguard's dedup memory, in the queue or in the dead-letter queue
    # (which keeps the original enqueue time): a redelivery is never a new detection.
    ttl_secs = config.state.dedup_ttl_hours * 3600
    for logical_id in ("Queue", "DeadLetterQueue"):
        assert stack.properties(logical_id)["MessageRetentionPeriod"] <= ttl_secs, logical_id


def test_rule_forwards_every_event_trailguard_reads(stack: Stack) -> None:
    rule = stack.properties("IamApiCallsRule")
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.iam"]
    assert pattern["detail-type"] == ["AWS API Call via CloudTrail"]
    assert pattern["detail"]["eventSource"] == ["iam.amazonaws.com"]
    names = pattern["detail"]["eventName"]
    detected = {name for rule in DEFAULT_RULES for name in rule.event_names}
    assert len(names) == len(set(names))
    assert set(names) == HISTORY_EVENT_NAMES | detected
    assert rule["Targets"] == [{"Id": "trailguard-queue", "Arn": stack.getatt("Queue", "Arn")}]
    assert rule["Name"] == "trailguard-iam-api-calls"  # the name sqs-queue-policy.json admits


def test_table_is_the_documented_single_table(stack: Stack, config: Config) -> None:
    table = stack.properties("Table")
    assert table["TableName"] == tomllib.loads(config_text())["state"]["dynamodb"]["table"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert all(a["AttributeType"] == "S" for a in table["AttributeDefinitions"])
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["DeletionProtectionEnabled"] is True
    resource = stack.template["Resources"]["Table"]
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"
    doc = DYNAMODB_DOC.read_text()
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"claim", "by_state"}
    for name, index in indexes.items():
        keys = [k["AttributeName"] for k in index["KeySchema"]]
        assert f"`{name}`" in doc, name
        for key in keys:
            assert f"`{key}`" in doc, key
    assert indexes["claim"]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert indexes["by_state"]["Projection"] == {
        "ProjectionType": "INCLUDE",
        "NonKeyAttributes": ["action"],
    }


# --------------------------------------------------------------------------------------------
# docs/DYNAMODB.md's permissions section is the contract
# --------------------------------------------------------------------------------------------


def documented_permissions() -> set[str]:
    text = DYNAMODB_DOC.read_text()
    match = re.search(r"^## Permissions\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match is not None, "docs/DYNAMODB.md has no '## Permissions' section"
    return set(re.findall(r"`(dynamodb:[A-Za-z]+)`", match.group(1)))


def test_the_permissions_contract_is_the_policy() -> None:
    statements = iam_file("dynamodb-state-policy.json")["Statement"]
    granted = {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert (
        documented_permissions()
        == granted
        == {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:Query",
            "dynamodb:ConditionCheckItem",
            "dynamodb:DescribeTable",
        }
    )
    # On the table and its indexes, nothing else; never a Scan, a batch call or a table change.
    resources = {s["Resource"] for s in statements}
    assert resources == {
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/trailguard",
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/trailguard/index/*",
    }
    (index_statement,) = [s for s in statements if s["Resource"].endswith("/index/*")]
    assert index_statement["Action"] == "dynamodb:Query"
