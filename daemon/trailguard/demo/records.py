"""CloudTrail records as CloudTrail writes them, for the demo (and the test suite).

The demo plays a realistic trail into its embedded emulator; the tests build positives for every
removal API from the same builders.  Request parameters follow the IAM API reference; envelope
fields follow real CloudTrail (eventVersion 1.09, tlsDetails, sessionContext ...).
"""

from __future__ import annotations

import uuid
from typing import Any

ACCOUNT = "123456789012"
ATTACKER_ARN = f"arn:aws:iam::{ACCOUNT}:user/mallory"


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
