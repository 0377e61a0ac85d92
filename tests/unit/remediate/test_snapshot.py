"""The snapshot below the HTTP layer: GetAccountAuthorizationDetails pages -> facts, document
decoding, the STS/IAM calls it makes (a fake session), and the [history]/[snapshot] config.

User permissions boundaries are tested here because moto cannot hold them (its CreateUser
ignores PermissionsBoundary; Put/DeleteUserPermissionsBoundary answer HTTP 500).
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.handlers import json_decode_policies
from structlog.testing import capture_logs

from tests.conftest import ROOT
from trailguard.config import Config, HistoryConfig, SnapshotConfig, load_config, parse_config
from trailguard.detect.policy_facts import PolicyFact
from trailguard.errors import ConfigError
from trailguard.remediate.snapshot import (
    facts_from_authorization_details,
    policy_document_text,
    snapshot_event_id,
    take_snapshot,
)
from trailguard.state.policy_history_sqlite import SqliteHistoryStore

LOCAL = "123456789012"
OTHER = "111122223333"
DENIED = "444455556666"
TAKEN = "2026-11-01T12:00:00.000000Z"
DOC = (
    '{\n  "Version": "2012-10-17",\n  "Statement": [{"Effect": "Deny", "Action": "*", '
    '"Resource": "a b+c%20"}]\n}'
)
DOC2 = '{"Version":"2012-10-17","Statement":[]}'
GUARD = f"arn:aws:iam::{LOCAL}:policy/team/Guard"
BOUND = f"arn:aws:iam::{LOCAL}:policy/Boundary"


def enc(text: str) -> str:
    """How IAM sends a document: URL-encoded (RFC 3986)."""
    return urllib.parse.quote(text, safe="")


# A page shaped as the IAM API reference documents GetAccountAuthorizationDetails' result.
PAGE: dict[str, Any] = {
    "UserDetailList": [
        {
            "Path": "/",
            "UserName": "alice",
            "UserId": "AIDAEXAMPLE",
            "Arn": f"arn:aws:iam::{LOCAL}:user/alice",
            "UserPolicyList": [{"PolicyName": "deny", "PolicyDocument": enc(DOC)}],
            "GroupList": ["devs"],
            "AttachedManagedPolicies": [
                {"PolicyName": "Guard", "PolicyArn": GUARD},
                {
                    "PolicyName": "ReadOnlyAccess",
                    "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess",
                },
            ],
            "PermissionsBoundary": {
                "PermissionsBoundaryType": "PermissionsBoundaryPolicy",
                "PermissionsBoundaryArn": BOUND,
            },
        },
        {"UserName": None},  # no name: skipped
        "garbage",
    ],
    "GroupDetailList": [
        {
            "GroupName": "devs",
            "GroupPolicyList": [{"PolicyName": "g", "PolicyDocument": enc(DOC2)}],
            "AttachedManagedPolicies": [{"PolicyArn": GUARD}],
            "PermissionsBoundary": {"PermissionsBoundaryArn": BOUND},  # groups have none
        }
    ],
    "RoleDetailList": [
        {
            "RoleName": "app",
            "RolePolicyList": [
                {"PolicyName": "bad", "PolicyDocument": enc("not json")},
                {"PolicyName": "raw", "PolicyDocument": DOC2},  # an emulator that did not encode
            ],
            "AttachedManagedPolicies": "not a list",
            "PermissionsBoundary": {"PermissionsBoundaryArn": "not an arn"},
        }
    ],
    "Policies": [
        {
            "PolicyName": "Guard",
            "Arn": GUARD,
            "Path": "/team/",
            "DefaultVersionId": "v2",
            "PolicyVersionList": [
                {"Document": enc(DOC), "VersionId": "v1", "IsDefaultVersion": False},
                {"Document": enc(DOC2), "VersionId": "v2", "IsDefaultVersion": True},
            ],
        },
        {"Arn": "arn:aws:s3:::not-a-policy"},
    ],
    "IsTruncated": False,
}


def test_facts_from_a_page() -> None:
    facts, counts = facts_from_authorization_details([PAGE], account_id=LOCAL, taken_at=TAKEN)
    assert counts == {"users": 1, "roles": 1, "groups": 1, "policies": 1, "bad_documents": 1}
    summary = [
        (f.kind, f.principal_kind, f.principal_name, f.policy_name, f.policy_arn, f.version_id)
        for f in facts
    ]
    assert summary == [
        ("inline_policy", "user", "alice", "deny", None, None),
        ("attachment", "user", "alice", "Guard", GUARD, None),
        (
            "attachment",
            "user",
            "alice",
            "ReadOnlyAccess",
            "arn:aws:iam::aws:policy/ReadOnlyAccess",
            None,
        ),
        ("boundary", "user", "alice", "Boundary", BOUND, None),
        ("inline_policy", "role", "app", "bad", None, None),
        ("inline_policy", "role", "app", "raw", None, None),
        ("inline_policy", "group", "devs", "g", None, None),
        ("attachment", "group", "devs", "Guard", GUARD, None),
        ("managed_policy", None, None, "Guard", GUARD, "v2"),
        ("policy_version", None, None, "Guard", GUARD, "v1"),
    ]
    by_name = {(f.kind, f.policy_name, f.version_id): f for f in facts}
    assert by_name[("inline_policy", "deny", None)].document == DOC
    assert by_name[("inline_policy", "bad", None)].document is None
    assert by_name[("inline_policy", "raw", None)].document == DOC2
    default = by_name[("managed_policy", "Guard", "v2")]
    assert (default.document, default.path, default.set_as_default) == (DOC2, "/team/", True)
    other = by_name[("policy_version", "Guard", "v1")]
    assert (other.document, other.set_as_default) == (DOC, False)
    assert all(f.op == "put" and f.account_id == LOCAL and f.event_time == TAKEN for f in facts)
    ids = [f.event_id for f in facts]
    assert ids == sorted(ids)  # zero-padded: the managed policy sorts before its versions
    assert ids[0] == snapshot_event_id(TAKEN, LOCAL, 1) == f"snapshot:{TAKEN}:{LOCAL}:00000001"


def test_pages_of_any_shape_never_raise() -> None:
    pages: list[Any] = [
        {},
        {"UserDetailList": None, "Policies": {"a": 1}},
        {"UserDetailList": [{"UserName": "u", "UserPolicyList": [{"PolicyName": 5}]}]},
        {"Policies": [{"Arn": GUARD, "PolicyVersionList": [None, {"VersionId": 3}]}]},
    ]
    facts, counts = facts_from_authorization_details(pages, account_id=LOCAL, taken_at=TAKEN)
    assert counts["users"] == 1
    (managed,) = facts
    assert (managed.kind, managed.version_id, managed.document) == ("managed_policy", None, None)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (enc(DOC), DOC),
        (DOC, DOC),  # already text: kept, '%20' inside is not decoded
        ({"Version": "2012-10-17"}, '{"Version":"2012-10-17"}'),
        (enc("[1, 2]"), None),
        ("", None),
        (None, None),
        (42, None),
        ({"x": object()}, None),  # not JSON-encodable
    ],
)
def test_policy_document_text(value: Any, want: str | None) -> None:
    assert policy_document_text(value) == want


# --------------------------------------------------------------------------------------------
# take_snapshot with a fake aiobotocore session
# --------------------------------------------------------------------------------------------


class FakeEvents:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def unregister(self, event: str, handler: Any) -> None:
        self.log.append(("unregister", event, handler))


class FakePaginator:
    def __init__(self, log: list[Any], pages: list[dict[str, Any]]) -> None:
        self.log = log
        self.pages = pages

    async def _pages(self) -> AsyncIterator[dict[str, Any]]:
        for page in self.pages:
            yield page

    def paginate(self, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        self.log.append(("paginate", kwargs))
        return self._pages()


class FakeClient:
    def __init__(self, session: FakeSession, service: str, kwargs: dict[str, Any]) -> None:
        self.session = session
        self.service = service
        self.kwargs = kwargs
        self.meta = SimpleNamespace(events=FakeEvents(session.log))

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def get_caller_identity(self) -> dict[str, Any]:
        return {"Account": LOCAL, "Arn": f"arn:aws:iam::{LOCAL}:user/ops"}

    async def assume_role(self, **kwargs: Any) -> dict[str, Any]:
        self.session.log.append(("assume_role", kwargs))
        if DENIED in kwargs["RoleArn"]:
            error: Any = {
                "Error": {"Code": "AccessDenied", "Message": "not authorized"},
                "ResponseMetadata": {"HTTPStatusCode": 403},
            }
            raise ClientError(
                error,
                "AssumeRole",
            )
        account = kwargs["RoleArn"].split(":")[4]
        return {
            "Credentials": {
                "AccessKeyId": f"ASIA{account}",
                "SecretAccessKey": "secret",
                "SessionToken": "token",
                "Expiration": dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
            }
        }

    def get_paginator(self, name: str) -> FakePaginator:
        assert name == "get_account_authorization_details"
        account = LOCAL
        key = self.kwargs.get("aws_access_key_id")
        if isinstance(key, str):
            account = key.removeprefix("ASIA")
        return FakePaginator(self.session.log, self.session.pages[account])


class FakeSession:
    def __init__(self, pages: dict[str, list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.log: list[Any] = []

    def create_client(self, service: str, **kwargs: Any) -> FakeClient:
        self.log.append(("create_client", service, kwargs))
        return FakeClient(self, service, kwargs)


def snapshot_config(**snapshot: Any) -> Config:
    return Config(snapshot=SnapshotConfig(**snapshot))


async def test_take_snapshot_calls(tmp_path: Path) -> None:
    other_page = {"UserDetailList": [{"UserName": "carol"}]}
    session = FakeSession({LOCAL: [PAGE, {"IsTruncated": False}], OTHER: [other_page]})
    config = snapshot_config(
        accounts=(OTHER, DENIED),
        external_id="ext-123456",
        include_aws_managed_policies=True,
    )
    clock_values = iter([1_793_534_400.0, 1_793_534_401.5, 1_793_534_402.0])
    async with await SqliteHistoryStore.open(tmp_path / "h.sqlite3") as store:
        with capture_logs() as logs:
            results = await take_snapshot(
                config, store, session=session, clock=lambda: next(clock_values)
            )
        local, other, denied = results
        assert (local.account_id, local.role_arn, local.error) == (LOCAL, None, None)
        assert local.taken_at == "2026-11-01T12:00:00.000000Z"
        assert (local.facts, local.recorded, local.bad_documents) == (10, 10, 1)
        assert (other.account_id, other.users, other.facts, other.error) == (OTHER, 1, 0, None)
        assert other.role_arn == f"arn:aws:iam::{OTHER}:role/trailguard-snapshot"
        assert denied.error is not None
        assert "AccessDenied" in denied.error
        assert denied.render().startswith(f"account {DENIED} (as arn:aws:iam::{DENIED}:role/")
        assert "FAILED" in denied.render()
        boundary = await store.boundary(LOCAL, "user", "alice", before=None)
        assert boundary == BOUND

    assumed = [entry[1] for entry in session.log if entry[0] == "assume_role"]
    assert assumed == [
        {
            "RoleArn": f"arn:aws:iam::{account}:role/trailguard-snapshot",
            "RoleSessionName": "trailguard-snapshot",
            "DurationSeconds": 3600,
            "ExternalId": "ext-123456",
        }
        for account in (OTHER, DENIED)
    ]
    iam_clients = [entry[2] for entry in session.log if entry[:2] == ("create_client", "iam")]
    assert "aws_access_key_id" not in iam_clients[0]  # local: default credentials
    assert iam_clients[1]["aws_access_key_id"] == f"ASIA{OTHER}"
    assert iam_clients[1]["aws_session_token"] == "token"
    unregistered = [entry for entry in session.log if entry[0] == "unregister"]
    assert unregistered == [("unregister", "after-call.iam", json_decode_policies)] * 2
    filters = [entry[1]["Filter"] for entry in session.log if entry[0] == "paginate"]
    assert filters == [["User", "Role", "Group", "LocalManagedPolicy", "AWSManagedPolicy"]] * 2

    events = [entry["event"] for entry in logs]
    assert events == ["snapshot.account_done", "snapshot.account_done", "snapshot.account_failed"]
    assert "ext-123456" not in repr(logs)


async def test_default_filters_and_explicit_accounts(tmp_path: Path) -> None:
    session = FakeSession({LOCAL: [PAGE], OTHER: [{}]})
    async with await SqliteHistoryStore.open(tmp_path / "h.sqlite3") as store:
        results = await take_snapshot(
            snapshot_config(accounts=(OTHER,)), store, session=session, accounts=[LOCAL]
        )
    assert [r.account_id for r in results] == [LOCAL]
    assert not [entry for entry in session.log if entry[0] == "assume_role"]
    filters = [entry[1]["Filter"] for entry in session.log if entry[0] == "paginate"]
    assert filters == [["User", "Role", "Group", "LocalManagedPolicy"]]


async def test_facts_are_what_the_store_gets(tmp_path: Path) -> None:
    session = FakeSession({LOCAL: [PAGE]})
    async with await SqliteHistoryStore.open(tmp_path / "h.sqlite3") as store:
        (result,) = await take_snapshot(snapshot_config(), store, session=session)
        fact = await store.inline_policy(LOCAL, "user", "alice", "deny", before=None)
        assert isinstance(fact, PolicyFact)
        assert (fact.document, fact.event_time) == (DOC, result.taken_at)
        assert await store.attachments(GUARD, before=None) == [("group", "devs"), ("user", "alice")]


# --------------------------------------------------------------------------------------------
# [history] and [snapshot]
# --------------------------------------------------------------------------------------------


def test_config_defaults_and_example_file() -> None:
    config = Config()
    assert config.history == HistoryConfig(enabled=True, path=None)
    assert config.snapshot.accounts == ()
    assert config.snapshot.role_arn_template == "arn:aws:iam::{account_id}:role/trailguard-snapshot"
    assert config.snapshot.external_id is None
    assert config.snapshot.include_aws_managed_policies is False
    assert config.snapshot.role_arn(OTHER) == f"arn:aws:iam::{OTHER}:role/trailguard-snapshot"
    example = load_config(ROOT / "config" / "trailguard.example.toml")
    assert example.history == config.history
    assert example.snapshot == config.snapshot


def test_config_values() -> None:
    config = parse_config(
        "[history]\nenabled = false\npath = '/srv/tg/history.sqlite3'\n"
        "[snapshot]\naccounts = ['111122223333', '444455556666']\n"
        "role_arn_template = 'arn:aws-cn:iam::{account_id}:role/ops/trailguard-read'\n"
        "external_id = 'Ab1+=,.@:/-_x'\ninclude_aws_managed_policies = true\n",
        file="t.toml",
    )
    assert config.history == HistoryConfig(enabled=False, path="/srv/tg/history.sqlite3")
    assert config.snapshot.role_arn("111122223333") == (
        "arn:aws-cn:iam::111122223333:role/ops/trailguard-read"
    )
    assert config.snapshot.external_id == "Ab1+=,.@:/-_x"


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("[history]\npath = ''", "history.path", "must not be empty"),
        ("[history]\nenable = true", "history.enable", "did you mean 'enabled'"),
        ("[snapshot]\naccounts = ['12345']", "snapshot.accounts[0]", "12-digit"),
        (
            "[snapshot]\naccounts = ['111122223333', '111122223333']",
            "snapshot.accounts[1]",
            "duplicate",
        ),
        (
            "[snapshot]\nrole_arn_template = 'arn:aws:iam::111122223333:role/x'",
            "snapshot.role_arn_template",
            "must contain {account_id}",
        ),
        (
            "[snapshot]\nrole_arn_template = 'arn:aws:iam::{account_id}:user/x'",
            "snapshot.role_arn_template",
            "not an IAM role ARN",
        ),
        (
            "[snapshot]\nrole_arn_template = 'arn:aws:iam::{account_id}:role/{name}'",
            "snapshot.role_arn_template",
            "no other {} fields",
        ),
        (
            "[snapshot]\nrole_arn_template = '{account_id}'",
            "snapshot.role_arn_template",
            "not an IAM role ARN",
        ),
        (
            "[snapshot]\nrole_arn_template = 'arn:aws:iam::{account_id}:role/{'",
            "snapshot.role_arn_template",
            "not an IAM role ARN",
        ),
    ],
)
def test_config_errors(text: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, file="t.toml")
    assert caught.value.key_path == key
    assert message in caught.value.reason


@pytest.mark.parametrize("external_id", ["Z", "has space", "a" * 1225, "semi;colon"])
def test_a_bad_external_id_is_not_repeated_in_the_error(external_id: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[snapshot]\nexternal_id = '{external_id}'", file="t.toml")
    assert caught.value.key_path == "snapshot.external_id"
    assert external_id not in str(caught.value)
