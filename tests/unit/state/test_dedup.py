"""SqliteDedupStore: filter/record, TTL, durability across reopen, concurrency, bad paths."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trailguard.errors import StateError, TrailguardError
from trailguard.state.dedup import DedupStore, SqliteDedupStore

TTL = 3600.0


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "dedup.sqlite3"


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SqliteDedupStore]:
    s = await SqliteDedupStore.open(db_path, ttl_seconds=TTL, clock=clock)
    yield s
    await s.close()


async def test_sqlite_store_implements_the_protocol(store: SqliteDedupStore) -> None:
    as_protocol: DedupStore = store  # checked by mypy
    assert await as_protocol.filter_new(["a"]) == ["a"]


async def test_new_keys_are_new_until_recorded(store: SqliteDedupStore) -> None:
    assert await store.filter_new(["a", "b", "c"]) == ["a", "b", "c"]
    await store.record(["b"])
    assert await store.filter_new(["a", "b", "c"]) == ["a", "c"]
    await store.record(["a", "c"])
    assert await store.filter_new(["a", "b", "c"]) == []


async def test_filter_keeps_order_and_collapses_duplicates(store: SqliteDedupStore) -> None:
    await store.record(["x"])
    assert await store.filter_new(["c", "a", "x", "c", "b", "a"]) == ["c", "a", "b"]


async def test_empty_inputs(store: SqliteDedupStore) -> None:
    assert await store.filter_new([]) == []
    await store.record([])
    assert await store.purge_expired() == 0


async def test_record_is_idempotent(store: SqliteDedupStore) -> None:
    await store.record(["a", "a"])
    await store.record(["a"])
    assert await store.filter_new(["a"]) == []


async def test_keys_are_exact_strings(store: SqliteDedupStore) -> None:
    keys = ["A", "a", "é", "e\u0301", "", "x" * 5000, "quote'\"; DROP TABLE seen; --", "\x00nul"]
    await store.record(keys[:4])
    assert await store.filter_new(keys) == keys[4:]
    await store.record(keys)
    assert await store.filter_new(keys) == []


async def test_entries_expire_after_the_ttl(store: SqliteDedupStore, clock: FakeClock) -> None:
    await store.record(["a"])
    clock.now += TTL - 1
    assert await store.filter_new(["a"]) == []
    clock.now += 1  # exactly ttl after recording: new again
    assert await store.filter_new(["a"]) == ["a"]


async def test_recording_again_restarts_the_ttl(store: SqliteDedupStore, clock: FakeClock) -> None:
    await store.record(["a"])
    clock.now += TTL - 10
    await store.record(["a"])
    clock.now += TTL - 10
    assert await store.filter_new(["a"]) == []


async def test_purge_removes_only_expired_entries(
    store: SqliteDedupStore, clock: FakeClock, db_path: Path
) -> None:
    await store.record(["old1", "old2"])
    clock.now += 100
    await store.record(["young"])
    clock.now += TTL - 50  # old entries are TTL+50 old, young is TTL-50 old
    assert await store.purge_expired() == 2
    assert await store.purge_expired() == 0
    assert await store.filter_new(["old1", "old2", "young"]) == ["old1", "old2"]
    assert _rows(db_path) == {"young"}


async def test_purge_deletes_in_batches(store: SqliteDedupStore, clock: FakeClock) -> None:
    keys = [f"k{i}" for i in range(12_345)]  # more than one purge batch (5000)
    await store.record(keys)
    clock.now += TTL
    assert await store.purge_expired() == len(keys)


async def test_large_key_lists_are_batched(store: SqliteDedupStore) -> None:
    keys = [f"event-{i:06d}" for i in range(40_000)]  # far beyond SQLite's bound-parameter cap
    await store.record(keys[::2])
    assert await store.filter_new(keys) == keys[1::2]


async def test_records_survive_reopen(db_path: Path, clock: FakeClock) -> None:
    first = await SqliteDedupStore.open(db_path, ttl_seconds=TTL, clock=clock)
    await first.record(["a", "b"])
    await first.close()

    second = await SqliteDedupStore.open(db_path, ttl_seconds=TTL, clock=clock)
    try:
        assert await second.filter_new(["a", "b", "c"]) == ["c"]
    finally:
        await second.close()


_KILLED_WRITER = """
import asyncio, os, signal, sys
from trailguard.state.dedup import SqliteDedupStore

