"""SqliteJobStore: idempotent enqueue, claiming with leases, fenced completion, operator
transitions, counts, durability, and living in the same file as the dedup store."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tests.remediation_support import T0, FakeClock, config_toml, detection, remediation_config
from trailguard.errors import StateError
from trailguard.remediate.job_store import SqliteJobStore
from trailguard.remediate.jobs import (
    EventRef,
    Job,
    JobConflictError,
    JobNotFoundError,
    JobStore,
    PlanMismatchError,
    WritePlan,
    job_id,
    planned_write,
)
from trailguard.remediate.planner import plan_jobs
from trailguard.state.dedup import SqliteDedupStore

LEASE = 240.0


def make_jobs(n: int = 1, *, mode: str = "enforce", now: float = T0) -> list[Job]:
    config = remediation_config(config_toml(mode=mode, actions='"restore_inline_policy"'))
    jobs: list[Job] = []
    for i in range(n):
        det = detection("DeleteRolePolicy", event_id=f"evt-{i}")
        jobs.extend(plan_jobs(det, config, now=now + i))
    return jobs


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.sqlite3"


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SqliteJobStore]:
    s = await SqliteJobStore.open(db_path, clock=clock)
    yield s
    await s.close()


def test_job_id_is_derived_from_event_and_action() -> None:
    a = job_id("evt-1", "notify")
    assert a == job_id("evt-1", "notify")
    assert a != job_id("evt-1", "audit_actor")
    assert a != job_id("evt-2", "notify")
    assert len(a) == 32
    int(a, 16)


def test_event_ref_round_trips_the_detection_json() -> None:
    det = detection("DeleteRolePolicy")
    ref = EventRef.from_detection(det)
    assert msgspec.to_builtins(ref) == msgspec.to_builtins(det)


async def test_sqlite_store_implements_the_protocol(store: SqliteJobStore) -> None:
    as_protocol: JobStore = store  # checked by mypy
    assert await as_protocol.list_jobs() == []


async def test_enqueue_twice_is_a_no_op(store: SqliteJobStore) -> None:
    jobs = make_jobs(3)
    assert await store.enqueue_many(jobs) == 3
    assert await store.enqueue_many(jobs) == 0
    assert await store.enqueue_many([*jobs, *make_jobs(4)]) == 1
    assert len(await store.list_jobs()) == 4
    assert await store.enqueue_many([]) == 0


async def test_enqueue_does_not_reset_a_job_that_already_ran(store: SqliteJobStore) -> None:
    [job] = make_jobs(1)
    await store.enqueue_many([job])
    [claimed] = await store.claim_due(T0 + 1, 10, lease_secs=LEASE)
    await store.complete(msgspec.structs.replace(claimed, state="succeeded", changed=True))
    assert await store.enqueue_many([job]) == 0
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.state == "succeeded"


async def test_claim_moves_due_jobs_to_running_with_a_lease(store: SqliteJobStore) -> None:
    jobs = make_jobs(3)
    await store.enqueue_many(jobs)
    claimed = await store.claim_due(T0 + 10, 2, lease_secs=LEASE)
    assert [j.id for j in claimed] == [jobs[0].id, jobs[1].id]  # oldest due first
    for job in claimed:
        assert job.state == "running"
        assert job.attempts == 1
        assert job.lease_until == T0 + 10 + LEASE
    assert len(await store.claim_due(T0 + 10, 10, lease_secs=LEASE)) == 1
    assert await store.claim_due(T0 + 10, 10, lease_secs=LEASE) == []


async def test_jobs_not_yet_due_are_not_claimed(store: SqliteJobStore) -> None:
    [job] = make_jobs(1)
    await store.enqueue_many([msgspec.structs.replace(job, next_attempt_at=T0 + 100)])
    assert await store.claim_due(T0 + 99, 10, lease_secs=LEASE) == []
    assert len(await store.claim_due(T0 + 100, 10, lease_secs=LEASE)) == 1


async def test_awaiting_approval_is_never_claimed(store: SqliteJobStore) -> None:
    [job] = make_jobs(1, mode="approve")
    assert job.state == "awaiting_approval"
    await store.enqueue_many([job])
    assert await store.claim_due(T0 + 1e6, 10, lease_secs=LEASE) == []


async def test_a_crashed_workers_job_comes_back_after_its_lease(store: SqliteJobStore) -> None:
    [job] = make_jobs(1)
    await store.enqueue_many([job])
    [first] = await store.claim_due(T0, 1, lease_secs=LEASE)
    assert await store.claim_due(T0 + LEASE - 1, 1, lease_secs=LEASE) == []
    [again] = await store.claim_due(T0 + LEASE, 1, lease_secs=LEASE)
    assert again.id == first.id
    assert again.attempts == 2
    # The first worker wakes up late: its completion is refused (fenced by attempts).
    assert not await store.complete(msgspec.structs.replace(first, state="succeeded"))
    assert await store.complete(msgspec.structs.replace(again, state="succeeded"))
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.state == "succeeded"
    assert stored.lease_until is None


async def test_complete_refuses_a_job_that_is_not_running(store: SqliteJobStore) -> None:
    [job] = make_jobs(1)
    await store.enqueue_many([job])
    assert not await store.complete(msgspec.structs.replace(job, state="succeeded"))
    assert not await store.complete(msgspec.structs.replace(job, id="nope", state="succeeded"))


async def test_failed_jobs_are_claimed_again_when_due(store: SqliteJobStore) -> None:
    [job] = make_jobs(1)
    await store.enqueue_many([job])
    [claimed] = await store.claim_due(T0, 1, lease_secs=LEASE)
    await store.complete(
        msgspec.structs.replace(claimed, state="failed", next_attempt_at=T0 + 50, error="x")
    )
    assert await store.claim_due(T0 + 49, 1, lease_secs=LEASE) == []
    [again] = await store.claim_due(T0 + 50, 1, lease_secs=LEASE)
    assert again.attempts == 2
    assert again.error == "x"


async def test_approve_moves_awaiting_approval_to_pending(store: SqliteJobStore) -> None:
    [job] = make_jobs(1, mode="approve")
    await store.enqueue_many([job])
    approved = await store.approve(job.id, now=T0 + 5, by="alice")
    assert approved.state == "pending"
    assert approved.approved
    assert approved.reason is None
    # Mode "approve", before any run: there is no plan to bind the approval to yet.
    assert approved.audit[-1].what.startswith("approved by alice (no plan yet")
    assert approved.approved_plan is None
    [claimed] = await store.claim_due(T0 + 5, 1, lease_secs=LEASE)
    assert claimed.approved
    with pytest.raises(JobConflictError, match="approve applies only to awaiting_approval"):
        await store.approve(job.id, now=T0 + 6)


def waiting_with_a_plan(job: Job, document: str = '{"Version": "2012-10-17"}') -> Job:
    """``job`` as the runner stores it when its action waits for approval with a plan."""
    plan = WritePlan(
        action=job.action,
        account_id=job.account_id or "",
        writes=(planned_write("PutRolePolicy", "role/app", document=document, policyName="g"),),
        events=(job.event_id, "put-1"),
    )
    return msgspec.structs.replace(
        job, state="awaiting_approval", plan=plan, plan_sha256=plan.sha256
    )


async def test_approve_binds_the_approval_to_the_plan(store: SqliteJobStore) -> None:
    [job] = make_jobs(1)
    await store.enqueue_many([job])
    [claimed] = await store.claim_due(T0, 1, lease_secs=LEASE)
    waiting = waiting_with_a_plan(claimed)
    assert await store.complete(waiting)
    sha = waiting.plan_sha256
    assert sha is not None
    assert sha.startswith("sha256:")
    # A wrong hash is refused, and nothing changes.
    with pytest.raises(PlanMismatchError, match=f"it now waits with plan {sha}"):
        await store.approve(job.id, now=T0 + 5, by="alice", plan_sha256="sha256:" + "0" * 64)
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.state, stored.approved, stored.approved_plan) == (
        "awaiting_approval",
        False,
        None,
    )
    # The right one (with or without the prefix) binds the approval to exactly that plan.
    approved = await store.approve(job.id, now=T0 + 6, by="alice", plan_sha256=sha[7:].upper())
    assert (approved.state, approved.approved, approved.approved_plan) == ("pending", True, sha)
    assert approved.audit[-1].what == f"approved by alice: plan {sha}"
    assert approved.audit[-1].data == {"plan_sha256": sha}


async def test_approve_without_plan_binds_the_current_plan(store: SqliteJobStore) -> None:
    [job] = make_jobs(1)
    await store.enqueue_many([job])
    [claimed] = await store.claim_due(T0, 1, lease_secs=LEASE)
    assert await store.complete(waiting_with_a_plan(claimed))
    approved = await store.approve(job.id, now=T0 + 6)
    assert approved.approved_plan == approved.plan_sha256 is not None


async def test_a_plan_cannot_be_named_for_a_job_that_has_none(store: SqliteJobStore) -> None:
    [job] = make_jobs(1, mode="approve")
    await store.enqueue_many([job])
    with pytest.raises(PlanMismatchError, match="it has no plan yet"):
        await store.approve(job.id, now=T0 + 5, plan_sha256="sha256:" + "1" * 64)


def test_the_plan_hash_covers_every_byte_that_is_written() -> None:
    [job] = make_jobs(1)
    a = waiting_with_a_plan(job, '{"Version": "2012-10-17"}')
    b = waiting_with_a_plan(job, '{"Version":  "2012-10-17"}')
    assert a.plan is not None
    assert b.plan is not None
    assert a.plan.sha256 != b.plan.sha256
    assert a.plan.writes[0].document_sha256 != b.plan.writes[0].document_sha256
    assert a.plan.sha256 == waiting_with_a_plan(job).plan_sha256  # deterministic


async def test_retry_resets_attempts(store: SqliteJobStore) -> None:
    [job] = make_jobs(1)
    await store.enqueue_many([job])
    [claimed] = await store.claim_due(T0, 1, lease_secs=LEASE)
    await store.complete(msgspec.structs.replace(claimed, state="dead", error="AccessDenied"))
    retried = await store.retry(job.id, now=T0 + 60)
    assert (retried.state, retried.attempts, retried.error) == ("pending", 0, None)
    assert retried.next_attempt_at == T0 + 60
    with pytest.raises(JobConflictError):
        await store.retry(job.id, now=T0 + 61)  # pending: nothing to retry


async def test_cancel(store: SqliteJobStore) -> None:
    [job] = make_jobs(1, mode="approve")
    await store.enqueue_many([job])
    cancelled = await store.cancel(job.id, now=T0 + 1)
    assert (cancelled.state, cancelled.reason) == ("skipped", "cancelled")
    with pytest.raises(JobConflictError):
        await store.cancel(job.id, now=T0 + 2)
    with pytest.raises(JobConflictError):
        await store.approve(job.id, now=T0 + 2)


async def test_unknown_ids(store: SqliteJobStore) -> None:
    assert await store.get("0" * 32) is None
    for operation in (store.approve, store.retry, store.cancel):
        with pytest.raises(JobNotFoundError, match="no job"):
            await operation("0" * 32, now=T0)


async def test_list_filters_by_state_newest_first(store: SqliteJobStore) -> None:
    jobs = make_jobs(3)
    await store.enqueue_many(jobs)
    await store.claim_due(T0, 1, lease_secs=LEASE)
    assert [j.id for j in await store.list_jobs()] == [j.id for j in reversed(jobs)]
    assert [j.id for j in await store.list_jobs(states=["running"])] == [jobs[0].id]
    assert len(await store.list_jobs(states=["pending", "running"], limit=2)) == 2


async def test_counts_and_oldest_due(store: SqliteJobStore) -> None:
    jobs = make_jobs(3)
    await store.enqueue_many(jobs)
    assert await store.oldest_due_age(T0 + 30) == 30
    await store.claim_due(T0, 1, lease_secs=LEASE)
    assert await store.counts() == {
        ("restore_inline_policy", "pending"): 2,
        ("restore_inline_policy", "running"): 1,
    }
    assert await store.oldest_due_age(T0 - 100) is None


async def test_restores_are_counted_per_target_and_window(store: SqliteJobStore) -> None:
    jobs = make_jobs(3)  # three events, same role and policy: the same target
    assert len({j.target_key for j in jobs}) == 1
    await store.enqueue_many(jobs)
    for i, claimed in enumerate(await store.claim_due(T0 + 10, 3, lease_secs=LEASE)):
        done = msgspec.structs.replace(
            claimed, state="succeeded", changed=i < 2, updated_at=T0 + 100 * i
        )
        assert await store.complete(done)
    key = jobs[0].target_key
    assert await store.restores_since(key, T0 - 1) == 2  # the third changed nothing
    assert await store.restores_since(key, T0 + 1) == 1
    assert await store.restores_since("other", 0) == 0


async def test_jobs_survive_reopen(db_path: Path, clock: FakeClock) -> None:
    jobs = make_jobs(2)
    async with await SqliteJobStore.open(db_path, clock=clock) as store:
        await store.enqueue_many(jobs)
    async with await SqliteJobStore.open(db_path, clock=clock) as store:
        got = await store.get(jobs[1].id)
    assert got == jobs[1]


async def test_enqueued_jobs_are_on_disk_when_enqueue_returns(
    store: SqliteJobStore, db_path: Path
) -> None:
    [job] = make_jobs(1)
    await store.enqueue_many([job])
    other = sqlite3.connect(db_path)  # another connection sees the committed row
    try:
        assert other.execute("SELECT count(*) FROM remediation_jobs").fetchone()[0] == 1
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


async def test_shares_the_file_with_the_dedup_store(db_path: Path, clock: FakeClock) -> None:
    dedup = await SqliteDedupStore.open(db_path, ttl_seconds=60, clock=clock)
    await dedup.record(["evt-0"])
    async with await SqliteJobStore.open(db_path, clock=clock) as store:
        await store.enqueue_many(make_jobs(1))
    await dedup.close()
    # The dedup store's user_version is untouched, and it reopens fine.
    dedup = await SqliteDedupStore.open(db_path, ttl_seconds=60, clock=clock)
    assert await dedup.filter_new(["evt-0", "evt-1"]) == ["evt-1"]
    await dedup.close()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        version = conn.execute(
            "SELECT value FROM remediation_meta WHERE key = 'schema_version'"
        ).fetchone()[0]
        assert version == "1"
    finally:
        conn.close()


async def test_create_false_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no such file"):
        await SqliteJobStore.open(tmp_path / "typo.sqlite3", create=False)
    assert not (tmp_path / "typo.sqlite3").exists()


async def test_newer_schema_is_refused(db_path: Path) -> None:
    async with await SqliteJobStore.open(db_path):
        pass
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE remediation_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="newer than this trailguard"):
        await SqliteJobStore.open(db_path)


async def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="job store"):
        await SqliteJobStore.open(path)


async def test_closed_store_refuses_work(db_path: Path) -> None:
    store = await SqliteJobStore.open(db_path)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StateError, match="closed"):
        await store.list_jobs()


async def test_concurrent_claims_never_hand_out_a_job_twice(store: SqliteJobStore) -> None:
    await store.enqueue_many(make_jobs(20))
    batches = await asyncio.gather(
        *(store.claim_due(T0 + 100, 3, lease_secs=LEASE) for _ in range(10))
    )
    ids = [job.id for batch in batches for job in batch]
    assert len(ids) == 20
    assert len(set(ids)) == 20
