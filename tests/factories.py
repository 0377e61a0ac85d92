"""Realistic CloudTrail records and files for tests, built from the IAM API reference.

Published real records of most policy-removal APIs are rare (see tests/data/corpus/README.md), so
positives are built here: each API's requestParameters as the IAM API reference names them, and
the envelope fields as real CloudTrail writes them (eventVersion 1.09/1.11, tlsDetails, ...).
"""

from __future__ import annotations

import gzip
import json
from typing import Any, Literal

from trailguard.demo.records import (
    ACCOUNT,
    ATTACKER_ARN,
    assumed_role_identity,
    iam_user_identity,
    noise_record,
)
from trailguard.demo.records import make_record as _make_record

__all__ = [
    "ACCOUNT",
    "ATTACKER_ARN",
    "REMOVALS",
    "SHAPES",
    "Shape",
    "assumed_role_identity",
    "delivery_key",
    "encode_file",
    "iam_user_identity",
    "make_record",
    "noise_record",
]

Shape = Literal["records", "array", "jsonl", "lookup-events"]
SHAPES: tuple[Shape, ...] = ("records", "array", "jsonl", "lookup-events")

# The ten IAM policy-removal APIs with requestParameters as in the IAM API reference, and the
# detection target they should produce: (kind, name, policy_name, policy_arn, version_id).
REMOVALS: dict[str, tuple[dict[str, str], tuple[str, str, str | None, str | None, str | None]]] = {
    "DeleteUserPolicy": (
        {"userName": "alice", "policyName": "s3-read"},
        ("user", "alice", "s3-read", None, None),
    ),
    "DeleteRolePolicy": (
        {"roleName": "app-role", "policyName": "inline-guard"},
        ("role", "app-role", "inline-guard", None, None),
    ),
    "DeleteGroupPolicy": (
        {"groupName": "devs", "policyName": "deny-prod"},
        ("group", "devs", "deny-prod", None, None),
    ),
    "DeletePolicy": (
        {"policyArn": f"arn:aws:iam::{ACCOUNT}:policy/team/Guardrail"},
        ("policy", "Guardrail", "Guardrail", f"arn:aws:iam::{ACCOUNT}:policy/team/Guardrail", None),
    ),
    "DeletePolicyVersion": (
        {"policyArn": f"arn:aws:iam::{ACCOUNT}:policy/Boundary", "versionId": "v3"},
        ("policy", "Boundary", "Boundary", f"arn:aws:iam::{ACCOUNT}:policy/Boundary", "v3"),
    ),
    "DetachUserPolicy": (
        {"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
        ("user", "bob", "ReadOnlyAccess", "arn:aws:iam::aws:policy/ReadOnlyAccess", None),
    ),
    "DetachRolePolicy": (
        {"roleName": "ci", "policyArn": f"arn:aws:iam::{ACCOUNT}:policy/DenyAll"},
        ("role", "ci", "DenyAll", f"arn:aws:iam::{ACCOUNT}:policy/DenyAll", None),
    ),
    "DetachGroupPolicy": (
        {"groupName": "ops", "policyArn": "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"},
        (
            "group",
            "ops",
            "AWSCompromisedKeyQuarantineV3",
            "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3",
            None,
        ),
    ),
    "DeleteUserPermissionsBoundary": (
        {"userName": "carol"},
        ("user", "carol", None, None, None),
    ),
    "DeleteRolePermissionsBoundary": (
        {"roleName": "lambda-exec"},
        ("role", "lambda-exec", None, None, None),
    ),
}


def make_record(
    event_name: str, request_parameters: dict[str, Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """A record; a removal API without parameters gets its API-reference parameters."""
    if request_parameters is None and event_name in REMOVALS:
        request_parameters = dict(REMOVALS[event_name][0])
    return _make_record(event_name, request_parameters, **kwargs)


def encode_file(
    records: list[dict[str, Any]], shape: Shape = "records", *, compress: bool = False
) -> bytes:
    """Records as one of the four file shapes users have, optionally gzip-compressed."""
    if shape == "records":
        data = json.dumps({"Records": records}).encode()
    elif shape == "array":
        data = json.dumps(records, indent=2).encode()
    elif shape == "jsonl":
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
    else:
        events: list[dict[str, Any]] = [
            {
                "EventId": r.get("eventID"),
                "EventName": r.get("eventName"),
                "ReadOnly": "false",
                "EventTime": r.get("eventTime"),
                "EventSource": r.get("eventSource"),
                "Username": "mallory",
                "Resources": [],
                "CloudTrailEvent": json.dumps(r),
            }
            for r in records
        ]
        data = json.dumps({"Events": events}, indent=4).encode()
    return gzip.compress(data) if compress else data


def delivery_key(
    *,
    account: str = ACCOUNT,
    region: str = "us-east-1",
    stamp: str = "20261101T1200Z",
    suffix: str = "AbCdEfGh12345678",
    prefix: str = "",
    org: str | None = None,
) -> str:
    """An S3 key in CloudTrail's delivery layout."""
    org_part = f"{org}/" if org else ""
    y, m, d = stamp[0:4], stamp[4:6], stamp[6:8]
    return (
        f"{prefix}AWSLogs/{org_part}{account}/CloudTrail/{region}/{y}/{m}/{d}/"
        f"{account}_CloudTrail_{region}_{stamp}_{suffix}.json.gz"
    )
