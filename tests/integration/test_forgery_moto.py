"""Forged trail records against the real ingestion and remediation path (issue 12 §1).

Everything here is the daemon's own code against a real moto server over HTTP on 127.0.0.1: the
trail arrives in the SQS queue -- as CloudTrail log files written to the S3 bucket (S3 notifies
the queue) or as EventBridge "AWS API Call via CloudTrail" bodies -- and is handled by the real
:class:`~trailguard.ingest.messages.MessageHandler` (decode, event ledger, policy history,
detections, jobs); the real job runner then acts on moto's IAM with the real AWS clients.
moto's CloudTrail answers LookupEvents with HTTP 500, so the fault proxy in front of moto
answers it from a stand-in holding only the *real* events (``proxy.serve_lookup_events``): what
CloudTrail itself recorded.  The forged records reach trailguard exactly as an attacker would
deliver them (a file in the bucket, or one message in the queue) and are never in CloudTrail.

Each attack is checked to write nothing an attacker chose, to leave its job waiting for an
operator with a reason naming the problem, and to be reported (``ledger.conflict``,
``trailguard_forgery_suspected_total``, ``forgery_suspected`` detections); the control runs
(the same flow without the forgery) show that the same path does put back what was removed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest
from structlog.testing import capture_logs

from tests.factories import ACCOUNT, assumed_role_identity, delivery_key, make_record
from tests.integration.conftest import Boto3Clients, MotoServer
from tests.integration.proxy import FaultProxy, LookupEventsStandIn
from tests.remediation_support import DOC_DENY_EC2, DOC_DENY_S3, FakeClock
from trailguard.aws import client_config, client_kwargs, make_session
from trailguard.config import Config, parse_config
from trailguard.decode_pool import DecodePool
from trailguard.detect.process import Detector
from trailguard.ingest.budget import ByteBudget
from trailguard.ingest.messages import HandlerSettings, MessageHandler
from trailguard.ingest.s3 import S3ObjectStore
from trailguard.ingest.sqs import SqsQueue
from trailguard.outputs.jsonl import JsonlWriter
from trailguard.outputs.sink import DetectionSink
from trailguard.remediate.jobs import Job, PlanMismatchError, iso
from trailguard.remediate.service import Remediation
from trailguard.state.dedup import SqliteDedupStore
from trailguard.state.ledger import SqliteEventLedger
from trailguard.state.policy_history import default_history_path
from trailguard.state.policy_history_sqlite import SqliteHistoryStore
from trailguard.telemetry.metrics import Metrics
from trailguard.telemetry.observers import standard_observers

if TYPE_CHECKING:
    from mypy_boto3_iam.client import IAMClient

pytestmark = pytest.mark.integration

BUCKET = "trail-bucket"
QUEUE = "trail-queue"
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
TRUST = json.dumps({"Version": "2012-10-17", "Statement": []})
ROOT_IDENTITY = {
    "type": "Root",
    "principalId": ACCOUNT,
    "arn": f"arn:aws:iam::{ACCOUNT}:root",
    "accountId": ACCOUNT,
    "accessKeyId": "ASIAEXAMPLEROOTKEY01",
}
Form = Literal["file", "eventbridge"]
FORMS: tuple[Form, ...] = ("file", "eventbridge")


# ---------------------------------------------------------------------------------------------
# The world: moto (S3, SQS, IAM) behind the fault proxy, CloudTrail's own records, trailguard
# ---------------------------------------------------------------------------------------------


@dataclass
class World:
    aws: Boto3Clients
    cloudtrail: LookupEventsStandIn
    config: Config
    clock: FakeClock
    queue: SqsQueue
    handler: MessageHandler
    settings: HandlerSettings
    remediation: Remediation
    ledger: SqliteEventLedger
    metrics: Metrics
    detections_path: Path
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _minute: Any = field(default_factory=lambda: itertools.count(0))
    _files: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def iam(self) -> IAMClient:
        return self.aws.iam

    def rec(self, event_name: str, params: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """A record with a fresh eventID, a minute after the last; the first is 3 hours ago
        (long visible in LookupEvents)."""
        minute = next(self._minute)
        kwargs.setdefault("event_id", f"evt-{next(self._ids):04d}-{time.time_ns()}")
        kwargs.setdefault("event_time", iso_z(self.clock() - 3 * 3600 + 60 * minute))
        return make_record(event_name, params, **kwargs)

    def real(self, *records: dict[str, Any]) -> None:
        """These events happened: CloudTrail shows them."""
        self.cloudtrail.add(*records)

    async def deliver(self, form: Form, *records: dict[str, Any]) -> None:
        """The records reach the queue as a log file in the bucket, or one EventBridge body
        each; trailguard handles every message the queue holds."""
        if form == "file":
            body = gzip.compress(json.dumps({"Records": list(records)}).encode())
            key = delivery_key(suffix=f"File{next(self._files):08d}xyz")
            self.aws.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        else:
            for record in records:
                self.aws.sqs.send_message(QueueUrl=self.queue.url, MessageBody=eventbridge(record))
        await self.ingest()

    async def ingest(self) -> None:
        while True:
            messages = await self.queue.receive(
                max_messages=10, wait_time_secs=0, visibility_timeout_secs=60
            )
            if not messages:
                return
            for message in messages:
                outcome = await self.handler.handle(self.queue, message, self.settings)
                assert outcome in ("deleted", "test_event"), outcome

    async def run(self, rounds: int = 4) -> list[Job]:
        """Run every due job; between rounds an hour passes, so retries come due."""
        for _ in range(rounds):
            await self.remediation.runner.run_once()
            self.clock.now += 3600
        return await self.remediation.store.list_jobs(limit=1000)

    async def job(self, action: str, event_id: str) -> Job:
        jobs = [
            j
            for j in await self.remediation.store.list_jobs(limit=1000)
            if j.action == action and j.event_id == event_id
        ]
        assert len(jobs) == 1, [(j.action, j.event_id, j.state) for j in jobs]
        return jobs[0]

    def detections(self) -> list[dict[str, Any]]:
        if not self.detections_path.exists():
            return []
        lines = self.detections_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def forgery_metric(self, path: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "trailguard_forgery_suspected_total", {"path": path}
        )
        assert value is not None, "the series starts at zero"
        return value


def iso_z(ts: float) -> str:
    return iso(ts)[:19] + "Z"


def eventbridge(record: dict[str, Any]) -> str:
    """An EventBridge "AWS API Call via CloudTrail" event for one record, as SQS delivers it."""
    return json.dumps(
        {
            "version": "0",
            "id": f"eb-{record['eventID']}",
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.iam",
            "account": ACCOUNT,
            "time": record["eventTime"],
            "region": "us-east-1",
            "resources": [],
            "detail": record,
        }
    )


def world_config(endpoint: str, tmp_path: Path, queue_url: str, quarantine_arn: str) -> Config:
    restores = (
        '"restore_inline_policy", "reattach_managed_policy", "restore_policy_version", '
        '"recreate_managed_policy", "restore_permissions_boundary", "quarantine_actor"'
    )
    text = f"""
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"

