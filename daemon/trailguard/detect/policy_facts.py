"""Policy facts: what one CloudTrail record says about IAM policies (pure; no I/O).

Delete events carry no policy document, but the events that created a policy did:
Put{User,Role,Group}Policy, CreatePolicy and CreatePolicyVersion carry
``requestParameters.policyDocument`` as the raw JSON text submitted, and the Attach* /
Put*PermissionsBoundary events say what was attached.  :func:`facts_from_record` turns one
record into :class:`PolicyFact` values, which the policy history store
(``state/policy_history.py``) keeps in eventTime order so that a removed policy can be put back.

Rules, in order:

* only successful calls (no ``errorCode``/``errorMessage``) from ``iam.amazonaws.com`` with an
  ``eventID`` and a parseable ``eventTime`` yield facts;
* CloudTrail replaces a field larger than its limit (requestParameters and responseElements: 100
  KB) with an object holding ``"omitted": true`` (seen in the wild as
  ``{"reason": "requestParameters too large", "omitted": true, ...}``).  An omitted
  requestParameters yields no fact (it no longer names the principal or the policy); an omitted
  responseElements is treated as absent; a ``policyDocument`` that is not a string holding a JSON
  object (omitted, cut short, anything else) gives a fact whose ``document`` is None;
* a crafted record (any type anywhere, missing fields, a bad name or ARN) yields no fact for the
  part that is wrong and never raises;
* an eventID starting ``snapshot:`` yields no fact: that prefix marks facts ``trailguard
  snapshot`` read from IAM itself, which remediation trusts without asking CloudTrail -- a log
  file must not be able to pass for one.

CreateUser/CreateRole are read too, for the ``permissionsBoundary`` they may set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import msgspec

from trailguard.detect.detection import policy_name_from_arn
from trailguard.detect.record import Record
from trailguard.detect.rules import IAM_EVENT_SOURCE
from trailguard.detect.times import event_time_key

__all__ = [
    "HISTORY_EVENT_NAMES",
    "SNAPSHOT_EVENT_PREFIX",
    "FactKind",
    "FactOp",
    "PolicyFact",
    "PrincipalKind",
    "event_time_key",
    "facts_from_record",
    "is_json_object_text",
    "is_policy_arn",
    "is_snapshot_event_id",
    "managed_policy_arn",
    "path_from_policy_arn",
]

FactKind = Literal[
    "inline_policy", "managed_policy", "policy_version", "default_version", "attachment", "boundary"
]
FactOp = Literal["put", "delete"]
PrincipalKind = Literal["user", "role", "group"]


class PolicyFact(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a CloudTrail record (or a snapshot) says about an IAM policy.

    ``op`` is "put" for put/attach/create/set-default and "delete" for delete/detach.
    ``document`` is the policy JSON text exactly as submitted, or None when it is not known.
    ``event_name`` is the record's eventName (None for a snapshot's facts, and for facts recorded
    before trailguard kept it): confirmation compares it with CloudTrail's own record.
    """

    kind: FactKind
    op: FactOp
    account_id: str
    principal_kind: PrincipalKind | None
    principal_name: str | None
    policy_name: str | None
    policy_arn: str | None
    version_id: str | None
    document: str | None
    path: str | None
    set_as_default: bool | None
    event_id: str
    event_time: str
    event_name: str | None = None


