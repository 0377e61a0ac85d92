"""The remediation actions: each undoes one kind of policy removal, or reports on the actor.

Every action is idempotent and follows the same steps:

1. re-read the live IAM state (``before`` in the job's audit record);
2. a principal that no longer exists means ``skipped`` with the reason; a desired state that
   already holds means ``succeeded`` with ``changed=False`` -- running a job twice changes
   nothing;
3. in dry-run, record what it *would* do (``plan``) and return ``dry_run`` -- nothing changes;
4. otherwise make the change (``did``), read the state again (``after``) and check it.

Nothing is ever overwritten: when something different already sits where the removed policy was
(a new document under the same inline-policy name, another boundary), the action is skipped
(``changed_since``) -- someone changed it after the removal and a human should decide.

Nothing is written on the trail's word alone (:func:`confirm_before_write`, ``[remediation]
confirm_events``): a log file or queue message can be forged, so before its first write an
action asks CloudTrail LookupEvents (by EventId, in the event's account, through the same
assumed role) about the removal itself and about every history fact whose content it writes --
the Put*/Create*/Attach*/Set* event a document, attachment or boundary came from.  Facts
``trailguard snapshot`` read from IAM need no confirmation.  An event that cannot be confirmed
(not found, different from what the file says, LookupEvents failing) leaves the job
``awaiting_approval`` with the reason; one that is merely not visible *yet* (younger than
``confirm_wait_secs``) is looked up again on a later attempt.

Failures are raised as :class:`~trailguard.errors.TransientError` (try again later: throttling,
5xx, timeouts) or :class:`~trailguard.errors.PermanentError` (AccessDenied, a malformed
document); :class:`Deferred` asks for a later attempt for a reason that is not an error (a
policy that a recreate job may bring back, an event LookupEvents does not show yet).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, Protocol, TypeVar

import msgspec
from botocore.exceptions import ClientError

from trailguard.aws import classify, error_code
from trailguard.config import ActionName, RemediationConfig
from trailguard.detect.detection import build_actor, build_target, policy_name_from_arn
from trailguard.detect.history import (
    PolicyFact,
    PrincipalKind,
    event_time_key,
    facts_from_record,
    is_snapshot_event_id,
    path_from_policy_arn,
)
from trailguard.detect.record import Record
from trailguard.detect.rules import IAM_EVENT_SOURCE
from trailguard.errors import PermanentError
from trailguard.remediate.jobs import AuditEntry, AuditStep, EventRef, Finding, Job, audit
from trailguard.remediate.notify import WebhookSender, notification, publish_sns, slack_message
from trailguard.remediate.planner import actor_principal_of, allowlisted, own_identity
from trailguard.state.history import PolicyHistoryStore

if TYPE_CHECKING:
    from types_aiobotocore_cloudtrail.client import CloudTrailClient
    from types_aiobotocore_iam.client import IAMClient
    from types_aiobotocore_sns.client import SNSClient

__all__ = [
    "ACTIONS",
    "ActionContext",
    "ActionOutcome",
    "ClientSource",
    "Confirmation",
    "Deferred",
    "EventClaim",
    "NoRoleForAccount",
    "RateLimiter",
    "confirm_before_write",
    "confirm_event",
    "fact_claim",
    "lookup_claim",
    "removal_claim",
    "same_document",
]

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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.job = job
        self.clients = clients
        self.history = history
        self.config = config
        self.dry_run = dry_run
        self.limiter = limiter or _NoLimit()
        self.webhook = webhook
        self.clock = clock
        self.audit: list[AuditEntry] = []
        self.findings: list[Finding] = []
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


# ---------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Confirming events through CloudTrail before acting on them
# ---------------------------------------------------------------------------------------------

Confirmation = Literal["confirmed", "not_found", "mismatch", "unavailable"]

#: IAM is global; CloudTrail records its events in us-east-1 (in the aws partition).
IAM_EVENT_REGION: Final = "us-east-1"
_LOOKUP_DAYS: Final = 90  # LookupEvents shows the last 90 days of management events
_MIN_RECHECK_SECS: Final = 60.0
# PolicyFact fields compared with CloudTrail's record of the event, named as the audit shows them
_FACT_FIELDS: Final = (
    ("account_id", "recipientAccountId"),
    ("principal_name", "principal name"),
    ("policy_name", "policyName"),
    ("policy_arn", "policy ARN"),
    ("version_id", "versionId"),
    ("path", "path"),
    ("set_as_default", "setAsDefault"),
)


@dataclass(frozen=True, kw_only=True)
class EventClaim:
    """An event trailguard is about to act on, as the trail says it happened.

    ``fact`` None: the job's own event, compared with its detection (name, source, outcome,
    account, time, actor, the principal and policy it names).  Otherwise a policy-history fact,
    compared with the facts CloudTrail's own record of the event yields (same extraction,
    documents equal after JSON normalisation).
    """

    label: str
    event_id: str
    event_time: str | None
    account_id: str
    region: str
    fact: PolicyFact | None = None

    @property
    def from_snapshot(self) -> bool:
        """A fact ``trailguard snapshot`` read from IAM itself: nothing to confirm."""
        return self.fact is not None and is_snapshot_event_id(self.event_id)


def removal_claim(ctx: ActionContext, label: str = "the removal") -> EventClaim:
    """The job's own event (the removal, or the event whose actor quarantine_actor acts on)."""
    event = ctx.job.detection
    return EventClaim(
        label=f"{label} {event.event_name}",
        event_id=event.event_id,
        event_time=event.event_time,
        account_id=event.account_id or ctx.account_id,
        region=event.aws_region or IAM_EVENT_REGION,
    )


