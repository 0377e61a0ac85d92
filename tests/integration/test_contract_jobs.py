"""The job store's contract, the same tests on both backends
(tests/unit/remediate/test_job_store.py's tests of the protocol), plus the per-account write
lock and the shared token bucket of the DynamoDB backend across two "replicas"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tests.integration.conftest import MotoServer
from tests.integration.state_backends import BACKENDS, open_backend
from tests.remediation_support import T0, FakeClock
from tests.unit.remediate import test_job_store as unit
from trailguard.errors import TransientError
from trailguard.remediate.jobs import JobStore
from trailguard.state.backends import StateStores
from trailguard.state.dynamo.coordination import DynamoAccountLocks, DynamoTokenBucket
from trailguard.state.dynamo.table import DynamoTable

pytestmark = pytest.mark.integration

clock = unit.clock


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, moto_server: MotoServer, clock: FakeClock
) -> AsyncIterator[JobStore]:
    async with open_backend(request.param, tmp_path, moto_server, clock=clock, jobs=True) as st:
        assert st.jobs is not None
        yield st.jobs


test_enqueue_twice_is_a_no_op = unit.test_enqueue_twice_is_a_no_op
test_enqueue_does_not_reset_a_job_that_already_ran = (
    unit.test_enqueue_does_not_reset_a_job_that_already_ran
)
test_claim_moves_due_jobs_to_running_with_a_lease = (
    unit.test_claim_moves_due_jobs_to_running_with_a_lease
)
test_jobs_not_yet_due_are_not_claimed = unit.test_jobs_not_yet_due_are_not_claimed
test_awaiting_approval_is_never_claimed = unit.test_awaiting_approval_is_never_claimed
test_a_crashed_workers_job_comes_back_after_its_lease = (
    unit.test_a_crashed_workers_job_comes_back_after_its_lease
)
test_complete_refuses_a_job_that_is_not_running = (
    unit.test_complete_refuses_a_job_that_is_not_running
)
test_failed_jobs_are_claimed_again_when_due = unit.test_failed_jobs_are_claimed_again_when_due
test_approve_moves_awaiting_approval_to_pending = (
    unit.test_approve_moves_awaiting_approval_to_pending
)
test_approve_binds_the_approval_to_the_plan = unit.test_approve_binds_the_approval_to_the_plan
test_approve_without_plan_binds_the_current_plan = (
    unit.test_approve_without_plan_binds_the_current_plan
)
test_a_plan_cannot_be_named_for_a_job_that_has_none = (
    unit.test_a_plan_cannot_be_named_for_a_job_that_has_none
)
test_retry_resets_attempts = unit.test_retry_resets_attempts
test_cancel = unit.test_cancel
test_unknown_ids = unit.test_unknown_ids
test_list_filters_by_state_newest_first = unit.test_list_filters_by_state_newest_first
test_counts_and_oldest_due = unit.test_counts_and_oldest_due
test_restores_are_counted_per_target_and_window = (
    unit.test_restores_are_counted_per_target_and_window
)
test_concurrent_claims_never_hand_out_a_job_twice = (
    unit.test_concurrent_claims_never_hand_out_a_job_twice
)


async def test_counts_leave_out_terminal_states(store: JobStore) -> None:
    jobs = unit.make_jobs(2)
    await store.enqueue_many(jobs)
    [claimed] = await store.claim_due(T0, 1, lease_secs=unit.LEASE)

    assert await store.complete(msgspec.structs.replace(claimed, state="succeeded"))
    assert await store.counts() == {("restore_inline_policy", "pending"): 1}


# ---------------------------------------------------------------------------------------------
# Two replicas on one table: the per-account lock and the shared bucket
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def dynamo(
    tmp_path: Path, moto_server: MotoServer
) -> AsyncIterator[tuple[StateStores, DynamoTable]]:
    async with open_backend("dynamodb", tmp_path, moto_server, clock=time.time, jobs=True) as st:
        assert st.table is not None
        yield st, DynamoTable(st.table.client, st.table.name, owner="replica-b/1")


async def test_one_writer_per_account_across_replicas(
    dynamo: tuple[StateStores, DynamoTable],
) -> None:
    state, other = dynamo
    assert state.table is not None
    mine = DynamoAccountLocks(state.table, hold_secs=60, wait_secs=5, retry_secs=0.05)
    theirs = DynamoAccountLocks(other, hold_secs=60, wait_secs=0.3, retry_secs=0.05)
    async with mine.hold("111111111111"):
        with pytest.raises(TransientError, match="another replica is writing"):
            async with theirs.hold("111111111111"):
                pytest.fail("two writers in one account")
        async with theirs.hold("222222222222"):  # another account: no wait
            pass
    async with theirs.hold("111111111111"):  # released: the other replica may write now
        pass


async def test_a_dead_holders_lock_ends_with_its_lease(
    dynamo: tuple[StateStores, DynamoTable],
) -> None:
    state, other = dynamo
    assert state.table is not None
    now = [time.time()]
    dead = DynamoTable(state.table.client, state.table.name, owner="dead/1", clock=lambda: now[0])
    dying = DynamoAccountLocks(dead, hold_secs=1, wait_secs=1)
    await dying._acquire("111111111111", asyncio.get_running_loop().time() + 1)  # never released
    waiting = DynamoAccountLocks(other, hold_secs=60, wait_secs=0.2, retry_secs=0.05)
    with pytest.raises(TransientError):
        async with waiting.hold("111111111111"):
            pass
    later = DynamoTable(other.client, other.name, owner="replica-b/1", clock=lambda: now[0] + 40)
    async with DynamoAccountLocks(later, hold_secs=60, wait_secs=1).hold("111111111111"):
        pass  # 1 s hold + 30 s of skew later: taken


async def test_the_token_bucket_is_shared(dynamo: tuple[StateStores, DynamoTable]) -> None:
    state, other = dynamo
    assert state.table is not None
    a = DynamoTokenBucket(state.table, rate=0.001, burst=3)
    b = DynamoTokenBucket(other, rate=0.001, burst=3)
    for bucket in (a, b, a):  # three tokens in the bucket, taken by two replicas
        await asyncio.wait_for(bucket.acquire(), 5)
    with pytest.raises(TimeoutError):  # the fourth would wait ~1000 s for a token
        await asyncio.wait_for(b.acquire(), 0.5)
