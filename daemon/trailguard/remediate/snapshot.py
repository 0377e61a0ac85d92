"""``trailguard snapshot``: seed the policy history with what IAM holds now.

For each account, IAM GetAccountAuthorizationDetails (paginated; Filter User, Role, Group,
LocalManagedPolicy and optionally AWSManagedPolicy) gives every inline policy of users, roles and
groups, every managed policy with all its versions and which one is the default, every
attachment and every permissions boundary.  They are stored as policy facts whose eventTime is
the moment the snapshot started, so trail events after it supersede it and events before it are
superseded by it.  A snapshot records what exists; it cannot record what does not (a detach the
trail never showed stays unknown to history).

The local account is read with the default credentials; every other account through the role
``[snapshot] role_arn_template`` names in it (STS AssumeRole, with ``external_id`` if set).

Policy documents: IAM returns them URL-encoded (RFC 3986) JSON text, and botocore's built-in
``after-call.iam`` handler (``json_decode_policies``) would turn them into dicts and lose the
exact text.  That handler is removed from this module's IAM clients, and the text is decoded
here with ``urllib.parse.unquote``: the document exactly as it was submitted (whitespace and key
order kept), as CloudTrail's ``policyDocument`` is.  moto's server returns the same encoding.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec
from botocore.handlers import json_decode_policies

from trailguard.aws import (
    assume_role,
    caller_account,
    classify,
    client_config,
    client_kwargs,
    make_session,
)
from trailguard.config import Config
from trailguard.detect.detection import policy_name_from_arn
from trailguard.detect.policy_facts import (
    FactKind,
    PolicyFact,
    PrincipalKind,
    is_json_object_text,
    is_policy_arn,
    path_from_policy_arn,
)
from trailguard.errors import OperationError
from trailguard.state.policy_history import PolicyHistoryStore
from trailguard.telemetry.logging import get_logger

__all__ = [
    "AccountSnapshot",
    "facts_from_authorization_details",
    "policy_document_text",
    "snapshot_event_id",
    "take_snapshot",
]

log = get_logger(__name__)

ROLE_SESSION_NAME: Final = "trailguard-snapshot"
SESSION_SECONDS: Final = 3600
_FILTERS: Final = ("User", "Role", "Group", "LocalManagedPolicy")


class AccountSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What the snapshot of one account found and stored."""

    account_id: str
    #: the snapshot's eventTime (when GetAccountAuthorizationDetails was first called)
    taken_at: str
    #: the role assumed, or None for the local account (default credentials)
    role_arn: str | None
    users: int = 0
    roles: int = 0
    groups: int = 0
    policies: int = 0
    facts: int = 0
    #: facts not already in the history (0 when the same snapshot is stored again)
    recorded: int = 0
    #: documents left out because they were not JSON objects
    bad_documents: int = 0
    #: why this account failed, or None
    error: str | None = None

    def render(self) -> str:
        """One line for the operator."""
        via = f" (as {self.role_arn})" if self.role_arn else ""
        if self.error is not None:
            return f"account {self.account_id}{via}: FAILED: {self.error}"
        bad = (
            f", {self.bad_documents} unreadable document(s) left out" if self.bad_documents else ""
        )
        return (
            f"account {self.account_id}{via}: {self.users} user(s), {self.roles} role(s), "
            f"{self.groups} group(s), {self.policies} managed policy(ies) -> {self.facts} "
            f"fact(s), {self.recorded} new{bad}"
        )


# --------------------------------------------------------------------------------------------
# Pure: the API's pages -> facts
# --------------------------------------------------------------------------------------------


def snapshot_event_id(taken_at: str, account_id: str, n: int) -> str:
    """``snapshot:<time>:<account>:<n>``, n zero-padded so ids sort in the order facts were made."""
    return f"snapshot:{taken_at}:{account_id}:{n:08d}"


def policy_document_text(value: object) -> str | None:
    """The JSON text of a policy document from GetAccountAuthorizationDetails, or None.

    IAM sends URL-encoded JSON text; a value that is already JSON text (an emulator that does not
    encode) is kept as it is; a dict (botocore's decoding handler ran after all) is re-encoded,
    losing only the original whitespace.  Anything that is not a JSON object gives None.
    """
    if isinstance(value, Mapping):
        try:
            text = msgspec.json.encode(value).decode()
        except (TypeError, msgspec.EncodeError):
            return None
    elif isinstance(value, str):
        # Encoded text never holds a raw brace or quote; JSON text always does.
        text = value if ("{" in value or '"' in value) else urllib.parse.unquote(value)
    else:
        return None
    return text if is_json_object_text(text) else None


