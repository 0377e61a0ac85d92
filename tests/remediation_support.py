"""Helpers for the remediation tests: detections from CloudTrail records, an in-memory policy
history, a fake clock, a client source and a fake CloudTrail (LookupEvents).

Detections are built the way the daemon builds them: a CloudTrail record (tests/factories.py)
decoded into :class:`Record` and evaluated by the default rules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from botocore.exceptions import ClientError

from tests.factories import ACCOUNT, make_record
from trailguard.config import Config, RemediationConfig, parse_config
from trailguard.detect.detection import Detection, FileSource, policy_name_from_arn
from trailguard.detect.policy_facts import PolicyFact, PrincipalKind
from trailguard.detect.process import Detector
from trailguard.detect.record import Record
from trailguard.detect.rules import RuleSet
from trailguard.remediate.jobs import Job, WritePlan
from trailguard.remediate.planner import plan_jobs
from trailguard.state.policy_history import ManagedPolicyState, PolicyVersionState

if TYPE_CHECKING:
    from types_aiobotocore_cloudtrail.client import CloudTrailClient
    from types_aiobotocore_iam.client import IAMClient
    from types_aiobotocore_sns.client import SNSClient

T0 = 1_795_000_000.0  # 2026-11-18, a fixed "now"
DOC_DENY_S3 = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "Guard", "Effect": "Deny", "Action": "s3:*", "Resource": "*"}],
    }
)
DOC_DENY_EC2 = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "ec2:TerminateInstances", "Resource": "*"}],
    }
)

_DETECTOR = Detector(RuleSet.from_config(Config()))


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(event_name: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Record:
    raw = make_record(event_name, params, **kwargs)
    return msgspec.json.decode(json.dumps(raw).encode(), type=Record)


def detection(event_name: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Detection:
    return detection_of(make_record(event_name, params, **kwargs))


def detection_of(raw: dict[str, Any]) -> Detection:
    """The detection the daemon makes of one raw CloudTrail record (a dict as in the file)."""
    decoded = msgspec.json.decode(json.dumps(raw).encode(), type=Record)
    found = _DETECTOR.detect(decoded, FileSource("test.json"))
    assert found is not None, f"{raw.get('eventName')} should be detected"
    return found


def remediation_config(toml: str = "") -> RemediationConfig:
    return parse_config(toml, file="test.toml").remediation


ALL_RESTORES = (
    '"restore_inline_policy", "reattach_managed_policy", "restore_policy_version",'
    ' "recreate_managed_policy", "restore_permissions_boundary"'
)


def config_toml(mode: str = "enforce", actions: str = ALL_RESTORES, extra: str = "") -> str:
    return (
        f'[remediation]\nmode = "{mode}"\nmax_attempts = 3\nbackoff_base_secs = 1.0\n'
        f"backoff_cap_secs = 10.0\n{extra}\n"
        f'[[remediation.policies]]\nrules = ["*"]\nmin_severity = "low"\nactions = [{actions}]\n'
    )


def one_job(det: Detection, config: RemediationConfig, action: str, now: float = T0) -> Job:
    jobs = [j for j in plan_jobs(det, config, now=now) if j.action == action]
    assert len(jobs) == 1, f"expected one {action} job, got {[j.action for j in jobs]}"
    return jobs[0]


def approved_plan_of(job: Job, plan: WritePlan | None) -> Job:
    """``job`` as it is after its run waited with ``plan`` and an operator approved that plan
    (what the runner stores and ``SqliteJobStore.approve`` does)."""
    assert plan is not None, "the run computed no plan"
    return msgspec.structs.replace(
        job,
        plan=plan,
        plan_sha256=plan.sha256,
        approved=True,
        approved_plan=plan.sha256,
    )


def fact(
    kind: str,
    *,
    op: str = "put",
    event_time: str = "2026-11-01T11:00:00Z",
    event_id: str = "history-1",
    account_id: str = ACCOUNT,
    **fields: Any,
) -> PolicyFact:
    base: dict[str, Any] = {
        "principal_kind": None,
        "principal_name": None,
        "policy_name": None,
        "policy_arn": None,
        "version_id": None,
        "document": None,
        "path": None,
        "set_as_default": None,
    }
    base.update(fields)
    return msgspec.convert(
        {
            "kind": kind,
            "op": op,
            "account_id": account_id,
            "event_id": event_id,
            "event_time": event_time,
            **base,
        },
        PolicyFact,
    )


class FakeHistory:
    """An in-memory :class:`~trailguard.state.policy_history.PolicyHistoryStore`, canned answers.

    It ignores ``before``: each test sets the answer the real store would give for the event.
    """

    def __init__(self) -> None:
        self.inline: dict[tuple[str, str, str, str], PolicyFact] = {}
        self.managed: dict[str, ManagedPolicyState] = {}
        self.versions: dict[tuple[str, str], PolicyVersionState] = {}
        self.attached: dict[str, list[tuple[PrincipalKind, str]]] = {}
        self.attach_facts: dict[str, list[PolicyFact]] = {}
        self.boundaries: dict[tuple[str, str, str], str] = {}
        self.boundary_facts: dict[tuple[str, str, str], PolicyFact] = {}
        self.recorded: list[PolicyFact] = []
        self.queries: list[tuple[str, str | None]] = []

    async def record(self, facts: Sequence[PolicyFact]) -> int:
        self.recorded.extend(facts)
        return len(facts)

    async def inline_policy(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        policy_name: str,
        *,
        before: str | None,
        before_event_id: str | None = None,
    ) -> PolicyFact | None:
        self.queries.append(("inline_policy", before))
        return self.inline.get((account_id, principal_kind, principal_name, policy_name))

    async def managed_policy(
        self, policy_arn: str, *, before: str | None, before_event_id: str | None = None
    ) -> ManagedPolicyState | None:
        self.queries.append(("managed_policy", before))
        return self.managed.get(policy_arn)

    async def policy_version(
        self,
        policy_arn: str,
        version_id: str,
        *,
        before: str | None = None,
        before_event_id: str | None = None,
    ) -> PolicyVersionState | None:
        self.queries.append(("policy_version", before))
        return self.versions.get((policy_arn, version_id))

    async def attachments(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[tuple[PrincipalKind, str]]:
        return list(self.attached.get(policy_arn, []))

    async def attachment_facts(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[PolicyFact]:
        return list(self.attach_facts.get(policy_arn, []))

    async def attached_policies(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> list[str]:
        return sorted(
            arn
            for arn, entities in self.attached.items()
            if (principal_kind, principal_name) in entities
        )

    async def boundary(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> str | None:
        self.queries.append(("boundary", before))
        return self.boundaries.get((account_id, principal_kind, principal_name))

    async def boundary_fact(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> PolicyFact | None:
        """``boundary_facts``, else a fact (eventID "history-1") for the ARN in ``boundaries``."""
        self.queries.append(("boundary", before))
        key = (account_id, principal_kind, principal_name)
        if key in self.boundary_facts:
            return self.boundary_facts[key]
        arn = self.boundaries.get(key)
        if arn is None:
            return None
        return fact(
            "boundary",
            account_id=account_id,
            principal_kind=principal_kind,
            principal_name=principal_name,
            policy_name=policy_name_from_arn(arn),
            policy_arn=arn,
        )

    async def boundary_put(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
        before_event_id: str | None = None,
    ) -> PolicyFact | None:
        return await self.boundary_fact(account_id, principal_kind, principal_name, before=before)

    async def close(self) -> None:
        return None


class StaticClients:
    """A client source that hands out given clients (fakes or real ones) for every account."""

    def __init__(
        self,
        iam: object,
        cloudtrail: object | None = None,
        sns: object | None = None,
    ) -> None:
        self._iam = iam
        self._cloudtrail = cloudtrail
        self._sns = sns
        self.accounts: list[str] = []
        self.cloudtrail_for: list[tuple[str, str]] = []  # (account, region) of each request

    async def iam(self, account_id: str) -> IAMClient:
        self.accounts.append(account_id)
        client: IAMClient = self._iam  # type: ignore[assignment]
        return client

    async def cloudtrail(self, account_id: str, region: str) -> CloudTrailClient:
        self.cloudtrail_for.append((account_id, region))
        if self._cloudtrail is None:
            raise RuntimeError("no CloudTrail client in this test")
        client: CloudTrailClient = self._cloudtrail  # type: ignore[assignment]
        return client

    async def sns(self, region: str) -> SNSClient:
        if self._sns is None:
            raise RuntimeError("no SNS client in this test")
        client: SNSClient = self._sns  # type: ignore[assignment]
        return client


def client_error(code: str, status: int, operation: str) -> ClientError:
    """A botocore ClientError as aiobotocore raises it for an AWS error response."""
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} (test)"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


class FakeCloudTrail:
    """LookupEvents (by EventId) answering from CloudTrail's own records, shaped as AWS answers.

    ``records`` are raw CloudTrail records (dicts, as in a log file): what CloudTrail itself
    recorded.  An eventID it does not hold answers no events; ``error`` makes every call fail.
    """

    def __init__(self, *records: dict[str, Any]) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.error: Exception | None = None
        self.calls: list[dict[str, Any]] = []
        self.add(*records)

    def add(self, *records: dict[str, Any]) -> None:
        for raw in records:
            self.events[raw["eventID"]] = raw

    @property
    def looked_up(self) -> list[str]:
        """The eventIDs asked for, in order."""
        return [call["LookupAttributes"][0]["AttributeValue"] for call in self.calls]

    async def lookup_events(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        [attribute] = kwargs["LookupAttributes"]
        assert attribute["AttributeKey"] == "EventId"
        found = self.events.get(attribute["AttributeValue"])
        if found is None:
            return {"Events": []}
        return {
            "Events": [
                {
                    "EventId": found["eventID"],
                    "EventName": found["eventName"],
                    "EventSource": found.get("eventSource"),
                    "CloudTrailEvent": json.dumps(found),
                }
            ]
        }