async def main() -> None:
    store = await SqliteDedupStore.open(sys.argv[1], ttl_seconds=3600)
    await store.record(["before-kill-1", "before-kill-2"])
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit, no flush

asyncio.run(main())
"""


async def test_records_survive_sigkill(db_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _KILLED_WRITER, str(db_path))
    assert await proc.wait() == -signal.SIGKILL
    store = await SqliteDedupStore.open(db_path, ttl_seconds=TTL)
    try:
        assert await store.filter_new(["before-kill-1", "before-kill-2", "c"]) == ["c"]
    finally:
        await store.close()


async def test_recorded_keys_are_on_disk_when_record_returns(
    store: SqliteDedupStore, db_path: Path
) -> None:
    # Read through a second, independent connection while the store stays open (WAL).
    await store.record(["durable"])
    assert _rows(db_path) == {"durable"}


async def test_database_is_wal_with_schema_version(store: SqliteDedupStore, db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


async def test_parent_directory_is_created(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "a" / "b" / "c" / "dedup.db"
    store = await SqliteDedupStore.open(str(path), ttl_seconds=TTL, clock=clock)
    await store.close()
    assert path.is_file()
    assert store.path == path


async def test_concurrent_calls_are_serialised(store: SqliteDedupStore) -> None:
    async def worker(n: int) -> list[str]:
        keys = [f"w{n}-{i}" for i in range(200)]
        fresh = await store.filter_new(keys)
        await store.record(fresh)
        return await store.filter_new(keys)

    results = await asyncio.gather(*(worker(n) for n in range(20)))
    assert results == [[] for _ in range(20)]
    shared = [f"w{n}-{i}" for n in range(20) for i in range(200)]
    assert await store.filter_new(shared) == []


async def test_event_loop_stays_responsive(store: SqliteDedupStore) -> None:
    """The SQLite work runs on the store's thread, never the loop's."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await store.record([f"k{i}" for i in range(30_000)])
    finally:
        task.cancel()
    assert ticks > 1
    assert _dedup_threads()


async def test_closed_store_refuses_work(db_path: Path, clock: FakeClock) -> None:
    store = await SqliteDedupStore.open(db_path, ttl_seconds=TTL, clock=clock)
    assert _dedup_threads()
    await store.close()
    assert not _dedup_threads()  # the worker thread is gone
    await store.close()  # idempotent
    with pytest.raises(StateError, match="closed"):
        await store.filter_new(["a"])
    with pytest.raises(StateError, match="closed"):
        await store.record(["a"])


async def test_async_context_manager_closes(db_path: Path, clock: FakeClock) -> None:
    async with await SqliteDedupStore.open(db_path, ttl_seconds=TTL, clock=clock) as store:
        await store.record(["a"])
    with pytest.raises(StateError):
        await store.filter_new(["a"])


async def test_a_string_is_not_a_list_of_keys(store: SqliteDedupStore) -> None:
    with pytest.raises(TypeError):
        await store.filter_new("abc")
    with pytest.raises(TypeError):
        await store.record([b"bytes"])  # type: ignore[list-item]


async def test_ttl_must_be_positive(db_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        await SqliteDedupStore.open(db_path, ttl_seconds=0)


# --------------------------------------------------------------------------- bad paths


async def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "dedup.db"
    path.write_bytes(b"this is not a database, just some text long enough to look like a header")
    with pytest.raises(StateError, match="not a database") as info:
        await SqliteDedupStore.open(path, ttl_seconds=TTL)
    assert isinstance(info.value, TrailguardError)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.Error)


async def test_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="directory"):
        await SqliteDedupStore.open(tmp_path, ttl_seconds=TTL)


async def test_parent_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot create directory"):
        await SqliteDedupStore.open(blocker / "dedup.db", ttl_seconds=TTL)


async def test_someone_elses_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    with pytest.raises(StateError, match="not a dedup store"):
        await SqliteDedupStore.open(path, ttl_seconds=TTL)


async def test_newer_schema_is_refused(db_path: Path) -> None:
    store = await SqliteDedupStore.open(db_path, ttl_seconds=TTL)
    await store.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StateError, match="schema version 99"):
        await SqliteDedupStore.open(db_path, ttl_seconds=TTL)


def _rows(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT key FROM seen")}
    finally:
        conn.close()


def _dedup_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("trailguard-dedup")]
