"""Weakening changes end to end (issue 16): `trailguard run` as a subprocess against moto's IAM,
S3 and SQS behind the fault proxy, every write confirmed through CloudTrail LookupEvents (the
proxy answers it from the records the test registers as real; moto's answers HTTP 500).

The account is built in moto and its history delivered as CloudTrail would: an inline guard on a
role, a managed policy, a managed policy whose v1 was too permissive and v2 fixed it, a role
with a narrow permissions boundary, the Terraform pipeline's role policy.  Then the attacks,
made for real in moto and delivered in one file: the inline guard rewritten without its Deny
(PutRolePolicy), a new default version without it (CreatePolicyVersion, setAsDefault), the
rollback to the permissive v1 (SetDefaultPolicyVersion), a wider boundary
(PutRolePermissionsBoundary); the pipeline's own weakening (suppressed) and a Put with no
previous document (baseline_unknown).

Checked: one detection per weakening change with its ``change`` object; the pipeline's
suppressed and never reverted; ``revert_policy_change`` puts back exactly the previous
document, default version and boundary in moto, each job confirmed with CloudTrail;
``trailguard_policy_changes_total`` counts every verdict; trailguard's own reverts, delivered in
the next file, are judged not weakened and plan nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.change_support import GUARDED, NARROW_BOUNDARY, UNGUARDED, WIDE_BOUNDARY
from tests.factories import (
    ACCOUNT,
    assumed_role_identity,
    delivery_key,
    make_record,
    noise_record,
)
from tests.integration.conftest import Boto3Clients
from tests.integration.daemon_harness import (
    DaemonConfig,
    DaemonHarness,
    DaemonRun,
    free_port,
    sample,
    scrape,
    wait_until,
)
from tests.integration.proxy import FaultProxy
from tests.integration.test_daemon import (
    VISIBILITY,
    make_queue,
    notify_queue,
    put_records,
    run_cli,
    stop_ok,
    wait_detections,
    wait_empty,
)

if TYPE_CHECKING:
    from mypy_boto3_iam.client import IAMClient

pytestmark = pytest.mark.integration

TRUST = json.dumps({"Version": "2012-10-17", "Statement": []})
TERRAFORM_UA = (
    "APN/1.0 HashiCorp/1.0 Terraform/1.9.8 (+https://www.terraform.io) "
    "terraform-provider-aws/5.74.0"
)
REMEDIATION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/trailguard-remediation"
CONFIG = f"""
[remediation]
mode = "enforce"
confirm_events = true
poll_interval_secs = 0.5
max_attempts = 8
backoff_base_secs = 0.5
backoff_cap_secs = 2.0
iam_rate_per_sec = 50.0
own_identity_arns = ["arn:aws:sts::{ACCOUNT}:assumed-role/trailguard-remediation/*"]

[[remediation.policies]]
name = "undo-weakening"
rules = ["iam-policy-weakened"]
min_severity = "high"
actions = ["revert_policy_change"]

