"""The dedup store's contract, the same tests on both backends (tests/unit/state/test_dedup.py's
tests of the protocol), plus what only several writers on one table can show: a claim held by
a live writer, and one taken over after a dead writer's lease."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.conftest import MotoServer
from tests.integration.state_backends import BACKENDS, open_backend
from tests.unit.state import test_dedup as unit
from trailguard.state.dedup import DedupStore
from trailguard.state.dynamo.dedup import DynamoDedupStore
from trailguard.state.dynamo.table import DynamoTable

pytestmark = pytest.mark.integration

clock = unit.clock


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, moto_server: MotoServer, clock: unit.FakeClock
) -> AsyncIterator[DedupStore]:
    async with open_backend(request.param, tmp_path, moto_server, clock=clock, dedup=True) as st:
        assert st.dedup is not None
        yield st.dedup


test_new_keys_are_new_until_recorded = unit.test_new_keys_are_new_until_recorded
test_filter_keeps_order_and_collapses_duplicates = (
    unit.test_filter_keeps_order_and_collapses_duplicates
)
test_empty_inputs = unit.test_empty_inputs
test_record_is_idempotent = unit.test_record_is_idempotent
test_keys_are_exact_strings = unit.test_keys_are_exact_strings
test_entries_expire_after_the_ttl = unit.test_entries_expire_after_the_ttl
test_recording_again_restarts_the_ttl = unit.test_recording_again_restarts_the_ttl
test_a_string_is_not_a_list_of_keys = unit.test_a_string_is_not_a_list_of_keys


async def test_a_claim_is_new_once_and_repeats_count_once(store: DedupStore) -> None:
    first = await store.claim(["a", "b", "a"])
    assert first.new == ["a", "b"]
    assert first.taken_over == []
    await store.record(first.new)
    again = await store.claim(["a", "c"])
    assert again.new == ["c"]
    assert again.held == []  # recorded: a duplicate, not held


async def test_keys_that_could_reach_another_items_key_are_their_own(store: DedupStore) -> None:
    """Keys are attacker-chosen: separators, escapes, very long ones stay distinct."""
    tricky = ["a#b", "a%23b", "a%2523b", "~sha256:" + "0" * 64, "x" * 3000, "x" * 3001, "é#\x00"]
    claim = await store.claim(tricky)
    assert claim.new == tricky
    await store.record(tricky)
    assert await store.filter_new([*tricky, "a", "x" * 2999]) == ["a", "x" * 2999]


# ---------------------------------------------------------------------------------------------
# Several writers on one table (DynamoDB only: SQLite serves one process)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def two_writers(
    tmp_path: Path, moto_server: MotoServer, clock: unit.FakeClock
) -> AsyncIterator[tuple[DynamoDedupStore, DynamoDedupStore]]:
    async with open_backend("dynamodb", tmp_path, moto_server, clock=clock, dedup=True) as st:
        assert st.table is not None
        other = DynamoTable(st.table.client, st.table.name, owner="replica-b/1", clock=clock)
        yield (
            DynamoDedupStore(st.table, ttl_seconds=unit.TTL, lease_secs=30),
            DynamoDedupStore(other, ttl_seconds=unit.TTL, lease_secs=30),
        )


async def test_a_live_claim_is_held_and_a_recorded_one_is_a_duplicate(
    two_writers: tuple[DynamoDedupStore, DynamoDedupStore], clock: unit.FakeClock
) -> None:
    a, b = two_writers
    assert (await a.claim(["e1"])).new == ["e1"]
    seen = await b.claim(["e1"])
    assert (seen.new, seen.held) == ([], ["e1"])  # A is writing it: B must not, nor forget it
    assert await b.filter_new(["e1"]) == []
    await a.record(["e1"])
    done = await b.claim(["e1"])
    assert (done.new, done.held) == ([], [])


async def test_a_dead_writers_claim_is_taken_over_after_its_lease(
    two_writers: tuple[DynamoDedupStore, DynamoDedupStore], clock: unit.FakeClock
) -> None:
    a, b = two_writers
    assert (await a.claim(["e1", "e2"])).new == ["e1", "e2"]
    await a.record(["e2"])  # A wrote e2 and recorded it; for e1 it died before recording
    clock.now += 31
    took = await b.claim(["e1", "e2"])
    assert took.new == ["e1"]
    assert took.taken_over == ["e1"]  # the crash window: counted
    await b.record(["e1"])
    # A comes back to life and records: its lease was lost, nothing changes (logged).
    await a.record(["e1"])
    assert await a.filter_new(["e1", "e2"]) == []


async def test_recovery_records_without_a_claim(
    two_writers: tuple[DynamoDedupStore, DynamoDedupStore],
) -> None:
    a, b = two_writers
    assert (await a.claim(["e1"])).new == ["e1"]
    await b.record(["e1"])  # b's restart found e1 in its output: done, whoever claimed it
    assert (await a.claim(["e1"])).new == []