class _Facts:
    def __init__(self, account_id: str, taken_at: str) -> None:
        self.account_id = account_id
        self.taken_at = taken_at
        self.facts: list[PolicyFact] = []
        self.bad_documents = 0

    def add(
        self,
        kind: FactKind,
        *,
        principal_kind: PrincipalKind | None = None,
        principal_name: str | None = None,
        policy_name: str | None = None,
        policy_arn: str | None = None,
        version_id: str | None = None,
        document: object = None,
        path: str | None = None,
        set_as_default: bool | None = None,
    ) -> None:
        text: str | None = None
        if document is not None:
            text = policy_document_text(document)
            if text is None:
                self.bad_documents += 1
        self.facts.append(
            PolicyFact(
                kind=kind,
                op="put",
                account_id=self.account_id,
                principal_kind=principal_kind,
                principal_name=principal_name,
                policy_name=policy_name,
                policy_arn=policy_arn,
                version_id=version_id,
                document=text,
                path=path,
                set_as_default=set_as_default,
                event_id=snapshot_event_id(self.taken_at, self.account_id, len(self.facts) + 1),
                event_time=self.taken_at,
            )
        )


def _items(mapping: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = mapping.get(key)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _str(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) and value else None


_PRINCIPALS: Final[tuple[tuple[str, PrincipalKind, str, str], ...]] = (
    ("UserDetailList", "user", "UserName", "UserPolicyList"),
    ("RoleDetailList", "role", "RoleName", "RolePolicyList"),
    ("GroupDetailList", "group", "GroupName", "GroupPolicyList"),
)


def facts_from_authorization_details(
    pages: Iterable[Mapping[str, Any]], *, account_id: str, taken_at: str
) -> tuple[list[PolicyFact], dict[str, int]]:
    """Facts for every inline policy, managed policy version, attachment and boundary in the
    pages of one account's GetAccountAuthorizationDetails; and counts of what was seen
    (``users``, ``roles``, ``groups``, ``policies``, ``bad_documents``).

    Per managed policy the default version comes first (as a ``managed_policy`` fact, which
    history folds as "the policy as it is now"), then its other versions.
    """
    out = _Facts(account_id, taken_at)
    counts = {"users": 0, "roles": 0, "groups": 0, "policies": 0}
    for page in pages:
        for list_key, kind, name_key, inline_key in _PRINCIPALS:
            for entity in _items(page, list_key):
                name = _str(entity, name_key)
                if name is None:
                    continue
                counts[f"{kind}s"] += 1
                for inline in _items(entity, inline_key):
                    policy_name = _str(inline, "PolicyName")
                    if policy_name is not None:
                        out.add(
                            "inline_policy",
                            principal_kind=kind,
                            principal_name=name,
                            policy_name=policy_name,
                            document=inline.get("PolicyDocument"),
                        )
                for attached in _items(entity, "AttachedManagedPolicies"):
                    arn = _str(attached, "PolicyArn")
                    if arn is not None and is_policy_arn(arn):
                        out.add(
                            "attachment",
                            principal_kind=kind,
                            principal_name=name,
                            policy_name=policy_name_from_arn(arn),
                            policy_arn=arn,
                        )
                boundary = entity.get("PermissionsBoundary")
                if kind != "group" and isinstance(boundary, Mapping):
                    arn = _str(boundary, "PermissionsBoundaryArn")
                    if arn is not None and is_policy_arn(arn):
                        out.add(
                            "boundary",
                            principal_kind=kind,
                            principal_name=name,
                            policy_name=policy_name_from_arn(arn),
                            policy_arn=arn,
                        )
        for policy in _items(page, "Policies"):
            arn = _str(policy, "Arn")
            if arn is None or not is_policy_arn(arn):
                continue
            counts["policies"] += 1
            versions = _items(policy, "PolicyVersionList")
            default_id = _str(policy, "DefaultVersionId")
            default = next((v for v in versions if _str(v, "VersionId") == default_id), None)
            name = _str(policy, "PolicyName") or policy_name_from_arn(arn)
            path = _str(policy, "Path") or path_from_policy_arn(arn)
            out.add(
                "managed_policy",
                policy_name=name,
                policy_arn=arn,
                version_id=default_id,
                document=default.get("Document") if default is not None else None,
                path=path,
                set_as_default=True,
            )
            for version in versions:
                version_id = _str(version, "VersionId")
                if version_id is None or version_id == default_id:
                    continue
                out.add(
                    "policy_version",
                    policy_name=name,
                    policy_arn=arn,
                    version_id=version_id,
                    document=version.get("Document"),
                    path=path,
                    set_as_default=False,
                )
    counts["bad_documents"] = out.bad_documents
    return out.facts, counts


# --------------------------------------------------------------------------------------------
# The AWS side
# --------------------------------------------------------------------------------------------


def _now(clock: Callable[[], float]) -> str:
    stamp = dt.datetime.fromtimestamp(clock(), dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def take_snapshot(
    config: Config,
    store: PolicyHistoryStore,
    *,
    accounts: Sequence[str] | None = None,
    session: Any = None,
    clock: Callable[[], float] = time.time,
) -> list[AccountSnapshot]:
    """Snapshot the local account and ``[snapshot] accounts`` (or just ``accounts``) into
    ``store``; one :class:`AccountSnapshot` per account, failed ones with ``error`` set.

    Raises :class:`~trailguard.errors.OperationError` when the caller's own identity cannot be
    read (no credentials, no network), and :class:`~trailguard.errors.StateError` when the
    store fails: then nothing more can work.
    """
    session = session if session is not None else make_session()
    kwargs = client_kwargs(config.aws.region, config.aws.endpoint_url)
    snap = config.snapshot
    results: list[AccountSnapshot] = []
    async with session.create_client("sts", config=client_config(), **kwargs) as sts:
        local = await caller_account(sts, stage="snapshot")
        wanted = list(accounts) if accounts is not None else [local, *snap.accounts]
        for account_id in dict.fromkeys(wanted):
            role_arn = None if account_id == local else snap.role_arn(account_id)
            taken_at = _now(clock)
            try:
                credentials = (
                    None
                    if role_arn is None
                    else (
                        await assume_role(
                            sts,
                            role_arn,
                            session_name=ROLE_SESSION_NAME,
                            duration_secs=SESSION_SECONDS,
                            external_id=snap.external_id,
                            stage="snapshot",
                        )
                    ).client_kwargs
                )
                pages = await _read_account(
                    session,
                    kwargs,
                    credentials,
                    account_id,
                    role_arn,
                    include_aws_managed=snap.include_aws_managed_policies,
                )
            except OperationError as exc:
                log.error(
                    "snapshot.account_failed",
                    account_id=account_id,
                    role_arn=role_arn,
                    reason=exc.reason,
                    detail=exc.detail,
                )
                results.append(
                    AccountSnapshot(
                        account_id=account_id,
                        taken_at=taken_at,
                        role_arn=role_arn,
                        error=exc.detail,
                    )
                )
                continue
            facts, counts = facts_from_authorization_details(
                pages, account_id=account_id, taken_at=taken_at
            )
            recorded = await store.record(facts)
            result = AccountSnapshot(
                account_id=account_id,
                taken_at=taken_at,
                role_arn=role_arn,
                users=counts["users"],
                roles=counts["roles"],
                groups=counts["groups"],
                policies=counts["policies"],
                facts=len(facts),
                recorded=recorded,
                bad_documents=counts["bad_documents"],
            )
            log.info("snapshot.account_done", **msgspec.structs.asdict(result))
            results.append(result)
    return results


async def _read_account(
    session: Any,
    kwargs: dict[str, Any],
    credentials: dict[str, str] | None,
    account_id: str,
    role_arn: str | None,
    *,
    include_aws_managed: bool = False,
) -> list[Mapping[str, Any]]:
    """Every page of GetAccountAuthorizationDetails, documents left as IAM's text."""
    filters = [*_FILTERS, "AWSManagedPolicy"] if include_aws_managed else list(_FILTERS)
    what = f"account {account_id}: iam:GetAccountAuthorizationDetails"
    if role_arn is not None:
        what += f" as {role_arn}"
    pages: list[Mapping[str, Any]] = []
    try:
        async with session.create_client(
            "iam", config=client_config(), **kwargs, **(credentials or {})
        ) as iam:
            # Keep documents as the text IAM sent (see the module docstring).
            iam.meta.events.unregister("after-call.iam", json_decode_policies)
            paginator = iam.get_paginator("get_account_authorization_details")
            async for page in paginator.paginate(Filter=filters):
                pages.append(page)
    except Exception as exc:
        raise classify(exc, stage="snapshot", what=what) from exc
    return pages