def fact_claim(ctx: ActionContext, fact: PolicyFact, label: str) -> EventClaim:
    """A history fact whose content an action is about to write (in the removal's region: IAM
    events of one partition are all recorded in the same one)."""
    return EventClaim(
        label=label,
        event_id=fact.event_id,
        event_time=fact.event_time,
        account_id=fact.account_id,
        region=ctx.job.detection.aws_region or IAM_EVENT_REGION,
        fact=fact,
    )


async def lookup_claim(ctx: ActionContext, claim: EventClaim) -> tuple[Confirmation, str]:
    """Ask CloudTrail (LookupEvents by EventId, in the claim's account and region, through the
    clients the actions use) whether the event happened as the trail says."""
    try:
        cloudtrail = await ctx.clients.cloudtrail(claim.account_id, claim.region)
        await ctx.limiter.acquire()
        found = await cloudtrail.lookup_events(
            LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": claim.event_id}],
            MaxResults=1,
        )
    except Exception as exc:  # noqa: BLE001 - every failure means "not confirmed"
        reason = classify(exc, stage=_STAGE, what="LookupEvents")
        return "unavailable", f"LookupEvents failed: {reason.detail}"
    events = found.get("Events", [])
    if not events:
        return "not_found", "LookupEvents does not show the event"
    got = events[0]
    try:
        copy = msgspec.json.decode(got.get("CloudTrailEvent") or "{}", type=Record)
    except msgspec.DecodeError:
        return "mismatch", "CloudTrail's own record of the event cannot be read"
    problems: list[str] = []
    if got.get("EventId") != claim.event_id or copy.event_id != claim.event_id:
        problems.append("eventID")
    if claim.fact is None:
        problems.extend(_removal_differences(ctx.job.detection, copy))
    else:
        problems.extend(_fact_differences(claim.fact, copy))
    if problems:
        return "mismatch", "CloudTrail's own record differs in " + ", ".join(problems)
    return "confirmed", "CloudTrail LookupEvents shows the same event"


async def confirm_event(ctx: ActionContext) -> tuple[Confirmation, str]:
    """Whether CloudTrail confirms the job's own event (see :func:`lookup_claim`)."""
    return await lookup_claim(ctx, removal_claim(ctx, "the event"))


def _removal_differences(event: EventRef, copy: Record) -> list[str]:
    problems: list[str] = []
    if copy.event_name != event.event_name:
        problems.append(f"eventName ({copy.event_name})")
    if copy.event_source != event.event_source:
        problems.append(f"eventSource ({copy.event_source})")
    if (copy.error_code or None) != (event.error_code or None) or (
        event.outcome == "success" and copy.failed
    ):
        problems.append(f"errorCode ({copy.error_code})")
    if event.account_id and copy.recipient_account_id != event.account_id:
        problems.append(f"recipientAccountId ({copy.recipient_account_id})")
    if event_time_key(copy.event_time) != event_time_key(event.event_time):
        problems.append(f"eventTime ({copy.event_time})")
    actor_arn = build_actor(copy).arn
    if event.actor.arn and actor_arn != event.actor.arn:
        problems.append(f"userIdentity.arn ({actor_arn})")
    if build_target(copy) != event.target:
        problems.append("requestParameters (the principal or policy it names)")
    return problems


def _fact_differences(fact: PolicyFact, copy: Record) -> list[str]:
    problems: list[str] = []
    if copy.event_source != IAM_EVENT_SOURCE:
        problems.append(f"eventSource ({copy.event_source})")
    if copy.failed:
        problems.append(f"errorCode ({copy.error_code})")
    if problems:
        return problems
    derived = facts_from_record(copy)
    if not derived:
        return [f"requestParameters (no policy fact in CloudTrail's {copy.event_name})"]
    real = derived[0]
    if (real.kind, real.op, real.principal_kind) != (fact.kind, fact.op, fact.principal_kind):
        return [f"eventName ({copy.event_name})"]
    for field, shown in _FACT_FIELDS:
        if getattr(real, field) != getattr(fact, field):
            problems.append(f"{shown} ({getattr(real, field)})")
    if not _same_text_document(real.document, fact.document):
        problems.append("policyDocument")
    if event_time_key(real.event_time) != event_time_key(fact.event_time):
        problems.append(f"eventTime ({real.event_time})")
    return problems


def _same_text_document(a: str | None, b: str | None) -> bool:
    """Equal policy documents after JSON normalisation; a document with a duplicate key is
    ambiguous (parsers disagree on which value wins) and equals only its exact text."""
    if a is None or b is None or a == b:
        return a == b

    def strict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise ValueError("duplicate key")
        return out

    try:
        return bool(
            json.loads(a, object_pairs_hook=strict) == json.loads(b, object_pairs_hook=strict)
        )
    except (ValueError, RecursionError):
        return False


def _approved_unconfirmed(job: Job) -> frozenset[str]:
    """The eventIDs an operator approved acting on after trailguard could not confirm them: those
    the job waited for approval over (a ``note`` with ``unconfirmed`` ids, written by
    :func:`confirm_before_write`) before an approval (``jobs.approve``'s "approved by ..." note).
    An approval given in mode "approve" before any lookup covers nothing."""
    if not job.approved:
        return frozenset()
    waiting: set[str] = set()
    covered: set[str] = set()
    for entry in job.audit:
        ids = (entry.data or {}).get("unconfirmed")
        if entry.step == "note" and isinstance(ids, list):
            waiting.update(i for i in ids if isinstance(i, str))
        elif entry.step == "note" and entry.data is None and entry.what.startswith("approved by "):
            covered |= waiting
    return frozenset(covered)