# eventName -> (kind, op, principal kind)
_EVENTS: Final[dict[str, tuple[FactKind, FactOp, PrincipalKind | None]]] = {
    "PutUserPolicy": ("inline_policy", "put", "user"),
    "PutRolePolicy": ("inline_policy", "put", "role"),
    "PutGroupPolicy": ("inline_policy", "put", "group"),
    "DeleteUserPolicy": ("inline_policy", "delete", "user"),
    "DeleteRolePolicy": ("inline_policy", "delete", "role"),
    "DeleteGroupPolicy": ("inline_policy", "delete", "group"),
    "CreatePolicy": ("managed_policy", "put", None),
    "DeletePolicy": ("managed_policy", "delete", None),
    "CreatePolicyVersion": ("policy_version", "put", None),
    "DeletePolicyVersion": ("policy_version", "delete", None),
    "SetDefaultPolicyVersion": ("default_version", "put", None),
    "AttachUserPolicy": ("attachment", "put", "user"),
    "AttachRolePolicy": ("attachment", "put", "role"),
    "AttachGroupPolicy": ("attachment", "put", "group"),
    "DetachUserPolicy": ("attachment", "delete", "user"),
    "DetachRolePolicy": ("attachment", "delete", "role"),
    "DetachGroupPolicy": ("attachment", "delete", "group"),
    "PutUserPermissionsBoundary": ("boundary", "put", "user"),
    "PutRolePermissionsBoundary": ("boundary", "put", "role"),
    "DeleteUserPermissionsBoundary": ("boundary", "delete", "user"),
    "DeleteRolePermissionsBoundary": ("boundary", "delete", "role"),
    # A boundary can also be set when the principal is created.
    "CreateUser": ("boundary", "put", "user"),
    "CreateRole": ("boundary", "put", "role"),
}

#: Every eventName that may yield a fact (the ten removal APIs included).
HISTORY_EVENT_NAMES: Final[frozenset[str]] = frozenset(_EVENTS)

#: The eventIDs of facts ``trailguard snapshot`` read from IAM: ``snapshot:<time>:<account>:<n>``.
SNAPSHOT_EVENT_PREFIX: Final = "snapshot:"

_NAME_PARAM: Final[dict[PrincipalKind, str]] = {
    "user": "userName",
    "role": "roleName",
    "group": "groupName",
}

# IAM's own patterns: names are [\w+=,.@-]+ (users and roles up to 64, groups 128, policies 128);
# paths are "/" or "/.../" of printable ASCII, up to 512; version ids are v<digits>.
_IAM_NAME: Final = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
_IAM_PATH: Final = re.compile(r"/([\x21-\x7e]{1,510}/)?")
_VERSION_ID: Final = re.compile(r"v[1-9][0-9]{0,8}")
_ACCOUNT: Final = re.compile(r"[0-9]{12}")
_PARTITION: Final = re.compile(r"aws(-[a-z]+)*")
_POLICY_ARN: Final = re.compile(
    r"arn:(?P<partition>aws(-[a-z]+)*):iam::(?P<account>[0-9]{12}|aws):policy"
    r"(?P<path>/([\x21-\x7e]*/)?)(?P<name>[\w+=,.@-]{1,128})",
    re.ASCII,
)


# --------------------------------------------------------------------------------------------
# Small helpers shared with the store and the snapshot
# --------------------------------------------------------------------------------------------


def is_json_object_text(value: object) -> bool:
    """True when ``value`` is a string holding one JSON object (a policy document)."""
    if not isinstance(value, str):
        return False
    try:
        decoded = msgspec.json.decode(value)
    except (msgspec.DecodeError, RecursionError):
        return False
    return isinstance(decoded, dict)


def is_snapshot_event_id(event_id: str) -> bool:
    """Whether a fact came from ``trailguard snapshot`` (read from IAM) rather than the trail."""
    return event_id.startswith(SNAPSHOT_EVENT_PREFIX)


def is_policy_arn(value: object) -> bool:
    """``arn:<partition>:iam::<account|aws>:policy[/path/]<name>``."""
    return isinstance(value, str) and _POLICY_ARN.fullmatch(value) is not None


def path_from_policy_arn(arn: str) -> str | None:
    """``arn:aws:iam::123456789012:policy/team/Guard`` -> ``/team/`` (None if not an ARN)."""
    matched = _POLICY_ARN.fullmatch(arn)
    return matched["path"] if matched else None


