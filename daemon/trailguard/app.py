"""The composition root: ``trailguard run``.

Builds every part from the config, owns every resource through one AsyncExitStack (closed in
reverse order), supervises the long-running tasks in one TaskGroup, and runs the two-phase
shutdown:

1. the first SIGTERM/SIGINT stops receiving at once (the long poll in progress is cancelled; a
   message it may have fetched reappears after its visibility timeout), lets in-flight messages
   finish for up to ``[shutdown] deadline_secs``, then releases whatever is unfinished
   (visibility 0, never deleted) and exits 0;
2. a second signal exits at once (exit 128+signal).  Nothing is lost either way: a message is
   deleted only after its detections are durable, and redelivery is deduplicated by eventID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from trailguard import __version__
from trailguard.aws import client_config, client_kwargs, make_session
from trailguard.config import Config, SqsSourceConfig
from trailguard.decode_pool import DecodePool
from trailguard.detect.process import Detector
from trailguard.detect.rules import RuleSet
from trailguard.errors import IngestError, StartupError, TrailguardError
from trailguard.ingest.messages import HandlerSettings, IngestStats, MessageHandler
from trailguard.ingest.s3 import S3ObjectStore
from trailguard.ingest.sqs import Message, SqsQueue
from trailguard.outputs.jsonl import JsonlWriter
from trailguard.outputs.sink import DetectionSink, recover_from_output
from trailguard.state.dedup import SqliteDedupStore
from trailguard.telemetry.logging import get_logger

log = get_logger(__name__)

POLL_BACKOFF_CAP_SECS = 30.0
PURGE_INTERVAL_SECS = 3600.0


@dataclass
class DaemonState:
    """What health checks and metrics read."""

    started_at: float = field(default_factory=time.time)
    last_poll_ok: dict[str, float] = field(default_factory=dict)  # queue label -> unix time
    in_flight: int = 0
    stopping: bool = False


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats = IngestStats()
        self.state = DaemonState()
        self._stop = asyncio.Event()
        self._signals = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._capacity = asyncio.Condition()
        limits = config.limits
        self._max_messages_in_flight = max(10, 2 * limits.max_objects_in_flight)

    # -- signals ------------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("daemon.forced_exit", signal=signum)
            os._exit(128 + (signum or signal.SIGTERM))
        log.info("daemon.stopping", signal=signum, in_flight=self.state.in_flight)
        self.state.stopping = True
        self._stop.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)

    # -- run ----------------------------------------------------------------------------------

    async def run(self) -> int:
        self._install_signals()
        config = self.config
        if not config.sources.sqs:
            raise StartupError("no [[sources.sqs]] queue configured: nothing to watch")
        async with AsyncExitStack() as stack:
            session = make_session()
            kwargs = client_kwargs(config.aws.region, config.aws.endpoint_url)
            max_wait = max(src.wait_time_secs for src in config.sources.sqs)
            sqs = await stack.enter_async_context(
                session.create_client(
                    "sqs", config=client_config(read_timeout=max_wait + 15), **kwargs
                )
            )
            s3 = await stack.enter_async_context(
                session.create_client("s3", config=client_config(read_timeout=60), **kwargs)
            )
            dedup = await SqliteDedupStore.open(
                config.state.path, ttl_seconds=config.state.dedup_ttl_hours * 3600
            )
            stack.push_async_callback(dedup.close)
            writer = JsonlWriter(config.outputs.jsonl.path, fsync=config.outputs.jsonl.fsync)
            stack.callback(writer.close)
            recovered = await recover_from_output(config.outputs.jsonl.path, dedup)
            pool = DecodePool(config, config.limits.decode_worker_count())
            stack.callback(pool.shutdown)

            queues = [(SqsQueue(sqs, src.queue_url), src) for src in config.sources.sqs]
            for queue, src in queues:
                await self._check_queue(queue, src)

            handler = MessageHandler(
                detector=Detector(RuleSet.from_config(config)),
                store=S3ObjectStore(s3),
                pool=pool,
                sink=DetectionSink(writer, dedup),
                object_slots=asyncio.Semaphore(config.limits.max_objects_in_flight),
                stats=self.stats,
            )
            log.info(
                "daemon.started",
                version=__version__,
                queues=[src.label for src in config.sources.sqs],
                decode_workers=pool.workers,
                recovered_event_ids=recovered,
            )
            async with asyncio.TaskGroup() as group:
                pollers = [
                    group.create_task(self._poll(queue, src, handler))
                    for queue, src in queues
                    for _ in range(src.pollers)
                ]
                purger = group.create_task(self._purge(dedup))
                await self._stop.wait()
                for task in pollers:
                    task.cancel()
                await self._drain()
                purger.cancel()
        log.info("daemon.stopped", **self._summary())
        return 0

    async def _check_queue(self, queue: SqsQueue, src: SqsSourceConfig) -> None:
        try:
            info = await queue.info()
        except IngestError as exc:
            raise StartupError(f"queue {src.label} ({src.queue_url}): {exc.detail}") from exc
        if not info.has_redrive_policy:
            log.warning(
                "sqs.no_dead_letter_queue",
                queue=src.queue_url,
                hint="set a RedrivePolicy: failed messages are left to it (see README)",
            )
        log.info(
            "sqs.queue_ready",
            queue=src.queue_url,
            visibility_timeout_secs=src.visibility_timeout_secs,
            approximate_messages=info.approximate_messages,
        )

    # -- polling ------------------------------------------------------------------------------

    async def _wait_for_capacity(self) -> int:
        async with self._capacity:
            await self._capacity.wait_for(
                lambda: self.state.in_flight < self._max_messages_in_flight
            )
            return self._max_messages_in_flight - self.state.in_flight

    async def _poll(self, queue: SqsQueue, src: SqsSourceConfig, handler: MessageHandler) -> None:
        failures = 0
        settings = HandlerSettings(
            visibility_timeout_secs=src.visibility_timeout_secs,
            heartbeat_interval_secs=src.heartbeat_interval_secs,
            max_object_bytes=self.config.limits.max_object_bytes,
            key_include=tuple(re.compile(p) for p in self.config.keys.include),
            key_exclude=tuple(re.compile(p) for p in self.config.keys.exclude),
        )
        while not self._stop.is_set():
            room = await self._wait_for_capacity()
            try:
                messages = await queue.receive(
                    max_messages=min(src.max_messages, room),
                    wait_time_secs=src.wait_time_secs,
                    visibility_timeout_secs=src.visibility_timeout_secs,
                )
            except IngestError as exc:
                failures += 1
                delay = min(POLL_BACKOFF_CAP_SECS, 0.5 * 2**failures)
                self.stats.errors[(exc.stage, exc.reason)] = (
                    self.stats.errors.get((exc.stage, exc.reason), 0) + 1
                )
                log.error(
                    "sqs.receive_failed",
                    queue=src.queue_url,
                    reason=exc.reason,
                    detail=exc.detail,
                    transient=exc.transient,
                    retry_in_secs=delay,
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.state.last_poll_ok[src.label] = time.time()
            for message in messages:
                self._spawn(queue, message, settings, handler)

    def _spawn(
        self, queue: SqsQueue, message: Message, settings: HandlerSettings, handler: MessageHandler
    ) -> None:
        self.state.in_flight += 1
        self.stats.bump(self.stats.messages, "received")
        task = asyncio.create_task(self._handle(queue, message, settings, handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(
        self, queue: SqsQueue, message: Message, settings: HandlerSettings, handler: MessageHandler
    ) -> None:
        try:
            await handler.handle(queue, message, settings)
        except asyncio.CancelledError:
            # Shutdown deadline passed: give the message back now rather than after its timeout.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(queue, message))
            raise
        except TrailguardError as exc:
            # Nothing was deleted: the message comes back after its visibility timeout.
            log.error(
                "sqs.message_failed",
                message_id=message.message_id,
                error=str(exc),
                error_type=type(exc).__name__,
            )
            self.stats.bump(self.stats.messages, "failed")
        except Exception as exc:  # Promise: one bad message never takes the daemon down.
            log.exception("sqs.message_crashed", message_id=message.message_id, error=repr(exc))
            self.stats.bump(self.stats.messages, "failed")
        finally:
            self.state.in_flight -= 1
            async with self._capacity:
                self._capacity.notify_all()

    async def _release(self, queue: SqsQueue, message: Message) -> None:
        await asyncio.wait_for(queue.set_visibility(message, 0), timeout=5)
        self.stats.bump(self.stats.messages, "released")
        log.info("sqs.message_released", message_id=message.message_id, reason="shutdown")

    async def _drain(self) -> None:
        deadline = self.config.shutdown.deadline_secs
        pending = set(self._tasks)
        if pending:
            log.info("daemon.draining", in_flight=len(pending), deadline_secs=deadline)
            _, pending = await asyncio.wait(pending, timeout=deadline)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)

    async def _purge(self, dedup: SqliteDedupStore) -> None:
        while True:
            with contextlib.suppress(TrailguardError):
                removed = await dedup.purge_expired()
                if removed:
                    log.info("state.dedup_purged", removed=removed)
            await asyncio.sleep(PURGE_INTERVAL_SECS)

    def _summary(self) -> dict[str, object]:
        stats = self.stats
        return {
            "messages": dict(stats.messages),
            "objects": dict(stats.objects),
            "records": stats.records,
            "detections": stats.detections,
            "duplicates": stats.duplicates,
        }


async def run_daemon(config: Config) -> int:
    return await Daemon(config).run()


__all__ = ["Daemon", "StartupError", "run_daemon"]
