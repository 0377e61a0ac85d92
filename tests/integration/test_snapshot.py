"""``trailguard snapshot`` against a real moto server: IAM state made for real, read back through
GetAccountAuthorizationDetails (local account and an assumed role in a second account), stored
in the policy history, and queried for the exact documents.

Not covered here because moto cannot do it: user permissions boundaries (moto's CreateUser
ignores PermissionsBoundary and Put/DeleteUserPermissionsBoundary answer HTTP 500); they are
tested below the HTTP layer in tests/unit/remediate/test_snapshot.py.  AWS managed policies:
moto does not load them by default, so include_aws_managed_policies is tested with a fake client
there too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import msgspec
import pytest

from tests.conftest import ROOT
from tests.factories import make_record
from tests.integration.conftest import Boto3Clients, MotoServer
from trailguard.config import Config, parse_config
from trailguard.detect.policy_facts import facts_from_record
from trailguard.detect.record import Record
from trailguard.errors import OperationError
from trailguard.remediate.snapshot import take_snapshot
from trailguard.state.policy_history import default_history_path
from trailguard.state.policy_history_sqlite import SqliteHistoryStore

if TYPE_CHECKING:
    from mypy_boto3_iam.client import IAMClient

pytestmark = pytest.mark.integration

OTHER_ACCOUNT = "111111111111"
ROLE_TEMPLATE = "arn:aws:iam::{account_id}:role/trailguard-snapshot"

# Documents as people write them: indentation, odd spacing, characters that URL-encoding
# changes ('+', '%20', ' ', non-ASCII), key order that is not sorted.
DENY_S3 = (
    '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {\n      "Sid": "DenyS3",\n'
    '      "Effect": "Deny",\n      "Action": "s3:*",\n'
    '      "Resource": "arn:aws:s3:::data+lake/a b/%20x"\n    }\n  ]\n}'
)
READ_EC2 = (
    '{"Statement":[{"Effect":"Allow","Action":["ec2:Describe*"],"Resource":"*",'
    '"Condition":{"StringEquals":{"aws:PrincipalTag/team":"caf\u00e9"}}}],'
    '"Version":"2012-10-17"}'
)
GUARD_V1 = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "iam:*", '
    '"Resource": "*"}]}'
)
GUARD_V2 = (
    '{\t"Version": "2012-10-17",\t"Statement": [{"Effect": "Deny", '
    '"Action": ["iam:Delete*", "iam:Detach*"], "Resource": "*"}]}'
)
GUARD_V3 = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","NotAction":"s3:GetObject",'
    '"Resource":"*"}]}'
)
BOUNDARY = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'
)
TRUST = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": '
    '{"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}'
)


@dataclass(frozen=True)
class World:
    account: str
    guard_arn: str
    boundary_arn: str
    plain_arn: str


def build_local_account(iam: IAMClient, account: str) -> World:
    guard = iam.create_policy(PolicyName="Guard", Path="/team/", PolicyDocument=GUARD_V1)
    guard_arn = guard["Policy"]["Arn"]
    iam.create_policy_version(PolicyArn=guard_arn, PolicyDocument=GUARD_V2, SetAsDefault=True)
    iam.create_policy_version(PolicyArn=guard_arn, PolicyDocument=GUARD_V3, SetAsDefault=False)
    boundary_arn = iam.create_policy(PolicyName="Boundary", PolicyDocument=BOUNDARY)["Policy"][
        "Arn"
    ]
    plain_arn = iam.create_policy(PolicyName="Plain", PolicyDocument=READ_EC2)["Policy"]["Arn"]

    iam.create_user(UserName="alice")
    iam.put_user_policy(UserName="alice", PolicyName="deny-s3", PolicyDocument=DENY_S3)
    iam.put_user_policy(UserName="alice", PolicyName="read-ec2", PolicyDocument=READ_EC2)
    iam.attach_user_policy(UserName="alice", PolicyArn=guard_arn)

    iam.create_role(
        RoleName="app", AssumeRolePolicyDocument=TRUST, PermissionsBoundary=boundary_arn
    )
    iam.put_role_policy(RoleName="app", PolicyName="deny-s3", PolicyDocument=DENY_S3)
    iam.attach_role_policy(RoleName="app", PolicyArn=guard_arn)
    iam.attach_role_policy(RoleName="app", PolicyArn=plain_arn)
    iam.create_role(RoleName="ci", Path="/build/", AssumeRolePolicyDocument=TRUST)
    iam.put_role_permissions_boundary(RoleName="ci", PermissionsBoundary=boundary_arn)

    iam.create_group(GroupName="devs")
    iam.put_group_policy(GroupName="devs", PolicyName="read-ec2", PolicyDocument=READ_EC2)
    iam.attach_group_policy(GroupName="devs", PolicyArn=guard_arn)
    iam.add_user_to_group(GroupName="devs", UserName="alice")
    return World(account, guard_arn, boundary_arn, plain_arn)


def iam_as(moto: MotoServer, account: str) -> IAMClient:
    """An IAM client acting in ``account`` (moto maps assumed-role credentials to it)."""
    sts = boto3.client("sts", endpoint_url=moto.endpoint_url, region_name=moto.region)
    creds = sts.assume_role(
        RoleArn=ROLE_TEMPLATE.format(account_id=account), RoleSessionName="test-setup"
    )["Credentials"]
    return boto3.client(
        "iam",
        endpoint_url=moto.endpoint_url,
        region_name=moto.region,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


@pytest.fixture
def world(clean_moto: MotoServer, boto3_session_clients: Boto3Clients) -> World:
    made = build_local_account(boto3_session_clients.iam, clean_moto.account_id)
    other = iam_as(clean_moto, OTHER_ACCOUNT)
    other.create_user(UserName="carol")
    other.put_user_policy(UserName="carol", PolicyName="deny-s3", PolicyDocument=DENY_S3)
    return made


def config_text(moto: MotoServer, tmp_path: Path, **snapshot: Any) -> str:
    lines = [
        "[aws]",
        f'endpoint_url = "{moto.endpoint_url}"',
        f'region = "{moto.region}"',
        "[logging]",
        'format = "json"',
        "[state]",
        f'path = "{tmp_path / "state.sqlite3"}"',
        "[snapshot]",
        f"accounts = [{', '.join(repr(a) for a in snapshot.get('accounts', [OTHER_ACCOUNT]))}]",
        f'role_arn_template = "{ROLE_TEMPLATE}"',
    ]
    if "external_id" in snapshot:
        lines.append(f'external_id = "{snapshot["external_id"]}"')
    return "\n".join(lines) + "\n"


def load(moto: MotoServer, tmp_path: Path, **snapshot: Any) -> Config:
    return parse_config(config_text(moto, tmp_path, **snapshot), file="test.toml")


async def check_local_account(store: SqliteHistoryStore, world: World) -> None:
    acct = world.account
    for kind, name, policy, document in [
        ("user", "alice", "deny-s3", DENY_S3),
        ("user", "alice", "read-ec2", READ_EC2),
        ("role", "app", "deny-s3", DENY_S3),
        ("group", "devs", "read-ec2", READ_EC2),
    ]:
        found = await store.inline_policy(acct, kind, name, policy, before=None)  # type: ignore[arg-type]
        assert found is not None, (kind, name, policy)
        assert found.document == document  # byte for byte, as submitted
        assert found.event_id.startswith(f"snapshot:{found.event_time}:{acct}:")

    guard = await store.managed_policy(world.guard_arn, before=None)
    assert guard is not None
    assert (guard.policy_name, guard.path, guard.account_id) == ("Guard", "/team/", acct)
    assert guard.versions == {"v1": GUARD_V1, "v2": GUARD_V2, "v3": GUARD_V3}
    assert (guard.default_version_id, guard.default_document) == ("v2", GUARD_V2)
    v3 = await store.policy_version(world.guard_arn, "v3")
    assert v3 is not None
    assert (v3.document, v3.is_default) == (GUARD_V3, False)
    plain = await store.managed_policy(world.plain_arn, before=None)
    assert plain is not None
    assert (plain.path, plain.default_document) == ("/", READ_EC2)

    assert await store.attachments(world.guard_arn, before=None) == [
        ("group", "devs"),
        ("role", "app"),
        ("user", "alice"),
    ]
    assert await store.attachments(world.plain_arn, before=None) == [("role", "app")]
    assert await store.attached_policies(acct, "role", "app", before=None) == sorted(
        [world.guard_arn, world.plain_arn]
    )
    assert await store.boundary(acct, "role", "app", before=None) == world.boundary_arn
    assert await store.boundary(acct, "role", "ci", before=None) == world.boundary_arn
    assert await store.boundary(acct, "user", "alice", before=None) is None


async def test_snapshot_stores_exact_documents_of_both_accounts(
    world: World, clean_moto: MotoServer, tmp_path: Path
) -> None:
    config = load(clean_moto, tmp_path)
    async with await SqliteHistoryStore.open(tmp_path / "history.sqlite3") as store:
        results = await take_snapshot(config, store)
        assert [(r.account_id, r.role_arn, r.error) for r in results] == [
            (world.account, None, None),
            (OTHER_ACCOUNT, ROLE_TEMPLATE.format(account_id=OTHER_ACCOUNT), None),
        ]
        local, other = results
        assert (local.users, local.roles, local.groups, local.policies) == (1, 2, 1, 3)
        # 4 inline + 3 policies (+2 extra Guard versions) + 4 attachments + 2 boundaries
        assert local.facts == local.recorded == 15
        assert local.bad_documents == 0
        assert (other.users, other.facts) == (1, 1)

        await check_local_account(store, world)
        carol = await store.inline_policy(OTHER_ACCOUNT, "user", "carol", "deny-s3", before=None)
        assert carol is not None
        assert (carol.account_id, carol.document) == (OTHER_ACCOUNT, DENY_S3)
        # the local account's alice is not the other account's
        assert (
            await store.inline_policy(OTHER_ACCOUNT, "user", "alice", "deny-s3", before=None)
            is None
        )

        # Nothing is known before the snapshot was taken.
        assert (
            await store.inline_policy(
                world.account, "user", "alice", "deny-s3", before=local.taken_at
            )
            is None
        )


async def test_trail_events_after_the_snapshot_supersede_it(
    world: World, clean_moto: MotoServer, tmp_path: Path, boto3_session_clients: Boto3Clients
) -> None:
    config = load(clean_moto, tmp_path, accounts=[])
    async with await SqliteHistoryStore.open(tmp_path / "history.sqlite3") as store:
        (local,) = await take_snapshot(config, store)
        assert local.error is None
        # The removal happens for real, and its record (and a later put) reach history.
        iam = boto3_session_clients.iam
        iam.delete_user_policy(UserName="alice", PolicyName="deny-s3")
        removal_time = "2999-01-01T00:00:00Z"
        removal = make_record(
            "DeleteUserPolicy",
            {"userName": "alice", "policyName": "deny-s3"},
            event_time=removal_time,
            event_id="removal",
        )
        record = msgspec.json.decode(json.dumps(removal), type=Record)
        assert await store.record(facts_from_record(record)) == 1
        # What to put back: the snapshot's document, exactly.
        found = await store.inline_policy(
            world.account, "user", "alice", "deny-s3", before=removal_time
        )
        assert found is not None
        assert found.document == DENY_S3

        # A snapshot taken again records a new baseline; the old facts stay.
        (again,) = await take_snapshot(config, store)
        assert again.taken_at > local.taken_at
        assert again.facts == local.facts - 1  # deny-s3 of alice is gone
        assert (
            await store.inline_policy(world.account, "user", "alice", "read-ec2", before=None)
            is not None
        )


async def test_only_the_accounts_asked_for(
    world: World, clean_moto: MotoServer, tmp_path: Path
) -> None:
    config = load(clean_moto, tmp_path, external_id="trailguard-ext-1")
    async with await SqliteHistoryStore.open(tmp_path / "history.sqlite3") as store:
        results = await take_snapshot(config, store, accounts=[OTHER_ACCOUNT, OTHER_ACCOUNT])
        assert [r.account_id for r in results] == [OTHER_ACCOUNT]
        assert results[0].error is None
        assert await store.managed_policy(world.guard_arn, before=None) is None


async def test_an_unreachable_endpoint_fails_clearly(tmp_path: Path) -> None:
    config = parse_config(
        '[aws]\nendpoint_url = "http://127.0.0.1:9"\n[snapshot]\naccounts = []\n', file="x"
    )
    async with await SqliteHistoryStore.open(tmp_path / "history.sqlite3") as store:
        with pytest.raises(OperationError, match="GetCallerIdentity"):
            await take_snapshot(config, store)


# --------------------------------------------------------------------------------------------
# The CLI, as an operator runs it
# --------------------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trailguard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


async def test_cli_snapshot(world: World, clean_moto: MotoServer, tmp_path: Path) -> None:
    config_file = tmp_path / "trailguard.toml"
    config_file.write_text(config_text(clean_moto, tmp_path, external_id="ext-id-not-logged"))
    result = run("snapshot", "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"account {world.account}: 1 user(s), 2 role(s), 1 group(s)")
    assert "15 fact(s), 15 new" in lines[0]
    assert lines[1].startswith(
        f"account {OTHER_ACCOUNT} (as {ROLE_TEMPLATE.format(account_id=OTHER_ACCOUNT)}): 1 user(s)"
    )
    assert "snapshot.account_done" in result.stderr
    assert "ext-id-not-logged" not in result.stdout + result.stderr

    history_file = default_history_path(tmp_path / "state.sqlite3")
    assert history_file.exists()
    async with await SqliteHistoryStore.open(history_file) as store:
        await check_local_account(store, world)
        carol = await store.inline_policy(OTHER_ACCOUNT, "user", "carol", "deny-s3", before=None)
        assert carol is not None
        assert carol.document == DENY_S3

    only = run("snapshot", "--config", str(config_file), "--account", OTHER_ACCOUNT)
    assert only.returncode == 0, only.stderr
    assert len(only.stdout.splitlines()) == 1


def test_cli_snapshot_usage_errors(clean_moto: MotoServer, tmp_path: Path) -> None:
    config_file = tmp_path / "trailguard.toml"
    config_file.write_text(config_text(clean_moto, tmp_path))
    bad = run("snapshot", "--config", str(config_file), "--account", "12345")
    assert bad.returncode == 2
    assert "12-digit" in bad.stderr
    assert run("snapshot").returncode == 2  # --config is required
    disabled = tmp_path / "disabled.toml"
    disabled.write_text(config_text(clean_moto, tmp_path) + "[history]\nenabled = false\n")
    off = run("snapshot", "--config", str(disabled))
    assert off.returncode == 2
    assert "disabled" in off.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text('[snapshot]\nrole_arn_template = "arn:aws:iam::123456789012:role/x"\n')
    result = run("snapshot", "--config", str(broken))
    assert result.returncode == 2
    assert "snapshot.role_arn_template" in result.stderr


def test_cli_snapshot_unreachable_endpoint_exits_1(tmp_path: Path) -> None:
    config_file = tmp_path / "trailguard.toml"
    config_file.write_text(
        '[aws]\nendpoint_url = "http://127.0.0.1:9"\n'
        f'[state]\npath = "{tmp_path / "state.sqlite3"}"\n'
    )
    result = run("snapshot", "--config", str(config_file))
    assert result.returncode == 1
    assert "GetCallerIdentity" in result.stderr
