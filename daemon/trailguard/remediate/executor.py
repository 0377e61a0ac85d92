"""Running jobs: :class:`JobRunner` (workers, retries, the circuit breaker), :class:`AwsClients`
(per-account clients through an assumed role) and :class:`TokenBucket` (IAM's rate limit).

A worker claims one due job at a time (a lease: a worker that dies leaves the job to be claimed
again after ``2 x job_timeout_secs``), runs its action with a timeout and stores the outcome:

* an outcome (succeeded, dry_run, skipped, awaiting_approval) is final;
* :class:`~trailguard.errors.TransientError`, a :class:`~trailguard.errors.StateError` or a
  timeout -> ``failed``, tried again after a full-jitter exponential backoff (``backoff_base_secs``
  x 2^(attempt-1), at most ``backoff_cap_secs``); after ``max_attempts`` -> ``dead``;
* :class:`~trailguard.remediate.actions.Deferred` -> ``failed`` the same way (but not sooner
  than its ``retry_after``: an event LookupEvents does not show yet is looked up again once it
  may have become visible), and after the last attempt it ends in its own final state (skipped /
  awaiting_approval), not dead;
* :class:`~trailguard.errors.PermanentError` (AccessDenied, a malformed document ...) -> ``dead``
  at once: trying again cannot help until someone fixes something (then ``trailguard jobs retry``).

A job runs in the more cautious of the mode it was planned with and the mode the config gives
its action now (:func:`effective_mode`): setting ``mode = "dry-run"`` is a kill switch for jobs
already queued, too.

IAM writes to one account are serialised (one ``asyncio.Lock`` per account); every IAM call takes
a token from one bucket (``iam_rate_per_sec``) and the IAM clients retry throttling with
botocore's ``adaptive`` mode.  The circuit breaker: a restore action whose target was changed
``max_restores`` times within ``window_secs`` (counted in the job store, so it survives restarts)
is skipped ``circuit_open``; the runner logs ``remediation.circuit_open`` and hands a
:class:`CircuitOpen` record to ``on_circuit_open`` (the daemon writes it next to detections).
It is asked just before the first write (the action's ``ctx.breaker``), once the confirmation
gate said go: only a plan an operator approved exactly goes through an open circuit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import msgspec
from aiobotocore.config import AioConfig

from trailguard.aws import (
    USER_AGENT_EXTRA,
    assume_role,
    caller_account,
    client_kwargs,
    make_session,
)
from trailguard.config import Config, RemediationConfig
from trailguard.errors import OperationError, PermanentError, StateError, TransientError
from trailguard.remediate.actions import (
    ACTIONS,
    ActionContext,
    ActionOutcome,
    ClientSource,
    Deferred,
    NoRoleForAccount,
)
from trailguard.remediate.jobs import AuditEntry, Finding, Job, JobStore, audit, iso
from trailguard.remediate.notify import WebhookSender
from trailguard.state.ledger import EventLedger
from trailguard.state.policy_history import PolicyHistoryStore
from trailguard.telemetry.logging import get_logger
from trailguard.vocabulary import RESTORE_ACTIONS, WRITING_ACTIONS

if TYPE_CHECKING:
    from aiobotocore.session import AioSession
    from types_aiobotocore_cloudtrail.client import CloudTrailClient
    from types_aiobotocore_iam.client import IAMClient
    from types_aiobotocore_sns.client import SNSClient
    from types_aiobotocore_sts.client import STSClient

__all__ = [
    "AwsClients",
    "CircuitOpen",
    "JobRunner",
    "RunnerStats",
    "TokenBucket",
    "backoff",
    "effective_mode",
]

log = get_logger(__name__)

IAM_REGION: Final = "us-east-1"  # IAM is global; its endpoint lives in us-east-1
_REFRESH_MARGIN_SECS: Final = 300.0
_ASSUME_DURATION_SECS: Final = 3600


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter delay after failed attempt ``attempt`` (1-based)."""
    return (rng or random).uniform(0, min(cap, base * 2 ** (attempt - 1)))


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; waiters are served in order."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1 - 1e-9:  # tolerance: float rounding must not spin
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._sleep((1 - self._tokens) / self.rate)


class CircuitOpen(msgspec.Struct, frozen=True, kw_only=True):
    """The circuit breaker's own detection-like record (one JSON line next to detections)."""

    type: str = "remediation.circuit_open"
    rule: str = "trailguard-remediation-circuit-open"
    severity: str = "high"
    time: str
    account_id: str | None
    target_key: str
    action: str
    job_id: str
    event_id: str
    restores_in_window: int
    max_restores: int
    window_secs: float
    message: str