def managed_policy_arn(partition: str, account_id: str, path: str, name: str) -> str:
    """The ARN IAM gives a customer managed policy: ``arn:<p>:iam::<acct>:policy<path><name>``."""
    return f"arn:{partition}:iam::{account_id}:policy{path}{name}"


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def facts_from_record(record: Record) -> list[PolicyFact]:
    """The policy facts one CloudTrail record carries; ``[]`` when it carries none."""
    name = record.event_name
    if not isinstance(name, str) or name not in _EVENTS:
        return []
    if record.event_source != IAM_EVENT_SOURCE:
        return []
    if record.error_code or record.error_message:  # a failed call changed nothing
        return []
    event_id = record.event_id
    event_time = record.event_time
    if not isinstance(event_id, str) or not event_id or len(event_id) > 256:
        return []
    if is_snapshot_event_id(event_id):  # CloudTrail's eventIDs are UUIDs: a forgery
        return []
    if event_time_key(event_time) is None:
        return []
    assert isinstance(event_time, str)  # event_time_key accepted it
    params = record.request_parameters
    if not isinstance(params, Mapping) or _omitted(params):
        return []
    kind, op, principal_kind = _EVENTS[name]
    builder = _Builder(record, params, _response(record), event_id, event_time)
    fact = builder.build(name, kind, op, principal_kind)
    return [] if fact is None else [fact]


def _omitted(value: Mapping[Any, Any]) -> bool:
    """CloudTrail's marker for a field it dropped: ``"omitted": true``."""
    flag = value.get("omitted")
    return flag is True or (isinstance(flag, str) and flag.lower() == "true")


def _response(record: Record) -> Mapping[Any, Any]:
    value = record.response_elements
    if not isinstance(value, Mapping) or _omitted(value):
        return {}
    return value


