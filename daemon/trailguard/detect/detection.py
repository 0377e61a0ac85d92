"""The detection record: what trailguard reports for each policy-removal event, and for each
policy change that weakened a policy (its ``change`` object).

One JSON object per line, with stable field names documented in README.md ("The detection
record").  A field with no value is ``null``, never absent: the Structs below encode every field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

from trailguard.detect.digest import event_digest
from trailguard.detect.record import Record
from trailguard.detect.rules import Match
from trailguard.policy import Witness
from trailguard.vocabulary import ChangeKind, ChangeVerdict

TargetKind = Literal["user", "role", "group", "policy"]

# Which kind of principal or object each removal API acts on, and so which request parameter
# names it.  Policy-level APIs (DeletePolicy, DeletePolicyVersion) target the managed policy.
_TARGET_KIND: dict[str, TargetKind] = {
    "DeleteUserPolicy": "user",
    "DetachUserPolicy": "user",
    "DeleteUserPermissionsBoundary": "user",
    "PutUserPolicy": "user",
    "AttachUserPolicy": "user",
    "PutUserPermissionsBoundary": "user",
    "DeleteRolePolicy": "role",
    "DetachRolePolicy": "role",
    "DeleteRolePermissionsBoundary": "role",
    "PutRolePolicy": "role",
    "AttachRolePolicy": "role",
    "PutRolePermissionsBoundary": "role",
    "DeleteGroupPolicy": "group",
    "DetachGroupPolicy": "group",
    "PutGroupPolicy": "group",
    "AttachGroupPolicy": "group",
    "DeletePolicy": "policy",
    "DeletePolicyVersion": "policy",
    "CreatePolicy": "policy",
    "CreatePolicyVersion": "policy",
    "SetDefaultPolicyVersion": "policy",
}
_NAME_PARAM: dict[TargetKind, str] = {"user": "userName", "role": "roleName", "group": "groupName"}
_BOUNDARY_PUTS = frozenset({"PutUserPermissionsBoundary", "PutRolePermissionsBoundary"})


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    type: str | None
    arn: str | None
    principal_id: str | None
    access_key_id: str | None
    mfa_authenticated: bool | None
    session_issuer_arn: str | None
    invoked_by: str | None
    source_ip: str | None
    user_agent: str | None
    #: ``sessionCredentialFromConsole`` as a boolean (a console session: the rules escalate
    #: one without MFA)
    console_session: bool | None = None


class Target(msgspec.Struct, frozen=True, kw_only=True):
    kind: TargetKind | None
    name: str | None
    policy_name: str | None
    policy_arn: str | None
    version_id: str | None


class FileSource(msgspec.Struct, frozen=True):
    file: str


class S3Source(msgspec.Struct, frozen=True):
    bucket: str
    key: str


class EventBridgeSource(msgspec.Struct, frozen=True):
    """An EventBridge "AWS API Call via CloudTrail" event received through an SQS queue."""

    queue: str
    message_id: str


# Untagged on purpose: the record documents {"file"} or {"bucket", "key"} exactly.
Source = FileSource | S3Source | EventBridgeSource


class PolicyChange(msgspec.Struct, frozen=True, kw_only=True):
    """What a weakening change changed, and against what (``change`` in the detection record).

    ``previous_*`` name the document the change was compared with: the fact that recorded it
    (the previous Put*Policy of the same name; the CreatePolicyVersion/CreatePolicy of the
    previous default version; for a boundary, the event that set the previous boundary) and
    where that fact came from -- a trail event, or ``trailguard snapshot`` (read from IAM).
    """

    kind: ChangeKind
    verdict: ChangeVerdict
    #: one sentence: why (the engine's own reason)
    reason: str
    #: a request the new document allows and the previous one did not (``confirmed``: the
    #: evaluator ran it on both documents); None when the engine has no candidate
    witness: Witness | None = None
    previous_event_id: str
    previous_event_time: str
    previous_source: Literal["trail", "snapshot"]
    #: sha256 of the previous and the new document's text (``sha256:<hex>``)
    previous_document_sha256: str
    new_document_sha256: str | None = None
    #: managed: the default version before the change, and the one after
    previous_version_id: str | None = None
    new_version_id: str | None = None
    #: boundary: the boundary policy before the change (the new one is ``target.policy_arn``),
    #: and the fact that recorded its document (its default version's creation, or a snapshot)
    previous_policy_arn: str | None = None
    previous_document_event_id: str | None = None
    #: where the new document came from when the event itself carries none
    #: (SetDefaultPolicyVersion: the version's creation; a boundary: its policy's default version)
    new_document_event_id: str | None = None
    #: constructs the engine treated as opaque
    unmodelled: tuple[str, ...] = ()


class Detection(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str | None
    event_time: str | None
    event_name: str | None
    event_source: str | None
    aws_region: str | None
    account_id: str | None
    actor: Actor
    target: Target
    outcome: Literal["success", "failure"]
    error_code: str | None
    severity: str
    rule: str
    disposition: Literal["alert", "suppressed"]
    suppressed_by: str | None
    source: Source
    #: sha256 of the record's security-relevant fields (detect/digest.py): which content of the
    #: eventID this detection was made from
    event_digest: str | None = None
    #: the event ledger has seen this eventID with another content: one of them is forged
    forgery_suspected: bool = False
    #: for a policy change (rules ``iam-policy-weakened`` ...): the comparison with the previous
    #: document; None for every other detection
    change: PolicyChange | None = None


def _truthy(value: str | bool | None) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    return None


def policy_name_from_arn(arn: str | None) -> str | None:
    """``arn:aws:iam::123:policy/path/Name`` -> ``Name`` (None for anything else)."""
    if not arn or ":policy/" not in arn:
        return None
    return arn.rsplit("/", 1)[-1] or None


def build_actor(record: Record) -> Actor:
    ident = record.user_identity
    mfa: bool | None = None
    issuer_arn: str | None = None
    if ident is not None and ident.session_context is not None:
        ctx = ident.session_context
        if ctx.attributes is not None:
            mfa = _truthy(ctx.attributes.mfa_authenticated)
        if ctx.session_issuer is not None:
            issuer_arn = ctx.session_issuer.arn
    return Actor(
        type=ident.type if ident else None,
        arn=ident.arn if ident else None,
        principal_id=ident.principal_id if ident else None,
        access_key_id=ident.access_key_id if ident else None,
        mfa_authenticated=mfa,
        session_issuer_arn=issuer_arn,
        invoked_by=ident.invoked_by if ident else None,
        source_ip=record.source_ip_address,
        user_agent=record.user_agent,
        console_session=_truthy(record.session_credential_from_console),
    )


def build_target(record: Record) -> Target:
    event_name = record.event_name or ""
    kind = _TARGET_KIND.get(event_name)
    policy_arn = record.param("policyArn")
    if event_name in _BOUNDARY_PUTS:  # the boundary set
        policy_arn = record.param("permissionsBoundary")
    policy_name = record.param("policyName") or policy_name_from_arn(policy_arn)
    if kind == "policy":
        name = policy_name
    elif kind is not None:
        name = record.param(_NAME_PARAM[kind])
    else:
        name = None
    version_id = record.param("versionId")
    if event_name == "CreatePolicyVersion":  # the version IAM created
        version_id = _created_version(record.response_elements)
    return Target(
        kind=kind,
        name=name,
        policy_name=policy_name,
        policy_arn=policy_arn,
        version_id=version_id,
    )


def _created_version(response: object) -> str | None:
    version = response.get("policyVersion") if isinstance(response, Mapping) else None
    value = version.get("versionId") if isinstance(version, Mapping) else None
    return value if isinstance(value, str) else None


def build_detection(
    record: Record, match: Match, source: Source, *, digest: str | None = None
) -> Detection:
    """Assemble the detection record from a matched CloudTrail record (``digest``: its
    :func:`~trailguard.detect.digest.event_digest`, when the caller has it already)."""
    return Detection(
        event_id=record.event_id,
        event_time=record.event_time,
        event_name=record.event_name,
        event_source=record.event_source,
        aws_region=record.aws_region,
        account_id=record.recipient_account_id,
        actor=build_actor(record),
        target=build_target(record),
        outcome=match.outcome,
        error_code=record.error_code,
        severity=match.severity,
        rule=match.rule,
        disposition=match.disposition,
        suppressed_by=match.suppressed_by,
        source=source,
        event_digest=digest or event_digest(record),
    )


def dedup_key(event_id: str | None, digest: str | None, forgery_suspected: bool) -> str | None:
    """What deduplicates a detection: its eventID -- or, for a detection whose eventID the event
    ledger knows with two contents, eventID and digest, so that each content of a conflicted
    event is reported once (flagged), even after the first went out unflagged."""
    if event_id is None:
        return None
    if forgery_suspected and digest:
        return f"{event_id}#{digest}"
    return event_id


_encoder = msgspec.json.Encoder()


def encode_detection(detection: Detection) -> bytes:
    """One JSON line (with the trailing newline)."""
    return _encoder.encode(detection) + b"\n"
