"""The decode threads: one queue of objects in, outcomes handed to the event loop in groups.

Used when decoding runs without the GIL (the C scanner with libdeflate bound to it): threads
share one read-only :class:`~trailguard.detect.process.Detector`, with no pipes and no pickling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import stat
import threading

from trailguard.decode_pool.common import Future, Job, outcome
from trailguard.detect.detection import Source
from trailguard.detect.process import Detector

__all__ = ["ThreadEngine"]

# A decode thread with a backlog behind it keeps up to _HOLD outcomes while it takes the next
# object, if that object is small (_HOLD_UNDER bytes): the event loop then wakes once per few
# objects, not per object.  See ThreadEngine.
_HOLD = 8
_HOLD_UNDER = 1 << 20

_Done = tuple[asyncio.AbstractEventLoop, Future, bool, object]


class ThreadEngine:
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
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done: dict[asyncio.AbstractEventLoop, list[tuple[Future, bool, object]]] = {}
        self._threads = [
            threading.Thread(target=self._run, name=f"trailguard-decode-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    async def submit(
        self, data: bytes | bytearray, path: str | None, source: Source, name: str, key: str | None
    ) -> Future:
        """Queue one object; the future its outcome will be set on."""
        loop = asyncio.get_running_loop()
        future: Future = loop.create_future()
        self._jobs.put((loop, future, data, path, source, name, key))
        return future

    def retire(self) -> None:
        """Finish the queued objects in the background, then end (a live reload's old engine)."""
        threading.Thread(
            target=self.stop, kwargs={"cancel": False}, name="trailguard-pool-retire", daemon=True
        ).start()

    def _run(self) -> None:
        detector = self.detector
        held: list[_Done] = []
        job = self._jobs.get()
        while job is not None:
            loop, future, data, path, source, name, key = job
            del job
            if not future.cancelled():  # (its caller may have given up while it queued)
                held.append((loop, future, *outcome(detector, data, path, source, name, key)))
            del data
            job = self._next(held)
        self._hand_over(held)

    def _next(self, held: list[_Done]) -> Job | None:
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
        for future, ok, value in done:
            if not future.done():
                future.set_result((ok, value))

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


def _small(job: Job) -> bool:
    """Whether decoding ``job`` is quick enough for outcomes to wait for it."""
    path = job[3]
    if path is None:
        return len(job[2]) <= _HOLD_UNDER
    try:
        info = os.stat(path)
    except OSError:
        return False  # its error comes at once anyway; no reason to wait
    return stat.S_ISREG(info.st_mode) and info.st_size <= _HOLD_UNDER  # (a FIFO may block)
