"""What a write rests on: a :class:`Claim` -- one record, and the fields of it an action uses --
and how those fields are read from a job's event, a policy fact or CloudTrail's own record.

The confirmation gate (``confirm.py``) compares a claim's fields with the same fields read from
CloudTrail's answer; the actions (``actions/gate.py``) say which claims each write rests on.
The views here are the one place a field's value is taken from a record, so the two sides can
never read a field differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, get_args

import msgspec

from trailguard.detect.detection import Actor, Target, build_actor, build_target
from trailguard.detect.policy_facts import PolicyFact, is_snapshot_event_id
from trailguard.detect.record import Record
from trailguard.detect.times import event_time_key
from trailguard.remediate.jobs import EventRef

__all__ = [
    "ACTOR_FIELDS",
    "DETECTION_FIELDS",
    "EVENT_FIELDS",
    "FACT_EVENT_FIELDS",
    "FACT_FIELDS",
    "IAM_EVENT_REGION",
    "REMOVAL_FIELDS",
    "SHOWN",
    "Claim",
    "Confirmation",
    "FactField",
    "FieldValue",
    "RemovalField",
    "fact_claim",
    "fact_view",
    "removal_claim",
    "removal_view",
    "removal_view_of_record",
]

Confirmation = Literal["confirmed", "not_found", "mismatch", "unavailable", "conflict"]
FieldValue = str | bool | None

#: The fields of the job's own event (the removal; the event whose actor quarantine acts on).
RemovalField = Literal[
    "eventName",
    "eventSource",
    "eventTime",
    "account",
    "errorCode",
    "outcome",
    "actor.type",
    "actor.arn",
    "actor.principalId",
    "actor.accessKeyId",
    "actor.issuerArn",
    "actor.mfa",
    "actor.consoleSession",
    "actor.invokedBy",
    "actor.sourceIp",
    "actor.userAgent",
    "target.kind",
    "target.name",
    "target.policyName",
    "target.policyArn",
    "target.versionId",
]
#: The fields of a policy-history fact (``PolicyFact``).
FactField = Literal[
    "eventName",
    "eventTime",
    "account",
    "change",
    "principalKind",
    "principalName",
    "policyName",
    "policyArn",
    "versionId",
    "document",
    "path",
    "setAsDefault",
]
REMOVAL_FIELDS: Final[tuple[RemovalField, ...]] = get_args(RemovalField)
FACT_FIELDS: Final[tuple[FactField, ...]] = get_args(FactField)

#: What a removal claim confirms: the whole detection the job was planned from (which event,
#: when, where, its outcome, who made it, what it named).  The planner decided on all of them --
#: the rule, the severity (root, a console session without MFA, a guardrail policy), the
#: suppressions (actor, source IP, user agent), the identity quarantine_actor acts on -- so a
#: copy of a real event that differs in any one of them could have planned a job the real
#: event never would.
DETECTION_FIELDS: Final[tuple[RemovalField, ...]] = REMOVAL_FIELDS
#: Which event it was, when, where, and that it succeeded.
EVENT_FIELDS: Final[tuple[RemovalField, ...]] = (
    "eventName",
    "eventSource",
    "eventTime",
    "account",
    "errorCode",
    "outcome",
)
#: Who made it: what quarantine_actor acts on (the session issuer is the role it quarantines).
ACTOR_FIELDS: Final[tuple[RemovalField, ...]] = (
    "actor.type",
    "actor.arn",
    "actor.principalId",
    "actor.accessKeyId",
    "actor.issuerArn",
)
#: What every fact claim confirms (a fact exists only for a successful IAM call).
FACT_EVENT_FIELDS: Final[tuple[FactField, ...]] = ("eventName", "eventTime", "account", "change")

#: IAM is global; CloudTrail records its events in us-east-1 (in the aws partition).
IAM_EVENT_REGION: Final = "us-east-1"
# How the audit record and reasons name each field.
SHOWN: Final[dict[str, str]] = {
    "account": "recipientAccountId",
    "actor.type": "userIdentity.type",
    "actor.arn": "userIdentity.arn",
    "actor.principalId": "userIdentity.principalId",
    "actor.accessKeyId": "userIdentity.accessKeyId",
    "actor.issuerArn": "sessionIssuer.arn",
    "actor.mfa": "mfaAuthenticated",
    "actor.consoleSession": "sessionCredentialFromConsole",
    "actor.invokedBy": "userIdentity.invokedBy",
    "actor.sourceIp": "sourceIPAddress",
    "actor.userAgent": "userAgent",
    "target.kind": "requestParameters (the kind of principal or policy it names)",
    "target.name": "requestParameters (the principal or policy it names)",
    "target.policyName": "requestParameters (policyName)",
    "target.policyArn": "requestParameters (policyArn)",
    "target.versionId": "requestParameters (versionId)",
    "change": "the change it records",
    "principalKind": "principal kind",
    "principalName": "principal name",
    "policyArn": "policy ARN",
    "document": "policyDocument",
}


# ---------------------------------------------------------------------------------------------
# Claims: the records a write depends on, and the fields of each the action uses
# ---------------------------------------------------------------------------------------------


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """One record a write depends on, as the trail says it happened.

    ``kind`` "removal": the job's own event, its fields as the detection holds them;
    "fact": a policy-history fact.  ``expected`` holds, for each of ``fields``, the value the
    action relies on.
    """

    label: str
    kind: Literal["removal", "fact"]
    event_id: str
    event_time: str | None
    account_id: str
    region: str
    fields: tuple[str, ...]
    expected: dict[str, FieldValue]

    @property
    def from_snapshot(self) -> bool:
        """A fact ``trailguard snapshot`` read from IAM itself: nothing to confirm."""
        return self.kind == "fact" and is_snapshot_event_id(self.event_id)


def _time(value: str | None) -> str | None:
    return event_time_key(value) or value


def _removal_fields(
    *,
    event_name: str | None,
    event_source: str | None,
    event_time: str | None,
    account: str | None,
    error_code: str | None,
    failed: bool,
    actor: Actor,
    target: Target,
) -> dict[str, FieldValue]:
    return {
        "eventName": event_name,
        "eventSource": event_source,
        "eventTime": _time(event_time),
        "account": account,
        "errorCode": error_code or None,
        "outcome": "failure" if failed else "success",
        "actor.type": actor.type,
        "actor.arn": actor.arn,
        "actor.principalId": actor.principal_id,
        "actor.accessKeyId": actor.access_key_id,
        "actor.issuerArn": actor.session_issuer_arn,
        "actor.mfa": actor.mfa_authenticated,
        "actor.consoleSession": actor.console_session,
        "actor.invokedBy": actor.invoked_by,
        "actor.sourceIp": actor.source_ip,
        "actor.userAgent": actor.user_agent,
        "target.kind": target.kind,
        "target.name": target.name,
        "target.policyName": target.policy_name,
        "target.policyArn": target.policy_arn,
        "target.versionId": target.version_id,
    }


def removal_view(event: EventRef) -> dict[str, FieldValue]:
    """Every :data:`RemovalField` of the job's event, as the trail's record gave it (the
    detection's actor and target are ``build_actor``/``build_target`` of that record)."""
    return _removal_fields(
        event_name=event.event_name,
        event_source=event.event_source,
        event_time=event.event_time,
        account=event.account_id,
        error_code=event.error_code,
        failed=event.outcome != "success",
        actor=event.actor,
        target=event.target,
    )


def removal_view_of_record(record: Record) -> dict[str, FieldValue]:
    """Every :data:`RemovalField` of a CloudTrail record, extracted as detections are."""
    return _removal_fields(
        event_name=record.event_name,
        event_source=record.event_source,
        event_time=record.event_time,
        account=record.recipient_account_id,
        error_code=record.error_code,
        failed=record.failed,
        actor=build_actor(record),
        target=build_target(record),
    )


def fact_view(fact: PolicyFact) -> dict[str, FieldValue]:
    """Every :data:`FactField` of a policy fact."""
    return {
        "eventName": fact.event_name,
        "eventTime": _time(fact.event_time),
        "account": fact.account_id,
        "change": f"{fact.kind} {fact.op}",
        "principalKind": fact.principal_kind,
        "principalName": fact.principal_name,
        "policyName": fact.policy_name,
        "policyArn": fact.policy_arn,
        "versionId": fact.version_id,
        "document": fact.document,
        "path": fact.path,
        "setAsDefault": fact.set_as_default,
    }


def removal_claim(
    event: EventRef,
    *,
    fields: Sequence[RemovalField] = DETECTION_FIELDS,
    label: str,
    account_id: str,
) -> Claim:
    """The job's own event; ``fields``: those the action relies on (all of the detection's by
    default: see :data:`DETECTION_FIELDS`)."""
    view = removal_view(event)
    return Claim(
        label=f"{label} {event.event_name}",
        kind="removal",
        event_id=event.event_id,
        event_time=event.event_time,
        account_id=event.account_id or account_id,
        region=event.aws_region or IAM_EVENT_REGION,
        fields=tuple(fields),
        expected={name: view[name] for name in fields},
    )


def fact_claim(
    fact: PolicyFact, *, fields: Sequence[FactField], label: str, region: str | None
) -> Claim:
    """A history fact whose content an action writes (looked up in the removal's region: IAM
    events of one partition are all recorded in the same one)."""
    view = fact_view(fact)
    return Claim(
        label=label,
        kind="fact",
        event_id=fact.event_id,
        event_time=fact.event_time,
        account_id=fact.account_id,
        region=region or IAM_EVENT_REGION,
        fields=tuple(fields),
        expected={name: view[name] for name in fields},
    )
