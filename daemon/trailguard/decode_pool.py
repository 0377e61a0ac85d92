"""Decoding off the event loop, on every core.

Decompression and decoding are CPU-bound (libdeflate + msgspec release nothing useful to threads
at this grain), so they run in a process pool: the event loop only moves bytes, and heartbeats,
polling and health stay live whatever the load.  Each worker builds its own :class:`Detector`
from the config once, at start-up; only the object's bytes go in and its (small) outcome comes
back.

The pool uses the ``forkserver`` start method: forking the daemon itself, with its running event
loop and helper threads, is not safe.

Workers watch the daemon's process and exit when it is gone.  Their pipes do not tell them: with
``forkserver`` every worker holds both ends of its call queue and the forkserver's "alive" pipe,
so after a SIGKILL of the daemon the workers and the forkserver would otherwise wait forever.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import select
import signal
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from trailguard.config import Config
from trailguard.detect.detection import Source
from trailguard.detect.process import Detector, FileOutcome

_detector: Detector | None = None


def _exit_with(parent_pid: int) -> None:
    """Exit this worker process as soon as ``parent_pid`` (the daemon) has exited."""
    try:
        pidfd: int | None = os.pidfd_open(parent_pid)  # Linux >= 5.3: no pid-reuse race
    except (AttributeError, OSError):
        pidfd = None

    def watch() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])  # readable once the process has exited
        else:
            while True:
                try:
                    os.kill(parent_pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="trailguard-parent-watch", daemon=True).start()


def _init_worker(config: Config, parent_pid: int | None = None) -> None:
    global _detector  # one Detector per worker process, by design
    # Signals are the parent's business: Ctrl-C reaches the whole process group and systemd
    # signals the whole cgroup, but in-flight objects must finish during the drain.  Workers
    # exit when the parent shuts the pool down, or when the parent is gone (even SIGKILLed).
    if parent_pid is not None and parent_pid != os.getpid():  # a worker process, not a thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _exit_with(parent_pid)
    _detector = Detector.from_config(config)


def _process(data: bytes, source: Source, name: str, key: str | None) -> FileOutcome:
    assert _detector is not None, "decode worker not initialised"
    return _detector.process_file(data, source=source, name=name, key=key)


class DecodePool:
    """``workers`` > 0: that many processes; 0: one per CPU; -1: a thread (tests, tiny setups)."""

    def __init__(self, config: Config, workers: int = 0) -> None:
        count = workers if workers > 0 else (os.cpu_count() or 1)
        self._threaded = workers < 0
        self.workers = 1 if self._threaded else count
        self._executor = self._make_executor(config)

    def _make_executor(self, config: Config) -> Executor:
        if self._threaded:
            return ThreadPoolExecutor(max_workers=1, initializer=_init_worker, initargs=(config,))
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_init_worker,
            initargs=(config, os.getpid()),
        )

    async def process(
        self, data: bytes, *, source: Source, name: str, key: str | None
    ) -> FileOutcome:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _process, data, source, name, key)

    def reconfigure(self, config: Config) -> None:
        """Live reload: new objects go to workers built from ``config``; objects already in the
        old workers finish there, then the old workers exit."""
        old, self._executor = self._executor, self._make_executor(config)
        threading.Thread(
            target=old.shutdown, kwargs={"wait": True}, name="trailguard-pool-retire", daemon=True
        ).start()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
