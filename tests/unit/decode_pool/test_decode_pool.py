"""DecodePool: worker processes driven through their pipes from the event loop."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import time
from typing import Any

import msgspec
import pytest

from trailguard.config import Config, parse_config
from trailguard.decode_pool import DecodePool, DecodePoolBroken, processes, threads
from trailguard.detect.detection import S3Source
from trailguard.errors import DecodeError


def record(i: int, name: str = "DeleteRolePolicy") -> dict[str, Any]:
    return {
        "eventVersion": "1.09",
        "eventTime": "2026-11-01T12:00:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "eventID": f"6b1f1e9e-0000-4000-8000-{i:012d}",
        "recipientAccountId": "123456789012",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/x"},
        "requestParameters": {"roleName": "app", "policyName": "inline"},
    }


def blob(*records: dict[str, Any]) -> bytes:
    return gzip.compress(json.dumps({"Records": list(records)}).encode())


async def run(pool: DecodePool, data: bytes, key: str = "k") -> Any:
    return await pool.process(data, source=S3Source(bucket="b", key=key), name=key, key=None)


def sizes_passed_to(monkeypatch: pytest.MonkeyPatch, owner: type, method: str) -> list[int]:
    """Spy on ``owner.method(self, items)``: the len() of each call's items, in order."""
    sizes: list[int] = []
    real = getattr(owner, method)

    def spy(self: Any, items: list[Any]) -> None:
        sizes.append(len(items))
        real(self, items)

    monkeypatch.setattr(owner, method, spy)
    return sizes


def mode(decode_in: str, rules: str = "") -> Config:
    return parse_config(f'{rules}[limits]\ndecode_in = "{decode_in}"\n', file="test.toml")


@pytest.fixture(params=["processes", "threads"])
async def pool(request: pytest.FixtureRequest) -> Any:
    """Both kinds of decode workers: each test here holds for both."""
    pool = DecodePool(mode(request.param), workers=2)
    assert pool.mode == request.param
    yield pool
    pool.shutdown()


@pytest.fixture
async def process_pool() -> Any:
    pool = DecodePool(mode("processes"), workers=2)
    yield pool
    pool.shutdown()


async def test_many_objects_each_get_their_own_outcome(pool: DecodePool) -> None:
    files = [blob(*(record(i * 10 + j) for j in range(i % 4))) for i in range(40)]
    outcomes = await asyncio.gather(*(run(pool, data, f"k{i}") for i, data in enumerate(files)))
    assert [len(o.detections) for o in outcomes] == [i % 4 for i in range(40)]
    assert [o.detections[0].source.key for o in outcomes if o.detections] == [
        f"k{i}" for i in range(40) if i % 4
    ]


async def test_a_backlog_shares_frames_and_an_object_alone_goes_alone(
    process_pool: DecodePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = process_pool
    frames = sizes_passed_to(monkeypatch, processes._Worker, "send")
    alone = await run(pool, blob(record(1)))
    assert frames == [1]
    assert len(alone.detections) == 1
    # a frame with a bad object, a good one and an unreadable path: each gets its own answer
    outcomes = await asyncio.gather(
        *(run(pool, blob(record(i)), f"k{i}") for i in range(10)),
        run(pool, b"\x1f\x8b not gzip"),
        pool.process_path(
            "/nonexistent/x.json", source=S3Source(bucket="b", key="p"), name="p", key=None
        ),
        return_exceptions=True,
    )
    assert max(frames) > 1
    assert sum(frames) == 13
    good = [o for o in outcomes[:10] if not isinstance(o, BaseException)]
    assert [o.detections[0].source.key for o in good] == [f"k{i}" for i in range(10)]
    assert isinstance(outcomes[10], DecodeError)
    assert isinstance(outcomes[11], FileNotFoundError)


async def test_a_decode_error_comes_back_as_itself(pool: DecodePool) -> None:
    with pytest.raises(DecodeError) as caught:
        await run(pool, b"\x1f\x8b not really gzip")
    assert "gzip" in caught.value.reason
    assert len((await run(pool, blob(record(1)))).detections) == 1


async def test_a_killed_worker_is_replaced(process_pool: DecodePool) -> None:
    pool = process_pool
    await run(pool, blob(record(1)))
    victim = workers_of(pool)[0].process
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(5)
    # Objects sent to the dead worker fail with DecodePoolBroken; the pool goes on.
    deadline = time.monotonic() + 20
    while True:
        results = await asyncio.gather(
            *(run(pool, blob(record(i))) for i in range(6)), return_exceptions=True
        )
        broken = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(r, DecodePoolBroken) for r in broken), broken
        if not broken:
            break
        assert time.monotonic() < deadline
    assert victim not in [w.process for w in workers_of(pool)]
    assert all(w.process.is_alive() for w in workers_of(pool))


