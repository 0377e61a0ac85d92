"""The one place the configured state backend is opened: :func:`open_state`.

::

    async with open_state(config, dedup=True, history=True, jobs=True) as state:
        state.dedup, state.history, state.ledger, state.jobs, state.locks, state.limiter

``[state] backend = "sqlite"`` (the default) opens the SQLite files (``[state] path`` for dedup
and jobs, ``[history] path`` or next to it for the history and the event ledger) and leaves the
write lock and the IAM token bucket to the process (``locks``/``limiter`` None: the job runner
makes its own).  ``"dynamodb"`` opens one client for the table of ``[state.dynamodb]`` (checked
with DescribeTable and the schema item) and builds every store on it, the per-account lock and
the shared token bucket included.  The daemon (``app.py``), ``trailguard replay``,
``snapshot`` and ``jobs`` and ``Remediation.open`` all come here, so a backend is one branch.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trailguard.state.dedup import DedupStore, SqliteDedupStore
from trailguard.state.ledger import EventLedger, SqliteEventLedger
from trailguard.state.policy_history import PolicyHistoryStore, default_history_path
from trailguard.state.policy_history_sqlite import SqliteHistoryStore

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

    from trailguard.config import Config, StateBackend
    from trailguard.remediate.actions.context import RateLimiter
    from trailguard.remediate.jobs import JobStore
    from trailguard.remediate.locks import AccountLocks
    from trailguard.state.dynamo.table import DynamoTable

__all__ = [
    "StateStores",
    "dedup_lease_secs",
    "describe_backend",
    "open_daemon_state",
    "open_state",
]

#: A dedup claim's lease when no queue is configured (replay, tools).
DEFAULT_DEDUP_LEASE_SECS = 300.0


@dataclass
class StateStores:
    """The stores asked for (None: not asked for, or the history is disabled)."""

    backend: StateBackend
    dedup: DedupStore | None = None
    history: PolicyHistoryStore | None = None
    ledger: EventLedger | None = None
    jobs: JobStore | None = None
    #: the per-account IAM write lock across replicas; None: the runner's own (one process)
    locks: AccountLocks | None = None
    #: the IAM token bucket shared by the replicas; None: the runner's own
    limiter: RateLimiter | None = None
    table: DynamoTable | None = None


def describe_backend(config: Config) -> str:
    """For logs: ``sqlite /var/lib/trailguard/state.sqlite3`` or ``dynamodb trailguard``."""
    if config.state.backend == "dynamodb":
        return f"dynamodb {config.state.dynamodb.table}"
    return f"sqlite {config.state.path}"


def dedup_lease_secs(config: Config) -> float:
    """How long a dedup claim holds: the longest visibility timeout of the queues (a replica
    that dies after claiming leaves the key to the message's redelivery)."""
    timeouts = [src.visibility_timeout_secs for src in config.sources.sqs]
    return float(max(timeouts)) if timeouts else DEFAULT_DEDUP_LEASE_SECS


def open_daemon_state(config: Config) -> AbstractAsyncContextManager[StateStores]:
    """What ``trailguard run`` needs: dedup, the history and the ledger, and the job store (with
    the lock and the bucket) when remediation has policies and a history to restore from."""
    remediation = bool(config.remediation.policies) and config.history.enabled
    return open_state(config, dedup=True, history=True, jobs=remediation)


@asynccontextmanager
async def open_state(
    config: Config,
    *,
    dedup: bool = False,
    history: bool = False,
    jobs: bool = False,
    create: bool = True,
    session: AioSession | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[StateStores]:
    """Open the stores asked for on the configured backend; all closed on exit.

    ``history`` opens the policy history and the event ledger (both or neither; neither when
    ``[history] enabled = false``).  ``create=False``: SQLite refuses a job store file that does
    not exist (``trailguard jobs``: a typo in the path is an error, not an empty list).
    Raises :class:`~trailguard.errors.StateError` when a store cannot be opened.
    """
    async with AsyncExitStack() as stack:
        if config.state.backend == "dynamodb":
            state = await _open_dynamodb(stack, config, dedup, history, jobs, session, clock)
        else:
            state = await _open_sqlite(stack, config, dedup, history, jobs, create, clock)
        yield state


async def _open_sqlite(
    stack: AsyncExitStack,
    config: Config,
    dedup: bool,
    history: bool,
    jobs: bool,
    create: bool,
    clock: Callable[[], float],
) -> StateStores:
    state = StateStores("sqlite")
    ttl = config.state.dedup_ttl_hours * 3600
    if dedup or (jobs and create):
        # The dedup store refuses a file that already holds other tables but not its own: it
        # creates its schema first, whoever opens the file first.
        store = await SqliteDedupStore.open(config.state.path, ttl_seconds=ttl, clock=clock)
        if dedup:
            stack.push_async_callback(store.close)
            state.dedup = store
        else:
            await store.close()
    if history and config.history.enabled:
        path = config.history.path or default_history_path(config.state.path)
        history_store = await SqliteHistoryStore.open(path, clock=clock)
        stack.push_async_callback(history_store.close)
        ledger = await SqliteEventLedger.open(path, clock=clock)
        stack.push_async_callback(ledger.close)
        state.history, state.ledger = history_store, ledger
    if jobs:
        from trailguard.remediate.job_store import SqliteJobStore

        job_store = await SqliteJobStore.open(config.state.path, create=create, clock=clock)
        stack.push_async_callback(job_store.close)
        state.jobs = job_store
    return state


async def _open_dynamodb(
    stack: AsyncExitStack,
    config: Config,
    dedup: bool,
    history: bool,
    jobs: bool,
    session: AioSession | None,
    clock: Callable[[], float],
) -> StateStores:
    from trailguard.state.dynamo.table import DynamoTable

    table = await stack.enter_async_context(DynamoTable.open(config, session=session, clock=clock))
    state = StateStores("dynamodb", table=table)
    if dedup:
        from trailguard.state.dynamo.dedup import DynamoDedupStore

        state.dedup = DynamoDedupStore(
            table,
            ttl_seconds=config.state.dedup_ttl_hours * 3600,
            lease_secs=dedup_lease_secs(config),
        )
    if history and config.history.enabled:
        from trailguard.state.dynamo.history import DynamoHistoryStore
        from trailguard.state.dynamo.ledger import DynamoEventLedger

        state.history = DynamoHistoryStore(table)
        state.ledger = DynamoEventLedger(table)
    if jobs:
        from trailguard.state.dynamo.coordination import DynamoAccountLocks, DynamoTokenBucket
        from trailguard.state.dynamo.jobs import DynamoJobStore

        remediation = config.remediation
        state.jobs = DynamoJobStore(table)
        state.locks = DynamoAccountLocks(
            table, hold_secs=remediation.job_timeout_secs, wait_secs=remediation.job_timeout_secs
        )
        state.limiter = DynamoTokenBucket(table, remediation.iam_rate_per_sec)
    return state
