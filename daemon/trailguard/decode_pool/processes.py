"""The decode worker processes, driven from the event loop through their own pipes.

Used when decoding holds the GIL (no C scanner, or ``decode_in = "processes"`` to isolate it):
the compressed bytes go out raw, the outcome comes back pickled, and no thread of the daemon
wakes up in between (ProcessPoolExecutor's feeder and manager threads cost the daemon ~0.6 ms of
CPU per object, as much as a fifth of decoding it).  A worker that dies is replaced; the objects
it held fail with :class:`~trailguard.decode_pool.common.DecodePoolBroken`.  The pool uses the
``forkserver`` start method: forking the daemon itself, with its running event loop and helper
threads, is not safe.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import itertools
import multiprocessing
import os
import pickle
import select
import signal
import threading
import time
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from typing import Any

from trailguard.config import Config
from trailguard.decode_pool.common import DecodePoolBroken, Future, outcome
from trailguard.detect.detection import Source
from trailguard.detect.process import Detector

__all__ = ["ProcessEngine"]

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


def _init_worker(config: Config, parent_pid: int) -> None:
    global _detector  # one Detector per worker process, by design
    # Signals are the parent's business: Ctrl-C reaches the whole process group and systemd
    # signals the whole cgroup, but in-flight objects must finish during the drain.  Workers
    # exit when the parent shuts the pool down, or when the parent is gone (even SIGKILLed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with(parent_pid)
    _detector = Detector.from_config(config)


# Frames a worker may hold at once: the one it works on and the next, already in its pipe, so
# that it never waits for the event loop between two.  A frame carries one object, or up to
# _BATCH when objects queue up (a backlog): one write, one wake-up and one pickle per frame
# instead of per object, which is most of what the pool costs the daemon's CPU.
_DEPTH = 2
_BATCH = 4
_F_SETPIPE_SZ = 1031  # Linux: a pipe that holds a whole object takes one write, not several
_PIPE_BYTES = 1 << 20
_IOV_MAX = 64  # pieces per writev (Linux allows 1024)


def _read_exact(fd: int, size: int) -> bytes:
    """``size`` bytes from a pipe: one read (one copy) when they are there, as they mostly are."""
    data = os.read(fd, size)
    if len(data) == size:
        return data
    if not data:
        raise EOFError
    buffer = bytearray(data)
    while len(buffer) < size:
        chunk = os.read(fd, size - len(buffer))
        if not chunk:
            raise EOFError
        buffer += chunk
    return bytes(buffer)


def _frame_header(size: int) -> bytes:
    """multiprocessing.Connection's framing: a 4-byte length, or -1 and 8 bytes."""
    if size <= 0x7FFFFFFF:
        return size.to_bytes(4, "big", signed=True)
    return (-1).to_bytes(4, "big", signed=True) + size.to_bytes(8, "big")