[[sources.sqs]]
queue_url = "{queue_url}"

[outputs.jsonl]
path = "{tmp_path / "detections.jsonl"}"

[state]
path = "{tmp_path / "state.sqlite3"}"

[remediation]
mode = "enforce"
confirm_events = true
max_attempts = 4
backoff_base_secs = 1.0
backoff_cap_secs = 60.0
iam_rate_per_sec = 100.0
quarantine_policy_arn = "{quarantine_arn}"

[[remediation.policies]]
rules = ["*"]
min_severity = "low"
actions = [{restores}]
"""
    return parse_config(text, file="forgery-test.toml")


@asynccontextmanager
async def make_world(
    moto: MotoServer, aws: Boto3Clients, proxy: FaultProxy, tmp_path: Path
) -> AsyncIterator[World]:
    aws.s3.create_bucket(Bucket=BUCKET)
    queue_url = aws.sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    queue_arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    aws.s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    quarantine = aws.iam.create_policy(
        PolicyName="TrailguardQuarantine", PolicyDocument=DOC_DENY_S3
    )
    config = world_config(proxy.endpoint_url, tmp_path, queue_url, quarantine["Policy"]["Arn"])
    cloudtrail = proxy.serve_lookup_events()
    clock = FakeClock(time.time())
    metrics = Metrics.from_config(config, process_collectors=False)
    async with AsyncExitStack() as stack:
        session = make_session()
        kwargs = client_kwargs("us-east-1", proxy.endpoint_url)
        sqs = await stack.enter_async_context(
            session.create_client("sqs", config=client_config(), **kwargs)
        )
        s3 = await stack.enter_async_context(
            session.create_client("s3", config=client_config(), **kwargs)
        )
        dedup = await SqliteDedupStore.open(config.state.path, ttl_seconds=3600)
        stack.push_async_callback(dedup.close)
        writer = stack.enter_context(JsonlWriter(config.outputs.jsonl.path, fsync=False))
        history_path = default_history_path(config.state.path)
        history = await stack.enter_async_context(await SqliteHistoryStore.open(history_path))
        ledger = await stack.enter_async_context(await SqliteEventLedger.open(history_path))
        remediation = await stack.enter_async_context(
            Remediation.open(config, history=history, ledger=ledger, clock=clock)
        )
        pool = DecodePool(config, -1)
        stack.callback(pool.shutdown)
        handler = MessageHandler(
            detector=Detector.from_config(config),
            store=S3ObjectStore(s3),
            pool=pool,
            sink=DetectionSink(writer, dedup),
            object_slots=asyncio.Semaphore(4),
            budget=ByteBudget(128 << 20),
            observer=standard_observers(metrics)[0],
            history=history,
            ledger=ledger,
            remediation=remediation,
        )
        settings = HandlerSettings(
            queue_label=QUEUE,
            visibility_timeout_secs=60,
            heartbeat_interval_secs=30,
            max_object_bytes=50 << 20,
        )
        world = World(
            aws=aws,
            cloudtrail=cloudtrail,
            config=config,
            clock=clock,
            queue=SqsQueue(sqs, queue_url),
            handler=handler,
            settings=settings,
            remediation=remediation,
            ledger=ledger,
            metrics=metrics,
            detections_path=Path(config.outputs.jsonl.path),
        )
        await world.ingest()  # S3's test event
        yield world


@pytest.fixture
async def world(
    clean_moto: MotoServer, boto3_session_clients: Boto3Clients, tmp_path: Path
) -> AsyncIterator[World]:
    with FaultProxy(clean_moto.endpoint_url) as proxy:
        async with make_world(clean_moto, boto3_session_clients, proxy, tmp_path) as made:
            yield made


# ---------------------------------------------------------------------------------------------
# The attacks: a real removal, and forged records that carry its eventID
# ---------------------------------------------------------------------------------------------


def policy_arn(name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{ACCOUNT}:policy{path}{name}"


def create_policy(w: World, name: str, path: str, document: str) -> dict[str, Any]:
    created = w.iam.create_policy(PolicyName=name, Path=path, PolicyDocument=document)["Policy"]
    return w.rec(
        "CreatePolicy",
        {"policyName": name, "path": path, "policyDocument": document},
        responseElements={
            "policy": {
                "policyName": name,
                "policyId": created["PolicyId"],
                "arn": created["Arn"],
                "path": path,
                "defaultVersionId": "v1",
            }
        },
    )


def forged_at(w: World, removal: dict[str, Any], seconds_before: int = 30) -> str:
    """An eventTime just before the removal's: the forged fact is history's latest."""
    at = dt.datetime.fromisoformat(removal["eventTime"].replace("Z", "+00:00"))
    return iso_z(at.timestamp() - seconds_before)


@dataclass(frozen=True)
class Attack:
    id: str
    action: str
    #: make the state in moto; the real records of it
    arrange: Callable[[World], list[dict[str, Any]]]
    #: remove it in moto; the real record of the removal
    remove: Callable[[World], dict[str, Any]]
    #: the forged records, carrying the removal's eventID
    forge: Callable[[World, dict[str, Any]], list[dict[str, Any]]]
    #: what IAM shows of the target
    observe: Callable[[World], object]
    #: whether anything the attacker chose is in IAM
    granted: Callable[[World], bool]


def inline_attack() -> Attack:
    def arrange(w: World) -> list[dict[str, Any]]:
        w.iam.create_role(RoleName="app", AssumeRolePolicyDocument=TRUST)
        w.iam.put_role_policy(RoleName="app", PolicyName="guard", PolicyDocument=DOC_DENY_S3)
        params = {"roleName": "app", "policyName": "guard", "policyDocument": DOC_DENY_S3}
        return [w.rec("PutRolePolicy", params)]

    def remove(w: World) -> dict[str, Any]:
        w.iam.delete_role_policy(RoleName="app", PolicyName="guard")
        return w.rec("DeleteRolePolicy", {"roleName": "app", "policyName": "guard"})

    def forge(w: World, removal: dict[str, Any]) -> list[dict[str, Any]]:
        params = {"roleName": "app", "policyName": "guard", "policyDocument": ALLOW_ALL}
        return [
            w.rec(
                "PutRolePolicy",
                params,
                event_id=removal["eventID"],
                event_time=forged_at(w, removal),
            )
        ]

    def observe(w: World) -> object:
        try:
            return w.iam.get_role_policy(RoleName="app", PolicyName="guard")["PolicyDocument"]
        except w.iam.exceptions.NoSuchEntityException:
            return None

    def granted(w: World) -> bool:
        return bool(observe(w) == json.loads(ALLOW_ALL))

    return Attack("inline", "restore_inline_policy", arrange, remove, forge, observe, granted)


def version_attack() -> Attack:
    arn = policy_arn("Boundary")

    def arrange(w: World) -> list[dict[str, Any]]:
        created = create_policy(w, "Boundary", "/", DOC_DENY_S3)
        w.iam.create_policy_version(PolicyArn=arn, PolicyDocument=DOC_DENY_EC2, SetAsDefault=False)
        return [
            created,
            w.rec(
                "CreatePolicyVersion",
                {"policyArn": arn, "policyDocument": DOC_DENY_EC2, "setAsDefault": False},
                responseElements={"policyVersion": {"versionId": "v2", "isDefaultVersion": False}},
            ),
        ]

    def remove(w: World) -> dict[str, Any]:
        w.iam.delete_policy_version(PolicyArn=arn, VersionId="v2")
        return w.rec("DeletePolicyVersion", {"policyArn": arn, "versionId": "v2"})

    def forge(w: World, removal: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            w.rec(
                "CreatePolicyVersion",
                {"policyArn": arn, "policyDocument": ALLOW_ALL, "setAsDefault": True},
                responseElements={"policyVersion": {"versionId": "v2", "isDefaultVersion": True}},
                event_id=removal["eventID"],
                event_time=forged_at(w, removal),
            )
        ]

    def documents(w: World) -> list[tuple[object, bool]]:
        out: list[tuple[object, bool]] = []
        for version in w.iam.list_policy_versions(PolicyArn=arn)["Versions"]:
            got = w.iam.get_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
            out.append((got["PolicyVersion"]["Document"], version["IsDefaultVersion"]))
        return out

    def observe(w: World) -> object:
        return sorted(json.dumps(doc, sort_keys=True) for doc, _ in documents(w))

    def granted(w: World) -> bool:
        return any(doc == json.loads(ALLOW_ALL) for doc, _ in documents(w))

    return Attack("version", "restore_policy_version", arrange, remove, forge, observe, granted)


def boundary_attack() -> Attack:
    def arrange(w: World) -> list[dict[str, Any]]:
        w.iam.create_role(RoleName="lambda-exec", AssumeRolePolicyDocument=TRUST)
        created = create_policy(w, "DevBoundary", "/", DOC_DENY_S3)
        w.iam.create_policy(PolicyName="WideOpen", PolicyDocument=ALLOW_ALL)
        w.iam.put_role_permissions_boundary(
            RoleName="lambda-exec", PermissionsBoundary=policy_arn("DevBoundary")
        )
        params = {"roleName": "lambda-exec", "permissionsBoundary": policy_arn("DevBoundary")}
        return [created, w.rec("PutRolePermissionsBoundary", params)]

    def remove(w: World) -> dict[str, Any]:
        w.iam.delete_role_permissions_boundary(RoleName="lambda-exec")
        return w.rec("DeleteRolePermissionsBoundary", {"roleName": "lambda-exec"})

    def forge(w: World, removal: dict[str, Any]) -> list[dict[str, Any]]:
        params = {"roleName": "lambda-exec", "permissionsBoundary": policy_arn("WideOpen")}
        return [
            w.rec(
                "PutRolePermissionsBoundary",
                params,
                event_id=removal["eventID"],
                event_time=forged_at(w, removal),
            )
        ]

    def observe(w: World) -> object:
        role = w.iam.get_role(RoleName="lambda-exec")["Role"]
        return role.get("PermissionsBoundary", {}).get("PermissionsBoundaryArn")

    def granted(w: World) -> bool:
        return observe(w) == policy_arn("WideOpen")

    return Attack(
        "boundary", "restore_permissions_boundary", arrange, remove, forge, observe, granted
    )


def recreate_attack() -> Attack:
    arn = policy_arn("Guardrail", "/team/")

    def arrange(w: World) -> list[dict[str, Any]]:
        w.iam.create_role(RoleName="app", AssumeRolePolicyDocument=TRUST)
        w.iam.create_role(RoleName="attacker", AssumeRolePolicyDocument=TRUST)
        created = create_policy(w, "Guardrail", "/team/", DOC_DENY_S3)
        w.iam.attach_role_policy(RoleName="app", PolicyArn=arn)
        return [created, w.rec("AttachRolePolicy", {"roleName": "app", "policyArn": arn})]

    def remove(w: World) -> dict[str, Any]:
        w.iam.detach_role_policy(RoleName="app", PolicyArn=arn)
        w.real(w.rec("DetachRolePolicy", {"roleName": "app", "policyArn": arn}))
        w.iam.delete_policy(PolicyArn=arn)
        return w.rec("DeletePolicy", {"policyArn": arn})

    def forge(w: World, removal: dict[str, Any]) -> list[dict[str, Any]]:
        # A new default version with an Allow-* document, and an attachment to "attacker".
        return [
            w.rec(
                "CreatePolicyVersion",
                {"policyArn": arn, "policyDocument": ALLOW_ALL, "setAsDefault": True},
                responseElements={"policyVersion": {"versionId": "v2", "isDefaultVersion": True}},
                event_id=removal["eventID"],
                event_time=forged_at(w, removal, 40),
            ),
            w.rec(
                "AttachRolePolicy",
                {"roleName": "attacker", "policyArn": arn},
                event_id=removal["eventID"],
                event_time=forged_at(w, removal, 30),
            ),
        ]

    def observe(w: World) -> object:
        try:
            policy = w.iam.get_policy(PolicyArn=arn)["Policy"]
        except w.iam.exceptions.NoSuchEntityException:
            return None
        doc = w.iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
        roles = w.iam.list_entities_for_policy(PolicyArn=arn)["PolicyRoles"]
        return doc["PolicyVersion"]["Document"], sorted(r["RoleName"] for r in roles)

    def granted(w: World) -> bool:
        seen = observe(w)
        if seen is None:
            return False
        assert isinstance(seen, tuple)
        return seen[0] == json.loads(ALLOW_ALL) or "attacker" in seen[1]

    return Attack("recreate", "recreate_managed_policy", arrange, remove, forge, observe, granted)


ATTACKS = [inline_attack(), version_attack(), boundary_attack(), recreate_attack()]
ATTACK_IDS = [a.id for a in ATTACKS]


def did_write(job: Job) -> bool:
    return any(entry.step == "did" for entry in job.audit)


# ---------------------------------------------------------------------------------------------
# §1a: a forged record reusing the real removal's eventID
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("attack", ATTACKS, ids=ATTACK_IDS)
async def test_a_forged_record_with_the_removals_event_id_writes_nothing(
    world: World, attack: Attack, form: Form
) -> None:
    w = world
    real = attack.arrange(w)
    intact = attack.observe(w)
    removal = attack.remove(w)
    w.real(*real, removal)
    event_id = removal["eventID"]
    forged = attack.forge(w, removal)
    with capture_logs() as logs:
        await w.deliver(form, *forged)  # the attacker's file or queue message, first
        await w.deliver("file", *real, removal)  # then CloudTrail's own delivery
    await w.run()
    assert not attack.granted(w)
    assert attack.observe(w) != intact  # nothing was put back either: a human decides
    job = await w.job(attack.action, event_id)
    assert job.state == "awaiting_approval", (job.reason, job.error, job.audit)
    assert job.reason is not None
    assert job.reason.startswith(f"conflict: eventID {event_id} seen with ")
    assert not did_write(job)
    # The job records what it would write, for the operator to judge (the forged document).
    assert job.plan is not None
    assert job.plan_sha256 == job.plan.sha256
    assert event_id in job.plan.conflicts
    # Reported: the ledger knows the eventID with every content it came with ...
    [conflict] = (await w.ledger.conflicts([event_id])).values()
    assert len(conflict.entries) == 1 + len({json.dumps(f, sort_keys=True) for f in forged})
    assert {e.path for e in conflict.entries} == {"s3", "eventbridge" if form != "file" else "s3"}
    # ... each new content counted once, by the path it arrived by ...
    counted = w.forgery_metric("s3") + w.forgery_metric("eventbridge")
    assert counted == len(conflict.entries) - 1
    assert w.forgery_metric("s3") >= 1  # the real file arrived second
    # ... logged, and the removal's detection (second to arrive) flagged.
    conflicts = [e for e in logs if e["event"] == "ledger.conflict"]
    assert conflicts
    assert {e["event_id"] for e in conflicts} == {event_id}
    [detection] = [d for d in w.detections() if d["event_id"] == event_id]
    assert detection["forgery_suspected"] is True
    assert detection["event_name"] == removal["eventName"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("attack", ATTACKS, ids=ATTACK_IDS)
async def test_control_the_genuine_trail_is_put_back(
    world: World, attack: Attack, form: Form
) -> None:
    w = world
    real = attack.arrange(w)
    intact = attack.observe(w)
    removal = attack.remove(w)
    w.real(*real, removal)
    with capture_logs() as logs:
        await w.deliver(form, *real, removal)
    await w.run()
    assert attack.observe(w) == intact
    job = await w.job(attack.action, removal["eventID"])
    assert (job.state, job.changed) == ("succeeded", True), (job.reason, job.audit)
    assert removal["eventID"] in w.cloudtrail.looked_up
    assert w.forgery_metric("s3") == w.forgery_metric("eventbridge") == 0
    assert not [e for e in logs if e["event"] == "ledger.conflict"]
    assert not any(d["forgery_suspected"] for d in w.detections())


async def test_the_same_event_by_s3_and_by_eventbridge_is_no_conflict(world: World) -> None:
    w = world
    attack = inline_attack()
    real = attack.arrange(w)
    intact = attack.observe(w)
    removal = attack.remove(w)
    w.real(*real, removal)
    await w.deliver("eventbridge", *real, removal)
    await w.deliver("file", *real, removal)  # the same records, S3 a few minutes later
    await w.deliver("eventbridge", removal)  # and an SQS redelivery
    assert await w.ledger.conflicts([r["eventID"] for r in (*real, removal)]) == {}
    assert w.forgery_metric("s3") == w.forgery_metric("eventbridge") == 0
    assert [d["event_id"] for d in w.detections()] == [removal["eventID"]]  # written once
    await w.run()
    assert attack.observe(w) == intact
    assert (await w.job(attack.action, removal["eventID"])).state == "succeeded"


# ---------------------------------------------------------------------------------------------
# §1b: a forged session issuer gets an innocent role quarantined
# ---------------------------------------------------------------------------------------------


def forged_issuer(real: dict[str, Any], role: str) -> dict[str, Any]:
    """A copy of a real event naming ``role`` as the session issuer (the caller's ARN kept)."""
    forged: dict[str, Any] = json.loads(json.dumps(real))
    identity = assumed_role_identity(role, "x")
    identity["arn"] = real["userIdentity"]["arn"]
    forged["userIdentity"] = identity
    return forged


def quarantined(w: World, role: str) -> list[str]:
    attached = w.iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    return [p["PolicyArn"] for p in attached if p["PolicyName"] == "TrailguardQuarantine"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("actor", ["root", "assumed-role"])
async def test_a_forged_session_issuer_quarantines_nobody(
    world: World, actor: str, form: Form
) -> None:
    w = world
    w.iam.create_role(RoleName="prod-app", AssumeRolePolicyDocument=TRUST)
    w.iam.create_role(RoleName="ops", AssumeRolePolicyDocument=TRUST)
    w.iam.create_role(RoleName="ci", AssumeRolePolicyDocument=TRUST)
    created = create_policy(w, "DenyAll", "/", DOC_DENY_S3)
    w.iam.attach_role_policy(RoleName="ci", PolicyArn=policy_arn("DenyAll"))
    attach = w.rec("AttachRolePolicy", {"roleName": "ci", "policyArn": policy_arn("DenyAll")})
    w.iam.detach_role_policy(RoleName="ci", PolicyArn=policy_arn("DenyAll"))
    identity = ROOT_IDENTITY if actor == "root" else assumed_role_identity("ops", "alice")
    real = w.rec(
        "DetachRolePolicy",
        {"roleName": "ci", "policyArn": policy_arn("DenyAll")},
        user_identity=identity,
    )
    w.real(created, attach, real)
    forged = forged_issuer(real, "prod-app")
    with capture_logs() as logs:
        if actor == "root":
            # The root's event plans no quarantine job: the forged duplicate's is new.
            await w.deliver("file", created, attach, real)
            await w.deliver(form, forged)
        else:
            await w.deliver(form, forged)
            await w.deliver("file", created, attach, real)
    await w.run()
    assert quarantined(w, "prod-app") == []
    assert quarantined(w, "ops") == []
    job = await w.job("quarantine_actor", real["eventID"])
    assert job.detection.actor.session_issuer_arn == f"arn:aws:iam::{ACCOUNT}:role/prod-app"
    assert job.state == "awaiting_approval", (job.reason, job.audit)
    assert job.reason is not None
    assert job.reason.startswith(f"conflict: eventID {real['eventID']}")
    assert not did_write(job)
    assert job.plan is not None
    assert [(p.call, p.target) for p in job.plan.writes] == [("AttachRolePolicy", "role/prod-app")]
    # The second content to arrive made the conflict; both contents were reported, the one
    # that arrived second flagged.
    second = form if actor == "root" else "file"
    assert w.forgery_metric("s3" if second == "file" else "eventbridge") == 1
    assert [e["event_id"] for e in logs if e["event"] == "ledger.conflict"] == [real["eventID"]]
    lines = [d for d in w.detections() if d["event_id"] == real["eventID"]]
    assert [d["forgery_suspected"] for d in lines] == [False, True]
    # The gate also refuses on the identity itself: CloudTrail's record names another issuer.
    assert (
        any("sessionIssuer.arn" in entry.what for entry in job.audit if entry.step == "before")
        or actor == "root"
    )


# ---------------------------------------------------------------------------------------------
# A forgery that arrives while the real removal's job waits for CloudTrail to show the event
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("forged_id", ["fresh", "removals"])
async def test_a_forgery_arriving_while_the_job_waits_for_cloudtrail_is_not_picked_up(
    world: World, form: Form, forged_id: str
) -> None:
    w = world
    attack = inline_attack()
    real = attack.arrange(w)
    w.real(*real)
    w.iam.delete_role_policy(RoleName="app", PolicyName="guard")
    # A minute ago: LookupEvents does not show it yet.
    removal = w.rec(
        "DeleteRolePolicy",
        {"roleName": "app", "policyName": "guard"},
        event_time=iso_z(w.clock() - 60),
    )
    await w.deliver("file", *real, removal)
    assert await w.remediation.runner.run_once() >= 1
    job = await w.job(attack.action, removal["eventID"])
    assert job.state == "failed", (job.reason, job.audit)
    assert job.error is not None
    assert job.error.startswith("unconfirmed: ")
    assert job.next_attempt_at >= w.clock() + 60  # looked at again once it may show
    assert not did_write(job)
    # While it waits, the attacker's record arrives: a put of an Allow-* document just before
    # the removal (under a fresh eventID, or under the removal's own).
    params = {"roleName": "app", "policyName": "guard", "policyDocument": ALLOW_ALL}
    forged = w.rec(
        "PutRolePolicy",
        params,
        event_time=iso_z(w.clock() - 90),
        **({"event_id": removal["eventID"]} if forged_id == "removals" else {}),
    )
    await w.deliver(form, forged)
    # Then CloudTrail shows the real removal, and the retries come.
    w.real(removal)
    w.clock.now = job.next_attempt_at
    await w.run(rounds=4)
    assert not attack.granted(w)
    assert attack.observe(w) is None
    job = await w.job(attack.action, removal["eventID"])
    assert job.state == "awaiting_approval", (job.reason, job.audit)
    assert job.reason is not None
    assert forged["eventID"] in job.reason
    if forged_id == "removals":
        assert job.reason.startswith("conflict: ")
    assert not did_write(job)
    # What it waits with is the forged document: an operator sees exactly that.
    assert job.plan is not None
    assert [w_.document for w_ in job.plan.writes] == [ALLOW_ALL]


# ---------------------------------------------------------------------------------------------
# §1c: an approval covers the plan it was given for, and nothing else
# ---------------------------------------------------------------------------------------------


async def waiting_for_approval(w: World, attack: Attack) -> tuple[dict[str, Any], Job]:
    """The inline scenario with the put too old for LookupEvents (CloudTrail shows only the
    removal): the job waits for an operator, with its plan."""
    real = attack.arrange(w)
    removal = attack.remove(w)
    w.real(removal)
    await w.deliver("file", *real, removal)
    await w.run(rounds=1)
    job = await w.job(attack.action, removal["eventID"])
    assert job.state == "awaiting_approval", (job.reason, job.audit)
    assert job.reason is not None
    assert job.reason.startswith("unconfirmed: LookupEvents does not show the event")
    assert job.plan is not None
    assert [(p.call, p.target, p.document) for p in job.plan.writes] == [
        ("PutRolePolicy", "role/app", DOC_DENY_S3)
    ]
    return removal, job


async def test_an_approved_plan_is_written(world: World) -> None:
    w = world
    attack = inline_attack()
    removal, job = await waiting_for_approval(w, attack)
    asked = len(w.cloudtrail.looked_up)
    assert job.plan_sha256 is not None
    await w.remediation.store.approve(job.id, now=w.clock(), by="kim", plan_sha256=job.plan_sha256)
    await w.run(rounds=1)
    job = await w.job(attack.action, removal["eventID"])
    assert (job.state, job.changed) == ("succeeded", True), (job.reason, job.audit)
    assert attack.observe(w) == json.loads(DOC_DENY_S3)
    assert len(w.cloudtrail.looked_up) == asked  # the approval covered it: no new lookup


@pytest.mark.parametrize("form", FORMS)
async def test_an_approval_does_not_cover_a_changed_plan(world: World, form: Form) -> None:
    w = world
    attack = inline_attack()
    removal, job = await waiting_for_approval(w, attack)
    plan_a = job.plan_sha256
    assert plan_a is not None
    await w.remediation.store.approve(job.id, now=w.clock(), by="kim", plan_sha256=plan_a)
    # Before it runs, a forged put lands in history just before the removal: plan B.
    params = {"roleName": "app", "policyName": "guard", "policyDocument": ALLOW_ALL}
    await w.deliver(form, w.rec("PutRolePolicy", params, event_time=forged_at(w, removal)))
    await w.run(rounds=1)
    assert not attack.granted(w)
    assert attack.observe(w) is None
    job = await w.job(attack.action, removal["eventID"])
    assert job.state == "awaiting_approval", (job.reason, job.audit)
    assert not did_write(job)
    assert job.plan is not None
    assert job.plan_sha256 != plan_a
    assert [p.document for p in job.plan.writes] == [ALLOW_ALL]
    assert job.approved_plan == plan_a
    assert any(
        entry.what.startswith(f"the plan changed since the approval (approved {plan_a}")
        for entry in job.audit
    )
    # The approval of plan A cannot be replayed onto plan B.
    with pytest.raises(PlanMismatchError):
        await w.remediation.store.approve(job.id, now=w.clock(), plan_sha256=plan_a)
