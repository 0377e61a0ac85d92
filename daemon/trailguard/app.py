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

SIGHUP re-reads the config file (live reload): each running part that can change live takes
the sections it reads through its ``reconfigure`` (trailguard/live.py) -- rules, suppressions,
severities, key filters, remediation settings and the log level -- without dropping in-flight
work; an invalid file is rejected with a log line and the running config stays.  Sections no
running part reads (queues, state, limits, the HTTP listener) are reported as needing a restart
and keep their running values.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

import msgspec

from trailguard import __version__
from trailguard.aws import check_region, client_config, client_kwargs, make_session
from trailguard.config import (
    Config,
    LoggingConfig,
    RuleEntry,
    SqsSourceConfig,
    load_config,
)
from trailguard.config.rules import resolve_rules
from trailguard.decode_pool import DecodePool
from trailguard.detect.decode import SCANNER
from trailguard.detect.process import Detector
from trailguard.errors import ConfigError, OperationError, StartupError, TrailguardError
from trailguard.ingest.budget import ByteBudget
from trailguard.ingest.messages import HandlerSettings, MessageHandler
from trailguard.ingest.s3 import ObjectStore, S3ObjectStore
from trailguard.ingest.sqs import Message, SqsQueue
from trailguard.live import LivePart, apply_reload
from trailguard.observe import (
    ConfigReloaded,
    ConfigReloadRejected,
    MessageFailed,
    MessageFinished,
    MessageReceived,
    MessageReleased,
    PollFailed,
    PollSucceeded,
)
from trailguard.outputs.jsonl import JsonlWriter
from trailguard.outputs.sink import DetectionSink, recover_from_output
from trailguard.state.backends import StateStores, describe_backend, open_daemon_state
from trailguard.state.dedup import DedupStore
from trailguard.telemetry.http import HealthServer, stale_queue_reasons
from trailguard.telemetry.logging import configure_logging, get_logger
from trailguard.telemetry.metrics import Metrics
from trailguard.telemetry.observers import standard_observers
from trailguard.telemetry.sdnotify import Notifier
from trailguard.vocabulary import MessageOutcome