def _epoch(event_time: str | None) -> float | None:
    key = event_time_key(event_time)
    if key is None:
        return None
    return dt.datetime.strptime(key, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def _not_found_detail(ctx: ActionContext, claim: EventClaim, detail: str) -> str:
    at = _epoch(claim.event_time)
    if at is None:
        return detail
    age = ctx.clock() - at
    if age < ctx.config.confirm_wait_secs:
        return f"{detail} (yet)"
    if age > _LOOKUP_DAYS * 86400:
        return (
            f"{detail}: it is {int(age // 86400)} days old and LookupEvents keeps {_LOOKUP_DAYS} "
            "(`trailguard snapshot` facts need no confirmation)"
        )
    return detail


def _recheck_after(ctx: ActionContext, failures: Sequence[tuple[EventClaim, str]]) -> float | None:
    """Seconds until the next look, when every failure is an event too recent to be visible in
    LookupEvents yet (younger than ``confirm_wait_secs``): the remaining attempts are spread over
    what is left of that wait, at least a minute apart.  None: no point in looking again."""
    now = ctx.clock()
    wait = ctx.config.confirm_wait_secs
    ends: list[float] = []
    for claim, verdict in failures:
        at = _epoch(claim.event_time)
        if verdict != "not_found" or at is None or now - at >= wait:
            return None
        ends.append(min(at, now) + wait)  # an eventTime in the future waits no longer
    remaining = max(ends) - now
    attempts_left = max(1, ctx.config.max_attempts - ctx.job.attempts)
    return min(remaining, max(_MIN_RECHECK_SECS, remaining / attempts_left))


async def confirm_before_write(
    ctx: ActionContext, claims: Sequence[EventClaim], doing: str
) -> ActionOutcome | None:
    """The gate before an action's first write: None means go ahead; otherwise the outcome to
    return instead of acting.

    Each claim is confirmed with :func:`lookup_claim` unless it is a snapshot fact, or an
    operator approved the job after it could not be confirmed.  Any failure: dry-run records
    that it would wait for approval; an event merely not visible yet raises :class:`Deferred`
    (looked up again later, ``awaiting_approval`` after the last attempt); anything else is
    ``awaiting_approval`` at once.  ``confirm_events = false`` skips all this (noted in the
    audit record).  ``doing`` completes "before ..." in the audit record.
    """
    if not ctx.config.confirm_events:
        ctx.record(
            "note",
            "confirm_events = false: acting without CloudTrail confirmation",
            events=[claim.event_id for claim in claims],
        )
        return None
    approved = _approved_unconfirmed(ctx.job)
    failures: list[tuple[EventClaim, str]] = []
    details: list[str] = []
    seen: set[tuple[str, str]] = set()
    for claim in claims:
        if (claim.event_id, claim.account_id) in seen:
            continue
        seen.add((claim.event_id, claim.account_id))
        where = f"{claim.label} (event {claim.event_id})"
        if claim.from_snapshot:
            ctx.record(
                "before", f"{where}: read from IAM by trailguard snapshot, nothing to confirm"
            )
            continue
        if claim.event_id in approved:
            ctx.record(
                "note",
                f"{where}: an operator approved after it could not be confirmed: acting without "
                "CloudTrail confirmation",
                event_id=claim.event_id,
            )
            continue
        verdict, detail = await lookup_claim(ctx, claim)
        ctx.record(
            "before",
            f"confirmation of {where}: {verdict}: {detail}",
            confirmation=verdict,
            event_id=claim.event_id,
        )
        if verdict != "confirmed":
            if verdict == "not_found":
                detail = _not_found_detail(ctx, claim, detail)
            failures.append((claim, verdict))
            details.append(f"{detail} ({where})")
    if not failures:
        return None
    summary = "; ".join(details)
    if ctx.dry_run:
        return ctx.would(f"wait for approval before {doing}: {summary}")
    ids = [claim.event_id for claim, _ in failures]
    recheck = _recheck_after(ctx, failures)
    if recheck is not None:
        ctx.record(
            "note",
            f"not visible in LookupEvents yet: looking again in {recheck:.0f} s at the earliest",
            unconfirmed=ids,
        )
        raise Deferred("unconfirmed", summary, final="awaiting_approval", retry_after=recheck)
    ctx.record(
        "note",
        f"waiting for approval before {doing}: CloudTrail does not confirm what the trail says",
        unconfirmed=ids,
    )
    return ActionOutcome(state="awaiting_approval", reason=f"unconfirmed: {summary}")


# ---------------------------------------------------------------------------------------------
# restore_inline_policy: Delete{User,Role,Group}Policy
# ---------------------------------------------------------------------------------------------


async def restore_inline_policy(ctx: ActionContext) -> ActionOutcome:
    target = ctx.job.detection.target
    kind = _principal_kind(target.kind, ("user", "role", "group"))
    name = _need(target.name, "principal")
    policy_name = _need(target.policy_name, "policy name")
    if await ctx.principal(kind, name) is None:
        return ctx.skipped("principal_gone", f"{kind} {name} no longer exists")
    fact = await ctx.history.inline_policy(
        ctx.account_id, kind, name, policy_name, before=ctx.event_time
    )
    if fact is None:
        return ctx.skipped("no_history", f"no document of {policy_name} on {kind} {name} recorded")
    if fact.document is None:
        return ctx.skipped(
            "document_unknown",
            f"the last put of {policy_name} (event {fact.event_id}) has no usable document",
        )
    live = await _get_inline(ctx, kind, name, policy_name)
    ctx.record(
        "before",
        f"inline policy {policy_name} on {kind} {name}: {'present' if live else 'absent'}",
        document=live,
    )
    if live is not None:
        if same_document(live, fact.document):
            return ctx.noop(f"{policy_name} on {kind} {name} has the recorded document")
        return ctx.skipped(
            "changed_since",
            f"{kind} {name} has a different {policy_name} now; it is not overwritten",
        )
    refused = await confirm_before_write(
        ctx,
        [removal_claim(ctx), fact_claim(ctx, fact, "the put of its document")],
        f"putting {policy_name} back on {kind} {name}",
    )
    if refused is not None:
        return refused
    planned = {
        "document": fact.document,
        "from_event_id": fact.event_id,
        "from_event_time": fact.event_time,
    }
    if ctx.dry_run:
        return ctx.would(f"put inline policy {policy_name} back on {kind} {name}", **planned)
    iam = await ctx.iam()
    if kind == "user":
        await ctx.call(
            iam.put_user_policy, UserName=name, PolicyName=policy_name, PolicyDocument=fact.document
        )
    elif kind == "role":
        await ctx.call(
            iam.put_role_policy, RoleName=name, PolicyName=policy_name, PolicyDocument=fact.document
        )
    else:
        await ctx.call(
            iam.put_group_policy,
            GroupName=name,
            PolicyName=policy_name,
            PolicyDocument=fact.document,
        )
    ctx.record("did", f"put inline policy {policy_name} on {kind} {name}", **planned)
    after = await _get_inline(ctx, kind, name, policy_name)
    ctx.record("after", f"inline policy {policy_name} on {kind} {name}", document=after)
    if after is None or not same_document(after, fact.document):
        raise PermanentError(_STAGE, "verify_failed", "the document read back differs")
    return ActionOutcome(state="succeeded", changed=True)


async def _get_inline(
    ctx: ActionContext, kind: PrincipalKind, name: str, policy_name: str
) -> object | None:
    iam = await ctx.iam()
    if kind == "user":
        user = await ctx.find(iam.get_user_policy, UserName=name, PolicyName=policy_name)
        return None if user is None else user["PolicyDocument"]
    if kind == "role":
        role = await ctx.find(iam.get_role_policy, RoleName=name, PolicyName=policy_name)
        return None if role is None else role["PolicyDocument"]
    group = await ctx.find(iam.get_group_policy, GroupName=name, PolicyName=policy_name)
    return None if group is None else group["PolicyDocument"]


# ---------------------------------------------------------------------------------------------
# reattach_managed_policy: Detach{User,Role,Group}Policy
# ---------------------------------------------------------------------------------------------


async def reattach_managed_policy(ctx: ActionContext) -> ActionOutcome:
    target = ctx.job.detection.target
    kind = _principal_kind(target.kind, ("user", "role", "group"))
    name = _need(target.name, "principal")
    policy_arn = _need(target.policy_arn, "policy ARN")
    if await ctx.principal(kind, name) is None:
        return ctx.skipped("principal_gone", f"{kind} {name} no longer exists")
    iam = await ctx.iam()
    if await ctx.find(iam.get_policy, PolicyArn=policy_arn) is None:
        ctx.record("before", f"policy {policy_arn} does not exist")
        if ctx.dry_run:
            return ctx.would(f"attach {policy_arn} to {kind} {name} once the policy exists again")
        # DeletePolicy follows the detaches it needs: recreate_managed_policy may bring it back.
        raise Deferred("policy_gone", f"{policy_arn} does not exist (waiting for a recreate)")
    attached = await ctx.attached_policy_arns(kind, name)
    ctx.record("before", f"policies attached to {kind} {name}", attached=attached)
    if policy_arn in attached:
        return ctx.noop(f"{policy_arn} is attached to {kind} {name}")
    # A confirmed, successful Detach proves the attachment existed: it is all there is to check.
    refused = await confirm_before_write(
        ctx, [removal_claim(ctx)], f"attaching {policy_arn} to {kind} {name} again"
    )
    if refused is not None:
        return refused
    if ctx.dry_run:
        return ctx.would(f"attach {policy_arn} to {kind} {name} again", policy_arn=policy_arn)
    await ctx.attach(kind, name, policy_arn)
    ctx.record("did", f"attached {policy_arn} to {kind} {name}", policy_arn=policy_arn)
    after = await ctx.attached_policy_arns(kind, name)
    ctx.record("after", f"policies attached to {kind} {name}", attached=after)
    if policy_arn not in after:
        raise PermanentError(_STAGE, "verify_failed", f"{policy_arn} is not attached after all")
    return ActionOutcome(state="succeeded", changed=True)


# ---------------------------------------------------------------------------------------------
# restore_policy_version: DeletePolicyVersion
# ---------------------------------------------------------------------------------------------


async def restore_policy_version(ctx: ActionContext) -> ActionOutcome:
    target = ctx.job.detection.target
    policy_arn = _need(target.policy_arn, "policy ARN")
    version_id = _need(target.version_id, "version id")
    iam = await ctx.iam()
    policy = await ctx.find(iam.get_policy, PolicyArn=policy_arn)
    if policy is None:
        return ctx.skipped("policy_gone", f"{policy_arn} no longer exists")
    recorded = await ctx.history.policy_version(policy_arn, version_id, before=ctx.event_time)
    if recorded is None:
        return ctx.skipped("no_history", f"no document of {policy_arn} {version_id} recorded")
    if recorded.document is None:
        return ctx.skipped(
            "document_unknown", f"{policy_arn} {version_id} was recorded without its document"
        )
    # IAM refuses to delete the default version, so history normally says "not default" here;
    # "default" means history saw it as the default just before (a default change it missed).
    # A SetDefaultPolicyVersion followed by the deletion is indistinguishable from a routine
    # rotation, so the default is not moved back in that case (the audit record says which
    # version is the default).
    was_default = recorded.is_default is True
    live = await _live_versions(ctx, policy_arn)
    default_now = next((v for v, (_, is_default) in live.items() if is_default), None)
    ctx.record(
        "before",
        f"{policy_arn}: versions {sorted(live)}, default {default_now}",
        versions={v: doc for v, (doc, _) in live.items()},
    )
    holder = next(
        (v for v, (doc, _) in live.items() if same_document(doc, recorded.document)), None
    )
    claims = [removal_claim(ctx), fact_claim(ctx, recorded.fact, "the creation of its document")]
    if was_default and recorded.default_fact is not None:
        claims.append(fact_claim(ctx, recorded.default_fact, "the choice of it as the default"))
    if holder is not None:
        if not was_default or live[holder][1]:
            return ctx.noop(f"version {holder} of {policy_arn} has the recorded document")
        refused = await confirm_before_write(
            ctx, claims, f"making {holder} of {policy_arn} the default again"
        )
        if refused is not None:
            return refused
        if ctx.dry_run:
            return ctx.would(f"make {holder} (the restored document) the default again")
        await ctx.call(iam.set_default_policy_version, PolicyArn=policy_arn, VersionId=holder)
        ctx.record("did", f"set {holder} as the default version of {policy_arn} again")
        return ActionOutcome(state="succeeded", changed=True)
    if len(live) >= _MAX_VERSIONS:
        return ctx.skipped(
            "version_limit",
            f"{policy_arn} already has {len(live)} versions (IAM's limit) and trailguard never "
            "deletes one",
        )
    refused = await confirm_before_write(
        ctx, claims, f"recreating version {version_id} of {policy_arn}"
    )
    if refused is not None:
        return refused
    planned = {
        "document": recorded.document,
        "deleted_version_id": version_id,
        "set_as_default": was_default,
        "from_event_id": recorded.fact.event_id,
    }
    if ctx.dry_run:
        return ctx.would(
            f"create a new version of {policy_arn} with {version_id}'s document", **planned
        )
    created = await ctx.call(
        iam.create_policy_version,
        PolicyArn=policy_arn,
        PolicyDocument=recorded.document,
        SetAsDefault=was_default,
    )
    new_id = created["PolicyVersion"].get("VersionId")
    ctx.record(
        "did",
        f"created version {new_id} of {policy_arn} with the document of deleted version "
        f"{version_id} (IAM assigns a new version id)",
        new_version_id=new_id,
        **planned,
    )
    after = await _live_versions(ctx, policy_arn)
    ctx.record("after", f"{policy_arn}: versions {sorted(after)}", new_version_id=new_id)
    if new_id not in after or not same_document(after[new_id][0], recorded.document):
        raise PermanentError(_STAGE, "verify_failed", f"version {new_id} reads back differently")
    if not was_default and default_now is not None:
        ctx.record("note", f"the default version stays {default_now}")
    return ActionOutcome(state="succeeded", changed=True)


async def _live_versions(ctx: ActionContext, policy_arn: str) -> dict[str, tuple[object, bool]]:
    """version id -> (document, is default); ListPolicyVersions has no documents in AWS."""
    iam = await ctx.iam()
    listed = await ctx.call(iam.list_policy_versions, PolicyArn=policy_arn)
    versions: dict[str, tuple[object, bool]] = {}
    for version in listed["Versions"]:
        version_id = version.get("VersionId")
        if not version_id:
            continue
        got = await ctx.find(iam.get_policy_version, PolicyArn=policy_arn, VersionId=version_id)
        if got is None:
            continue
        versions[version_id] = (
            got["PolicyVersion"].get("Document"),
            bool(version.get("IsDefaultVersion")),
        )
    return versions


# ---------------------------------------------------------------------------------------------
# recreate_managed_policy: DeletePolicy
# ---------------------------------------------------------------------------------------------


async def recreate_managed_policy(ctx: ActionContext) -> ActionOutcome:
    target = ctx.job.detection.target
    policy_arn = _need(target.policy_arn, "policy ARN")
    state = await ctx.history.managed_policy(policy_arn, before=ctx.event_time)
    if state is None:
        return ctx.skipped("no_history", f"no record of {policy_arn} before its deletion")
    default = (
        await ctx.history.policy_version(
            policy_arn, state.default_version_id, before=ctx.event_time
        )
        if state.default_version_id
        else None
    )
    if state.default_document is None or default is None:
        return ctx.skipped(
            "document_unknown", f"the default document of {policy_arn} was not recorded"
        )
    name = state.policy_name or policy_name_from_arn(policy_arn)
    path = state.path or path_from_policy_arn(policy_arn) or "/"
    if not name:
        return ctx.skipped("no_history", f"the name of {policy_arn} is not known")
    if not policy_arn.endswith(f":policy{path}{name}"):
        return ctx.skipped(
            "inconsistent_history", f"history's path and name {path}{name} do not make {policy_arn}"
        )
    entities = await _entities_to_reattach(ctx, policy_arn)
    iam = await ctx.iam()
    live = await ctx.find(iam.get_policy, PolicyArn=policy_arn)
    attached_now: set[tuple[PrincipalKind, str]] = set()
    if live is not None:
        live_policy = live["Policy"]
        default_id = live_policy.get("DefaultVersionId")
        version = (
            await ctx.find(iam.get_policy_version, PolicyArn=policy_arn, VersionId=default_id)
            if default_id
            else None
        )
        document = None if version is None else version["PolicyVersion"].get("Document")
        ctx.record(
            "before",
            f"{policy_arn} exists (policy id {live_policy.get('PolicyId')})",
            document=document,
        )
        if not same_document(document, state.default_document):
            return ctx.skipped(
                "changed_since",
                f"{policy_arn} exists again with a different document; it is not overwritten",
            )
        attached_now = await _entities_of(ctx, policy_arn)
    else:
        ctx.record("before", f"{policy_arn} does not exist")
    missing: list[tuple[PrincipalKind, str, PolicyFact]] = []
    for kind, principal_name, source in entities:
        if (kind, principal_name) in attached_now:
            continue
        if await ctx.principal(kind, principal_name) is None:
            ctx.record("note", f"not reattached to {kind} {principal_name}: it no longer exists")
            continue
        missing.append((kind, principal_name, source))
    if live is not None and not missing:
        return ctx.noop(f"{policy_arn} exists with the recorded document and attachments")
    claims = [removal_claim(ctx)]
    if live is None:
        claims.append(fact_claim(ctx, default.fact, "the creation of its default document"))
        if default.default_fact is not None:
            claims.append(fact_claim(ctx, default.default_fact, "the choice of that default"))
    claims.extend(
        fact_claim(
            ctx,
            source,
            f"the attachment to {kind} {principal_name}"
            if source.op == "put"
            else f"the detach from {kind} {principal_name} before the deletion",
        )
        for kind, principal_name, source in missing
    )
    reattach = [f"{k}/{n}" for k, n, _ in missing]
    refused = await confirm_before_write(
        ctx,
        claims,
        f"recreating {policy_arn}" if live is None else f"reattaching {policy_arn}",
    )
    if refused is not None:
        return refused
    if live is None:
        planned = {
            "policy_name": name,
            "path": path,
            "document": state.default_document,
            "reattach": reattach,
            "from_event_id": default.fact.event_id,
        }
        if ctx.dry_run:
            return ctx.would(
                f"recreate {policy_arn} (same name, path and document; IAM gives it a new "
                "policy id) and reattach it",
                **planned,
            )
        created = await ctx.call(
            iam.create_policy,
            PolicyName=name,
            Path=path,
            PolicyDocument=state.default_document,
        )
        new = created["Policy"]
        if new.get("Arn") != policy_arn:
            raise PermanentError(
                _STAGE, "verify_failed", f"recreated as {new.get('Arn')}, not {policy_arn}"
            )
        ctx.record(
            "did",
            f"recreated {policy_arn}: the ARN is the same, the policy id is new "
            f"({new.get('PolicyId')}); anything that referred to the old policy id will not "
            "match it",
            new_policy_id=new.get("PolicyId"),
            **planned,
        )
    elif ctx.dry_run:
        return ctx.would(f"reattach {policy_arn}", reattach=reattach)
    if not missing:
        return ActionOutcome(state="succeeded", changed=True)
    for kind, principal_name, _ in missing:
        await ctx.attach(kind, principal_name, policy_arn)
        ctx.record("did", f"attached {policy_arn} to {kind} {principal_name}")
    after = await _entities_of(ctx, policy_arn)
    ctx.record(
        "after", f"{policy_arn} attached to", entities=[f"{k}/{n}" for k, n in sorted(after)]
    )
    if any((kind, n) not in after for kind, n, _ in missing):
        raise PermanentError(_STAGE, "verify_failed", "an attachment is missing after reattaching")
    return ActionOutcome(state="succeeded", changed=True)


async def _entities_to_reattach(
    ctx: ActionContext, policy_arn: str
) -> list[tuple[PrincipalKind, str, PolicyFact]]:
    """The entities the policy was attached to before its deletion, each with the fact that
    says so (its last attach, or the detach that preceded the deletion).

    IAM refuses DeletePolicy while the policy is attached, so the deletion is preceded by
    detaches: the entities are those still attached then, plus those detached in the run of
    detaches since the last attach.
    """
    facts = await ctx.history.attachment_facts(policy_arn, before=ctx.event_time)
    last: dict[tuple[PrincipalKind, str], PolicyFact] = {}
    for fact in facts:
        if fact.principal_kind is not None and fact.principal_name is not None:
            last[(fact.principal_kind, fact.principal_name)] = fact
    entities = [(k, n, fact) for (k, n), fact in sorted(last.items()) if fact.op == "put"]
    trailing: list[tuple[PrincipalKind, str, PolicyFact]] = []
    for fact in reversed(facts):
        if fact.op != "delete":
            break
        if fact.principal_kind is not None and fact.principal_name is not None:
            trailing.append((fact.principal_kind, fact.principal_name, fact))
    known = {(k, n) for k, n, _ in entities}
    for kind, principal_name, fact in reversed(trailing):
        if (kind, principal_name) not in known:
            known.add((kind, principal_name))
            entities.append((kind, principal_name, fact))
    return entities


async def _entities_of(ctx: ActionContext, policy_arn: str) -> set[tuple[PrincipalKind, str]]:
    iam = await ctx.iam()
    found: set[tuple[PrincipalKind, str]] = set()
    marker: str | None = None
    while True:
        extra: dict[str, Any] = {"Marker": marker} if marker else {}
        page = await ctx.call(iam.list_entities_for_policy, PolicyArn=policy_arn, **extra)
        found.update(
            ("user", u["UserName"]) for u in page.get("PolicyUsers", []) if "UserName" in u
        )
        found.update(
            ("role", r["RoleName"]) for r in page.get("PolicyRoles", []) if "RoleName" in r
        )
        found.update(
            ("group", g["GroupName"]) for g in page.get("PolicyGroups", []) if "GroupName" in g
        )
        marker = page.get("Marker")
        if not page.get("IsTruncated") or not marker:
            return found


# ---------------------------------------------------------------------------------------------
# restore_permissions_boundary: Delete{User,Role}PermissionsBoundary
# ---------------------------------------------------------------------------------------------


async def restore_permissions_boundary(ctx: ActionContext) -> ActionOutcome:
    target = ctx.job.detection.target
    kind = _principal_kind(target.kind, ("user", "role"))
    name = _need(target.name, "principal")
    principal = await ctx.principal(kind, name)
    if principal is None:
        return ctx.skipped("principal_gone", f"{kind} {name} no longer exists")
    live = _boundary_of(principal)
    ctx.record("before", f"permissions boundary of {kind} {name}: {live or 'none'}")
    source = await ctx.history.boundary_fact(ctx.account_id, kind, name, before=ctx.event_time)
    desired = None if source is None else source.policy_arn
    if source is None or desired is None:
        return ctx.skipped("no_history", f"no boundary of {kind} {name} recorded")
    if live == desired:
        return ctx.noop(f"{kind} {name} has boundary {desired}")
    if live is not None:
        return ctx.skipped(
            "changed_since", f"{kind} {name} has another boundary now ({live}); not overwritten"
        )
    iam = await ctx.iam()
    if await ctx.find(iam.get_policy, PolicyArn=desired) is None:
        if ctx.dry_run:
            return ctx.would(
                f"set the permissions boundary of {kind} {name} to {desired} once that policy "
                "exists again"
            )
        raise Deferred("policy_gone", f"boundary policy {desired} does not exist")
    refused = await confirm_before_write(
        ctx,
        [removal_claim(ctx), fact_claim(ctx, source, "the setting of the boundary")],
        f"setting the permissions boundary of {kind} {name} to {desired}",
    )
    if refused is not None:
        return refused
    if ctx.dry_run:
        return ctx.would(f"set the permissions boundary of {kind} {name} to {desired}")
    if kind == "user":
        await ctx.call(
            iam.put_user_permissions_boundary, UserName=name, PermissionsBoundary=desired
        )
    else:
        await ctx.call(
            iam.put_role_permissions_boundary, RoleName=name, PermissionsBoundary=desired
        )
    ctx.record("did", f"set the permissions boundary of {kind} {name} to {desired}")
    after = await ctx.principal(kind, name)
    after_boundary = None if after is None else _boundary_of(after)
    ctx.record("after", f"permissions boundary of {kind} {name}: {after_boundary or 'none'}")
    if after_boundary != desired:
        raise PermanentError(_STAGE, "verify_failed", "the boundary reads back differently")
    return ActionOutcome(state="succeeded", changed=True)


def _boundary_of(principal: dict[str, Any]) -> str | None:
    boundary = principal.get("PermissionsBoundary") or {}
    arn = boundary.get("PermissionsBoundaryArn") if isinstance(boundary, dict) else None
    return arn if isinstance(arn, str) and arn else None


# ---------------------------------------------------------------------------------------------
# quarantine_actor
# ---------------------------------------------------------------------------------------------


async def quarantine_actor(ctx: ActionContext) -> ActionOutcome:
    event = ctx.job.detection
    principal = actor_principal_of(event.actor)
    if principal is None:
        return ctx.skipped("actor_not_iam_principal", "the actor is not an IAM user or role")
    if allowlisted(event.actor, ctx.config):
        return ctx.skipped("allowlisted", f"{event.actor.arn} is on allowlist_arns")
    if own_identity(event.actor, ctx.config):
        return ctx.skipped("own_identity", "the actor is trailguard's own identity")
    _, kind, name = principal
    live = await ctx.principal(kind, name)
    if live is None:
        return ctx.skipped("principal_gone", f"{kind} {name} no longer exists")
    # A forged file must not be able to frame anyone: CloudTrail must confirm the event.
    refused = await confirm_before_write(
        ctx, [removal_claim(ctx, "the event")], f"quarantining {kind} {name}"
    )
    if refused is not None:
        return refused
    key_id = event.actor.access_key_id
    if (
        ctx.config.quarantine_method == "deactivate_key"
        and kind == "user"
        and key_id
        and key_id.startswith("AKIA")
    ):
        return await _deactivate_key(ctx, name, key_id)
    policy_arn = ctx.config.quarantine_policy_arn
    attached = await ctx.attached_policy_arns(kind, name)
    ctx.record("before", f"policies attached to {kind} {name}", attached=attached)
    if policy_arn in attached:
        return ctx.noop(f"{policy_arn} is attached to {kind} {name}")
    if ctx.dry_run:
        return ctx.would(f"attach the quarantine policy {policy_arn} to {kind} {name}")
    await ctx.attach(kind, name, policy_arn)
    ctx.record("did", f"attached the quarantine policy {policy_arn} to {kind} {name}")
    after = await ctx.attached_policy_arns(kind, name)
    ctx.record("after", f"policies attached to {kind} {name}", attached=after)
    if policy_arn not in after:
        raise PermanentError(_STAGE, "verify_failed", "the quarantine policy is not attached")
    return ActionOutcome(state="succeeded", changed=True)


async def _deactivate_key(ctx: ActionContext, user: str, key_id: str) -> ActionOutcome:
    iam = await ctx.iam()
    keys = await ctx.call(iam.list_access_keys, UserName=user)
    status = next(
        (k.get("Status") for k in keys["AccessKeyMetadata"] if k.get("AccessKeyId") == key_id),
        None,
    )
    ctx.record("before", f"access key {key_id} of user {user}: {status or 'absent'}")
    if status is None:
        return ctx.skipped("key_gone", f"user {user} has no access key {key_id}")
    if status == "Inactive":
        return ctx.noop(f"access key {key_id} is inactive")
    if ctx.dry_run:
        return ctx.would(f"deactivate access key {key_id} of user {user}")
    await ctx.call(iam.update_access_key, UserName=user, AccessKeyId=key_id, Status="Inactive")
    ctx.record("did", f"deactivated access key {key_id} of user {user}")
    return ActionOutcome(state="succeeded", changed=True)


# ---------------------------------------------------------------------------------------------
# audit_actor
# ---------------------------------------------------------------------------------------------


async def audit_actor(ctx: ActionContext) -> ActionOutcome:
    event = ctx.job.detection
    principal = actor_principal_of(event.actor)
    if principal is None or principal[1] != "user":
        return ctx.skipped("actor_not_user", "the actor is not an IAM user: nothing to audit")
    user = principal[2]
    iam = await ctx.iam()
    if await ctx.find(iam.get_user, UserName=user) is None:
        return ctx.skipped("principal_gone", f"user {user} no longer exists")
    now = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC)

    def finding(code: str, severity: str, subject: str, detail: str) -> None:
        ctx.findings.append(Finding(code=code, severity=severity, subject=subject, detail=detail))

    mfa = await ctx.call(iam.list_mfa_devices, UserName=user)
    has_mfa = bool(mfa["MFADevices"])
    login = await ctx.find(iam.get_login_profile, UserName=user)
    ctx.record("before", f"user {user}: MFA {has_mfa}, console password {login is not None}")
    if not has_mfa:
        finding(
            "no_mfa",
            "high" if login is not None else "medium",
            f"user/{user}",
            "no MFA device is registered",
        )
    if login is not None:
        if not has_mfa:
            finding(
                "console_password_without_mfa",
                "high",
                f"user/{user}",
                "the user can sign in to the console with a password alone",
            )
        policy = await ctx.find(iam.get_account_password_policy)
        if policy is None:
            finding(
                "no_password_policy",
                "medium",
                f"account/{ctx.account_id}",
                "the account has no password policy",
            )
    keys = await ctx.call(iam.list_access_keys, UserName=user)
    max_age = dt.timedelta(days=ctx.config.access_key_max_age_days)
    max_unused = dt.timedelta(days=ctx.config.access_key_max_unused_days)
    for key in keys["AccessKeyMetadata"]:
        key_id = key.get("AccessKeyId")
        created = key.get("CreateDate")
        if not key_id or key.get("Status") != "Active" or created is None:
            continue
        age = now - created
        if age > max_age:
            finding(
                "access_key_old",
                "medium",
                f"access-key/{key_id}",
                f"active access key is {age.days} days old (limit {max_age.days})",
            )
        used = await ctx.call(iam.get_access_key_last_used, AccessKeyId=key_id)
        last = used.get("AccessKeyLastUsed", {}).get("LastUsedDate")
        idle = now - (last or created)
        if idle > max_unused:
            finding(
                "access_key_unused",
                "low",
                f"access-key/{key_id}",
                f"active access key {'never used' if last is None else 'unused'} for "
                f"{idle.days} days (limit {max_unused.days})",
            )
    ctx.record(
        "after" if not ctx.dry_run else "plan",
        f"audit of user {user}: {len(ctx.findings)} finding(s)",
        findings=[f.code for f in ctx.findings],
    )
    return ActionOutcome(state="dry_run" if ctx.dry_run else "succeeded")


