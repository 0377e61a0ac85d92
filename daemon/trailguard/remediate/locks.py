"""Serialising IAM writes per account: :class:`AccountLocks` and its one-process implementation.

IAM writes to one account are made one at a time (an action reads, decides, writes: two at once
could each decide on what the other is changing).  In one process an ``asyncio.Lock`` per account
does it (:class:`LocalAccountLocks`); with several replicas a lease item per account in the
shared table does (``state/dynamo/coordination.py``).  ``hold`` is bounded: a lock not had within
its wait raises :class:`~trailguard.errors.TransientError` (the job is tried again later).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

__all__ = ["AccountLocks", "LocalAccountLocks"]


class AccountLocks(Protocol):
    def hold(self, account_id: str) -> AbstractAsyncContextManager[None]:
        """Hold the account's write lock for the block (one IAM writer per account)."""
        ...


class LocalAccountLocks:
    """One ``asyncio.Lock`` per account: every writer is in this process."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, account_id: str) -> AsyncIterator[None]:
        async with self._locks.setdefault(account_id, asyncio.Lock()):
            yield