if TYPE_CHECKING:
    from trailguard.remediate.service import Remediation
    from trailguard.state.ledger import EventLedger
    from trailguard.state.policy_history import PolicyHistoryStore

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
    ready: bool = False


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: str | None = None,
        queues: Callable[[SqsSourceConfig], SqsQueue] | None = None,
        store: ObjectStore | None = None,
    ) -> None:
        """``queues`` and ``store`` replace SQS and S3 (fakes for benchmarks): when both are
        given, no AWS client is created."""
        self.config = config
        self.config_path = config_path
        self._queues = queues
        self._store = store
        self.state = DaemonState()
        self.metrics = Metrics.from_config(config)
        # The one observation path: every part reports its events here; metrics, the exit
        # summary (the tally) and the log lines are its readers.
        self.observer, self.tally = standard_observers(self.metrics)
        self.metrics.watch_in_flight(messages=lambda: self.state.in_flight)
        # unset: the decode workers (and anything else started later) must not inherit it.
        self.notifier = Notifier.from_environ(unset=True)
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self.started = asyncio.Event()  # set once polling starts
        self._signals = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._capacity = asyncio.Condition()
        self._max_messages_in_flight = max(10, 2 * config.limits.max_objects_in_flight)
        self._handler: MessageHandler | None = None
        self._remediation: Remediation | None = None
        self._sink: DetectionSink | None = None

    @property
    def remediation(self) -> Remediation | None:
        """The open :class:`~trailguard.remediate.service.Remediation`, or None."""
        return self._remediation

    # -- signals ------------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("daemon.forced_exit", signal=signum)
            os._exit(128 + (signum or signal.SIGTERM))
        log.info("daemon.stopping", signal=signum, in_flight=self.state.in_flight)
        self.notifier.stopping("draining")
        self.state.stopping = True
        self._stop.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)

    # -- run ----------------------------------------------------------------------------------

    async def run(self) -> int:
        self._install_signals()
        config = self.config
        if not config.sources.sqs:
            raise StartupError("no [[sources.sqs]] queue configured: nothing to watch")
        async with AsyncExitStack() as stack:
            make_queue, store = await self._open_aws(stack)
            state = await stack.enter_async_context(open_daemon_state(config))
            dedup = state.dedup
            assert dedup is not None
            writer = JsonlWriter(config.outputs.jsonl.path, fsync=config.outputs.jsonl.fsync)
            stack.callback(writer.close)
            recovered = await recover_from_output(config.outputs.jsonl.path, dedup)
            history, ledger = state.history, state.ledger
            remediation = await self._open_remediation(stack, history, ledger, writer, state)
            pool = DecodePool(config, config.limits.decode_worker_count())
            stack.callback(pool.shutdown)

            queues = [(make_queue(src), src) for src in config.sources.sqs]
            for queue, src in queues:
                await self._check_queue(queue, src)

            self._sink = DetectionSink(writer, dedup, observer=self.observer)
            self._handler = MessageHandler(
                detector=Detector.from_config(config),
                store=store,
                pool=pool,
                sink=self._sink,
                object_slots=asyncio.Semaphore(config.limits.max_objects_in_flight),
                budget=ByteBudget(config.limits.max_bytes_in_flight),
                observer=self.observer,
                history=history,
                ledger=ledger,
                remediation=remediation,
                keys=config.keys,
            )
            handler = self._handler
            self.metrics.watch_in_flight(
                objects=lambda: handler.objects_in_flight,
                held_bytes=lambda: handler.budget.in_use,
            )
            if config.http.enabled:
                server = HealthServer(
                    config.http.listen,
                    self.metrics,
                    self._not_ready_reasons,
                    before_scrape=remediation.sample_queue if remediation is not None else None,
                )
                await stack.enter_async_context(server)
                log.info("http.listening", url=server.url)

            async with asyncio.TaskGroup() as group:
                pollers = [
                    group.create_task(self._poll(queue, src))
                    for queue, src in queues
                    for _ in range(src.pollers)
                ]
                helpers = [
                    group.create_task(self._purge(dedup)),
                    group.create_task(self._reloader()),
                    group.create_task(self.notifier.run_watchdog()),
                ]
                if remediation is not None:
                    helpers.append(group.create_task(remediation.runner.run()))
                self.state.ready = True
                self.started.set()
                self.notifier.ready(f"watching {len(queues)} queue(s)")
                log.info(
                    "daemon.started",
                    version=__version__,
                    queues=[src.label for src in config.sources.sqs],
                    decode_workers=pool.workers,
                    decode_in=pool.mode,
                    decoder=SCANNER.describe(),
                    recovered_event_ids=recovered,
                    state=describe_backend(config),
                    history=history is not None,
                    remediation=config.remediation.mode if remediation is not None else "off",
                )
                await self._stop.wait()
                self.state.ready = False
                for task in pollers:
                    task.cancel()
                await self._drain()
                for task in helpers:
                    task.cancel()
        log.info("daemon.stopped", **self.tally.summary())
        return 0

    async def _open_aws(
        self, stack: AsyncExitStack
    ) -> tuple[Callable[[SqsSourceConfig], SqsQueue], ObjectStore]:
        """The queues and the object store: SQS and S3 clients, unless fakes were given."""
        if self._queues is not None and self._store is not None:
            return self._queues, self._store
        config = self.config
        session = make_session()
        kwargs = client_kwargs(check_region(session, config.aws.region), config.aws.endpoint_url)
        max_wait = max(src.wait_time_secs for src in config.sources.sqs)
        sqs = await stack.enter_async_context(
            session.create_client("sqs", config=client_config(read_timeout=max_wait + 15), **kwargs)
        )
        s3 = await stack.enter_async_context(
            session.create_client("s3", config=client_config(read_timeout=60), **kwargs)
        )
        return (lambda src: SqsQueue(sqs, src.queue_url)), S3ObjectStore(s3)

    async def _open_remediation(
        self,
        stack: AsyncExitStack,
        history: PolicyHistoryStore | None,
        ledger: EventLedger | None,
        writer: JsonlWriter,
        state: StateStores,
    ) -> Remediation | None:
        config = self.config
        if not config.remediation.policies:
            return None
        if history is None:
            log.warning(
                "remediation.disabled",
                reason="[history] enabled = false: nothing to restore from",
            )
            return None
        from trailguard.remediate.service import Remediation

        async def circuit_open(record: msgspec.Struct) -> None:
            # The breaker's own detection goes next to the others, durably.
            await asyncio.to_thread(writer.write_raw, msgspec.json.encode(record) + b"\n")

        remediation = await stack.enter_async_context(
            Remediation.open(
                config,
                history=history,
                ledger=ledger,
                state=state,
                on_circuit_open=circuit_open,
                observer=self.observer,
            )
        )
        self._remediation = remediation
        remediation.warn_if_unconfirmed()
        return remediation

    async def _check_queue(self, queue: SqsQueue, src: SqsSourceConfig) -> None:
        try:
            info = await queue.info()
        except OperationError as exc:
            raise StartupError(f"queue {src.label}: {exc.detail}") from exc
        if not info.has_redrive_policy:
            log.warning(
                "sqs.no_dead_letter_queue",
                queue=src.label,
                hint="set a RedrivePolicy: failed messages are left to it (see README)",
            )
        log.info(
            "sqs.queue_ready",
            queue=src.label,
            visibility_timeout_secs=src.visibility_timeout_secs,
            approximate_messages=info.approximate_messages,
        )

    # -- health -------------------------------------------------------------------------------

    def _not_ready_reasons(self) -> list[str]:
        reasons: list[str] = []
        if not self.state.ready:
            reasons.append("daemon: starting or stopping")
        reasons += stale_queue_reasons(
            self.state.last_poll_ok,
            [src.label for src in self.config.sources.sqs],
            self.config.http.ready_max_poll_age_secs,
        )
        if self._sink is not None and self._sink.last_failure is not None:
            reasons.append(f"output/state: last commit failed: {self._sink.last_failure}")
        return reasons

    # -- polling ------------------------------------------------------------------------------

    async def _wait_for_capacity(self) -> int:
        async with self._capacity:
            await self._capacity.wait_for(
                lambda: self.state.in_flight < self._max_messages_in_flight
            )
            return self._max_messages_in_flight - self.state.in_flight

    def _settings(self, src: SqsSourceConfig) -> HandlerSettings:
        return HandlerSettings(
            queue_label=src.label,
            visibility_timeout_secs=src.visibility_timeout_secs,
            heartbeat_interval_secs=src.heartbeat_interval_secs,
            max_object_bytes=self.config.limits.max_object_bytes,
            max_objects_per_message=self.config.limits.max_objects_per_message,
            buckets=frozenset(src.buckets),
            release_backoff_secs=src.release_backoff_secs,
        )

    async def _poll(self, queue: SqsQueue, src: SqsSourceConfig) -> None:
        failures = 0
        while not self._stop.is_set():
            room = await self._wait_for_capacity()
            try:
                messages = await queue.receive(
                    max_messages=min(src.max_messages, room),
                    wait_time_secs=src.wait_time_secs,
                    visibility_timeout_secs=src.visibility_timeout_secs,
                )
            except OperationError as exc:
                failures += 1
                delay = min(POLL_BACKOFF_CAP_SECS, 0.5 * 2**failures)
                self.observer.observe(PollFailed(src.label, exc, delay))
                await asyncio.sleep(delay)
                continue
            failures = 0
            now = time.time()
            self.state.last_poll_ok[src.label] = now
            self.observer.observe(PollSucceeded(src.label, now))
            settings = self._settings(src)
            for message in messages:
                self._spawn(queue, message, settings)

    def _spawn(self, queue: SqsQueue, message: Message, settings: HandlerSettings) -> None:
        self.state.in_flight += 1
        self.observer.observe(
            MessageReceived(settings.queue_label, message.message_id, message.sent_timestamp_ms)
        )
        task = asyncio.create_task(self._handle(queue, message, settings))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, queue: SqsQueue, message: Message, settings: HandlerSettings) -> None:
        assert self._handler is not None
        outcome: MessageOutcome = "failed"
        try:
            outcome = await self._handler.handle(queue, message, settings)
        except asyncio.CancelledError:
            # Shutdown deadline passed: give the message back now rather than after its timeout.
            outcome = "released"
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(queue, message, settings))
            raise
        except TrailguardError as exc:
            # Nothing was deleted: the message comes back after its visibility timeout.
            self.observer.observe(
                MessageFailed(
                    settings.queue_label,
                    message.message_id,
                    stage=getattr(exc, "stage", "state"),
                    error_type=type(exc).__name__,
                    error=str(exc),
                )
            )
        except Exception as exc:  # noqa: BLE001 - one bad message never takes the daemon down
            self.observer.observe(
                MessageFailed(
                    settings.queue_label,
                    message.message_id,
                    stage="other",
                    error_type=type(exc).__name__,
                    error=repr(exc),
                    crashed=True,
                    exc=exc,
                )
            )
        finally:
            self.state.in_flight -= 1
            self.observer.observe(
                MessageFinished(settings.queue_label, message.message_id, outcome)
            )
            async with self._capacity:
                self._capacity.notify_all()

    async def _release(self, queue: SqsQueue, message: Message, settings: HandlerSettings) -> None:
        await asyncio.wait_for(queue.set_visibility(message, 0), timeout=5)
        self.observer.observe(
            MessageReleased(
                settings.queue_label, message.message_id, "shutdown", 0, message.receive_count
            )
        )

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

    # -- background helpers ---------------------------------------------------------------------

    async def _purge(self, dedup: DedupStore) -> None:
        while True:
            with contextlib.suppress(TrailguardError):
                removed = await dedup.purge_expired()
                if removed:
                    log.info("state.dedup_purged", removed=removed)
            await asyncio.sleep(PURGE_INTERVAL_SECS)

    # -- live reload ------------------------------------------------------------------------------

    async def _reloader(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Re-read the config file; the running parts take what they read (see live.py).
        Returns whether the file was accepted."""
        if self.config_path is None:
            log.warning("config.reload_skipped", reason="no config file")
            return False
        self.notifier.reloading("reloading config")
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            self.observer.observe(ConfigReloadRejected(exc.file, exc.key_path, exc.reason))
            self.notifier.ready("reload rejected; running config kept")
            return False
        outcome = apply_reload(self.config, new, self._live_parts())
        self.config = outcome.config
        self.observer.observe(ConfigReloaded(outcome.applied, outcome.restart_required))
        self.notifier.ready("config reloaded")
        return True

    def _live_parts(self) -> list[LivePart]:
        """The running parts that take config sections live, and the sections they read."""
        stream = log_stream(self.config)

        def logging_section(section: LoggingConfig) -> tuple[str, ...]:
            configure_logging(section.level, section.format, stream=stream)
            return ()

        def metrics_rules(rules: Sequence[RuleEntry]) -> tuple[str, ...]:
            enabled = [rule for rule in resolve_rules(tuple(rules)) if rule.enabled]
            self.metrics.set_event_names(name for rule in enabled for name in rule.event_names)
            return ()

        parts = [
            LivePart("logging", ("logging",), logging_section),
            LivePart("metrics", ("rules",), metrics_rules),
        ]
        if self._handler is not None:
            parts.append(
                LivePart(
                    "detection",
                    ("rules", "suppress", "severity"),
                    self._handler.reconfigure_detection,
                )
            )
            parts.append(LivePart("keys", ("keys",), self._handler.reconfigure_keys))
        if self._remediation is not None:
            parts.append(LivePart("remediation", ("remediation",), self._remediation.reconfigure))
        return parts


def log_stream(config: Config) -> TextIO:
    """Logs go to stderr when detections go to stdout, so the two never mix."""
    return sys.stderr if config.outputs.jsonl.path == "-" else sys.stdout


async def run_daemon(config: Config, *, config_path: str | None = None) -> int:
    return await Daemon(config, config_path=config_path).run()


__all__ = ["Daemon", "StartupError", "run_daemon"]
