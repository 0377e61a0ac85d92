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

Nothing is written on the trail's word alone: a log file or queue message can be forged.  Before
its first write an action computes exactly what it would write (its :class:`PlannedWrite` list)
and names the records those writes rest on and the fields of each it uses (its claims: the
removal, and every history fact whose content it writes -- the Put*/Create*/Attach*/Set* event a
document, attachment or boundary came from); the confirmation gate (``remediate/confirm.py``, the
one place that decides) checks each claim field by field against CloudTrail's own record, refuses
any event the event ledger knows with two contents, and binds an operator's approval to the
plan's sha256.  An event that cannot be confirmed (not found, different from what the file says,
LookupEvents failing, a conflict) leaves the job ``awaiting_approval`` with the reason and the
plan; one that is merely not visible *yet* (younger than ``confirm_wait_secs``) is looked up
again on a later attempt.

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
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, Protocol, TypeVar

import msgspec
from botocore.exceptions import ClientError

from trailguard.aws import classify, error_code
from trailguard.config import RemediationConfig
from trailguard.detect.detection import policy_name_from_arn
from trailguard.detect.policy_facts import PolicyFact, PrincipalKind, path_from_policy_arn
from trailguard.errors import PermanentError
from trailguard.remediate import confirm as gate
from trailguard.remediate.confirm import (
    DETECTION_FIELDS,
    FACT_EVENT_FIELDS,
    Claim,
    Confirmation,
    FactField,
)
from trailguard.remediate.jobs import (
    AuditEntry,
    AuditStep,
    Finding,
    Job,
    PlannedWrite,
    WritePlan,
    audit,
    planned_write,
)
from trailguard.remediate.notify import WebhookSender, notification, publish_sns, slack_message
from trailguard.remediate.planner import actor_principal_of, allowlisted, own_identity
from trailguard.state.ledger import EventLedger
from trailguard.state.policy_history import PolicyHistoryStore
from trailguard.vocabulary import ActionName

if TYPE_CHECKING:
    from types_aiobotocore_cloudtrail.client import CloudTrailClient
    from types_aiobotocore_iam.client import IAMClient
    from types_aiobotocore_sns.client import SNSClient