async def test_reconfigure_applies_to_new_objects(pool: DecodePool) -> None:
    assert len((await run(pool, blob(record(1)))).detections) == 1
    old = [w.process for w in workers_of(pool)]
    quiet = mode(pool.mode, '[[rules]]\nid = "iam-delete-role-policy"\nenabled = false\n')
    pool.reconfigure(quiet.rules, quiet.suppress, quiet.severity)
    assert (await run(pool, blob(record(2)))).detections == []
    for process in old:
        process.join(10)
        assert not process.is_alive()


@pytest.mark.parametrize("decode_in", ["processes", "threads"])
async def test_after_shutdown_objects_are_refused(decode_in: str) -> None:
    pool = DecodePool(mode(decode_in), workers=1)
    await run(pool, blob(record(1)))
    processes = [worker.process for worker in workers_of(pool)]
    pool.shutdown()
    assert not any(process.is_alive() for process in processes)
    with pytest.raises(DecodePoolBroken):
        await run(pool, blob(record(2)))


def test_auto_is_threads_when_decoding_is_gil_free() -> None:
    from trailguard.detect.decode import gil_free

    pool = DecodePool(Config(), workers=2)
    try:
        assert pool.mode == ("threads" if gil_free() else "processes")
    finally:
        pool.shutdown()


async def test_thread_mode() -> None:
    pool = DecodePool(Config(), workers=-1)
    try:
        outcome = await run(pool, blob(record(1), record(2, "GetRole")))
        assert outcome.decoded.records == 2
        assert msgspec.json.encode(outcome.detections[0].source) == b'{"bucket":"b","key":"k"}'
    finally:
        pool.shutdown()


# -- decode threads: a backlog's outcomes go to the event loop together, and only then ----------


class _Gate:
    """A FIFO as a local "file": the decode thread that reads it blocks until the test writes
    the object into it, so a backlog can queue up behind it deterministically."""

    def __init__(self, tmp_path: Any) -> None:
        self.path = str(tmp_path / "gate.json.gz")
        os.mkfifo(self.path)

    async def open(self, data: bytes) -> None:
        def write() -> None:
            with open(self.path, "wb") as fifo:
                fifo.write(data)

        await asyncio.wait_for(asyncio.to_thread(write), 10)

    def run(self, pool: DecodePool) -> Any:
        source = S3Source(bucket="b", key="gate")
        return asyncio.ensure_future(
            pool.process_path(self.path, source=source, name="gate", key=None)
        )


def workers_of(pool: DecodePool) -> list[processes._Worker]:
    """The worker processes (none for decode threads)."""
    engine = pool._engine
    return engine._workers if isinstance(engine, processes.ProcessEngine) else []


@pytest.fixture
async def one_thread() -> Any:
    pool = DecodePool(mode("threads"), workers=1)
    assert isinstance(pool._engine, threads.ThreadEngine)
    yield pool
    pool.shutdown()


