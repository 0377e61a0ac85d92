"""What an action works with: its context (clients, history, config, audit record), its outcome,
the principal-kind table that maps users, roles and groups to their IAM calls, and the helpers
every action shares."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, Protocol, TypeVar

import msgspec
from botocore.exceptions import ClientError

from trailguard.aws import classify, error_code
from trailguard.config import RemediationConfig
from trailguard.detect.policy_facts import PrincipalKind
from trailguard.errors import PermanentError
from trailguard.remediate.jobs import (
    AuditEntry,
    AuditStep,
    Finding,
    Job,
    WritePlan,
    audit,
)
from trailguard.remediate.notify import WebhookSender
from trailguard.state.ledger import EventLedger
from trailguard.state.policy_history import PolicyHistoryStore

if TYPE_CHECKING:
    from types_aiobotocore_cloudtrail.client import CloudTrailClient
    from types_aiobotocore_iam.client import IAMClient
    from types_aiobotocore_sns.client import SNSClient

P = ParamSpec("P")
T = TypeVar("T")

_STAGE: Final = "remediate"
_MAX_VERSIONS: Final = 5  # IAM keeps at most five versions of a managed policy

OutcomeState = Literal["succeeded", "skipped", "dry_run", "awaiting_approval"]


class ActionOutcome(msgspec.Struct, frozen=True, kw_only=True):
    state: OutcomeState
    reason: str | None = None
    changed: bool = False


class Deferred(Exception):
    """Try the job again later (with backoff); after the last attempt it ends in ``final``.

    ``retry_after``: the next attempt comes no sooner than this many seconds (the backoff may
    make it later).
    """

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        final: OutcomeState = "skipped",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.final: OutcomeState = final
        self.retry_after = retry_after


class NoRoleForAccount(PermanentError):
    """No way to act in this account: no role template and not the daemon's own account."""

    def __init__(self, account_id: str) -> None:
        super().__init__(
            _STAGE,
            "no_role_for_account",
            f"account {account_id}: [remediation] role_arn_template is empty and this is not the"
            " daemon's own account",
        )


class ClientSource(Protocol):
    """AWS clients for the account a job acts in (see executor.AwsClients)."""

    async def iam(self, account_id: str) -> IAMClient: ...

    async def cloudtrail(self, account_id: str, region: str) -> CloudTrailClient: ...

    async def sns(self, region: str) -> SNSClient: ...


class RateLimiter(Protocol):
    async def acquire(self) -> None: ...


class _NoLimit:
    async def acquire(self) -> None:
        return None


