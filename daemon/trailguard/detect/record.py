"""Typed CloudTrail records holding only the fields trailguard needs.

Decoding into these Structs (msgspec) skips every other field at C speed; unknown fields are
ignored so eventVersion 1.08 .. 1.11 and whatever comes next all decode.  Every field is optional:
hand-written and forged records are often sparse, and a missing field must never crash anything.

Types are deliberately lenient where real-world data is inconsistent (``mfaAuthenticated`` is the
string "true"/"false" in real CloudTrail but a bool in some published samples).
"""

from __future__ import annotations

from typing import Any

import msgspec


class SessionIssuer(msgspec.Struct, frozen=True):
    type: str | None = None
    arn: str | None = None
    principal_id: str | None = msgspec.field(default=None, name="principalId")
    user_name: str | None = msgspec.field(default=None, name="userName")


class SessionAttributes(msgspec.Struct, frozen=True):
    mfa_authenticated: str | bool | None = msgspec.field(default=None, name="mfaAuthenticated")
    creation_date: str | None = msgspec.field(default=None, name="creationDate")


class SessionContext(msgspec.Struct, frozen=True):
    attributes: SessionAttributes | None = None
    session_issuer: SessionIssuer | None = msgspec.field(default=None, name="sessionIssuer")


class UserIdentity(msgspec.Struct, frozen=True):
    type: str | None = None
    principal_id: str | None = msgspec.field(default=None, name="principalId")
    arn: str | None = None
    account_id: str | None = msgspec.field(default=None, name="accountId")
    access_key_id: str | None = msgspec.field(default=None, name="accessKeyId")
    user_name: str | None = msgspec.field(default=None, name="userName")
    invoked_by: str | None = msgspec.field(default=None, name="invokedBy")
    session_context: SessionContext | None = msgspec.field(default=None, name="sessionContext")


class Record(msgspec.Struct, frozen=True):
    """One CloudTrail record, reduced to what rules, detections and policy history read."""

    event_name: str | None = msgspec.field(default=None, name="eventName")
    event_source: str | None = msgspec.field(default=None, name="eventSource")
    event_id: str | None = msgspec.field(default=None, name="eventID")
    event_time: str | None = msgspec.field(default=None, name="eventTime")
    event_type: str | None = msgspec.field(default=None, name="eventType")
    event_version: str | None = msgspec.field(default=None, name="eventVersion")
    aws_region: str | None = msgspec.field(default=None, name="awsRegion")
    recipient_account_id: str | None = msgspec.field(default=None, name="recipientAccountId")
    user_identity: UserIdentity | None = msgspec.field(default=None, name="userIdentity")
    source_ip_address: str | None = msgspec.field(default=None, name="sourceIPAddress")
    user_agent: str | None = msgspec.field(default=None, name="userAgent")
    error_code: str | None = msgspec.field(default=None, name="errorCode")
    error_message: str | None = msgspec.field(default=None, name="errorMessage")
    # Only candidate records are decoded into Record, so a dict here is cheap; its contents are
    # read defensively (see ``param``) because a crafted record may put any type anywhere.
    request_parameters: dict[str, Any] | None = msgspec.field(
        default=None, name="requestParameters"
    )
    session_credential_from_console: str | bool | None = msgspec.field(
        default=None, name="sessionCredentialFromConsole"
    )
    # Read by policy history (the versionId CreatePolicyVersion assigned, the ARN CreatePolicy
    # returned).  Typed Any on purpose: a record whose responseElements is not an object must
    # still decode, so that an odd value there can never hide the record from the rules;
    # detect/policy_facts.py reads it defensively.
    response_elements: Any = msgspec.field(default=None, name="responseElements")

    def param(self, name: str) -> str | None:
        """A string request parameter, or None when absent or not a string."""
        params = self.request_parameters
        if not params:
            return None
        value = params.get(name)
        return value if isinstance(value, str) else None

    @property
    def failed(self) -> bool:
        """CloudTrail marks a failed call with errorCode (and usually errorMessage)."""
        return bool(self.error_code) or bool(self.error_message)
