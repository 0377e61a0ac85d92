"""The digest of a CloudTrail record: what it says that anything trailguard writes may rest on.

CloudTrail gives every event a unique ``eventID``.  Two records with the same eventID and
different content cannot both be real: one of them (nobody can tell which from the records alone)
was forged -- a file put in the trail bucket, a message sent to the queue.  The event ledger
(``state/ledger.py``) keeps, per eventID, the digests of every content it was seen with, and calls
an eventID seen with two a *conflict*.

The digest is the sha256 of a canonical projection of the security-relevant fields:
``eventName``, ``eventSource``, ``eventTime`` (normalised: :func:`event_time_key`), the account
(``recipientAccountId``), ``errorCode``, the identity (``userIdentity`` type, ARN, principal id,
access key id and the session issuer's ARN), ``requestParameters`` and ``responseElements``, as
JSON with sorted keys and no whitespace.  Nothing else counts (``requestID``, ``tlsDetails``,
``eventVersion``, ``sourceIPAddress``, ``userAgent`` ...): the same event arriving twice -- by S3
and by EventBridge, redelivered by SQS, replayed -- must have one digest, and every field left
out is one fewer place where two deliveries of a real event could differ and raise a false
alarm.  The confirmation gate compares every field a write rests on with CloudTrail's own
record anyway.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from trailguard.detect.record import Record
from trailguard.detect.times import event_time_key

__all__ = ["DIGEST_VERSION", "EventDigest", "canonical_projection", "digest_of", "event_digest"]

#: Part of every digest: a change of the projection makes every digest new (never a conflict
#: with the digests of the old projection, which carry another version).
DIGEST_VERSION: Final = 1

_encoder = msgspec.json.Encoder(order="sorted")


class EventDigest(msgspec.Struct, frozen=True, kw_only=True):
    """One record's eventID and digest, with what an operator needs to find it."""

    event_id: str
    digest: str
    event_name: str | None = None
    account_id: str | None = None


def canonical_projection(record: Record) -> dict[str, Any]:
    """The fields the digest covers (see the module docstring), as plain data."""
    ident = record.user_identity
    issuer = None
    if ident is not None and ident.session_context is not None:
        session_issuer = ident.session_context.session_issuer
        issuer = session_issuer.arn if session_issuer is not None else None
    return {
        "v": DIGEST_VERSION,
        "eventName": record.event_name,
        "eventSource": record.event_source,
        "eventTime": event_time_key(record.event_time) or record.event_time,
        "recipientAccountId": record.recipient_account_id,
        "errorCode": record.error_code,
        "userIdentity": None
        if ident is None
        else {
            "type": ident.type,
            "arn": ident.arn,
            "principalId": ident.principal_id,
            "accessKeyId": ident.access_key_id,
            "sessionIssuerArn": issuer,
        },
        "requestParameters": record.request_parameters,
        "responseElements": record.response_elements,
    }


def event_digest(record: Record) -> str:
    """``sha256:<hex>`` of the record's canonical projection."""
    data = _encoder.encode(canonical_projection(record))
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of(record: Record) -> EventDigest | None:
    """The record's :class:`EventDigest`, or None when it has no usable eventID."""
    event_id = record.event_id
    if not isinstance(event_id, str) or not event_id or len(event_id) > 256:
        return None
    return EventDigest(
        event_id=event_id,
        digest=event_digest(record),
        event_name=record.event_name,
        account_id=record.recipient_account_id,
    )
