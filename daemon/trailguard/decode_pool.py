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

import asyncio
import collections
import contextlib
import fcntl
import itertools
import multiprocessing
import os
import pickle
import queue
import select
import signal
import stat
import threading
import time
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from typing import Any

from trailguard.config import Config
from trailguard.detect.decode import gil_free
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


def _init_worker(config: Config, parent_pid: int) -> None:
    global _detector  # one Detector per worker process, by design
    # Signals are the parent's business: Ctrl-C reaches the whole process group and systemd
    # signals the whole cgroup, but in-flight objects must finish during the drain.  Workers
    # exit when the parent shuts the pool down, or when the parent is gone (even SIGKILLed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with(parent_pid)
    _detector = Detector.from_config(config)


def decode_mode(config: Config) -> str:
    """Where a pool built from ``config`` decodes: "threads" or "processes" (``[limits]
    decode_in``; "auto" is threads when decoding runs without the GIL)."""
    mode = config.limits.decode_in
    if mode == "auto":
        return "threads" if gil_free() else "processes"
    return mode


def _outcome(
    detector: Detector,
    data: bytes | bytearray | memoryview,
    path: str | None,
    source: Source,
    name: str,
    key: str | None,
) -> tuple[bool, object]:
    """(True, the object's FileOutcome) or (False, what decoding it raised): in a decode thread
    or a worker process alike, the caller gets the exception as itself."""
    try:
        data = _read(path, detector.limits.max_input_bytes) if path is not None else data
        return True, detector.process_file(data, source=source, name=name, key=key)
    except Exception as exc:  # noqa: BLE001 - handed to the caller, not swallowed
        return False, exc


def _read(path: str, limit: int) -> bytes:
    """A local file for :meth:`DecodePool.process_path`, read where it is decoded: at most one
    byte past the limit (decode_file then refuses it by its size, as it does an S3 object)."""
    with open(path, "rb") as handle:
        return handle.read(limit + 1)


_Future = asyncio.Future[tuple[bool, object]]


# (the caller's loop, its future, the object's bytes or a local path, source, name, key)
_Job = tuple[
    asyncio.AbstractEventLoop, _Future, bytes | bytearray, str | None, Source, str, str | None
]


# A decode thread with a backlog behind it keeps up to _HOLD outcomes while it takes the next
# object, if that object is small (_HOLD_UNDER bytes): the event loop then wakes once per few
# objects, not per object.  See _Threads.
_HOLD = 8
_HOLD_UNDER = 1 << 20

_Done = tuple[asyncio.AbstractEventLoop, _Future, bool, object]