__all__ = [
    "ACTIONS",
    "CLAIMS",
    "ActionContext",
    "ActionOutcome",
    "ClientSource",
    "Deferred",
    "NoRoleForAccount",
    "RateLimiter",
    "confirm_before_write",
    "confirm_event",
    "fact_claim",
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
# The confirmation gate (remediate/confirm.py) and what each action confirms
# ---------------------------------------------------------------------------------------------

# Each action's claims: the records its writes rest on and the fields of each it uses (the
# README's "Threat model" shows the same table).  The removal -- the job's own event -- is always
# compared field by field with the detection the job was planned from (DETECTION_FIELDS: the
# planner decided on all of them); a history fact with the fact CloudTrail's own record yields,
# in the fields below.
INLINE_PUT: Final[tuple[FactField, ...]] = (
    *FACT_EVENT_FIELDS,
    "principalKind",
    "principalName",
    "policyName",
    "document",
)
VERSION_DOCUMENT: Final[tuple[FactField, ...]] = (
    *FACT_EVENT_FIELDS,
    "policyName",
    "policyArn",
    "path",
    "versionId",
    "document",
    "setAsDefault",
)
DEFAULT_CHOICE: Final[tuple[FactField, ...]] = (
    *FACT_EVENT_FIELDS,
    "policyArn",
    "versionId",
    "setAsDefault",
)
ATTACHMENT: Final[tuple[FactField, ...]] = (
    *FACT_EVENT_FIELDS,
    "principalKind",
    "principalName",
    "policyArn",
)
BOUNDARY_SET: Final[tuple[FactField, ...]] = (
    *FACT_EVENT_FIELDS,
    "principalKind",
    "principalName",
    "policyArn",
)
#: action -> (record, fields) for every claim it may make; the README's table, checked by a test
CLAIMS: Final[dict[ActionName, tuple[tuple[str, tuple[str, ...]], ...]]] = {
    "restore_inline_policy": (("removal", DETECTION_FIELDS), ("Put*Policy", INLINE_PUT)),
    "reattach_managed_policy": (("removal", DETECTION_FIELDS),),
    "restore_policy_version": (
        ("removal", DETECTION_FIELDS),
        ("CreatePolicyVersion / CreatePolicy", VERSION_DOCUMENT),
        ("the event that made it the default", DEFAULT_CHOICE),
    ),
    "recreate_managed_policy": (
        ("removal", DETECTION_FIELDS),
        ("CreatePolicy / CreatePolicyVersion of the default", VERSION_DOCUMENT),
        ("the event that made it the default", DEFAULT_CHOICE),
        ("Attach*Policy / Detach*Policy of each entity", ATTACHMENT),
    ),
    "restore_permissions_boundary": (
        ("removal", DETECTION_FIELDS),
        ("Put*PermissionsBoundary / CreateUser / CreateRole", BOUNDARY_SET),
    ),
    "quarantine_actor": (("the event", DETECTION_FIELDS),),
}


def removal_claim(ctx: ActionContext, label: str = "the removal") -> Claim:
    """The job's own event (the removal, or the event whose actor quarantine_actor acts on),
    every field of the detection it was planned from."""
    return gate.removal_claim(
        ctx.job.detection, fields=DETECTION_FIELDS, label=label, account_id=ctx.account_id
    )


def fact_claim(
    ctx: ActionContext, fact: PolicyFact, fields: Sequence[FactField], label: str
) -> Claim:
    """A history fact whose content an action is about to write."""
    return gate.fact_claim(fact, fields=fields, label=label, region=ctx.job.detection.aws_region)


async def confirm_before_write(
    ctx: ActionContext, claims: Sequence[Claim], writes: Sequence[PlannedWrite], doing: str
) -> ActionOutcome | None:
    """Pass the gate (:func:`trailguard.remediate.confirm.confirm`) before the first write:
    None means go ahead with exactly ``writes``; otherwise the outcome to return instead.

    The gate's audit lines go to the job's audit record and its plan to the job
    (``ctx.plan``); an event merely not visible in LookupEvents yet raises :class:`Deferred`.
    """
    decision = await gate.confirm(
        claims,
        writes,
        job=ctx.job,
        config=ctx.config,
        clients=ctx.clients,
        limiter=ctx.limiter,
        ledger=ctx.ledger,
        clock=ctx.clock,
        dry_run=ctx.dry_run,
        doing=doing,
    )
    ctx.audit.extend(decision.audit)
    ctx.plan = decision.plan
    if decision.action == "write":
        if decision.by_approval or ctx.dry_run or ctx.breaker is None:
            return None
        # The circuit breaker guards every automatic restore, including one whose approved
        # plan changed and whose new plan CloudTrail confirmed: only the exact plan an operator
        # approved goes through an open circuit.
        tripped = await ctx.breaker()
        if tripped is None:
            return None
        ctx.record("note", tripped)
        return ActionOutcome(state="skipped", reason="circuit_open")
    reason = decision.reason or "unconfirmed"
    if decision.action == "dry_run_wait":
        return ctx.would(f"wait for approval before {doing}: {reason}")
    if decision.action == "recheck":
        raise Deferred(
            "unconfirmed", reason, final="awaiting_approval", retry_after=decision.retry_after
        )
    return ActionOutcome(state="awaiting_approval", reason=reason)


async def confirm_event(ctx: ActionContext) -> tuple[Confirmation, str]:
    """Whether CloudTrail confirms the job's own event, every field quarantine_actor uses."""
    claim = removal_claim(ctx, "the event")
    return await gate.lookup(ctx.clients, ctx.limiter, claim)


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
    document = fact.document
    call = f"Put{kind.capitalize()}Policy"
    refused = await confirm_before_write(
        ctx,
        [
            removal_claim(ctx),
            fact_claim(ctx, fact, INLINE_PUT, "the put of its document"),
        ],
        [planned_write(call, f"{kind}/{name}", document=document, policyName=policy_name)],
        f"putting {policy_name} back on {kind} {name}",
    )
    if refused is not None:
        return refused
    planned = {
        "document": document,
        "from_event_id": fact.event_id,
        "from_event_time": fact.event_time,
    }
    if ctx.dry_run:
        return ctx.would(f"put inline policy {policy_name} back on {kind} {name}", **planned)
    iam = await ctx.iam()
    if kind == "user":
        await ctx.call(
            iam.put_user_policy, UserName=name, PolicyName=policy_name, PolicyDocument=document
        )
    elif kind == "role":
        await ctx.call(
            iam.put_role_policy, RoleName=name, PolicyName=policy_name, PolicyDocument=document
        )
    else:
        await ctx.call(
            iam.put_group_policy,
            GroupName=name,
            PolicyName=policy_name,
            PolicyDocument=document,
        )
    ctx.record("did", f"put inline policy {policy_name} on {kind} {name}", **planned)
    after = await _get_inline(ctx, kind, name, policy_name)
    ctx.record("after", f"inline policy {policy_name} on {kind} {name}", document=after)
    if after is None or not same_document(after, document):
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
        ctx,
        [removal_claim(ctx)],
        [planned_write(f"Attach{kind.capitalize()}Policy", f"{kind}/{name}", policyArn=policy_arn)],
        f"attaching {policy_arn} to {kind} {name} again",
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
    document = recorded.document
    claims = [
        removal_claim(ctx),
        fact_claim(ctx, recorded.fact, VERSION_DOCUMENT, "the creation of its document"),
    ]
    if was_default and recorded.default_fact is not None:
        claims.append(
            fact_claim(
                ctx, recorded.default_fact, DEFAULT_CHOICE, "the choice of it as the default"
            )
        )
    if holder is not None:
        if not was_default or live[holder][1]:
            return ctx.noop(f"version {holder} of {policy_arn} has the recorded document")
        refused = await confirm_before_write(
            ctx,
            claims,
            [planned_write("SetDefaultPolicyVersion", policy_arn, versionId=holder)],
            f"making {holder} of {policy_arn} the default again",
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
        ctx,
        claims,
        [
            planned_write(
                "CreatePolicyVersion", policy_arn, document=document, setAsDefault=was_default
            )
        ],
        f"recreating version {version_id} of {policy_arn}",
    )
    if refused is not None:
        return refused
    planned = {
        "document": document,
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
        PolicyDocument=document,
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
    if new_id not in after or not same_document(after[new_id][0], document):
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
    # The document written is the one the claimed fact carries (history's state folds to it).
    document = default.fact.document
    if document is None or document != state.default_document:
        return ctx.skipped(
            "inconsistent_history", f"the default document of {policy_arn} is not consistent"
        )
    claims = [removal_claim(ctx)]
    writes: list[PlannedWrite] = []
    if live is None:
        claims.append(
            fact_claim(ctx, default.fact, VERSION_DOCUMENT, "the creation of its default document")
        )
        if default.default_fact is not None:
            claims.append(
                fact_claim(ctx, default.default_fact, DEFAULT_CHOICE, "the choice of that default")
            )
        writes.append(
            planned_write("CreatePolicy", policy_arn, document=document, policyName=name, path=path)
        )
    claims.extend(
        fact_claim(
            ctx,
            source,
            ATTACHMENT,
            f"the attachment to {kind} {principal_name}"
            if source.op == "put"
            else f"the detach from {kind} {principal_name} before the deletion",
        )
        for kind, principal_name, source in missing
    )
    writes.extend(
        planned_write(
            f"Attach{kind.capitalize()}Policy", f"{kind}/{principal_name}", policyArn=policy_arn
        )
        for kind, principal_name, _ in missing
    )
    reattach = [f"{k}/{n}" for k, n, _ in missing]
    refused = await confirm_before_write(
        ctx,
        claims,
        writes,
        f"recreating {policy_arn}" if live is None else f"reattaching {policy_arn}",
    )
    if refused is not None:
        return refused
    if live is None:
        planned = {
            "policy_name": name,
            "path": path,
            "document": document,
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
            PolicyDocument=document,
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
        [
            removal_claim(ctx),
            fact_claim(ctx, source, BOUNDARY_SET, "the setting of the boundary"),
        ],
        [
            planned_write(
                f"Put{kind.capitalize()}PermissionsBoundary",
                f"{kind}/{name}",
                permissionsBoundary=desired,
            )
        ],
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
    key_id = event.actor.access_key_id
    policy_arn = ctx.config.quarantine_policy_arn
    by_key = (
        ctx.config.quarantine_method == "deactivate_key"
        and kind == "user"
        and key_id is not None
        and key_id.startswith("AKIA")
    )
    write = (
        planned_write("UpdateAccessKey", f"user/{name}", accessKeyId=key_id, status="Inactive")
        if by_key
        else planned_write(
            f"Attach{kind.capitalize()}Policy", f"{kind}/{name}", policyArn=policy_arn
        )
    )
    # A forged file must not be able to frame anyone: CloudTrail must confirm the event, and
    # every identity field quarantine reads (the session issuer is the role it quarantines).
    refused = await confirm_before_write(
        ctx,
        [removal_claim(ctx, "the event")],
        [write],
        f"quarantining {kind} {name}",
    )
    if refused is not None:
        return refused
    if by_key and key_id is not None:
        return await _deactivate_key(ctx, name, key_id)
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