# ---------------------------------------------------------------------------------------------
# notify
# ---------------------------------------------------------------------------------------------


async def notify(ctx: ActionContext) -> ActionOutcome:
    settings = ctx.config.notify
    body = notification(ctx.job)
    # A channel that already took this job's message (an earlier attempt) is not sent again.
    done = {
        entry.data.get("channel")
        for entry in ctx.job.audit
        if entry.step == "did" and entry.data is not None
    }
    channels: list[str] = []
    if settings.webhook_url is not None and ctx.webhook is not None:
        channels.append("webhook")
    if settings.sns_topic_arn is not None:
        channels.append("sns")
    if not channels:
        return ctx.skipped("no_notify_target", "no webhook_url or sns_topic_arn configured")
    if ctx.dry_run:
        where = [
            f"webhook {ctx.webhook.host}" if c == "webhook" and ctx.webhook else c for c in channels
        ]
        return ctx.would(f"notify {', '.join(where)}", message=body)
    for channel in channels:
        if channel in done:
            ctx.record("note", f"{channel} already notified by an earlier attempt")
            continue
        if channel == "webhook" and ctx.webhook is not None:
            payload = slack_message(ctx.job) if settings.slack_format else body
            status = await ctx.webhook.send(payload, idempotency_key=ctx.job.id)
            ctx.record(
                "did", f"POSTed to webhook {ctx.webhook.host}", channel="webhook", status=status
            )
        elif channel == "sns" and settings.sns_topic_arn is not None:
            region = settings.sns_topic_arn.split(":")[3]
            client = await ctx.clients.sns(region)
            message_id = await publish_sns(client, settings.sns_topic_arn, ctx.job, body)
            ctx.record(
                "did",
                f"published to {settings.sns_topic_arn}",
                channel="sns",
                message_id=message_id,
            )
    return ActionOutcome(state="succeeded")


ACTIONS: Final[dict[ActionName, Action]] = {
    "restore_inline_policy": restore_inline_policy,
    "reattach_managed_policy": reattach_managed_policy,
    "restore_policy_version": restore_policy_version,
    "recreate_managed_policy": recreate_managed_policy,
    "restore_permissions_boundary": restore_permissions_boundary,
    "quarantine_actor": quarantine_actor,
    "audit_actor": audit_actor,
    "notify": notify,
}
#: The actions that write to IAM (serialised per account, subject to the circuit breaker).
WRITING_ACTIONS: Final[frozenset[ActionName]] = frozenset(ACTIONS) - {"audit_actor", "notify"}