[[rules]]
id = "iam-policy-weakened"
[[rules.suppress]]
name = "terraform-pipeline"
actor_arn = ["arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer/*"]
user_agent_preset = ["terraform"]
"""


@pytest.fixture
def daemons(tmp_path: Path, proxy: FaultProxy) -> Iterator[list[DaemonHarness]]:
    made: list[DaemonHarness] = []
    yield made
    for harness in made:
        harness.close()


class Trail:
    """CloudTrail records of what the test does in moto's IAM, five seconds apart."""

    def __init__(self) -> None:
        self._t = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=30)

    def rec(self, event_name: str, params: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self._t += dt.timedelta(seconds=5)
        kwargs.setdefault("event_time", self._t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        kwargs.setdefault("event_id", str(uuid.uuid4()))
        return make_record(event_name, params, **kwargs)


def parn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:policy/{name}"


def create_policy(iam: IAMClient, trail: Trail, name: str, document: str) -> dict[str, Any]:
    created = iam.create_policy(PolicyName=name, PolicyDocument=document)["Policy"]
    return trail.rec(
        "CreatePolicy",
        {"policyName": name, "path": "/", "policyDocument": document},
        responseElements={"policy": {"arn": created["Arn"], "path": "/", "defaultVersionId": "v1"}},
    )


def new_default(iam: IAMClient, trail: Trail, name: str, document: str, **kw: Any) -> Any:
    created = iam.create_policy_version(
        PolicyArn=parn(name), PolicyDocument=document, SetAsDefault=True
    )["PolicyVersion"]
    return trail.rec(
        "CreatePolicyVersion",
        {"policyArn": parn(name), "policyDocument": document, "setAsDefault": True},
        responseElements={
            "policyVersion": {"versionId": created["VersionId"], "isDefaultVersion": True}
        },
        **kw,
    )


def put_role_policy(
    iam: IAMClient, trail: Trail, role: str, name: str, document: str, **kw: Any
) -> dict[str, Any]:
    iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=document)
    return trail.rec(
        "PutRolePolicy",
        {"roleName": role, "policyName": name, "policyDocument": document},
        **kw,
    )


def put_boundary(iam: IAMClient, trail: Trail, role: str, name: str, **kw: Any) -> Any:
    iam.put_role_permissions_boundary(RoleName=role, PermissionsBoundary=parn(name))
    return trail.rec(
        "PutRolePermissionsBoundary",
        {"roleName": role, "permissionsBoundary": parn(name)},
        **kw,
    )


def same(document: object, text: str) -> bool:
    expected: object = json.loads(text)
    return document == expected


def default_document(iam: IAMClient, name: str) -> tuple[str, object]:
    policy = iam.get_policy(PolicyArn=parn(name))["Policy"]
    version = iam.get_policy_version(PolicyArn=parn(name), VersionId=policy["DefaultVersionId"])
    return policy["DefaultVersionId"], version["PolicyVersion"]["Document"]


def jobs(harness: DaemonHarness) -> list[dict[str, Any]]:
    result = run_cli("jobs", "list", "--json", "--config", str(harness.config_path))
    assert result.returncode == 0, result.stderr
    listed: list[dict[str, Any]] = json.loads(result.stdout)
    return listed


def wait_jobs(harness: DaemonHarness, run: DaemonRun, count: int) -> list[dict[str, Any]]:
    final = {"succeeded", "dead", "skipped", "dry_run", "awaiting_approval"}

    def done() -> list[dict[str, Any]] | None:
        found = jobs(harness)
        return found if len(found) >= count and all(j["state"] in final for j in found) else None

    return wait_until(
        done,
        timeout=60,
        interval=1.0,
        what=f"{count} jobs to finish",
        context=lambda: (
            json.dumps([(j["action"], j["state"], j["reason"]) for j in jobs(harness)])
            + "\n"
            + run.describe()
        ),
    )


@pytest.mark.parametrize("decode_in", ["threads", "processes"])
def test_weakening_changes_are_detected_and_reverted(
    aws: Boto3Clients,
    proxy: FaultProxy,
    daemons: list[DaemonHarness],
    tmp_path: Path,
    decode_in: str,
) -> None:
    """(Changes found by decode worker processes cross their pipe like any outcome.)"""
    iam = aws.iam
    trail = Trail()
    mallory: dict[str, Any] = {"source_ip": "203.0.113.66"}
    pipeline: dict[str, Any] = {
        "user_identity": assumed_role_identity("ci-deployer", "tf-apply-7"),
        "user_agent": TERRAFORM_UA,
    }
    for role in ("app", "bounded", "lambda", "fresh"):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=TRUST)

    # -- the account's history, as CloudTrail delivered it --------------------------------------
    history = [
        put_role_policy(iam, trail, "app", "guard", GUARDED),
        create_policy(iam, trail, "Guard", GUARDED),
        create_policy(iam, trail, "Rollback", UNGUARDED),  # v1: too permissive ...
        new_default(iam, trail, "Rollback", GUARDED),  # ... v2 fixed it
        create_policy(iam, trail, "Narrow", NARROW_BOUNDARY),
        create_policy(iam, trail, "Wide", WIDE_BOUNDARY),
        put_boundary(iam, trail, "bounded", "Narrow"),
        put_role_policy(iam, trail, "lambda", "logs", GUARDED, **pipeline),
    ]
    # -- the changes ----------------------------------------------------------------------------
    inline = put_role_policy(iam, trail, "app", "guard", UNGUARDED, **mallory)
    version = new_default(iam, trail, "Guard", UNGUARDED, **mallory)
    iam.set_default_policy_version(PolicyArn=parn("Rollback"), VersionId="v1")
    rollback = trail.rec(
        "SetDefaultPolicyVersion", {"policyArn": parn("Rollback"), "versionId": "v1"}, **mallory
    )
    boundary = put_boundary(iam, trail, "bounded", "Wide", **mallory)
    by_pipeline = put_role_policy(iam, trail, "lambda", "logs", UNGUARDED, **pipeline)
    unknown = put_role_policy(iam, trail, "fresh", "new", UNGUARDED, **mallory)
    attacks = [inline, version, rollback, boundary]
    cloudtrail = proxy.serve_lookup_events()
    cloudtrail.add(*history, *attacks, by_pipeline, unknown)

    url, arn, _ = make_queue(aws, "trail")
    notify_queue(aws, arn)
    port = free_port()
    harness = DaemonHarness(
        tmp_path / "daemon",
        DaemonConfig(
            endpoint_url=proxy.endpoint_url,
            queue_urls=[url],
            visibility_timeout_secs=VISIBILITY,
            heartbeat_fraction=0.25,
            http_listen=f"127.0.0.1:{port}",
            decode_in=decode_in,
            extra=CONFIG,
        ),
    )
    daemons.append(harness)
    run = harness.start()

    history_key = delivery_key(stamp="20261101T1200Z", suffix="History00000001")
    put_records(aws, history_key, [noise_record(0), *history])
    run.wait_for("s3.object_processed", key=history_key)
    changes_key = delivery_key(stamp="20261101T1205Z", suffix="Changes00000001")
    put_records(aws, changes_key, [*attacks, noise_record(1), by_pipeline, unknown])
    wait_detections(harness, {r["eventID"] for r in [*attacks, by_pipeline]})

    # -- one detection per weakening change, with its comparison ---------------------------------
    found = {d["event_id"]: d for d in harness.detections()}
    assert set(found) == {r["eventID"] for r in [*attacks, by_pipeline]}, found.keys()
    for record in attacks:
        detection = found[record["eventID"]]
        assert (detection["rule"], detection["severity"], detection["disposition"]) == (
            "iam-policy-weakened",
            "high",
            "alert",
        ), detection
        change = detection["change"]
        assert change["verdict"] == "weakened"
        assert change["witness"]["confirmed"] is True
        assert change["previous_source"] == "trail"
    assert found[inline["eventID"]]["change"]["previous_event_id"] == history[0]["eventID"]
    assert found[version["eventID"]]["change"]["previous_event_id"] == history[1]["eventID"]
    rolled = found[rollback["eventID"]]["change"]
    assert (rolled["previous_version_id"], rolled["new_version_id"]) == ("v2", "v1")
    assert rolled["previous_event_id"] == history[3]["eventID"]
    assert rolled["new_document_event_id"] == history[2]["eventID"]
    widened = found[boundary["eventID"]]["change"]
    assert widened["previous_policy_arn"] == parn("Narrow")
    assert widened["previous_event_id"] == history[6]["eventID"]
    suppressed = found[by_pipeline["eventID"]]
    assert suppressed["disposition"] == "suppressed"
    assert (
        suppressed["suppressed_by"] == "rules[iam-policy-weakened].suppress[0] (terraform-pipeline)"
    )

    # -- each reverted in IAM, confirmed with CloudTrail ---------------------------------------
    done = wait_jobs(harness, run, len(attacks))
    assert sorted(j["detection"]["event_id"] for j in done) == sorted(r["eventID"] for r in attacks)
    for job in done:
        assert (job["action"], job["state"], job["changed"]) == (
            "revert_policy_change",
            "succeeded",
            True,
        ), job
        confirmed = {
            e["data"]["event_id"]
            for e in job["audit"]
            if (e["data"] or {}).get("confirmation") == "confirmed"
        }
        change = job["detection"]["change"]
        assert {job["detection"]["event_id"], change["previous_event_id"]} <= confirmed, job
    assert same(iam.get_role_policy(RoleName="app", PolicyName="guard")["PolicyDocument"], GUARDED)
    version_id, document = default_document(iam, "Guard")
    assert version_id == "v1"
    assert same(document, GUARDED)
    version_id, document = default_document(iam, "Rollback")
    assert version_id == "v2"
    assert same(document, GUARDED)
    live_boundary = iam.get_role(RoleName="bounded")["Role"]["PermissionsBoundary"]
    assert live_boundary["PermissionsBoundaryArn"] == parn("Narrow")
    # the pipeline's change stays: suppressed, never reverted
    assert same(
        iam.get_role_policy(RoleName="lambda", PolicyName="logs")["PolicyDocument"], UNGUARDED
    )

    # -- every change counted by verdict ------------------------------------------------------
    def counted() -> dict[tuple[str, str], float] | None:
        _, samples = scrape(f"http://127.0.0.1:{port}")
        got = {
            (kind, verdict): sample(
                samples, "trailguard_policy_changes_total", kind=kind, verdict=verdict
            )
            or 0.0
            for kind in ("inline", "managed", "boundary")
            for verdict in ("weakened", "possibly_weakened", "not_weakened", "baseline_unknown")
        }
        return got if got[("boundary", "weakened")] else None

    metrics = wait_until(counted, timeout=20, what="policy change metrics", context=run.describe)
    assert {k: v for k, v in metrics.items() if v} == {
        ("inline", "baseline_unknown"): 3,  # app/guard and lambda/logs first seen, fresh/new
        ("inline", "weakened"): 2,  # the attack and the pipeline's
        ("managed", "not_weakened"): 1,  # Rollback's v2 fixed v1
        ("managed", "weakened"): 2,
        ("boundary", "baseline_unknown"): 1,  # the first boundary of "bounded"
        ("boundary", "weakened"): 1,
    }

    # -- trailguard's own reverts, delivered next: judged, not weakening, nothing planned ------
    own = {"user_identity": assumed_role_identity("trailguard-remediation", "tg-1")}
    reverts = [
        trail.rec(
            "PutRolePolicy",
            {"roleName": "app", "policyName": "guard", "policyDocument": GUARDED},
            **own,
        ),
        trail.rec(
            "SetDefaultPolicyVersion", {"policyArn": parn("Guard"), "versionId": "v1"}, **own
        ),
        trail.rec(
            "PutRolePermissionsBoundary",
            {"roleName": "bounded", "permissionsBoundary": parn("Narrow")},
            **own,
        ),
    ]
    cloudtrail.add(*reverts)
    reverts_key = delivery_key(stamp="20261101T1210Z", suffix="Reverts00000001")
    put_records(aws, reverts_key, reverts)
    wait_empty(aws, url, harness)  # deleted: judged, committed, planned
    stop_ok(harness, run)
    assert len(jobs(harness)) == len(attacks)
    assert {d["event_id"] for d in harness.detections()} == set(found)
    summary = run.events("daemon.stopped")[0]
    # the metrics' counts, and the three reverts: not weakened
    assert summary["policy_changes"] == {
        "baseline_unknown": 4,
        "weakened": 5,
        "not_weakened": 4,
    }, summary
