"""What an action works with: its context (clients, history, config, audit record), its outcome,
the principal-kind table that maps users, roles and groups to their IAM calls, and the helpers
every action shares."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
    """AWS clients for the account a job acts in (see remediate/clients.py)."""

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
        api = PRINCIPALS[kind]
        found = await self.find(
            api.method(await self.iam(), "get"), **api.named(name), **api.get_extra
        )
        return None if found is None else dict(found[api.entity])

    async def attached_policy_arns(self, kind: PrincipalKind, name: str) -> list[str]:
        api = PRINCIPALS[kind]
        list_attached = api.method(await self.iam(), "list_attached")
        arns: list[str] = []
        marker: str | None = None
        while True:
            extra: dict[str, Any] = {"Marker": marker} if marker else {}
            page = await self.call(list_attached, **api.named(name), **extra)
            arns.extend(p["PolicyArn"] for p in page["AttachedPolicies"] if "PolicyArn" in p)
            marker = page.get("Marker")
            if not page.get("IsTruncated", False) or not marker:
                return arns

    async def attach(self, kind: PrincipalKind, name: str, policy_arn: str) -> None:
        api = PRINCIPALS[kind]
        attach = api.method(await self.iam(), "attach")
        await self.call(attach, **api.named(name), PolicyArn=policy_arn)

    async def inline_document(
        self, kind: PrincipalKind, name: str, policy_name: str
    ) -> object | None:
        """The live inline policy's document (Get{User,Role,Group}Policy), or None."""
        api = PRINCIPALS[kind]
        get_inline = api.method(await self.iam(), "get_inline")
        found = await self.find(get_inline, **api.named(name), PolicyName=policy_name)
        return None if found is None else found["PolicyDocument"]

    async def put_inline(
        self, kind: PrincipalKind, name: str, policy_name: str, document: str
    ) -> None:
        api = PRINCIPALS[kind]
        put_inline = api.method(await self.iam(), "put_inline")
        await self.call(
            put_inline, **api.named(name), PolicyName=policy_name, PolicyDocument=document
        )

    async def put_boundary(self, kind: PrincipalKind, name: str, boundary_arn: str) -> None:
        api = PRINCIPALS[kind]
        put_boundary = api.method(await self.iam(), "put_boundary")
        await self.call(put_boundary, **api.named(name), PermissionsBoundary=boundary_arn)


@dataclass(frozen=True, slots=True)
class PrincipalApi:
    """How IAM names one kind of principal's calls: a row of :data:`PRINCIPALS`."""

    kind: PrincipalKind
    #: the request parameter naming the principal ("UserName", "RoleName", "GroupName")
    key: str
    #: the response field holding it for ``get`` ("User", ...)
    entity: str
    #: the client methods, by job; a kind without one (a group's boundary) lacks the key
    calls: Mapping[str, str]
    get_extra: Mapping[str, Any] = field(default_factory=dict)

    def named(self, name: str) -> dict[str, str]:
        return {self.key: name}

    def method(self, iam: IAMClient, job: str) -> Callable[..., Awaitable[Any]]:
        call = self.calls.get(job)
        if call is None:
            raise PermanentError(_STAGE, "unsupported", f"IAM has no {job} for a {self.kind}")
        method: Callable[..., Awaitable[Any]] = getattr(iam, call)
        return method

    def call_name(self, job: str) -> str:
        """The API name of a call (``put_inline`` of a role -> ``PutRolePolicy``)."""
        return "".join(part.capitalize() for part in self.calls[job].split("_"))


#: One row per principal kind instead of a branch per kind in every action.
PRINCIPALS: Final[Mapping[PrincipalKind, PrincipalApi]] = {
    "user": PrincipalApi(
        kind="user",
        key="UserName",
        entity="User",
        calls={
            "get": "get_user",
            "list_attached": "list_attached_user_policies",
            "attach": "attach_user_policy",
            "get_inline": "get_user_policy",
            "put_inline": "put_user_policy",
            "put_boundary": "put_user_permissions_boundary",
        },
    ),
    "role": PrincipalApi(
        kind="role",
        key="RoleName",
        entity="Role",
        calls={
            "get": "get_role",
            "list_attached": "list_attached_role_policies",
            "attach": "attach_role_policy",
            "get_inline": "get_role_policy",
            "put_inline": "put_role_policy",
            "put_boundary": "put_role_permissions_boundary",
        },
    ),
    "group": PrincipalApi(
        kind="group",
        key="GroupName",
        entity="Group",
        calls={
            "get": "get_group",
            "list_attached": "list_attached_group_policies",
            "attach": "attach_group_policy",
            "get_inline": "get_group_policy",
            "put_inline": "put_group_policy",
        },
        get_extra={"MaxItems": 1},
    ),
}


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
