"""Retry with capped exponential backoff and full jitter (S3 fetches, SQS calls; the remediation
runner's job backoff uses :func:`backoff_delay` too).

Hand-written rather than a dependency: it is a dozen lines, it must retry only
:class:`~trailguard.errors.TransientError`, and it must be cancellable at every sleep so that
shutdown is prompt (stamina/tenacity would do, at the cost of a dependency for this loop).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from trailguard.errors import TransientError
from trailguard.telemetry.logging import get_logger

T = TypeVar("T")
log = get_logger(__name__)


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Full-jitter delay before retry ``attempt`` (1-based): uniform in [0, min(cap, base*2^n)]."""
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return (rng or random).uniform(0, ceiling)


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    base: float = 0.2,
    cap: float = 5.0,
    what: str,
) -> T:
    """Run ``operation``; on TransientError wait and try again, ``attempts`` times in all."""
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except TransientError as exc:
            if attempt == attempts:
                raise
            delay = backoff_delay(attempt, base=base, cap=cap)
            log.info(
                "retry.scheduled",
                what=what,
                attempt=attempt,
                delay_secs=round(delay, 3),
                stage=exc.stage,
                reason=exc.reason,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
