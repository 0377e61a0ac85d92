"""How fast and how often remediation may write: :class:`TokenBucket` (IAM's request rate) and
:class:`CircuitBreaker` (how often one target may be restored; the ``CircuitOpen`` record it
leaves next to the detections is in ``jobs.py``).

The breaker: a restore action whose target was changed ``max_restores`` times within
``window_secs`` (counted in the job store, so it survives restarts and is shared by every
process on that store) is skipped ``circuit_open``.  It is asked just before the first write
(the action's ``ctx.breaker``), once the confirmation gate said go: only a plan an operator
approved exactly goes through an open circuit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from trailguard.config import CircuitBreakerConfig
from trailguard.observe import CircuitOpened, Observer
from trailguard.remediate.jobs import CircuitOpen, Job, JobStore, iso
from trailguard.telemetry.logging import get_logger

__all__ = ["CircuitBreaker", "TokenBucket"]

log = get_logger(__name__)


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


class CircuitBreaker:
    """Counts a target's restores in the job store; opens when there were too many."""

    def __init__(
        self,
        store: JobStore,
        settings: CircuitBreakerConfig,
        observer: Observer,
        on_open: Callable[[CircuitOpen], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings  # replaced on live reload
        self._observer = observer
        self._on_open = on_open

    async def check(self, job: Job, now: float) -> str | None:
        """Whether the circuit of the job's target is open: None, or the message why (reported
        and recorded here; the action then skips the job ``circuit_open``)."""
        breaker = self.settings
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
        self._observer.observe(CircuitOpened(record))
        if self._on_open is not None:
            try:
                await self._on_open(record)
            except Exception as exc:  # noqa: BLE001 - the record is best effort; the job is not
                log.error("remediation.circuit_record_failed", job_id=job.id, error=repr(exc))
        return message
