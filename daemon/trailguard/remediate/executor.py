"""Running remediation jobs: :class:`JobRunner` -- workers, leases, retries and outcomes.

The runner's helpers live next to it: AWS clients per account in ``clients.py``, the IAM token
bucket and the circuit breaker in ``limits.py``.

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

IAM writes to one account are serialised (``locks.py``: an ``asyncio.Lock`` per account, or a
lease item per account shared by every replica); every IAM call takes a token from one bucket
(``iam_rate_per_sec``; shared by the replicas with the DynamoDB backend) and the IAM clients
retry throttling with botocore's ``adaptive`` mode.  The circuit breaker (``limits.py``) hands a
``CircuitOpen`` record to ``on_circuit_open`` (the daemon writes it next to detections).

What the runner does is reported as events (:mod:`trailguard.observe`): ``JobFinished``,
``JobLeaseLost``, ``CircuitOpened``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
import msgspec

from trailguard.config import RemediationConfig
from trailguard.errors import OperationError, PermanentError, StateError, TransientError
from trailguard.observe import JobFinished, JobLeaseLost, Observer
from trailguard.remediate.actions import (
    ACTIONS,
    ActionContext,
    ActionOutcome,
    ClientSource,
    Deferred,
    NoRoleForAccount,
)
from trailguard.remediate.actions.context import RateLimiter
from trailguard.remediate.jobs import AuditEntry, CircuitOpen, Finding, Job, JobStore, audit, iso
from trailguard.remediate.limits import CircuitBreaker, TokenBucket
from trailguard.remediate.locks import AccountLocks, LocalAccountLocks
from trailguard.remediate.notify import WebhookSender
from trailguard.retry import backoff_delay
from trailguard.state.ledger import EventLedger
from trailguard.state.policy_history import PolicyHistoryStore
from trailguard.telemetry.logging import get_logger
from trailguard.telemetry.observers import LogObserver
from trailguard.vocabulary import RESTORE_ACTIONS, WRITING_ACTIONS

__all__ = ["JobRunner", "effective_mode"]

log = get_logger(__name__)


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
        limiter: RateLimiter | None = None,
        locks: AccountLocks | None = None,
        on_circuit_open: Callable[[CircuitOpen], Awaitable[None]] | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clients = clients
        self.history = history
        self.ledger = ledger
        self.limiter = limiter or TokenBucket(config.iam_rate_per_sec)
        self.observer: Observer = observer if observer is not None else LogObserver()
        self.breaker = CircuitBreaker(store, config.circuit_breaker, self.observer, on_circuit_open)
        self._clock = clock
        self._rng = rng or random.Random()
        self.locks: AccountLocks = locks or LocalAccountLocks()
        self._wake = asyncio.Event()
        self._webhook = (
            WebhookSender(
                config.notify.webhook_url, timeout_secs=config.notify.timeout_secs, session=http
            )
            if config.notify.webhook_url is not None and http is not None
            else None
        )

    def reconfigure(self, settings: RemediationConfig) -> None:
        """New settings for the next job (the caller keeps the keys read only at start)."""
        self.config = settings
        self.breaker.settings = settings.circuit_breaker

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
            self.observer.observe(JobLeaseLost(done))
            return done
        self.observer.observe(JobFinished(done, duration_secs=self._clock() - started))
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
                return await self.breaker.check(job, now)

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
            self.locks.hold(job.account_id)
            # a dry run writes nothing: it has nothing to serialise
            if job.action in WRITING_ACTIONS and job.account_id and not dry_run
            else contextlib.nullcontext()
        )
        try:
            # The timeout covers the wait for the account's lock too: an attempt never outlives
            # its lease (2 x job_timeout_secs), so no other worker can take the job over while
            # this one may still write.
            async with asyncio.timeout(self.config.job_timeout_secs):
                async with lock:
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
        delay = backoff_delay(
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
