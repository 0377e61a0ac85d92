"""How many bytes of S3 objects the daemon holds at once: ``[limits] max_bytes_in_flight``.

An object's bytes are held from the moment its size is known (the GET's headers) until it is
decoded.  ``max_objects_in_flight`` alone would let eight 50 MB objects sit in memory together;
this budget lets many small objects through at once and few big ones, so that memory stays
bounded whatever the queue names (README "Memory").  Waiters are served in order, so a big
object is not starved by a stream of small ones.  Written here because asyncio has no weighted
semaphore and the dozen lines are simpler than a dependency.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["ByteBudget", "Reservation"]


class ByteBudget:
    """A weighted, first-come-first-served semaphore of bytes."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("the byte budget must be positive")
        self.limit = limit
        self.in_use = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, size: int) -> int:
        """Take ``size`` bytes (at most the whole budget); returns what was taken."""
        size = max(0, min(size, self.limit))
        if not self._waiters and self.in_use + size <= self.limit:
            self.in_use += size
            return size
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release(size)  # granted, then cancelled before it was used
            else:
                self._waiters.remove(entry)
                self._wake()
            raise
        return size

    def release(self, size: int) -> None:
        self.in_use = max(0, self.in_use - size)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            size, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if self.in_use + size > self.limit:
                return
            self._waiters.popleft()
            self.in_use += size
            future.set_result(None)


class Reservation:
    """What one object holds of a budget, across the attempts to fetch it."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.held = 0

    async def take(self, size: int) -> None:
        self.held += await self._budget.acquire(size)

    def release(self) -> None:
        if self.held:
            self._budget.release(self.held)
            self.held = 0
