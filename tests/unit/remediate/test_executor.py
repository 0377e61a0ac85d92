"""JobRunner with stand-in actions: retries with backoff, dead jobs, deferred jobs, the approval
guard, the circuit breaker, per-account serialisation, shutdown; TokenBucket and backoff."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from tests.remediation_support import (
    FakeClock,
    FakeHistory,
    StaticClients,
    config_toml,
    detection,
    remediation_config,
)
from trailguard.config import RemediationConfig
from trailguard.errors import PermanentError, StateError, TransientError
from trailguard.remediate import actions
from trailguard.remediate.actions import (
    ActionContext,
    ActionOutcome,
    Deferred,
    confirm_before_write,
)
from trailguard.remediate.executor import JobRunner, effective_mode
from trailguard.remediate.job_store import SqliteJobStore
from trailguard.remediate.jobs import CircuitOpen, Job, WritePlan
from trailguard.remediate.limits import TokenBucket
from trailguard.remediate.planner import plan_jobs
from trailguard.retry import backoff_delay
from trailguard.telemetry.observers import Tally

Action = Callable[[ActionContext], Awaitable[ActionOutcome]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteJobStore]:
    s = await SqliteJobStore.open(tmp_path / "state.sqlite3", clock=clock)
    yield s
    await s.close()


def settings(mode: str = "enforce", extra: str = "") -> RemediationConfig:
    return remediation_config(
        config_toml(
            mode=mode, actions='"restore_inline_policy"', extra="job_timeout_secs = 1\n" + extra
        )
    )


def runner(
    store: SqliteJobStore,
    config: RemediationConfig,
    clock: FakeClock,
    circuit: list[CircuitOpen] | None = None,
) -> JobRunner:
    async def on_circuit_open(record: CircuitOpen) -> None:
        if circuit is not None:
            circuit.append(record)

    return JobRunner(
        store,
        config,
        clients=StaticClients(object()),
        history=FakeHistory(),
        clock=clock,
        rng=random.Random(7),
        on_circuit_open=on_circuit_open,
        observer=Tally(),
    )


async def enqueue(
    store: SqliteJobStore,
    config: RemediationConfig,
    clock: FakeClock,
    event_id: str = "evt-1",
    role: str = "app-role",
) -> Job:
    det = detection("DeleteRolePolicy", {"roleName": role, "policyName": "p"}, event_id=event_id)
    [job] = plan_jobs(det, config, now=clock())
    await store.enqueue_many([job])
    return job


def use(monkeypatch: pytest.MonkeyPatch, action: Action) -> None:
    monkeypatch.setitem(actions.ACTIONS, "restore_inline_policy", action)


async def test_success_is_stored_with_the_audit(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def ok(ctx: ActionContext) -> ActionOutcome:
        ctx.record("did", "something")
        return ActionOutcome(state="succeeded", changed=True)

    use(monkeypatch, ok)
    config = settings()
    job = await enqueue(store, config, clock)
    r = runner(store, config, clock)
    assert await r.run_once() == 1
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.state, stored.changed, stored.attempts) == ("succeeded", True, 1)
    assert [e.step for e in stored.audit] == ["planned", "did"]
    assert isinstance(r.observer, Tally)
    assert r.observer.jobs_finished[("restore_inline_policy", "succeeded")] == 1
    assert await r.run_once() == 0  # never runs again


async def test_transient_failures_back_off_then_die(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def throttled(ctx: ActionContext) -> ActionOutcome:
        raise TransientError("remediate", "Throttling", "PutRolePolicy: Throttling (400)")

    use(monkeypatch, throttled)
    config = settings()  # max_attempts 3, base 1 s, cap 10 s
    job = await enqueue(store, config, clock)
    r = runner(store, config, clock)
    for attempt in (1, 2):
        await r.run_once()
        stored = await store.get(job.id)
        assert stored is not None
        assert (stored.state, stored.attempts) == ("failed", attempt)
        assert stored.error == "Throttling: PutRolePolicy: Throttling (400)"
        delay = stored.next_attempt_at - clock()
        assert 0 <= delay <= min(10.0, 2 ** (attempt - 1))
        clock.now += delay
    await r.run_once()
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.state, stored.attempts) == ("dead", 3)
    assert stored.audit[-1].what == "dead after 3 attempts"


async def test_permanent_errors_die_at_once(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def denied(ctx: ActionContext) -> ActionOutcome:
        raise PermanentError("remediate", "AccessDenied", "PutRolePolicy: AccessDenied (403)")

    use(monkeypatch, denied)
    config = settings()
    job = await enqueue(store, config, clock)
    await runner(store, config, clock).run_once()
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.state, stored.attempts) == ("dead", 1)
    assert stored.error == "AccessDenied: PutRolePolicy: AccessDenied (403)"
    # An operator fixes the role and retries.
    retried = await store.retry(job.id, now=clock())
    assert retried.state == "pending"


async def test_deferred_jobs_end_in_their_own_state(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def waiting(ctx: ActionContext) -> ActionOutcome:
        raise Deferred("unconfirmed", "not in LookupEvents yet", final="awaiting_approval")

    use(monkeypatch, waiting)
    config = settings()
    job = await enqueue(store, config, clock)
    r = runner(store, config, clock)
    for _ in range(3):
        await r.run_once()
        clock.now += 20
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.state == "awaiting_approval"
    assert stored.reason == "unconfirmed: not in LookupEvents yet"


async def test_deferred_jobs_wait_at_least_retry_after(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An event LookupEvents does not show yet: the backoff (base 1 s) alone would look again
    # within a second; the action asks for 280 s.
    async def not_visible_yet(ctx: ActionContext) -> ActionOutcome:
        raise Deferred("unconfirmed", "not yet", final="awaiting_approval", retry_after=280.0)

    use(monkeypatch, not_visible_yet)
    config = settings()
    job = await enqueue(store, config, clock)
    await runner(store, config, clock).run_once()
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.state == "failed"
    assert stored.next_attempt_at == pytest.approx(clock() + 280.0)


async def test_state_errors_and_timeouts_are_retried(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def flaky(ctx: ActionContext) -> ActionOutcome:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StateError("history store: database is locked")
        if calls == 2:
            await asyncio.sleep(5)  # longer than job_timeout_secs = 1
        return ActionOutcome(state="succeeded")

    use(monkeypatch, flaky)
    config = settings()
    job = await enqueue(store, config, clock)
    r = runner(store, config, clock)
    await r.run_once()
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.state == "failed"
    assert stored.error is not None
    assert stored.error.startswith("state:")
    clock.now += 60
    await r.run_once()
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.state == "failed"
    assert stored.error is not None
    assert stored.error.startswith("timeout:")
    clock.now += 60
    await r.run_once()
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.state == "succeeded"


async def test_a_bug_in_an_action_kills_only_its_job(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def buggy(ctx: ActionContext) -> ActionOutcome:
        raise KeyError("oops")

    use(monkeypatch, buggy)
    config = settings()
    job = await enqueue(store, config, clock)
    await runner(store, config, clock).run_once()
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.state == "dead"
    assert stored.error == "internal error: KeyError: 'oops'"


async def test_dry_run_jobs_get_a_dry_run_context(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    async def look(ctx: ActionContext) -> ActionOutcome:
        seen.append(ctx.dry_run)
        return ActionOutcome(state="dry_run" if ctx.dry_run else "succeeded")

    use(monkeypatch, look)
    config = settings(mode="dry-run")
    await enqueue(store, config, clock)
    await runner(store, config, clock).run_once()
    assert seen == [True]


async def test_an_unapproved_approve_mode_job_never_acts(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def must_not_run(ctx: ActionContext) -> ActionOutcome:
        raise AssertionError("acted without approval")

    use(monkeypatch, must_not_run)
    config = settings(mode="approve")
    job = await enqueue(store, config, clock)
    # cancel + retry puts it back to pending without approval: the runner sends it back.
    await store.cancel(job.id, now=clock())
    await store.retry(job.id, now=clock())
    await runner(store, config, clock).run_once()
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.state == "awaiting_approval"


async def gated_restore(ctx: ActionContext) -> ActionOutcome:
    """A restore that writes nothing but passes the gate, as every restore does (the circuit
    breaker is asked there, just before the first write)."""
    refused = await confirm_before_write(ctx, [], [], "restoring")
    if refused is not None:
        return refused
    return ActionOutcome(state="succeeded", changed=True)


async def test_circuit_breaker(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, gated_restore)
    config = settings(extra="[remediation.circuit_breaker]\nmax_restores = 2\nwindow_secs = 600\n")
    circuit: list[CircuitOpen] = []
    r = runner(store, config, clock, circuit)
    states = []
    for i in range(4):
        job = await enqueue(store, config, clock, event_id=f"evt-{i}")
        await r.run_once()
        stored = await store.get(job.id)
        assert stored is not None
        states.append((stored.state, stored.reason))
        clock.now += 60
    assert states == [
        ("succeeded", None),
        ("succeeded", None),
        ("skipped", "circuit_open"),
        ("skipped", "circuit_open"),
    ]
    assert [c.restores_in_window for c in circuit] == [2, 2]
    assert circuit[0].target_key.endswith(":role/app-role:inline/p")
    # Another target is not affected; after the window the target is restored again.
    other = await enqueue(store, config, clock, event_id="evt-x", role="other")
    await r.run_once()
    assert (await store.get(other.id) or other).state == "succeeded"
    clock.now += 600
    late = await enqueue(store, config, clock, event_id="evt-late")
    await r.run_once()
    assert (await store.get(late.id) or late).state == "succeeded"


async def test_only_the_exact_approved_plan_bypasses_the_circuit_breaker(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, gated_restore)
    config = settings(extra="[remediation.circuit_breaker]\nmax_restores = 1\n")
    r = runner(store, config, clock)
    await enqueue(store, config, clock, event_id="evt-0")
    await r.run_once()
    tripped = await enqueue(store, config, clock, event_id="evt-1")
    await r.run_once()
    assert (await store.get(tripped.id) or tripped).reason == "circuit_open"
    # A human decides: approving exactly the plan the job would write lets it through ...
    job = await enqueue(store, config, clock, event_id="evt-2")
    plan = WritePlan(action=job.action, account_id=job.account_id or "", writes=(), events=())
    approved = msgspec.structs.replace(
        job, id="manual", state="pending", approved=True, approved_plan=plan.sha256
    )
    # ... an approval of another plan does not (the plan changed since: the breaker still asks)
    stale = msgspec.structs.replace(
        job, id="stale", state="pending", approved=True, approved_plan="sha256:" + "0" * 64
    )
    await store.enqueue_many([approved, stale])
    await r.run_once()
    assert (await store.get("manual") or approved).state == "succeeded"
    assert (await store.get("stale") or stale).reason == "circuit_open"


async def test_writes_to_one_account_are_serialised(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    active: dict[str, int] = {}
    overlap: dict[str, int] = {}

    async def slow(ctx: ActionContext) -> ActionOutcome:
        account = ctx.account_id
        active[account] = active.get(account, 0) + 1
        overlap[account] = max(overlap.get(account, 0), active[account])
        await asyncio.sleep(0.05)
        active[account] -= 1
        return ActionOutcome(state="succeeded")

    use(monkeypatch, slow)
    config = settings(extra="workers = 4\npoll_interval_secs = 0.01\n")
    jobs = []
    for i in range(4):
        job = await enqueue(store, config, clock, event_id=f"evt-{i}")
        if i % 2:  # half of them in another account
            job = msgspec.structs.replace(job, id=f"other-{i}", account_id="111122223333")
            await store.enqueue_many([job])
        jobs.append(job)
    r = runner(store, config, clock)
    task = asyncio.create_task(r.run())
    for _ in range(200):
        done = [await store.get(j.id) for j in jobs]
        if all(j is not None and j.state == "succeeded" for j in done):
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert overlap == {"123456789012": 1, "111122223333": 1}


async def test_shutdown_hands_a_running_job_back(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()

    async def long(ctx: ActionContext) -> ActionOutcome:
        started.set()
        await asyncio.sleep(0.5)
        return ActionOutcome(state="succeeded")

    use(monkeypatch, long)
    config = settings(extra="poll_interval_secs = 0.01\n")
    job = await enqueue(store, config, clock)
    r = runner(store, config, clock)
    task = asyncio.create_task(r.run())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.state == "pending"
    assert stored.audit[-1].what == "interrupted by shutdown"


async def test_wake_makes_idle_workers_look_at_once(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = asyncio.Event()

    async def ok(ctx: ActionContext) -> ActionOutcome:
        ran.set()
        return ActionOutcome(state="succeeded")

    use(monkeypatch, ok)
    config = settings(extra="poll_interval_secs = 300\n")
    r = runner(store, config, clock)
    task = asyncio.create_task(r.run())
    await asyncio.sleep(0.05)  # the worker is idle, waiting up to 300 s
    await enqueue(store, config, clock)
    r.wake()
    await asyncio.wait_for(ran.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_backoff_is_full_jitter_and_capped() -> None:
    rng = random.Random(1)
    for attempt in range(1, 20):
        delay = backoff_delay(attempt, base=30, cap=3600, rng=rng)
        assert 0 <= delay <= min(3600, 30 * 2 ** (attempt - 1))


async def test_token_bucket_paces_calls() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(5, clock=lambda: now[0], sleep=sleep)
    for _ in range(15):
        await bucket.acquire()
    # The burst (5) goes at once; the other 10 take 2 s at 5 per second.
    assert now[0] == pytest.approx(2.0)
    assert len(slept) == 10


@pytest.mark.parametrize(
    ("planned", "configured", "expected"),
    [
        ("enforce", "enforce", "enforce"),
        ("enforce", "dry-run", "dry-run"),
        ("enforce", "approve", "approve"),
        ("enforce", "off", "off"),
        ("dry-run", "enforce", "dry-run"),
        ("approve", "enforce", "approve"),
    ],
)
def test_effective_mode_is_the_more_cautious(planned: str, configured: str, expected: str) -> None:
    assert effective_mode(planned, configured) == expected


async def test_switching_the_config_to_dry_run_stops_queued_jobs(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    async def look(ctx: ActionContext) -> ActionOutcome:
        seen.append(ctx.dry_run)
        return ActionOutcome(state="dry_run" if ctx.dry_run else "succeeded")

    use(monkeypatch, look)
    job = await enqueue(store, settings(mode="enforce"), clock)  # queued while enforcing
    await runner(store, settings(mode="dry-run"), clock).run_once()  # then the kill switch
    stored = await store.get(job.id)
    assert stored is not None
    assert seen == [True]
    assert stored.state == "dry_run"
    assert "the config now says dry-run" in stored.audit[-1].what


async def test_an_action_switched_off_skips_queued_jobs(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def must_not_run(ctx: ActionContext) -> ActionOutcome:
        raise AssertionError("ran while off")

    use(monkeypatch, must_not_run)
    job = await enqueue(store, settings(), clock)
    off = settings(extra='[remediation.action_modes]\nrestore_inline_policy = "off"\n')
    await runner(store, off, clock).run_once()
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.state, stored.reason) == ("skipped", "mode_off")


async def test_the_wait_for_the_account_lock_counts_against_the_job_timeout(
    store: SqliteJobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose account lock is held elsewhere gives up at its timeout and is tried again:
    waiting and running together never outlive the lease (2 x job_timeout_secs), so no other
    worker can take the job over while this one might still write."""
    ran: list[str] = []

    async def ok(ctx: ActionContext) -> ActionOutcome:
        ran.append(ctx.job.id)
        return ActionOutcome(state="succeeded", changed=True)

    use(monkeypatch, ok)
    config = settings()  # job_timeout_secs = 1
    job = await enqueue(store, config, clock)
    r = runner(store, config, clock)
    async with r.locks.hold(job.account_id or ""):  # another writer holds the account
        await asyncio.wait_for(r.run_once(), timeout=10)
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.state, ran) == ("failed", [])
    assert stored.error is not None
    assert stored.error.startswith("timeout:")
    clock.now += 60
    await r.run_once()  # the lock is free now
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.state, ran) == ("succeeded", [job.id])
