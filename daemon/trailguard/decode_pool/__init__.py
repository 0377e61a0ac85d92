"""Decoding off the event loop, on every core.

Decompression and decoding are CPU-bound.  With trailguard's C scanner and libdeflate bound to
it (:func:`trailguard.detect.decode.gil_free`), inflating and scanning a file run without the
GIL -- ~95 % of its CPU -- so the pool is threads (``[limits] decode_in = "auto"``): no pipes, no
pickling, no second copy of the modules in memory.  Otherwise (no compiler, no AVX2, or
``decode_in = "processes"``) the work holds the GIL (msgspec, the `deflate` package) and runs in
worker processes: the event loop only moves bytes, and heartbeats, polling and health stay live
whatever the load.  Each worker process builds its own :class:`Detector` from the config once,
at start-up; only the object's bytes go in and its (small) outcome comes back.

The pool uses the ``forkserver`` start method: forking the daemon itself, with its running event
loop and helper threads, is not safe.

Each worker has two pipes of its own (objects in, outcomes out) that the event loop drives as
asyncio transports: no helper thread in the daemon wakes up per object.  A worker exits at the
end of its object pipe (the pool closed it), and it also watches the daemon's process: a worker
busy with a big object, or the forkserver (which holds its own "alive" pipe), would otherwise
outlive a SIGKILLed daemon.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from trailguard.config import Config, RuleEntry, SeverityConfig, Suppression
from trailguard.decode_pool.common import DecodePoolBroken
from trailguard.decode_pool.threads import ThreadEngine
from trailguard.detect.decode import gil_free
from trailguard.detect.detection import Source
from trailguard.detect.process import Detector, FileOutcome

if TYPE_CHECKING:
    # multiprocessing is imported only by a pool that uses it (a replay of a few files asks
    # decode_mode() and starts no pool at all)
    from trailguard.decode_pool.processes import ProcessEngine

__all__ = ["DecodePool", "DecodePoolBroken", "decode_mode"]


def decode_mode(config: Config) -> str:
    """Where a pool built from ``config`` decodes: "threads" or "processes" (``[limits]
    decode_in``; "auto" is threads when decoding runs without the GIL)."""
    mode = config.limits.decode_in
    if mode == "auto":
        return "threads" if gil_free() else "processes"
    return mode


class DecodePool:
    """``workers`` > 0: that many workers; 0: one per CPU; -1: one thread (tests, tiny setups).

    Threads or processes as ``[limits] decode_in`` says ("auto": threads when decoding runs
    without the GIL): :class:`~trailguard.decode_pool.threads.ThreadEngine` or
    :class:`~trailguard.decode_pool.processes.ProcessEngine`, behind the same calls.
    """

    def __init__(self, config: Config, workers: int = 0) -> None:
        count = workers if workers > 0 else (os.cpu_count() or 1)
        self.threads = workers < 0 or decode_mode(config) == "threads"
        self.workers = 1 if workers < 0 else count
        self._closed = False
        self._config = config
        self._engine: ThreadEngine | ProcessEngine
        if self.threads:
            self._engine = ThreadEngine(Detector.from_config(config), self.workers)
        else:
            from trailguard.decode_pool.processes import ProcessEngine

            self._engine = ProcessEngine(config, count)

    @property
    def mode(self) -> str:
        """For logs: "threads" or "processes"."""
        return "threads" if self.threads else "processes"

    async def process(
        self, data: bytes | bytearray, *, source: Source, name: str, key: str | None
    ) -> FileOutcome:
        """Decode an object's bytes in a worker."""
        return await self._submit(data, None, source, name, key)

    async def process_path(
        self, path: str, *, source: Source, name: str, key: str | None
    ) -> FileOutcome:
        """Decode a local file in a worker, which reads it itself (``trailguard replay``: the
        bytes never pass through this process).  An unreadable file raises OSError."""
        return await self._submit(b"", path, source, name, key)

    async def _submit(
        self, data: bytes | bytearray, path: str | None, source: Source, name: str, key: str | None
    ) -> FileOutcome:
        if self._closed:
            raise DecodePoolBroken("the decode pool is shut down")
        future = await self._engine.submit(data, path, source, name, key)
        ok, value = await future
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        assert isinstance(value, FileOutcome)
        return value

    def reconfigure(
        self, rules: Sequence[RuleEntry], suppress: Sequence[Suppression], severity: SeverityConfig
    ) -> None:
        """Live reload of the rules: new objects go to workers built with them; objects already
        given to the old ones finish there."""
        config = msgspec.structs.replace(
            self._config, rules=tuple(rules), suppress=tuple(suppress), severity=severity
        )
        self._config = config
        if isinstance(self._engine, ThreadEngine):
            old = self._engine
            self._engine = ThreadEngine(Detector.from_config(config), self.workers)
            old.retire()
        else:
            self._engine.reconfigure(config)

    def shutdown(self) -> None:
        """Stop the workers (after the objects they hold); objects still queued are cancelled."""
        self._closed = True
        if isinstance(self._engine, ThreadEngine):
            self._engine.stop(cancel=True)
        else:
            self._engine.shutdown()
