"""state/policy_history_memory.py: replay's scratch history answers as SQLite does, in memory
and after moving to SQLite part-way; bounded by bytes, not by count."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.unit.state.test_policy_history import ARN, attach, doc, fact, inline
from trailguard.detect.policy_facts import PolicyFact
from trailguard.state.policy_history import PolicyHistoryStore
from trailguard.state.policy_history_memory import ScratchHistoryStore
from trailguard.state.policy_history_sqlite import SqliteHistoryStore


def batches(seed: int) -> list[list[PolicyFact]]:
    """Inline puts/deletes, attachments and managed versions of a few principals, out of order,
    some twice (a redelivered file), in batches as files would bring them."""
    rng = random.Random(seed)
    facts: list[PolicyFact] = []
    for n in range(60):
        minute, eid = rng.randrange(50), f"e{rng.randrange(40):03d}"
        name = rng.choice(["app", "ci", "ops"])
        choice = rng.randrange(4)
        if choice == 0:
            facts.append(inline("put", minute, eid, doc(n), principal_name=name))
        elif choice == 1:
            facts.append(inline("delete", minute, eid, principal_name=name))
        elif choice == 2:
            facts.append(attach(rng.choice(["put", "delete"]), minute, eid, name))
        else:
            facts.append(
                fact(
                    "policy_version",
                    "put",
                    minute,
                    eid,
                    policy_arn=ARN,
                    version_id=f"v{rng.randrange(1, 5)}",
                    document=doc(n),
                    set_as_default=rng.random() < 0.5,
                )
            )
    facts += rng.sample(facts, 10)  # the same events again
    cut = sorted(rng.sample(range(1, len(facts)), 6))
    return [facts[a:b] for a, b in zip([0, *cut], [*cut, len(facts)], strict=True)]


async def answers(store: PolicyHistoryStore) -> list[object]:
    out: list[object] = []
    for minute in (0, 10, 25, 49, 60):
        before = f"2026-11-01T12:{minute:02d}:00Z" if minute < 60 else None
        for name in ("app", "ci", "ops"):
            out.append(
                await store.inline_policy("123456789012", "role", name, "guard", before=before)
            )
            out.append(await store.attached_policies("123456789012", "role", name, before=before))
            out.append(
                await store.inline_policy(
                    "123456789012", "role", name, "guard", before=before, before_event_id="e020"
                )
            )
        out.append(await store.managed_policy(ARN, before=before))
        out.append(await store.policy_version(ARN, "v2", before=before))
        out.append(await store.attachments(ARN, before=before))
    return out


async def test_in_memory_and_moved_part_way_answer_as_sqlite(tmp_path: Path) -> None:
    for seed in range(8):
        sqlite = await SqliteHistoryStore.open(tmp_path / f"ref{seed}.sqlite3")
        memory = ScratchHistoryStore(tmp_path / f"m{seed}")
        moved = ScratchHistoryStore(tmp_path / f"s{seed}", max_bytes=2000)  # moves part-way
        (tmp_path / f"m{seed}").mkdir()
        (tmp_path / f"s{seed}").mkdir()
        counts: list[list[int]] = [[], [], []]
        for batch in batches(seed):
            stores: tuple[PolicyHistoryStore, ...] = (sqlite, memory, moved)
            for i, store in enumerate(stores):
                counts[i].append(await store.record(batch))
        assert counts[0] == counts[1] == counts[2], seed  # new facts per batch, alike
        assert memory.in_memory
        assert not moved.in_memory
        reference = await answers(sqlite)
        assert await answers(memory) == reference, seed
        assert await answers(moved) == reference, seed
        for store in (sqlite, memory, moved):
            await store.close()


async def test_a_bad_fact_records_nothing_of_its_batch(tmp_path: Path) -> None:
    store = ScratchHistoryStore(tmp_path)
    good = inline("put", 1, "e1", doc(1))
    bad = inline("put", 2, "e2", doc(2), event_time="yesterday")
    with pytest.raises(ValueError, match="is not a time"):
        await store.record([good, bad])
    assert await store.inline_policy("123456789012", "role", "app", "guard", before=None) is None
    await store.close()
