"""The remediation facade the daemon and the CLI wire in: :class:`Remediation`.

::

    async with Remediation.open(config, history=history_store) as remediation:
        ...
        new_jobs = await remediation.plan_and_enqueue(detections)   # durable on return
        ...                                                          # then delete the message
        group.create_task(remediation.runner.run())                  # `trailguard run`

``plan_and_enqueue`` plans with :func:`~trailguard.remediate.planner.plan` and stores the jobs
with ``INSERT OR IGNORE`` (the job id derives from eventID + action), so calling it again for a
redelivered message enqueues nothing.  It must return before the SQS message is deleted
(Promise 1).  ``runner.run()`` runs until cancelled; a job interrupted by cancellation goes back
to pending.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Final

import aiohttp
import msgspec

from trailguard.config import Config, RemediationConfig, unconfirmed_writes_warning
from trailguard.detect.detection import Detection
from trailguard.observe import JobQueueSampled, Observer
from trailguard.remediate.actions import ClientSource
from trailguard.remediate.clients import AwsClients
from trailguard.remediate.executor import JobRunner
from trailguard.remediate.jobs import CircuitOpen, Job, JobStore
from trailguard.remediate.planner import plan
from trailguard.state.backends import StateStores, open_state
from trailguard.state.ledger import EventLedger
from trailguard.state.policy_history import PolicyHistoryStore
from trailguard.telemetry.logging import get_logger

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

__all__ = ["Remediation"]

log = get_logger(__name__)


class Remediation:
    """Planning, the durable job store and the runner, opened and closed together."""

    def __init__(
        self,
        config: Config,
        store: JobStore,
        runner: JobRunner,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = config.remediation  # replaced on live reload
        self.store = store
        self.runner = runner
        self._clock = clock

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: Config,
        *,
        history: PolicyHistoryStore,
        ledger: EventLedger | None = None,
        store: JobStore | None = None,
        state: StateStores | None = None,
        clients: ClientSource | None = None,
        session: AioSession | None = None,
        on_circuit_open: Callable[[CircuitOpen], Awaitable[None]] | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> AsyncIterator[Remediation]:
        """Open the job store (the configured backend's), the AWS clients and the runner.

        ``ledger``: the event ledger the confirmation gate consults (the daemon passes the one
        ingestion records into); None only in tests that do without.

        ``state``: the stores the caller opened (``state/backends.py``: the job store, and with
        the DynamoDB backend the per-account lock and the IAM token bucket the replicas share);
        without it the configured backend's job store is opened here.  ``store`` and
        ``clients`` replace the job store and the real AWS clients (tests).  Raises
        :class:`~trailguard.errors.StateError` when the store cannot be opened.
        """
        async with AsyncExitStack() as stack:
            if state is None and store is None:
                state = await stack.enter_async_context(open_state(config, jobs=True, clock=clock))
            if state is not None:
                store = store or state.jobs
            if store is None:
                raise ValueError(
                    "Remediation.open: state has no job store (open it with jobs=True)"
                )
            if clients is None:
                aws = AwsClients(config, session=session, clock=clock)
                stack.push_async_callback(aws.close)
                clients = aws
            http: aiohttp.ClientSession | None = None
            if config.remediation.notify.webhook_url is not None:
                http = aiohttp.ClientSession()
                stack.push_async_callback(http.close)
            runner = JobRunner(
                store,
                config.remediation,
                clients=clients,
                history=history,
                ledger=ledger,
                http=http,
                on_circuit_open=on_circuit_open,
                observer=observer,
                clock=clock,
                limiter=state.limiter if state is not None else None,
                locks=state.locks if state is not None else None,
            )
            yield cls(config, store, runner, clock=clock)

    @property
    def enabled(self) -> bool:
        """Whether any ``[[remediation.policies]]`` table can plan a job."""
        return bool(self.settings.policies)

    def plan(self, detections: Iterable[Detection]) -> list[Job]:
        """The jobs for ``detections`` (pure; logs why events plan nothing)."""
        settings = self.settings
        now = self._clock()
        jobs: list[Job] = []
        for detection in detections:
            result = plan(detection, settings, now=now)
            if result.spoofed_marker:
                log.warning(
                    "remediation.spoofed_marker",
                    event_id=detection.event_id,
                    actor=detection.actor.arn,
                    user_agent=detection.actor.user_agent,
                )
            if result.skipped in ("own_identity", "own_user_agent"):
                log.info(
                    "remediation.own_event",
                    event_id=detection.event_id,
                    reason=result.skipped,
                    actor=detection.actor.arn,
                )
            for action, why in result.dropped:
                if why == "not_this_event":  # a restore action for another removal type
                    continue
                log.debug(
                    "remediation.action_not_planned",
                    event_id=detection.event_id,
                    action=action,
                    reason=why,
                )
            jobs.extend(result.jobs)
        return jobs

    async def plan_and_enqueue(self, detections: Iterable[Detection]) -> int:
        """Plan and durably enqueue the jobs for ``detections``; returns how many are new.

        Idempotent: jobs already stored (same eventID and action) are left as they are.
        """
        jobs = self.plan(detections)
        if not jobs:
            return 0
        new = await self.store.enqueue_many(jobs)
        if new:
            self.runner.wake()
            log.info("remediation.jobs_enqueued", new=new, planned=len(jobs))
        return new

    # [remediation] keys read once, when the runner's workers and AWS clients start.
    STARTUP_KEYS: Final = (
        "workers",
        "iam_rate_per_sec",
        "role_arn_template",
        "role_session_name",
        "external_id",
        "notify",
    )

    def reconfigure(self, section: RemediationConfig) -> tuple[str, ...]:
        """``[remediation]`` (live reload, trailguard/live.py): planning and the next job use the
        new settings; the :data:`STARTUP_KEYS` keep their running values until a restart
        (returned as kept)."""
        kept = tuple(
            key for key in self.STARTUP_KEYS if getattr(section, key) != getattr(self.settings, key)
        )
        running = msgspec.structs.replace(
            section, **{key: getattr(self.settings, key) for key in kept}
        )
        self.settings = running
        self.runner.reconfigure(running)
        self.warn_if_unconfirmed()
        return tuple(f"remediation.{key}" for key in kept)

    def warn_if_unconfirmed(self) -> None:
        """``remediation.confirm_events_off``: the settings let the trail's word alone write."""
        warning = unconfirmed_writes_warning(self.settings)
        if warning is not None:
            log.warning("remediation.confirm_events_off", warning=warning)

    async def sample_queue(self) -> JobQueueSampled:
        """The job store's depth by state and the oldest due job's age, read now and reported
        to the runner's observer (the daemon calls this when ``/metrics`` is scraped, so the
        gauges are as fresh as the scrape and count jobs other processes changed too)."""
        depth: dict[str, int] = {}
        for (_action, state), n in (await self.store.counts()).items():
            depth[state] = depth.get(state, 0) + n
        sample = JobQueueSampled(depth, await self.store.oldest_due_age(self._clock()))
        self.runner.observer.observe(sample)
        return sample
