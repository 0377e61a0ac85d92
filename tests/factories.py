"""Realistic CloudTrail records and files for tests, built from the IAM API reference.

Published real records of most policy-removal APIs are rare (see tests/data/corpus/README.md), so
positives are built here: each API's requestParameters as the IAM API reference names them, and
the envelope fields as real CloudTrail writes them (eventVersion 1.09/1.11, tlsDetails, ...).
"""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any, Literal

ACCOUNT = "123456789012"
ATTACKER_ARN = f"arn:aws:iam::{ACCOUNT}:user/mallory"

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


def iam_user_identity(
    arn: str = ATTACKER_ARN, *, access_key: str = "AKIAEXAMPLEKEY000001"
) -> dict[str, Any]:
    name = arn.rsplit("/", 1)[-1]
    return {
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLEPRINCIPAL",
        "arn": arn,
        "accountId": ACCOUNT,
        "accessKeyId": access_key,
        "userName": name,
    }


def assumed_role_identity(
    role: str = "deployer", session: str = "ci-run", *, mfa: bool = False
) -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLEROLEID:{session}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
        "accountId": ACCOUNT,
        "accessKeyId": "ASIAEXAMPLESESSION01",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROAEXAMPLEROLEID",
                "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
                "accountId": ACCOUNT,
                "userName": role,
            },
            "attributes": {
                "creationDate": "2026-11-01T10:00:00Z",
                "mfaAuthenticated": "true" if mfa else "false",
            },
        },
    }


def make_record(
    event_name: str,
    request_parameters: dict[str, Any] | None = None,
    *,
    event_source: str = "iam.amazonaws.com",
    event_id: str | None = None,
    error_code: str | None = None,
    user_identity: dict[str, Any] | None = None,
    user_agent: str = "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.debian.12 command/iam",
    source_ip: str = "198.51.100.7",
    event_time: str = "2026-11-01T12:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    """One CloudTrail record as CloudTrail writes it (fields in its usual order)."""
    if request_parameters is None and event_name in REMOVALS:
        request_parameters = dict(REMOVALS[event_name][0])
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": user_identity if user_identity is not None else iam_user_identity(),
        "eventTime": event_time,
        "eventSource": event_source,
        "eventName": event_name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": source_ip,
        "userAgent": user_agent,
        "requestParameters": request_parameters,
        "responseElements": None,
        "requestID": str(uuid.uuid4()),
        "eventID": event_id or str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
        "tlsDetails": {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": "iam.amazonaws.com",
        },
    }
    if error_code is not None:
        record["errorCode"] = error_code
        record["errorMessage"] = (
            f"User: {ATTACKER_ARN} is not authorized to perform: iam:{event_name}"
        )
        record["responseElements"] = None
    record.update(extra)
    return record


def noise_record(i: int) -> dict[str, Any]:
    """An ordinary non-IAM record (S3 GetObject by an assumed role)."""
    return make_record(
        "GetObject",
        {"bucketName": "data-lake", "key": f"part-{i:05d}.parquet", "Host": "data-lake.s3"},
        event_source="s3.amazonaws.com",
        user_identity=assumed_role_identity("etl", f"job-{i}"),
        user_agent="[aws-sdk-java/2.21.0 Linux/6.1 OpenJDK_64-Bit_Server_VM/17]",
        readOnly=True,
        eventCategory="Data",
        managementEvent=False,
    )


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
