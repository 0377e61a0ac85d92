"""The demo's trail: ordinary CloudTrail log files, and now and then a policy removal.

Every ``noise_interval`` seconds a log file of ordinary events lands in the trail bucket, in
CloudTrail's own key layout; every ``scenario_interval`` seconds the next scenario runs: the IAM
change is made for real in the emulator and its CloudTrail record is delivered in the next file,
as CloudTrail would.  Scenarios:

* an attacker (``user/mallory``, console session without MFA) detaches a deny policy from a
  production role, or deletes a user's or a group's inline guardrail -> alert, put back;
* the attacker rewrites the payments role's inline guard without its Deny (a PutRolePolicy:
  nothing is removed) -> a weakening alert with its witness, the previous document put back;
* a probing user's ``DeleteGroupPolicy`` fails with AccessDenied -> alert, outcome failure;
* the Terraform pipeline (``assumed-role/ci-deployer``, Terraform's user agent) replaces a
  Lambda role's inline policy -> suppressed by the config, nothing to put back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import itertools
import json
import random
import uuid
from collections.abc import Callable
from typing import Any

from trailguard.demo.emulator import (
    BUCKET,
    DENY_EXFIL,
    DENY_EXFIL_ARN,
    DENY_IAM_WRITE,
    LOGS_WRITE,
    PAYMENTS_GUARD,
    PAYMENTS_WEAKENED,
    READ_ONLY_OPS,
    REGION,
    Emulator,
)
from trailguard.demo.records import (
    ACCOUNT,
    assumed_role_identity,
    iam_user_identity,
    make_record,
    noise_record,
)

TERRAFORM_UA = (
    "APN/1.0 HashiCorp/1.0 Terraform/1.9.8 (+https://www.terraform.io) "
    "terraform-provider-aws/5.74.0 (+https://registry.terraform.io/providers/hashicorp/aws) "
    "aws-sdk-go-v2/1.32.3 ua/2.1 os/linux lang/go#1.22.8 api/iam#1.38.0"
)
CONSOLE_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"


def _now(offset_secs: float = 0.0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_secs)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _mallory() -> dict[str, Any]:
    identity = iam_user_identity(f"arn:aws:iam::{ACCOUNT}:user/mallory")
    identity["sessionContext"] = {
        "attributes": {"creationDate": _now(-600), "mfaAuthenticated": "false"}
    }
    return identity


def _pipeline() -> dict[str, Any]:
    return assumed_role_identity("ci-deployer", f"tf-apply-{random.randrange(10_000):04d}")


class Player:
    """Plays the trail into the emulator's bucket until cancelled."""

    def __init__(
        self,
        emulator: Emulator,
        *,
        noise_interval: float = 1.0,
        scenario_interval: float = 4.0,
        seed: int | None = None,
    ) -> None:
        self.emulator = emulator
        self.noise_interval = noise_interval
        self.scenario_interval = scenario_interval
        self.files = 0
        self.records = 0
        self.scenarios: dict[str, int] = {}
        self._rng = random.Random(seed)
        self._pending: list[dict[str, Any]] = []
        self._iam = emulator.clients["iam"]
        self._s3 = emulator.clients["s3"]
        self._cycle: itertools.cycle[tuple[str, Callable[[], list[dict[str, Any]]]]] = (
            itertools.cycle(
                [
                    ("attacker detaches a deny policy", self._detach_guardrail),
                    ("attacker rewrites an inline guard without its Deny", self._weaken),
                    ("probe: AccessDenied", self._probe),
                    ("Terraform replaces an inline policy", self._terraform),
                    ("attacker deletes a user's inline guardrail", self._delete_user_guardrail),
                    ("attacker deletes a group's inline guardrail", self._delete_group_guardrail),
                ]
            )
        )

    # -- the history trailguard learns from: how the account got its policies ------------------

    def bootstrap_records(self) -> list[dict[str, Any]]:
        admin = assumed_role_identity("platform-admin", "bootstrap", mfa=True)
        t = _now(-3600)
        return [
            make_record(
                "CreatePolicy",
                {"policyName": "DenyDataExfil", "policyDocument": DENY_EXFIL, "path": "/"},
                user_identity=admin,
                event_time=t,
                responseElements={
                    "policy": {"arn": DENY_EXFIL_ARN, "defaultVersionId": "v1", "path": "/"}
                },
            ),
            make_record(
                "AttachRolePolicy",
                {"roleName": "prod-app", "policyArn": DENY_EXFIL_ARN},
                user_identity=admin,
                event_time=t,
            ),
            make_record(
                "PutRolePolicy",
                {
                    "roleName": "lambda-exec",
                    "policyName": "logs-write",
                    "policyDocument": LOGS_WRITE,
                },
                user_identity=admin,
                event_time=t,
            ),
            make_record(
                "PutRolePolicy",
                {
                    "roleName": "payments",
                    "policyName": "data-guard",
                    "policyDocument": PAYMENTS_GUARD,
                },
                user_identity=admin,
                event_time=t,
            ),
            make_record(
                "PutUserPolicy",
                {
                    "userName": "build-bot",
                    "policyName": "deny-iam-write",
                    "policyDocument": DENY_IAM_WRITE,
                },
                user_identity=admin,
                event_time=t,
            ),
            make_record(
                "PutGroupPolicy",
                {
                    "groupName": "operators",
                    "policyName": "no-terminate",
                    "policyDocument": READ_ONLY_OPS,
                },
                user_identity=admin,
                event_time=t,
            ),
        ]

    # -- scenarios: each makes the change in IAM and returns its CloudTrail records -------------

    def _detach_guardrail(self) -> list[dict[str, Any]]:
        attached = self._iam.list_attached_role_policies(RoleName="prod-app")["AttachedPolicies"]
        if not any(p["PolicyArn"] == DENY_EXFIL_ARN for p in attached):
            return []  # not put back yet
        self._iam.detach_role_policy(RoleName="prod-app", PolicyArn=DENY_EXFIL_ARN)
        return [
            make_record(
                "DetachRolePolicy",
                {"roleName": "prod-app", "policyArn": DENY_EXFIL_ARN},
                user_identity=_mallory(),
                sessionCredentialFromConsole="true",
                user_agent=CONSOLE_UA,
                source_ip="203.0.113.66",
                event_time=_now(),
            )
        ]

    def _weaken(self) -> list[dict[str, Any]]:
        live = self._iam.get_role_policy(RoleName="payments", PolicyName="data-guard")
        if live["PolicyDocument"] != json.loads(PAYMENTS_GUARD):
            return []  # not put back yet
        self._iam.put_role_policy(
            RoleName="payments", PolicyName="data-guard", PolicyDocument=PAYMENTS_WEAKENED
        )
        return [
            make_record(
                "PutRolePolicy",
                {
                    "roleName": "payments",
                    "policyName": "data-guard",
                    "policyDocument": PAYMENTS_WEAKENED,
                },
                user_identity=_mallory(),
                sessionCredentialFromConsole="true",
                user_agent=CONSOLE_UA,
                source_ip="203.0.113.66",
                event_time=_now(),
            )
        ]

    def _delete_user_guardrail(self) -> list[dict[str, Any]]:
        names = self._iam.list_user_policies(UserName="build-bot")["PolicyNames"]
        if "deny-iam-write" not in names:
            return []
        self._iam.delete_user_policy(UserName="build-bot", PolicyName="deny-iam-write")
        return [
            make_record(
                "DeleteUserPolicy",
                {"userName": "build-bot", "policyName": "deny-iam-write"},
                user_identity=_mallory(),
                source_ip="203.0.113.66",
                event_time=_now(),
            )
        ]

    def _delete_group_guardrail(self) -> list[dict[str, Any]]:
        names = self._iam.list_group_policies(GroupName="operators")["PolicyNames"]
        if "no-terminate" not in names:
            return []
        self._iam.delete_group_policy(GroupName="operators", PolicyName="no-terminate")
        return [
            make_record(
                "DeleteGroupPolicy",
                {"groupName": "operators", "policyName": "no-terminate"},
                user_identity=_mallory(),
                sessionCredentialFromConsole="true",
                user_agent=CONSOLE_UA,
                source_ip="203.0.113.66",
                event_time=_now(),
            )
        ]

    def _probe(self) -> list[dict[str, Any]]:
        intern = iam_user_identity(
            f"arn:aws:iam::{ACCOUNT}:user/intern", access_key="AKIAEXAMPLEINTERN001"
        )
        return [
            make_record(
                "DeleteGroupPolicy",
                {"groupName": "operators", "policyName": "no-terminate"},
                user_identity=intern,
                error_code="AccessDenied",
                source_ip="198.51.100.23",
                event_time=_now(),
            )
        ]

    def _terraform(self) -> list[dict[str, Any]]:
        self._iam.delete_role_policy(RoleName="lambda-exec", PolicyName="logs-write")
        self._iam.put_role_policy(
            RoleName="lambda-exec", PolicyName="logs-write", PolicyDocument=LOGS_WRITE
        )
        common: dict[str, Any] = {
            "user_identity": _pipeline(),
            "user_agent": TERRAFORM_UA,
            "source_ip": "10.0.8.15",
        }
        return [
            make_record(
                "DeleteRolePolicy",
                {"roleName": "lambda-exec", "policyName": "logs-write"},
                event_time=_now(),
                **common,
            ),
            make_record(
                "PutRolePolicy",
                {
                    "roleName": "lambda-exec",
                    "policyName": "logs-write",
                    "policyDocument": LOGS_WRITE,
                },
                event_time=_now(),
                **common,
            ),
        ]

    # -- delivery ------------------------------------------------------------------------------

    def deliver(self, records: list[dict[str, Any]]) -> str:
        """One log file in CloudTrail's layout, with ordinary records around ``records``."""
        body = [noise_record(self._rng.randrange(1_000_000)) for _ in range(40)]
        for record in body:
            record["eventTime"] = _now(-self._rng.randrange(1, 240))
        for record in records:
            body.insert(self._rng.randrange(len(body) + 1), record)
        now = dt.datetime.now(dt.UTC)
        key = (
            f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{now:%Y/%m/%d}/"
            f"{ACCOUNT}_CloudTrail_{REGION}_{now:%Y%m%dT%H%MZ}_{uuid.uuid4().hex[:16]}.json.gz"
        )
        data = gzip.compress(json.dumps({"Records": body}, separators=(",", ":")).encode())
        self._s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        self.files += 1
        self.records += len(body)
        return key

    async def run(self) -> None:
        await asyncio.to_thread(self.deliver, self.bootstrap_records())
        loop = asyncio.get_running_loop()
        next_scenario = loop.time() + self.scenario_interval
        while True:
            if loop.time() >= next_scenario:
                next_scenario += self.scenario_interval
                name, scenario = next(self._cycle)
                records = await asyncio.to_thread(scenario)
                if records:
                    self.scenarios[name] = self.scenarios.get(name, 0) + 1
                    self._pending.extend(records)
            pending, self._pending = self._pending, []
            await asyncio.to_thread(self.deliver, pending)
            await asyncio.sleep(self.noise_interval)