class ActionContext:
    """What one run of one job sees: its clients, the history, the config and its audit record."""

    def __init__(
        self,
        job: Job,
        *,
        clients: ClientSource,
        history: PolicyHistoryStore,
        config: RemediationConfig,
        dry_run: bool,
        limiter: RateLimiter | None = None,
        webhook: WebhookSender | None = None,
        ledger: EventLedger | None = None,
        clock: Callable[[], float] = time.time,
        breaker: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self.job = job
        self.clients = clients
        self.history = history
        self.config = config
        self.dry_run = dry_run
        self.limiter = limiter or _NoLimit()
        self.webhook = webhook
        self.ledger = ledger
        self.clock = clock
        #: the circuit breaker, asked just before a restore's first write: None, or why the
        #: circuit is open (see executor.JobRunner)
        self.breaker = breaker
        self.audit: list[AuditEntry] = []
        self.findings: list[Finding] = []
        #: what this run would write, as the gate bound it (recorded on the job)
        self.plan: WritePlan | None = None
        self._iam: IAMClient | None = None

    # -- clients and calls -------------------------------------------------------------------

    @property
    def account_id(self) -> str:
        if not self.job.account_id:
            raise PermanentError(_STAGE, "no_account", "the job names no account")
        return self.job.account_id

    async def iam(self) -> IAMClient:
        if self._iam is None:
            self._iam = await self.clients.iam(self.account_id)
        return self._iam

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """One AWS call, rate-limited, with its failure mapped into the error tree."""
        await self.limiter.acquire()
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            raise classify(exc, stage=_STAGE, what=_op(fn)) from exc

    async def find(
        self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T | None:
        """Like :meth:`call`, but None when IAM answers NoSuchEntity."""
        await self.limiter.acquire()
        try:
            return await fn(*args, **kwargs)
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                return None
            raise classify(exc, stage=_STAGE, what=_op(fn)) from exc
        except Exception as exc:
            raise classify(exc, stage=_STAGE, what=_op(fn)) from exc

    # -- the audit record -------------------------------------------------------------------

    def record(self, step: AuditStep, what: str, **data: Any) -> None:
        self.audit.append(audit(step, what, _jsonable(data) or None, at=self.clock()))

    def skipped(self, reason: str, what: str, **data: Any) -> ActionOutcome:
        self.record("note", f"skipped: {what}", reason=reason, **data)
        return ActionOutcome(state="skipped", reason=reason)

    def noop(self, what: str, **data: Any) -> ActionOutcome:
        self.record("note", f"desired state already holds: {what}", **data)
        return ActionOutcome(state="succeeded", reason="already_in_place")

    def would(self, what: str, **data: Any) -> ActionOutcome:
        self.record("plan", f"dry-run: would {what}", **data)
        return ActionOutcome(state="dry_run")

    # -- shared reads -------------------------------------------------------------------------

    @property
    def event_time(self) -> str:
        event_time = self.job.detection.event_time
        if not event_time:
            raise PermanentError(_STAGE, "no_event_time", "the detection has no eventTime")
        return event_time

    async def principal(self, kind: PrincipalKind, name: str) -> dict[str, Any] | None:
        """The live user/role/group (GetUser/GetRole/GetGroup), or None if it does not exist."""
        iam = await self.iam()
        if kind == "user":
            user = await self.find(iam.get_user, UserName=name)
            return None if user is None else dict(user["User"])
        if kind == "role":
            role = await self.find(iam.get_role, RoleName=name)
            return None if role is None else dict(role["Role"])
        group = await self.find(iam.get_group, GroupName=name, MaxItems=1)
        return None if group is None else dict(group["Group"])

    async def attached_policy_arns(self, kind: PrincipalKind, name: str) -> list[str]:
        iam = await self.iam()
        arns: list[str] = []
        marker: str | None = None
        while True:
            extra: dict[str, Any] = {"Marker": marker} if marker else {}
            if kind == "user":
                user_page = await self.call(iam.list_attached_user_policies, UserName=name, **extra)
                policies, truncated, marker = (
                    user_page["AttachedPolicies"],
                    user_page.get("IsTruncated", False),
                    user_page.get("Marker"),
                )
            elif kind == "role":
                role_page = await self.call(iam.list_attached_role_policies, RoleName=name, **extra)
                policies, truncated, marker = (
                    role_page["AttachedPolicies"],
                    role_page.get("IsTruncated", False),
                    role_page.get("Marker"),
                )
            else:
                group_page = await self.call(
                    iam.list_attached_group_policies, GroupName=name, **extra
                )
                policies, truncated, marker = (
                    group_page["AttachedPolicies"],
                    group_page.get("IsTruncated", False),
                    group_page.get("Marker"),
                )
            arns.extend(p["PolicyArn"] for p in policies if "PolicyArn" in p)
            if not truncated or not marker:
                return arns

    async def attach(self, kind: PrincipalKind, name: str, policy_arn: str) -> None:
        iam = await self.iam()
        if kind == "user":
            await self.call(iam.attach_user_policy, UserName=name, PolicyArn=policy_arn)
        elif kind == "role":
            await self.call(iam.attach_role_policy, RoleName=name, PolicyArn=policy_arn)
        else:
            await self.call(iam.attach_group_policy, GroupName=name, PolicyArn=policy_arn)


Action = Callable[[ActionContext], Awaitable[ActionOutcome]]


def _parse_document(value: object) -> object:
    """A policy document as IAM or history gives it (JSON text, URL-encoded JSON text, or the
    dict botocore already decoded) -> the parsed JSON value; unparseable text stays text."""
    if isinstance(value, str):
        for text in (value, urllib.parse.unquote(value)):
            try:
                return json.loads(text)
            except ValueError:
                continue
        return value
    return value


def same_document(a: object, b: object) -> bool:
    """Whether two policy documents say the same (parsed JSON equality)."""
    return _parse_document(a) == _parse_document(b)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            out[key] = value.isoformat()
        elif isinstance(value, str) and key == "document":
            out[key] = _parse_document(value)
        else:
            out[key] = value
    return out


def _op(fn: Callable[..., object]) -> str:
    """The AWS operation name of a client method (``list_mfa_devices`` -> ListMFADevices)."""
    name = getattr(fn, "__name__", "call")
    meta = getattr(getattr(fn, "__self__", None), "meta", None)
    mapping = getattr(meta, "method_to_api_mapping", None)
    if isinstance(mapping, dict) and isinstance(mapping.get(name), str):
        return str(mapping[name])
    return "".join(part.capitalize() for part in name.split("_"))


def _principal_kind(kind: str | None, allowed: Sequence[str]) -> PrincipalKind:
    if kind not in allowed:
        raise PermanentError(_STAGE, "incomplete_target", f"target kind {kind!r} not supported")
    result: PrincipalKind = kind  # type: ignore[assignment]
    return result


def _need(value: str | None, what: str) -> str:
    if not value:
        raise PermanentError(_STAGE, "incomplete_target", f"the detection names no {what}")
    return value
