"""Regenerate examples/cloudtrail: the sample trail `make demo` replays.

Deterministic (seeded ids, gzip mtime 0), so re-running it changes nothing.  Run from the repo root:
    .venv/bin/python -m scripts.make_examples
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

from tests.factories import (
    ACCOUNT,
    assumed_role_identity,
    delivery_key,
    iam_user_identity,
    make_record,
    noise_record,
)

from trailguard.demo.emulator import PAYMENTS_GUARD, PAYMENTS_WEAKENED

OUT = Path("examples/cloudtrail")
TERRAFORM_UA = (
    "APN/1.0 HashiCorp/1.0 Terraform/1.9.8 (+https://www.terraform.io) "
    "terraform-provider-aws/5.74.0 (+https://registry.terraform.io/providers/hashicorp/aws) "
    "aws-sdk-go-v2/1.32.3 ua/2.1 os/linux lang/go#1.22.8 md/GOOS#linux md/GOARCH#amd64 "
    "api/iam#1.38.0"
)


def main() -> None:
    rng = random.Random(20261101)

    def eid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    console_attacker = iam_user_identity(f"arn:aws:iam::{ACCOUNT}:user/mallory")
    console_attacker["sessionContext"] = {
        "attributes": {"creationDate": "2026-11-01T11:58:00Z", "mfaAuthenticated": "false"}
    }
    files: list[list[dict[str, Any]]] = []
    for hour in range(6):
        records = [noise_record(hour * 100 + i) for i in range(40)]
        for r in records:
            r["eventID"] = eid()
            r["requestID"] = eid()
        files.append(records)

    def put(i: int, record: dict[str, Any]) -> None:
        record["eventID"] = eid()
        record["requestID"] = eid()
        files[i].insert(rng.randrange(len(files[i])), record)

    # an attacker without MFA strips the guardrails, from the console
    detach = make_record(
        "DetachRolePolicy",
        {"roleName": "prod-app", "policyArn": f"arn:aws:iam::{ACCOUNT}:policy/DenyDataExfil"},
        user_identity=console_attacker,
        sessionCredentialFromConsole="true",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        event_time="2026-11-01T12:01:12Z",
    )
    put(1, detach)
    put(
        1,
        make_record(
            "DeleteRolePermissionsBoundary",
            {"roleName": "prod-app"},
            user_identity=console_attacker,
            sessionCredentialFromConsole="true",
            event_time="2026-11-01T12:01:40Z",
        ),
    )
    # probing: a failed attempt with AccessDenied
    put(
        2,
        make_record(
            "DeleteUserPolicy",
            {"userName": "security-audit", "policyName": "deny-iam-write"},
            user_identity=iam_user_identity(
                f"arn:aws:iam::{ACCOUNT}:user/intern-bot", access_key="AKIAEXAMPLEINTERN001"
            ),
            error_code="AccessDenied",
            event_time="2026-11-01T12:02:03Z",
        ),
    )
    # a removal of the quarantine policy AWS attached to a leaked key
    put(
        3,
        make_record(
            "DetachUserPolicy",
            {
                "userName": "build",
                "policyArn": "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3",
            },
            event_time="2026-11-01T12:03:30Z",
        ),
    )
    # the Terraform pipeline replacing an inline policy: suppressed by the example config
    put(
        4,
        make_record(
            "DeleteRolePolicy",
            {"roleName": "lambda-exec", "policyName": "logs-write"},
            user_identity=assumed_role_identity("ci-deployer", "tf-apply-4711"),
            user_agent=TERRAFORM_UA,
            event_time="2026-11-01T12:04:10Z",
        ),
    )
    put(
        5,
        make_record(
            "DeletePolicyVersion",
            {"policyArn": f"arn:aws:iam::{ACCOUNT}:policy/app-read", "versionId": "v2"},
            user_identity=assumed_role_identity("ci-deployer", "tf-apply-4712"),
            user_agent=TERRAFORM_UA,
            event_time="2026-11-01T12:05:44Z",
        ),
    )
    # CloudTrail delivers the same event twice now and then: reported once
    files[5].append(dict(detach))
    # a rewrite that removes nothing: the payments role's inline guard put by the platform team,
    # then put again by the attacker without its Deny -- a weakening (README "Policy weakening").
    # Ids from their own generator, so the records above keep theirs.
    rewrite = random.Random(16)

    def rewrite_id() -> str:
        return str(uuid.UUID(int=rewrite.getrandbits(128), version=4))

    for index, (document, identity, when) in enumerate(
        (
            (PAYMENTS_GUARD, assumed_role_identity("platform-admin", "bootstrap", mfa=True), 20),
            (PAYMENTS_WEAKENED, console_attacker, 35),
        )
    ):
        record = make_record(
            "PutRolePolicy",
            {"roleName": "payments", "policyName": "data-guard", "policyDocument": document},
            user_identity=identity,
            event_time=f"2026-11-01T12:0{index * 2}:{when:02d}Z",
            event_id=rewrite_id(),
        )
        record["requestID"] = rewrite_id()
        files[index * 2].append(record)

    shutil.rmtree(OUT, ignore_errors=True)
    for i, records in enumerate(files):
        key = delivery_key(
            stamp=f"20261101T12{i:02d}Z", suffix=f"Ex{i:02d}mplE{rng.getrandbits(32):08x}"
        )
        path = OUT / key
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"Records": records}, separators=(",", ":")).encode()
        path.write_bytes(gzip.compress(data, mtime=0))
    digest = (
        OUT
        / f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/2026/11/01"
        / f"{ACCOUNT}_CloudTrail-Digest_us-east-1_trail_us-east-1_20261101T130000Z.json.gz"
    )
    digest.parent.mkdir(parents=True, exist_ok=True)
    digest.write_bytes(
        gzip.compress(
            json.dumps(
                {
                    "awsAccountId": ACCOUNT,
                    "digestStartTime": "2026-11-01T12:00:00Z",
                    "digestEndTime": "2026-11-01T13:00:00Z",
                    "digestS3Bucket": "example-trail",
                    "digestS3Object": str(digest.relative_to(OUT)),
                    "logFiles": [],
                }
            ).encode(),
            mtime=0,
        )
    )
    print(f"wrote {len(files)} log files and 1 digest under {OUT}")


if __name__ == "__main__":
    main()