class _Threads:
    """The decode threads of one configuration: a queue in, outcomes handed to the event loop.

    Hand-written rather than ``loop.run_in_executor`` because that costs the event loop's
    thread ~90 us per object, ~7 % of decoding a 1 MB file, taken from the cores that decode:
    ThreadPoolExecutor wraps each object in a concurrent Future (with a Condition) that
    asyncio chains to a Future of its own, and it wakes the loop once per object.  Here:

    - a thread hands over plain tuples, and wakes the loop only if no wake-up is on its way;
    - under a backlog (every other thread has an object queued too), a thread keeps its
      outcomes while it decodes its next object -- if that one is small -- and hands them over
      together: one wake-up per several objects.  Nobody starves meanwhile (the queue is not
      empty), and an outcome waits at most for one small object (~10 ms for 1 MB gzip).  With
      no backlog, every outcome goes at once.

    Together these cut the loop's CPU per object from ~90 to ~45 us (bench/README.md), CPU that
    on 2 cores is taken from decoding.  The threads are daemon threads; :meth:`stop` ends and
    joins them.
    """

    def __init__(self, detector: Detector, count: int) -> None:
        self.detector = detector
        self._count = count
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done: dict[asyncio.AbstractEventLoop, list[tuple[_Future, bool, object]]] = {}
        self._threads = [
            threading.Thread(target=self._run, name=f"trailguard-decode-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: _Job) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        detector = self.detector
        held: list[_Done] = []
        job = self._jobs.get()
        while job is not None:
            loop, future, data, path, source, name, key = job
            del job
            if not future.cancelled():  # (its caller may have given up while it queued)
                held.append((loop, future, *_outcome(detector, data, path, source, name, key)))
            del data
            job = self._next(held)
        self._hand_over(held)

    def _next(self, held: list[_Done]) -> _Job | None:
        """The next job; the outcomes ``held`` are handed over first unless they may wait for
        it (see the class docstring)."""
        if held:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                self._hand_over(held)
            else:
                if not (
                    job is not None
                    and len(held) < _HOLD
                    and self._jobs.qsize() >= self._count - 1
                    and _small(job)
                ):
                    self._hand_over(held)
                return job
        return self._jobs.get()

    def _hand_over(self, held: list[_Done]) -> None:
        """To each outcome's loop; a loop with a wake-up on its way already takes them then."""
        wake: list[asyncio.AbstractEventLoop] = []
        with self._lock:
            for loop, future, ok, outcome in held:
                waiting = self._done.get(loop)
                if waiting is None:
                    waiting = self._done[loop] = []
                    wake.append(loop)
                waiting.append((future, ok, outcome))
        held.clear()
        for loop in wake:
            try:
                loop.call_soon_threadsafe(self._wake, loop)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                with self._lock:
                    self._done.pop(loop, None)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            done = self._done.pop(loop, [])
        for future, ok, outcome in done:
            if not future.done():
                future.set_result((ok, outcome))

    def stop(self, *, cancel: bool) -> None:
        """End the threads once the queued objects are done (``cancel``: drop those first, and
        cancel their callers' futures) and join them."""
        if cancel:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    with contextlib.suppress(RuntimeError):  # its loop is closed already
                        job[0].call_soon_threadsafe(job[1].cancel)
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()


def _small(job: _Job) -> bool:
    """Whether decoding ``job`` is quick enough for outcomes to wait for it."""
    path = job[3]
    if path is None:
        return len(job[2]) <= _HOLD_UNDER
    try:
        info = os.stat(path)
    except OSError:
        return False  # its error comes at once anyway; no reason to wait
    return stat.S_ISREG(info.st_mode) and info.st_size <= _HOLD_UNDER  # (a FIFO may block)


class DecodePoolBroken(RuntimeError):
    """A decode worker exited while it held an object (killed, out of memory, ...)."""


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
    return _outcome(_detector, data, path, source, name, key)


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

    def __init__(self, pool: DecodePool, config: Config) -> None:
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
        self.pending: collections.deque[list[_Future]] = collections.deque()
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

    def send(self, batch: list[tuple[bytes, bytes | bytearray | memoryview, _Future]]) -> None:
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


class DecodePool:
    """``workers`` > 0: that many workers; 0: one per CPU; -1: one thread (tests, tiny setups).

    Threads or processes as ``[limits] decode_in`` says ("auto": threads when decoding runs
    without the GIL).  Threads share one :class:`Detector` (read-only) and take the objects
    from one queue (:class:`_Threads`).  Worker processes are driven from the event loop through
    their pipes (asyncio transports): the compressed bytes go out raw, the outcome comes back
    pickled, and no thread of the daemon wakes up in between (ProcessPoolExecutor's feeder and
    manager threads cost the daemon ~0.6 ms of CPU per object, as much as a fifth of decoding
    it).  A worker process that dies is replaced; the objects it held fail with
    :class:`DecodePoolBroken`.
    """

    def __init__(self, config: Config, workers: int = 0) -> None:
        count = workers if workers > 0 else (os.cpu_count() or 1)
        self.threads = workers < 0 or decode_mode(config) == "threads"
        self.workers = 1 if workers < 0 else count
        self._config = config
        self._closed = False
        self._dispatching = False
        self._queue: collections.deque[
            tuple[bytes, bytes | bytearray | memoryview, asyncio.Future[tuple[bool, object]]]
        ] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads: _Threads | None = None
        self._workers: list[_Worker] = []
        self._retired: list[_Worker] = []
        if self.threads:
            self._threads = _Threads(Detector.from_config(config), self.workers)
        else:
            self._workers = [_Worker(self, config) for _ in range(count)]

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
        loop = asyncio.get_running_loop()
        if self._closed:
            raise DecodePoolBroken("the decode pool is shut down")
        future: _Future = loop.create_future()
        if self._threads is not None:
            self._threads.submit((loop, future, data, path, source, name, key))
        else:
            if self._connected is None:  # the first object: attach the workers' pipes
                self._loop = loop
                self._connected = loop.create_task(self._connect_all())
            await self._connected
            meta = pickle.dumps((source, name, key, path), protocol=pickle.HIGHEST_PROTOCOL)
            self._queue.append((meta, data, future))
            self._dispatch_soon()
        ok, value = await future
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        assert isinstance(value, FileOutcome)
        return value

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
            batch: list[tuple[bytes, bytes | bytearray | memoryview, _Future]] = []
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
        if self._threads is not None:
            old = self._threads
            self._threads = _Threads(Detector.from_config(config), self.workers)
            threading.Thread(
                target=old.stop,
                kwargs={"cancel": False},
                name="trailguard-pool-retire",
                daemon=True,
            ).start()
            return
        old_workers, self._workers = (
            self._workers,
            [_Worker(self, config) for _ in range(self.workers)],
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
        if self._threads is not None:
            self._threads.stop(cancel=True)
            return
        for worker in self._workers:
            worker.stop(timeout=30.0)