def _worker_main(config: Config, parent_pid: int, tasks: Connection, results: Connection) -> None:
    """A decode worker: frames of objects in from ``tasks``, one frame of replies (a pickled
    list of (ok, outcome or exception)) out to ``results`` per frame in; it exits at the end of
    ``tasks`` (the pool closed it, or the daemon is gone).

    A frame (see :meth:`_Worker.send`), in Connection's framing: the number of objects, then per
    object the 4-byte length of its pickled (source, name, key, path), the 8-byte length of its
    bytes, those two.  Read with plain ``os.read`` (one copy; Connection.recv_bytes copies
    twice)."""
    _init_worker(config, parent_pid)
    fd_in, fd_out = tasks.fileno(), results.fileno()
    while True:
        try:
            size = int.from_bytes(_read_exact(fd_in, 4), "big", signed=True)
            if size == -1:
                size = int.from_bytes(_read_exact(fd_in, 8), "big")
            frame = memoryview(_read_exact(fd_in, size))
        except (EOFError, OSError):
            return
        replies = [_reply(entry) for entry in _entries(frame)]
        del frame
        try:
            blob = pickle.dumps(replies, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: each on its own
            blob = pickle.dumps([_picklable(reply) for reply in replies])
        try:
            _write_all(fd_out, _frame_header(len(blob)) + blob)
        except OSError:
            return


def _entries(frame: memoryview) -> list[tuple[memoryview, memoryview]]:
    """The (pickled meta, bytes) of each object in a frame."""
    count, at = int.from_bytes(frame[:4], "big"), 4
    entries: list[tuple[memoryview, memoryview]] = []
    for _ in range(count):
        meta_size = int.from_bytes(frame[at : at + 4], "big")
        data_size = int.from_bytes(frame[at + 4 : at + 12], "big")
        start = at + 12
        end = start + meta_size
        entries.append((frame[start:end], frame[end : end + data_size]))
        at = end + data_size
    return entries


def _reply(entry: tuple[memoryview, memoryview]) -> tuple[bool, object]:
    meta, data = entry
    assert _detector is not None, "decode worker not initialised"
    try:
        # pickle between the daemon and its own workers, over private pipes (as
        # ProcessPoolExecutor does): the bytes never come from outside
        source, name, key, path = pickle.loads(meta)  # noqa: S301
    except Exception as exc:  # noqa: BLE001 - the caller gets it, as from run_in_executor
        return False, exc
    return outcome(_detector, data, path, source, name, key)


def _picklable(reply: tuple[bool, object]) -> tuple[bool, object]:
    try:
        pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - the caller gets what went wrong instead
        return False, RuntimeError(f"decode worker: {reply[1]!r} ({exc})")
    return reply


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Frames(asyncio.Protocol):
    """Reads multiprocessing.Connection frames (a 4-byte length, or -1 and 8 bytes) off a pipe."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker
        self._buffer = bytearray()

    def data_received(self, data: bytes | bytearray) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            size = int.from_bytes(buffer[:4], "big", signed=True)
            start = 4
            if size == -1:
                if len(buffer) < 12:
                    return
                size, start = int.from_bytes(buffer[4:12], "big"), 12
            if len(buffer) < start + size:
                return
            payload = bytes(buffer[start : start + size])
            del buffer[: start + size]
            self._worker.done(payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self._worker.lost()


class _Worker:
    """One worker process and its two pipes, driven from the event loop (no helper threads)."""

    def __init__(self, pool: ProcessEngine, config: Config) -> None:
        self.pool = pool
        context = multiprocessing.get_context("forkserver")
        task_reader, task_writer = os.pipe()
        result_reader, result_writer = os.pipe()
        # The worker's ends as Connections (recv_bytes/send_bytes framing), the daemon's as plain
        # files that asyncio's pipe transports own and close.
        worker_ends = (
            Connection(task_reader, writable=False),
            Connection(result_writer, readable=False),
        )
        self.process = context.Process(
            target=_worker_main,
            args=(config, os.getpid(), *worker_ends),
            name="trailguard-decode",
            daemon=True,
        )
        try:
            self.process.start()
        finally:
            for end in worker_ends:
                end.close()
        with contextlib.suppress(OSError):
            fcntl.fcntl(task_writer, _F_SETPIPE_SZ, _PIPE_BYTES)
        os.set_blocking(task_writer, False)
        self._tasks: int | None = task_writer  # written from the loop as it drains, no copies
        self._out: collections.deque[memoryview] = collections.deque()
        self._results = os.fdopen(result_reader, "rb", buffering=0)
        # the futures of each frame in flight, oldest first
        self.pending: collections.deque[list[Future]] = collections.deque()
        self.retiring = False
        self._reader: asyncio.BaseTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting = False  # for the pipe to drain (add_writer)

    @property
    def ready(self) -> bool:
        return self._reader is not None and self._tasks is not None and not self.retiring

    async def connect(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reader, _ = await loop.connect_read_pipe(lambda: _Frames(self), self._results)

    def send(self, batch: list[tuple[bytes, bytes | bytearray | memoryview, Future]]) -> None:
        """One frame for ``batch`` (see :func:`_worker_main`), written with one writev as the
        pipe takes it; the objects' bytes are not copied here."""
        size = 4 + sum(12 + len(meta) + len(data) for meta, data, _ in batch)
        head = _frame_header(size) + len(batch).to_bytes(4, "big")
        for meta, data, _ in batch:
            head += len(meta).to_bytes(4, "big") + len(data).to_bytes(8, "big") + meta
            self._out.append(memoryview(head))
            head = b""
            if len(data):
                self._out.append(memoryview(data).cast("B"))
        self.pending.append([future for _, _, future in batch])
        self._flush()

    def _flush(self) -> None:
        """Write what the pipe takes now; the rest when it drains (the bytes are not copied)."""
        out, fd = self._out, self._tasks
        while out and fd is not None:
            try:
                written = os.writev(fd, list(itertools.islice(out, _IOV_MAX)))
            except BlockingIOError:
                written = 0
            except OSError:  # the worker is gone: its result pipe says so, lost() follows
                out.clear()
                break
            while written and out:
                head = out[0]
                if written >= len(head):
                    written -= len(head)
                    out.popleft()
                else:
                    out[0] = head[written:]
                    written = 0
            if not out:
                break
            if not self._waiting and self._loop is not None:
                self._loop.add_writer(fd, self._flush)
                self._waiting = True
            return
        if self._waiting and self._loop is not None and fd is not None:
            self._loop.remove_writer(fd)
        self._waiting = False

    def done(self, payload: bytes) -> None:
        futures = self.pending.popleft()
        try:
            replies = pickle.loads(payload)  # noqa: S301 - from our own worker
        except Exception as exc:  # noqa: BLE001 - a result that does not unpickle
            replies = [(False, exc)] * len(futures)
        for future, reply in zip(futures, replies, strict=True):
            if not future.done():
                future.set_result(reply)
        if self.retiring and not self.pending:
            self.close()
        self.pool._dispatch_soon()

    def lost(self) -> None:
        """The worker's result pipe closed: it exited (or was closed by the pool)."""
        while self.pending:
            for future in self.pending.popleft():
                if not future.done():
                    future.set_exception(
                        DecodePoolBroken(
                            f"decode worker {self.process.pid} exited "
                            f"(exit code {self.process.exitcode}) while decoding an object"
                        )
                    )
        self.close()
        self.pool._replace(self)

    def close(self) -> None:
        """No more objects: the worker finishes those it holds, then reads EOF and exits."""
        self.retiring = True
        fd, self._tasks = self._tasks, None
        if fd is None:
            return
        if self._waiting and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_writer(fd)
        self._waiting = False
        self._out.clear()
        os.close(fd)
        if self._reader is None:  # never attached: no result can come
            self._results.close()

    def reap(self, timeout: float) -> None:
        """Wait for the process to exit (killing it after ``timeout``); any thread may call it."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)

    def stop(self, timeout: float) -> None:
        self.close()
        self.reap(timeout)
        if self._reader is not None and self._loop is not None and not self._loop.is_closed():
            self._reader.close()
        self._results.close()


class ProcessEngine:
    """``count`` worker processes and the queue of objects waiting for a free one."""

    def __init__(self, config: Config, count: int) -> None:
        self.count = count
        self._config = config
        self._closed = False
        self._dispatching = False
        self._queue: collections.deque[tuple[bytes, bytes | bytearray | memoryview, Future]] = (
            collections.deque()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers = [_Worker(self, config) for _ in range(count)]

    async def submit(
        self, data: bytes | bytearray, path: str | None, source: Source, name: str, key: str | None
    ) -> Future:
        """Queue one object for the least busy worker; the future its outcome will be set on."""
        loop = asyncio.get_running_loop()
        future: Future = loop.create_future()
        if self._connected is None:  # the first object: attach the workers' pipes
            self._loop = loop
            self._connected = loop.create_task(self._connect_all())
        await self._connected
        meta = pickle.dumps((source, name, key, path), protocol=pickle.HIGHEST_PROTOCOL)
        self._queue.append((meta, data, future))
        self._dispatch_soon()
        return future

    async def _connect_all(self) -> None:
        assert self._loop is not None
        for worker in self._workers:
            await worker.connect(self._loop)

    def _dispatch_soon(self) -> None:
        """Dispatch once the callbacks ready now have run: the objects their callers submit on
        the way (the results of one frame let as many new objects in) share frames."""
        if not self._dispatching and self._loop is not None:
            self._dispatching = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Queued objects to the least busy ready workers, up to ``_DEPTH`` frames each; a frame
        takes a fair share of the queue (at most ``_BATCH``), so one object alone goes at once
        and a backlog is spread over every free slot (a plain loop: this runs twice per frame,
        in the daemon's only thread)."""
        self._dispatching = False
        queue = self._queue
        while queue:
            worker = None
            least = _DEPTH
            free = 0
            for candidate in self._workers:
                if candidate.ready and len(candidate.pending) < _DEPTH:
                    free += _DEPTH - len(candidate.pending)
                    if len(candidate.pending) < least:
                        worker, least = candidate, len(candidate.pending)
            if worker is None:
                return
            size = min(_BATCH, -(-len(queue) // free))
            batch: list[tuple[bytes, bytes | bytearray | memoryview, Future]] = []
            while queue and len(batch) < size:
                entry = queue.popleft()
                if not entry[2].done():  # the caller may have been cancelled meanwhile
                    batch.append(entry)
            if batch:
                worker.send(batch)

    def _replace(self, worker: _Worker) -> None:
        """A worker exited: a new one takes its place (unless it was retired or shut down)."""
        if worker in self._workers and not self._closed:
            index = self._workers.index(worker)
            fresh = _Worker(self, self._config)
            self._workers[index] = fresh
            threading.Thread(target=worker.reap, args=(5.0,), daemon=True).start()
            if self._loop is not None:
                self._spawn(self._start(fresh))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, worker: _Worker) -> None:
        assert self._loop is not None
        await worker.connect(self._loop)
        self._dispatch()

    def reconfigure(self, config: Config) -> None:
        """Live reload: new objects go to workers built from ``config``; objects already in the
        old workers finish there, then the old workers exit."""
        self._config = config
        old_workers, self._workers = (
            self._workers,
            [_Worker(self, config) for _ in range(self.count)],
        )
        for worker in old_workers:
            worker.retiring = True
            if not worker.pending:
                worker.close()
            threading.Thread(
                target=worker.process.join, name="trailguard-pool-retire", daemon=True
            ).start()
        if self._loop is not None:
            for worker in self._workers:
                self._spawn(self._start(worker))

    def shutdown(self) -> None:
        """Stop the workers (after the objects they hold); objects still queued are cancelled."""
        self._closed = True
        while self._queue:
            *_, future = self._queue.popleft()
            future.cancel()
        for worker in self._workers:
            worker.stop(timeout=30.0)