class RunnerStats:
    """Counters for logs and metrics (the daemon maps them to Prometheus)."""

    def __init__(self) -> None:
        self.finished: Counter[tuple[str, str]] = Counter()  # (action, state)
        self.findings: Counter[str] = Counter()  # finding code
        self.circuit_open = 0
        self.lease_lost = 0


# ---------------------------------------------------------------------------------------------
# AWS clients per account
# ---------------------------------------------------------------------------------------------


class _Entry:
    def __init__(self, stack: AsyncExitStack, client: Any, expires: float | None) -> None:
        self.stack = stack
        self.client = client
        self.expires = expires


class AwsClients:
    """:class:`~trailguard.remediate.actions.ClientSource` for real AWS (or moto).

    With ``role_arn_template`` set, every account's clients use that role, assumed through STS
    (credentials cached until ``_REFRESH_MARGIN_SECS`` + one job timeout before they expire).
    Without it, the daemon's own credentials serve its own account only (learned once through
    GetCallerIdentity); any other account raises :class:`NoRoleForAccount`.  Clients carry the
    user-agent marker (``aws.USER_AGENT_EXTRA``) and IAM clients use botocore's adaptive retries.
    """

    def __init__(
        self,
        config: Config,
        *,
        session: AioSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._remediation = config.remediation
        self._kwargs = client_kwargs(config.aws.region, config.aws.endpoint_url)
        self._endpoint_url = config.aws.endpoint_url
        self._session = session or make_session()
        self._clock = clock
        self._clients: dict[tuple[str, str, str], _Entry] = {}
        self._retired: list[tuple[float, _Entry]] = []
        self._own_account: str | None = None
        self._lock = asyncio.Lock()
        self._stack = AsyncExitStack()
        self._sts: STSClient | None = None

    def _config(self, service: str) -> AioConfig:
        retries: Any = (
            {"mode": "adaptive", "max_attempts": 5}
            if service == "iam"
            else {"mode": "standard", "max_attempts": 3}
        )
        return AioConfig(
            user_agent_extra=USER_AGENT_EXTRA,
            retries=retries,
            connect_timeout=10,
            read_timeout=30,
            max_pool_connections=10,
        )

    async def _default_sts(self) -> STSClient:
        if self._sts is None:
            kwargs = dict(self._kwargs)
            kwargs.setdefault("region_name", IAM_REGION)
            self._sts = await self._stack.enter_async_context(
                self._session.create_client("sts", config=self._config("sts"), **kwargs)
            )
        return self._sts

    async def own_account(self) -> str:
        if self._own_account is None:
            self._own_account = await caller_account(await self._default_sts(), stage="remediate")
        return self._own_account

    async def iam(self, account_id: str) -> IAMClient:
        client: IAMClient = await self._client("iam", account_id, IAM_REGION)
        return client

    async def cloudtrail(self, account_id: str, region: str) -> CloudTrailClient:
        client: CloudTrailClient = await self._client("cloudtrail", account_id, region)
        return client

    async def sns(self, region: str) -> SNSClient:
        """SNS with the daemon's own credentials (the topic is trailguard's, not the target's)."""
        client: SNSClient = await self._client("sns", "", region)
        return client

    async def _client(self, service: str, account_id: str, region: str) -> Any:
        async with self._lock:
            now = self._clock()
            self._close_retired_soon(now)
            key = (service, account_id, region)
            entry = self._clients.get(key)
            if entry is not None and (
                entry.expires is None or entry.expires - now > self._margin()
            ):
                return entry.client
            if entry is not None:  # credentials about to expire: new client, old one retires
                self._retired.append((now + 2 * self._remediation.job_timeout_secs, entry))
                del self._clients[key]
            credentials, expires = await self._credentials(account_id)
            kwargs = dict(self._kwargs)
            kwargs["region_name"] = (
                region if service != "iam" else self._kwargs.get("region_name", region)
            )
            kwargs.update(credentials)
            stack = AsyncExitStack()
            session: Any = self._session  # create_client is overloaded per literal service name
            client = await stack.enter_async_context(
                session.create_client(service, config=self._config(service), **kwargs)
            )
            self._clients[key] = _Entry(stack, client, expires)
            return client

    def _margin(self) -> float:
        return _REFRESH_MARGIN_SECS + self._remediation.job_timeout_secs

    async def _credentials(self, account_id: str) -> tuple[dict[str, str], float | None]:
        """Client keyword arguments with credentials for ``account_id`` ("" = the daemon's)."""
        template = self._remediation.role_arn_template
        if not account_id:
            return {}, None
        if not template:
            if account_id != await self.own_account():
                raise NoRoleForAccount(account_id)
            return {}, None
        role_arn = template.format(account_id=account_id)
        assumed = await assume_role(
            await self._default_sts(),
            role_arn,
            session_name=self._remediation.role_session_name,
            duration_secs=_ASSUME_DURATION_SECS,
            external_id=self._remediation.external_id,
            stage="remediate",
        )
        log.info(
            "remediation.role_assumed",
            account_id=account_id,
            role_arn=role_arn,
            expires=dt.datetime.fromtimestamp(assumed.expires, dt.UTC).isoformat(),
        )
        return assumed.client_kwargs, assumed.expires

    def _close_retired_soon(self, now: float) -> None:
        due = [entry for at, entry in self._retired if at <= now]
        self._retired = [(at, entry) for at, entry in self._retired if at > now]
        for entry in due:
            task = asyncio.get_running_loop().create_task(entry.stack.aclose())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def close(self) -> None:
        entries = [*self._clients.values(), *(entry for _, entry in self._retired)]
        self._clients.clear()
        self._retired.clear()
        for entry in entries:
            with contextlib.suppress(Exception):
                await entry.stack.aclose()
        await self._stack.aclose()


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


_STRICTNESS: Final[dict[str, int]] = {"off": 0, "dry-run": 1, "approve": 2, "enforce": 3}


def effective_mode(planned: str, configured: str) -> str:
    """The mode a job runs in: the more cautious of the one it was planned with and the one the
    config gives its action now -- switching the config to "dry-run" (or an action "off") stops
    jobs already queued from changing anything."""
    return min(planned, configured, key=_STRICTNESS.__getitem__)


class JobRunner:
    """Claims due jobs and runs them with ``[remediation] workers`` workers."""

    def __init__(
        self,
        store: JobStore,
        config: RemediationConfig,
        *,
        clients: ClientSource,
        history: PolicyHistoryStore,
        ledger: EventLedger | None = None,
        http: aiohttp.ClientSession | None = None,
        limiter: TokenBucket | None = None,
        on_circuit_open: Callable[[CircuitOpen], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clients = clients
        self.history = history
        self.ledger = ledger
        self.limiter = limiter or TokenBucket(config.iam_rate_per_sec)
        self.on_circuit_open = on_circuit_open
        self.stats = RunnerStats()
        self._clock = clock
        self._rng = rng or random.Random()
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._webhook = (
            WebhookSender(
                config.notify.webhook_url, timeout_secs=config.notify.timeout_secs, session=http
            )
            if config.notify.webhook_url is not None and http is not None
            else None
        )

    @property
    def lease_secs(self) -> float:
        return 2 * self.config.job_timeout_secs

    def wake(self) -> None:
        """New jobs were enqueued: idle workers look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Run the workers until cancelled (the daemon cancels this task on shutdown; a job in
        progress is handed back as pending)."""
        log.info(
            "remediation.runner_started",
            workers=self.config.workers,
            mode=self.config.mode,
            iam_rate_per_sec=self.config.iam_rate_per_sec,
        )
        async with asyncio.TaskGroup() as group:
            for index in range(self.config.workers):
                group.create_task(self._worker(index))

    async def run_once(self, limit: int = 100) -> int:
        """Claim and run every job due now, one after another; returns how many ran.
        For tests, ``replay --remediate`` and tools; the daemon uses :meth:`run`."""
        ran = 0
        while ran < limit:
            jobs = await self.store.claim_due(self._clock(), 1, lease_secs=self.lease_secs)
            if not jobs:
                return ran
            await self.execute(jobs[0])
            ran += 1
        return ran

    async def _worker(self, index: int) -> None:
        failures = 0
        while True:
            try:
                jobs = await self.store.claim_due(self._clock(), 1, lease_secs=self.lease_secs)
                failures = 0
            except StateError as exc:
                failures += 1
                delay = min(60.0, 0.5 * 2**failures)
                log.error(
                    "remediation.claim_failed", worker=index, error=str(exc), retry_in_secs=delay
                )
                await asyncio.sleep(delay)
                continue
            if not jobs:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_interval_secs)
                continue
            try:
                await self.execute(jobs[0])
            except StateError as exc:
                log.error("remediation.store_failed", job_id=jobs[0].id, error=str(exc))

    async def execute(self, job: Job) -> Job:
        """Run one claimed (running) job and store its outcome; returns the stored job."""
        started = self._clock()
        log.debug("remediation.job_started", job_id=job.id, action=job.action, attempt=job.attempts)
        try:
            done = await self._execute(job)
        except asyncio.CancelledError:
            released = msgspec.structs.replace(
                job,
                state="pending",
                next_attempt_at=self._clock(),
                updated_at=self._clock(),
                audit=(*job.audit, audit("note", "interrupted by shutdown", at=self._clock())),
            )
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.complete(released))
            raise
        stored = await self.store.complete(done)
        if not stored:
            self.stats.lease_lost += 1
            log.warning("remediation.lease_lost", job_id=job.id, action=job.action)
            return done
        self.stats.finished[(done.action, done.state)] += 1
        for finding in done.findings:
            self.stats.findings[finding.code] += 1
            log.warning(
                "remediation.finding",
                job_id=done.id,
                code=finding.code,
                severity=finding.severity,
                subject=finding.subject,
                detail=finding.detail,
                account_id=done.account_id,
            )
        log.info(
            "remediation.job_finished",
            job_id=done.id,
            action=done.action,
            state=done.state,
            mode=done.mode,
            changed=done.changed,
            reason=done.reason,
            error=done.error,
            attempts=done.attempts,
            event_id=done.event_id,
            account_id=done.account_id,
            target=done.target_key,
            duration_secs=round(self._clock() - started, 3),
        )
        return done

    async def _execute(self, job: Job) -> Job:
        now = self._clock()
        mode = effective_mode(job.mode, self.config.action_mode(job.action))
        if mode == "off":
            return self._final(
                job,
                ActionOutcome(state="skipped", reason="mode_off"),
                [audit("note", f"{job.action} is switched off in the config", at=now)],
            )
        if mode == "approve" and not job.approved:
            return self._final(
                job,
                ActionOutcome(state="awaiting_approval", reason="approval required (mode approve)"),
                [],
            )
        dry_run = mode == "dry-run"
        if dry_run and job.mode != "dry-run":
            note = f"planned in mode {job.mode}; the config now says dry-run: nothing is changed"
            job = msgspec.structs.replace(job, audit=(*job.audit, audit("note", note, at=now)))
        breaker = None
        if job.action in RESTORE_ACTIONS and not dry_run:

            async def breaker() -> str | None:
                return await self._circuit(job, now)

        ctx = ActionContext(
            job,
            clients=self.clients,
            history=self.history,
            config=self.config,
            dry_run=dry_run,
            limiter=self.limiter,
            webhook=self._webhook,
            ledger=self.ledger,
            clock=self._clock,
            breaker=breaker,
        )
        action = ACTIONS[job.action]
        lock = (
            self._locks.setdefault(job.account_id, asyncio.Lock())
            if job.action in WRITING_ACTIONS and job.account_id
            else contextlib.nullcontext()
        )
        try:
            async with lock:
                async with asyncio.timeout(self.config.job_timeout_secs):
                    outcome = await action(ctx)
        except Deferred as exc:
            return self._retry_or(
                job, ctx, exc.reason, exc.detail, final=exc.final, at_least=exc.retry_after
            )
        except NoRoleForAccount as exc:
            return self._final(
                _with_plan(job, ctx),
                ActionOutcome(state="skipped", reason=exc.reason),
                ctx.audit,
                detail=exc.detail,
            )
        except PermanentError as exc:
            return self._dead(job, ctx, f"{exc.reason}: {exc.detail}")
        except TransientError as exc:
            return self._retry_or(job, ctx, exc.reason, exc.detail, final=None)
        except TimeoutError:
            return self._retry_or(
                job,
                ctx,
                "timeout",
                f"the attempt took longer than {self.config.job_timeout_secs} s",
                final=None,
            )
        except StateError as exc:
            return self._retry_or(job, ctx, "state", str(exc), final=None)
        except ValueError as exc:  # e.g. history refusing a malformed eventTime
            return self._dead(job, ctx, f"invalid: {exc}")
        except OperationError as exc:
            return self._dead(job, ctx, f"{exc.reason}: {exc.detail}")
        except Exception as exc:  # a bug: keep the job, mark it dead, go on with the others
            log.exception("remediation.job_crashed", job_id=job.id, action=job.action)
            return self._dead(job, ctx, f"internal error: {type(exc).__name__}: {exc}")
        return self._final(_with_plan(job, ctx), outcome, ctx.audit, findings=ctx.findings)

    async def _circuit(self, job: Job, now: float) -> str | None:
        """Whether the circuit of the job's target is open: None, or the message why (logged,
        counted and recorded here; the action then skips the job ``circuit_open``)."""
        breaker = self.config.circuit_breaker
        count = await self.store.restores_since(job.target_key, now - breaker.window_secs)
        if count < breaker.max_restores:
            return None
        message = (
            f"{job.target_key} was restored {count} times in the last {breaker.window_secs:g} s "
            f"(limit {breaker.max_restores}): something keeps removing it -- often an "
            "infrastructure-as-code pipeline. trailguard stops restoring it automatically; "
            "decide who is right, then `trailguard jobs retry` if needed"
        )
        record = CircuitOpen(
            time=iso(now),
            account_id=job.account_id,
            target_key=job.target_key,
            action=job.action,
            job_id=job.id,
            event_id=job.event_id,
            restores_in_window=count,
            max_restores=breaker.max_restores,
            window_secs=breaker.window_secs,
            message=message,
        )
        self.stats.circuit_open += 1
        log.warning(
            "remediation.circuit_open",
            job_id=job.id,
            action=job.action,
            target=job.target_key,
            account_id=job.account_id,
            restores_in_window=count,
            max_restores=breaker.max_restores,
            window_secs=breaker.window_secs,
        )
        if self.on_circuit_open is not None:
            try:
                await self.on_circuit_open(record)
            except Exception as exc:  # noqa: BLE001 - the record is best effort; the job is not
                log.error("remediation.circuit_record_failed", job_id=job.id, error=repr(exc))
        return message

    # -- outcomes ------------------------------------------------------------------------------

    def _final(
        self,
        job: Job,
        outcome: ActionOutcome,
        entries: list[AuditEntry],
        *,
        findings: list[Finding] | None = None,
        detail: str | None = None,
    ) -> Job:
        now = self._clock()
        return msgspec.structs.replace(
            job,
            state=outcome.state,
            reason=outcome.reason,
            changed=outcome.changed,
            error=detail,
            updated_at=now,
            next_attempt_at=now,
            audit=(*job.audit, *entries),
            findings=tuple(findings or ()),
        )

    def _dead(self, job: Job, ctx: ActionContext, error: str) -> Job:
        now = self._clock()
        return msgspec.structs.replace(
            _with_plan(job, ctx),
            state="dead",
            error=error,
            updated_at=now,
            audit=(*job.audit, *ctx.audit, audit("note", f"dead: {error}", at=now)),
        )

    def _retry_or(
        self,
        job: Job,
        ctx: ActionContext,
        reason: str,
        detail: str,
        *,
        final: Any,
        at_least: float | None = None,
    ) -> Job:
        now = self._clock()
        job = _with_plan(job, ctx)
        entries = (*job.audit, *ctx.audit)
        if job.attempts >= self.config.max_attempts:
            if final is None:
                return msgspec.structs.replace(
                    job,
                    state="dead",
                    error=f"{reason}: {detail}",
                    updated_at=now,
                    audit=(*entries, audit("note", f"dead after {job.attempts} attempts", at=now)),
                )
            return msgspec.structs.replace(
                job,
                state=final,
                reason=f"{reason}: {detail}",
                updated_at=now,
                audit=(
                    *entries,
                    audit("note", f"{final} after {job.attempts} attempts: {detail}", at=now),
                ),
            )
        delay = backoff(
            job.attempts,
            base=self.config.backoff_base_secs,
            cap=self.config.backoff_cap_secs,
            rng=self._rng,
        )
        if at_least is not None:
            delay = max(delay, at_least)
        return msgspec.structs.replace(
            job,
            state="failed",
            error=f"{reason}: {detail}",
            updated_at=now,
            next_attempt_at=now + delay,
            audit=(
                *entries,
                audit(
                    "note",
                    f"attempt {job.attempts} failed ({reason}); next at {iso(now + delay)}",
                    at=now,
                ),
            ),
        )


def _with_plan(job: Job, ctx: ActionContext) -> Job:
    """The job with the plan its run computed (kept from an earlier run when this one made
    none): what ``trailguard jobs show`` shows and an approval binds to."""
    if ctx.plan is None:
        return job
    return msgspec.structs.replace(job, plan=ctx.plan, plan_sha256=ctx.plan.sha256)