async def test_a_backlog_wakes_the_loop_once_per_several_objects(
    one_thread: DecodePool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed = sizes_passed_to(monkeypatch, threads.ThreadEngine, "_hand_over")
    gate = _Gate(tmp_path)
    first = gate.run(one_thread)  # the only thread blocks on the FIFO ...
    backlog = [asyncio.ensure_future(run(one_thread, blob(record(i)), f"k{i}")) for i in range(20)]
    await asyncio.sleep(0.05)
    assert not first.done()
    await gate.open(blob(record(99)))  # ... and then finds 20 objects queued behind it
    outcomes = await asyncio.wait_for(asyncio.gather(first, *backlog), 10)
    assert [o.detections[0].source.key for o in outcomes] == ["gate"] + [f"k{i}" for i in range(20)]
    # 21 outcomes handed over at most _HOLD at a time: a handful of wake-ups, not 21
    handed = [n for n in handed if n]
    assert sum(handed) == 21
    assert max(handed) <= threads._HOLD
    assert len(handed) <= 5, handed


async def test_an_outcome_does_not_wait_for_an_object_that_may_be_slow(
    one_thread: DecodePool, tmp_path: Any
) -> None:
    gate = _Gate(tmp_path)
    small = asyncio.ensure_future(run(one_thread, blob(record(1)), "small"))
    blocked = gate.run(one_thread)  # a FIFO is never "small": the first outcome goes at once
    assert len((await asyncio.wait_for(small, 10)).detections) == 1
    assert not blocked.done()
    await gate.open(blob(record(2)))
    assert (await asyncio.wait_for(blocked, 10)).detections[0].source.key == "gate"


async def test_shutdown_finishes_the_object_in_hand_and_cancels_the_queued(
    one_thread: DecodePool, tmp_path: Any
) -> None:
    gate = _Gate(tmp_path)
    in_hand = gate.run(one_thread)
    queued = [asyncio.ensure_future(run(one_thread, blob(record(i)))) for i in range(3)]
    await asyncio.sleep(0.05)
    stopping = asyncio.ensure_future(asyncio.to_thread(one_thread.shutdown))
    await asyncio.sleep(0.05)
    assert not stopping.done()  # it waits for the object in hand
    await gate.open(blob(record(7)))
    await asyncio.wait_for(stopping, 10)
    assert len((await in_hand).detections) == 1
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results


async def test_a_backlog_of_good_bad_and_cancelled_objects_each_get_their_own_answer(
    one_thread: DecodePool, tmp_path: Any
) -> None:
    gate = _Gate(tmp_path)
    first = gate.run(one_thread)
    source = S3Source(bucket="b", key="p")
    good = [asyncio.ensure_future(run(one_thread, blob(record(i)), f"k{i}")) for i in range(4)]
    corrupt = asyncio.ensure_future(run(one_thread, b"\x1f\x8b not gzip"))
    missing = asyncio.ensure_future(
        one_thread.process_path(str(tmp_path / "nope.gz"), source=source, name="p", key=None)
    )
    folder = asyncio.ensure_future(
        one_thread.process_path(str(tmp_path), source=source, name="d", key=None)
    )
    dropped = asyncio.ensure_future(run(one_thread, blob(record(9)), "dropped"))
    late = asyncio.ensure_future(run(one_thread, blob(record(10)), "late"))
    await asyncio.sleep(0.05)
    dropped.cancel()  # its caller gives up while it queues behind the gate
    await gate.open(blob(record(99)))
    done = await asyncio.wait_for(
        asyncio.gather(first, *good, corrupt, missing, folder, late, return_exceptions=True), 10
    )
    outcomes = [o for o in done if not isinstance(o, BaseException)]
    keys = [o.detections[0].source.key for o in outcomes]
    assert keys == ["gate", "k0", "k1", "k2", "k3", "late"]
    assert isinstance(done[5], DecodeError)
    assert isinstance(done[6], FileNotFoundError)
    assert isinstance(done[7], IsADirectoryError)
    assert dropped.cancelled()