def _text(mapping: Mapping[Any, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) else None


def _name(mapping: Mapping[Any, Any], key: str) -> str | None:
    value = _text(mapping, key)
    return value if value is not None and _IAM_NAME.fullmatch(value) else None


def _policy_arn(mapping: Mapping[Any, Any], key: str) -> str | None:
    value = _text(mapping, key)
    return value if is_policy_arn(value) else None


def _version_id(mapping: Mapping[Any, Any], key: str) -> str | None:
    value = _text(mapping, key)
    return value if value is not None and _VERSION_ID.fullmatch(value) else None


def _flag(value: object) -> bool | None:
    """A boolean request parameter: JSON true/false (or the strings, leniently)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _document(params: Mapping[Any, Any]) -> str | None:
    value = params.get("policyDocument")
    return value if isinstance(value, str) and is_json_object_text(value) else None


class _Builder:
    """Reads one record's parameters into a fact; every reader tolerates any type."""

    def __init__(
        self,
        record: Record,
        params: Mapping[Any, Any],
        response: Mapping[Any, Any],
        event_id: str,
        event_time: str,
    ) -> None:
        self.record = record
        self.params = params
        self.response = response
        self.event_id = event_id
        self.event_time = event_time

    def _account(self, policy_arn: str | None = None) -> str | None:
        """recipientAccountId, else the caller's account, else the policy ARN's account."""
        ident = self.record.user_identity
        candidates: list[object] = [
            self.record.recipient_account_id,
            getattr(ident, "account_id", None),
        ]
        if policy_arn is not None:
            candidates.append(policy_arn.split(":", 5)[4])
        for candidate in candidates:
            if isinstance(candidate, str) and _ACCOUNT.fullmatch(candidate):
                return candidate
        return None

    def _partition(self) -> str:
        arn = getattr(self.record.user_identity, "arn", None)
        if isinstance(arn, str) and arn.startswith("arn:"):
            partition = arn.split(":", 2)[1]
            if _PARTITION.fullmatch(partition):
                return partition
        return "aws"

    def _fact(
        self,
        kind: FactKind,
        op: FactOp,
        account_id: str,
        *,
        principal_kind: PrincipalKind | None = None,
        principal_name: str | None = None,
        policy_name: str | None = None,
        policy_arn: str | None = None,
        version_id: str | None = None,
        document: str | None = None,
        path: str | None = None,
        set_as_default: bool | None = None,
    ) -> PolicyFact:
        return PolicyFact(
            kind=kind,
            op=op,
            account_id=account_id,
            principal_kind=principal_kind,
            principal_name=principal_name,
            policy_name=policy_name,
            policy_arn=policy_arn,
            version_id=version_id,
            document=document,
            path=path,
            set_as_default=set_as_default,
            event_id=self.event_id,
            event_time=self.event_time,
            event_name=self.record.event_name,
        )

    def build(
        self, event_name: str, kind: FactKind, op: FactOp, principal_kind: PrincipalKind | None
    ) -> PolicyFact | None:
        if principal_kind is not None:
            return self._principal_fact(event_name, kind, op, principal_kind)
        if kind == "managed_policy" and op == "put":
            return self._create_policy()
        return self._policy_fact(kind, op)

    def _principal_fact(
        self, event_name: str, kind: FactKind, op: FactOp, principal_kind: PrincipalKind
    ) -> PolicyFact | None:
        principal_name = _name(self.params, _NAME_PARAM[principal_kind])
        if principal_name is None:
            return None
        if kind == "inline_policy":
            policy_name = _name(self.params, "policyName")
            account = self._account()
            if policy_name is None or account is None:
                return None
            return self._fact(
                kind,
                op,
                account,
                principal_kind=principal_kind,
                principal_name=principal_name,
                policy_name=policy_name,
                document=_document(self.params) if op == "put" else None,
            )
        if kind == "attachment" or (kind == "boundary" and op == "put"):
            key = "policyArn" if kind == "attachment" else "permissionsBoundary"
            arn = _policy_arn(self.params, key)
            if arn is None:  # CreateUser/CreateRole without a boundary land here too
                return None
            account = self._account()
            if account is None:
                return None
            return self._fact(
                kind,
                op,
                account,
                principal_kind=principal_kind,
                principal_name=principal_name,
                policy_name=policy_name_from_arn(arn),
                policy_arn=arn,
            )
        # Delete{User,Role}PermissionsBoundary
        account = self._account()
        if account is None:
            return None
        return self._fact(
            kind, op, account, principal_kind=principal_kind, principal_name=principal_name
        )

    def _create_policy(self) -> PolicyFact | None:
        name = _name(self.params, "policyName")
        if name is None:
            return None
        path = self.params.get("path", "/")
        if not isinstance(path, str) or _IAM_PATH.fullmatch(path) is None:
            return None
        account = self._account()
        policy = self.response.get("policy")
        policy = policy if isinstance(policy, Mapping) else {}
        arn = _policy_arn(policy, "arn")
        if arn is None:
            if account is None:
                return None
            arn = managed_policy_arn(self._partition(), account, path, name)
        elif account is None:
            account = self._account(arn)
            if account is None:
                return None
        return self._fact(
            "managed_policy",
            "put",
            account,
            policy_name=name,
            policy_arn=arn,
            version_id=_version_id(policy, "defaultVersionId") or "v1",
            document=_document(self.params),
            path=path,
            set_as_default=True,
        )

    def _policy_fact(self, kind: FactKind, op: FactOp) -> PolicyFact | None:
        arn = _policy_arn(self.params, "policyArn")
        if arn is None:
            return None
        account = self._account(arn)
        if account is None:
            return None
        name = policy_name_from_arn(arn)
        path = path_from_policy_arn(arn)
        if kind == "managed_policy":  # DeletePolicy
            return self._fact(kind, op, account, policy_name=name, policy_arn=arn, path=path)
        if kind == "policy_version" and op == "put":  # CreatePolicyVersion
            version = self.response.get("policyVersion")
            version = version if isinstance(version, Mapping) else {}
            is_default = _flag(version.get("isDefaultVersion"))
            if is_default is None:
                is_default = bool(_flag(self.params.get("setAsDefault")))
            return self._fact(
                kind,
                op,
                account,
                policy_name=name,
                policy_arn=arn,
                path=path,
                version_id=_version_id(version, "versionId"),
                document=_document(self.params),
                set_as_default=is_default,
            )
        # DeletePolicyVersion, SetDefaultPolicyVersion: both name the version
        version_id = _version_id(self.params, "versionId")
        if version_id is None:
            return None
        return self._fact(
            kind,
            op,
            account,
            policy_name=name,
            policy_arn=arn,
            path=path,
            version_id=version_id,
            set_as_default=True if kind == "default_version" else None,
        )
