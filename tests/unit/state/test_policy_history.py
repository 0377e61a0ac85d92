"""SqliteHistoryStore: eventTime order whatever the arrival order, ``before``, idempotence,
attach/detach folding, managed policy versions, durability across reopen, bad files."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from trailguard.detect.policy_facts import PolicyFact
from trailguard.errors import StateError
from trailguard.state.dedup import SqliteDedupStore
from trailguard.state.policy_history import (
    ManagedPolicyState,
    PolicyHistoryStore,
    default_history_path,
)
from trailguard.state.policy_history_sqlite import SqliteHistoryStore

ACCT = "123456789012"
OTHER = "444455556666"
ARN = f"arn:aws:iam::{ACCT}:policy/team/Guard"
AWS_ARN = "arn:aws:iam::aws:policy/ReadOnlyAccess"


def doc(n: int) -> str:
    return f'{{"Version": "2012-10-17", "Statement": [{{"Sid": "s{n}", "Effect": "Deny"}}]}}'


def at(minute: int, second: int = 0) -> str:
    return f"2026-11-01T12:{minute:02d}:{second:02d}Z"


def fact(kind: str, op: str, minute: int, event_id: str, **fields: Any) -> PolicyFact:
    values: dict[str, Any] = {
        "kind": kind,
        "op": op,
        "account_id": ACCT,
        "principal_kind": None,
        "principal_name": None,
        "policy_name": None,
        "policy_arn": None,
        "version_id": None,
        "document": None,
        "path": None,
        "set_as_default": None,
        "event_id": event_id,
        "event_time": at(minute),
    }
    values.update(fields)
    return PolicyFact(**values)


def inline(
    op: str, minute: int, event_id: str, document: str | None = None, **kw: Any
) -> PolicyFact:
    base: dict[str, Any] = {
        "principal_kind": "role",
        "principal_name": "app",
        "policy_name": "guard",
        "document": document,
    }
    base.update(kw)
    return fact("inline_policy", op, minute, event_id, **base)


def attach(op: str, minute: int, event_id: str, name: str = "app", **kw: Any) -> PolicyFact:
    base: dict[str, Any] = {
        "principal_kind": "role",
        "principal_name": name,
        "policy_arn": ARN,
        "policy_name": "Guard",
    }
    base.update(kw)
    return fact("attachment", op, minute, event_id, **base)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "history.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteHistoryStore]:
    s = await SqliteHistoryStore.open(db_path)
    yield s
    await s.close()


async def test_implements_the_protocol(store: SqliteHistoryStore) -> None:
    as_protocol: PolicyHistoryStore = store  # checked by mypy
    assert await as_protocol.record([]) == 0
    assert await as_protocol.inline_policy(ACCT, "role", "app", "guard", before=None) is None


# --------------------------------------------------------------------------------------------
# Inline policies: eventTime order, before, idempotence
# --------------------------------------------------------------------------------------------


async def test_inline_policy_is_ordered_by_event_time_not_arrival(
    store: SqliteHistoryStore,
) -> None:
    # Files arrive out of order: the newest put first, the oldest last.
    await store.record([inline("put", 30, "e30", doc(30))])
    await store.record([inline("delete", 40, "e40")])
    await store.record([inline("put", 10, "e10", doc(10))])
    await store.record([inline("put", 20, "e20", doc(20))])

    latest = await store.inline_policy(ACCT, "role", "app", "guard", before=None)
    assert latest is not None
    assert (latest.event_id, latest.document) == ("e30", doc(30))
    # the delete at :40 restores what was there just before it: the put at :30
    before_delete = await store.inline_policy(ACCT, "role", "app", "guard", before=at(40))
    assert before_delete is not None
    assert before_delete.document == doc(30)


async def test_before_is_strict(store: SqliteHistoryStore) -> None:
    await store.record([inline("put", 10, "e10", doc(10)), inline("put", 20, "e20", doc(20))])

    async def document(before: str | None) -> str | None:
        found = await store.inline_policy(ACCT, "role", "app", "guard", before=before)
        return None if found is None else found.document

    assert await document(at(10)) is None
    assert await document("2026-11-01T12:10:00.000001Z") == doc(10)
    assert await document(at(20)) == doc(10)
    assert await document(at(21)) == doc(20)
    assert await document("2026-11-01T14:21:00+02:00") == doc(20)  # any zone, compared in UTC
    assert await document(None) == doc(20)
    with pytest.raises(ValueError, match="before"):
        await document("yesterday")


async def test_ties_in_event_time_are_broken_by_event_id(store: SqliteHistoryStore) -> None:
    await store.record([inline("put", 10, "b", doc(2))])
    await store.record([inline("put", 10, "a", doc(1))])
    await store.record([inline("put", 10, "c", doc(3))])
    found = await store.inline_policy(ACCT, "role", "app", "guard", before=None)
    assert found is not None
    assert found.event_id == "c"


async def test_a_position_within_one_second_counts_lower_event_ids(
    store: PolicyHistoryStore,
) -> None:
    """``before_event_id``: the position of one event in the fold's order (eventTime, then
    eventID), so a change compares with the fact just before it even within one second."""
    await store.record([inline("put", 9, "z", doc(9))])
    await store.record([inline("put", 10, "b", doc(2)), inline("put", 10, "d", doc(4))])

    async def previous(tie: str | None) -> str | None:
        found = await store.inline_policy(
            ACCT, "role", "app", "guard", before=at(10), before_event_id=tie
        )
        return None if found is None else found.event_id

    assert await previous(None) == "z"  # strictly before the second
    assert await previous("a") == "z"
    assert await previous("b") == "z"  # never the event itself
    assert await previous("c") == "b"
    assert await previous("d") == "b"
    assert await previous("d\x00") == "d"  # up to and including "d"
    assert await previous("e") == "d"


async def test_a_position_within_one_second_for_managed_policies(
    store: PolicyHistoryStore,
) -> None:
    await store.record(
        [
            managed("put", 1, "m1", version_id="v1", document=doc(1), set_as_default=True),
            version("put", 2, "m2b", version_id="v2", document=doc(2), set_as_default=True),
            set_default(2, "m2a", "v1"),  # the same second, a lower eventID: folded first
        ]
    )
    state = await store.managed_policy(ARN, before=at(2), before_event_id="m2b")
    assert state is not None
    assert state.default_version_id == "v1"
    assert set(state.versions) == {"v1"}
    found = await store.policy_version(ARN, "v2", before=at(2), before_event_id="m2b\x00")
    assert found is not None
    assert (found.fact.event_id, found.is_default) == ("m2b", True)


async def test_boundary_put_is_the_last_set_even_if_removed_since(
    store: PolicyHistoryStore,
) -> None:
    other = f"arn:aws:iam::{ACCT}:policy/Other"

    def boundary(op: str, minute: int, event_id: str, arn: str | None) -> PolicyFact:
        return fact(
            "boundary",
            op,
            minute,
            event_id,
            principal_kind="role",
            principal_name="app",
            policy_arn=arn,
        )

    await store.record(
        [
            boundary("put", 1, "b1", ARN),
            boundary("delete", 2, "b2", None),
            boundary("put", 3, "b3b", other),
            boundary("put", 3, "b3a", ARN),
        ]
    )

    async def last(minute: int, tie: str | None = None) -> str | None:
        found = await store.boundary_put(
            ACCT, "role", "app", before=at(minute), before_event_id=tie
        )
        return None if found is None else found.event_id

    assert await last(1) is None
    assert await last(3) == "b1"  # the removal at :02 does not hide it
    assert await store.boundary_fact(ACCT, "role", "app", before=at(3)) is None
    assert await last(3, "b3b") == "b3a"
    assert await last(4) == "b3b"
    assert await store.boundary_put(ACCT, "user", "app", before=None) is None


async def test_inline_policies_are_keyed_by_account_principal_and_name(
    store: SqliteHistoryStore,
) -> None:
    await store.record(
        [
            inline("put", 1, "e1", doc(1)),
            inline("put", 2, "e2", doc(2), account_id=OTHER),
            inline("put", 3, "e3", doc(3), principal_kind="user"),
            inline("put", 4, "e4", doc(4), principal_name="other"),
            inline("put", 5, "e5", doc(5), policy_name="other"),
        ]
    )
    found = await store.inline_policy(ACCT, "role", "app", "guard", before=None)
    assert found is not None
    assert found.document == doc(1)
    found = await store.inline_policy(OTHER, "role", "app", "guard", before=None)
    assert found is not None
    assert found.document == doc(2)
    assert await store.inline_policy(OTHER, "user", "app", "guard", before=None) is None


async def test_the_latest_put_is_returned_even_when_its_document_is_unknown(
    store: SqliteHistoryStore,
) -> None:
    # CloudTrail cut the second document: history must not pretend the first is the latest.
    await store.record([inline("put", 1, "e1", doc(1)), inline("put", 2, "e2", None)])
    found = await store.inline_policy(ACCT, "role", "app", "guard", before=None)
    assert found is not None
    assert (found.event_id, found.document) == ("e2", None)


async def test_recording_the_same_event_again_changes_nothing(store: SqliteHistoryStore) -> None:
    first = [inline("put", 1, "e1", doc(1)), attach("put", 1, "e1b")]
    assert await store.record(first) == 2
    assert await store.record(first) == 0
    assert await store.record(list(reversed(first))) == 0
    # the same eventID with another document (a forged duplicate): the first one stays
    assert await store.record([inline("put", 1, "e1", doc(666))]) == 0
    found = await store.inline_policy(ACCT, "role", "app", "guard", before=None)
    assert found is not None
    assert found.document == doc(1)
    # one event may carry several distinct facts
    assert await store.record([attach("put", 1, "e1", name="other")]) == 1


async def test_facts_come_back_exactly(store: SqliteHistoryStore) -> None:
    weird = doc(1).replace("Deny", "Deny\u00e9 'quote'; DROP TABLE policy_fact; --\x00")
    original = inline("put", 1, "e1", weird, principal_name="a+b=c,d.e@f-g_h")
    await store.record([original])
    found = await store.inline_policy(ACCT, "role", "a+b=c,d.e@f-g_h", "guard", before=None)
    assert found == original


# --------------------------------------------------------------------------------------------
# Attachments
# --------------------------------------------------------------------------------------------


async def test_attach_and_detach_fold_in_event_time_order(store: SqliteHistoryStore) -> None:
    facts = [
        attach("put", 1, "a1", name="app"),
        attach("put", 2, "a2", name="ci", principal_kind="user"),
        attach("delete", 3, "a3", name="app"),
        attach("put", 4, "a4", name="devs", principal_kind="group"),
        attach("put", 5, "a5", name="app"),
        attach("delete", 6, "a6", name="ci", principal_kind="user"),
    ]
    shuffled = facts[:]
    random.Random(7).shuffle(shuffled)
    for item in shuffled:  # arrival order is irrelevant
        await store.record([item])

    async def attached(minute: int | None) -> list[tuple[str, str]]:
        before = None if minute is None else at(minute)
        return list(await store.attachments(ARN, before=before))

    assert await attached(1) == []
    assert await attached(2) == [("role", "app")]
    assert await attached(3) == [("role", "app"), ("user", "ci")]
    assert await attached(4) == [("user", "ci")]
    assert await attached(6) == [("group", "devs"), ("role", "app"), ("user", "ci")]
    assert await attached(None) == [("group", "devs"), ("role", "app")]
    timeline = await store.attachment_facts(ARN, before=at(6))
    assert [f.event_id for f in timeline] == ["a1", "a2", "a3", "a4", "a5"]

    assert await store.attached_policies(ACCT, "role", "app", before=at(3)) == [ARN]
    assert await store.attached_policies(ACCT, "role", "app", before=at(4)) == []
    assert await store.attached_policies(ACCT, "role", "app", before=None) == [ARN]
    assert await store.attached_policies(ACCT, "user", "ci", before=None) == []


async def test_aws_managed_policy_attachments_are_per_account(store: SqliteHistoryStore) -> None:
    await store.record(
        [
            attach("put", 1, "x1", policy_arn=AWS_ARN, policy_name="ReadOnlyAccess"),
            attach("put", 2, "x2", name="b", policy_arn=AWS_ARN, account_id=OTHER, policy_name="R"),
            attach("put", 3, "x3", policy_arn=ARN),
        ]
    )
    with pytest.raises(ValueError, match="account_id"):
        await store.attachments(AWS_ARN, before=None)
    assert await store.attachments(AWS_ARN, before=None, account_id=ACCT) == [("role", "app")]
    assert await store.attachments(AWS_ARN, before=None, account_id=OTHER) == [("role", "b")]
    assert await store.attached_policies(ACCT, "role", "app", before=None) == [ARN, AWS_ARN]


# --------------------------------------------------------------------------------------------
# Permissions boundaries
# --------------------------------------------------------------------------------------------


async def test_boundary_is_the_last_one_set(store: SqliteHistoryStore) -> None:
    other = f"arn:aws:iam::{ACCT}:policy/Other"

    def boundary(op: str, minute: int, event_id: str, arn: str | None) -> PolicyFact:
        return fact(
            "boundary",
            op,
            minute,
            event_id,
            principal_kind="user",
            principal_name="dev",
            policy_arn=arn,
        )

    await store.record([boundary("delete", 3, "b3", None)])
    await store.record([boundary("put", 1, "b1", ARN), boundary("put", 4, "b4", other)])
    assert await store.boundary(ACCT, "user", "dev", before=at(1)) is None
    assert await store.boundary(ACCT, "user", "dev", before=at(2)) == ARN
    assert await store.boundary(ACCT, "user", "dev", before=at(3)) == ARN  # before the delete
    assert await store.boundary(ACCT, "user", "dev", before=at(4)) is None
    assert await store.boundary(ACCT, "user", "dev", before=None) == other
    assert await store.boundary(ACCT, "role", "dev", before=None) is None


# --------------------------------------------------------------------------------------------
# Managed policies and their versions
# --------------------------------------------------------------------------------------------


def managed(op: str, minute: int, event_id: str, **kw: Any) -> PolicyFact:
    base: dict[str, Any] = {"policy_arn": ARN, "policy_name": "Guard", "path": "/team/"}
    base.update(kw)
    return fact("managed_policy", op, minute, event_id, **base)


def version(op: str, minute: int, event_id: str, **kw: Any) -> PolicyFact:
    base: dict[str, Any] = {"policy_arn": ARN, "policy_name": "Guard", "path": "/team/"}
    base.update(kw)
    return fact("policy_version", op, minute, event_id, **base)


def set_default(minute: int, event_id: str, version_id: str) -> PolicyFact:
    return fact(
        "default_version",
        "put",
        minute,
        event_id,
        policy_arn=ARN,
        policy_name="Guard",
        version_id=version_id,
        set_as_default=True,
    )


LIFE = [
    managed("put", 1, "m1", version_id="v1", document=doc(1), set_as_default=True),
    version("put", 2, "m2", version_id="v2", document=doc(2), set_as_default=True),
    version("put", 3, "m3", version_id="v3", document=doc(3), set_as_default=False),
    set_default(4, "m4", "v3"),
    version("delete", 5, "m5", version_id="v1"),
    version("delete", 6, "m6", version_id="v2"),
    managed("delete", 7, "m7"),
]


async def test_managed_policy_versions_fold_in_event_time_order(store: SqliteHistoryStore) -> None:
    for item in reversed(LIFE):
        await store.record([item])

    async def state(minute: int | None) -> ManagedPolicyState | None:
        return await store.managed_policy(ARN, before=None if minute is None else at(minute))

    assert await state(1) is None
    s2 = await state(2)
    assert s2 is not None
    assert (s2.policy_name, s2.path, s2.account_id) == ("Guard", "/team/", ACCT)
    assert (s2.default_version_id, s2.default_document) == ("v1", doc(1))
    assert s2.versions == {"v1": doc(1)}
    s4 = await state(4)
    assert s4 is not None
    assert s4.default_version_id == "v2"
    assert s4.versions == {"v1": doc(1), "v2": doc(2), "v3": doc(3)}
    assert (s4.event_id, s4.event_time) == ("m3", at(3))
    s5 = await state(5)
    assert s5 is not None
    assert (s5.default_version_id, s5.default_document) == ("v3", doc(3))
    s7 = await state(7)
    assert s7 is not None
    assert s7.versions == {"v3": doc(3)}
    assert s7.default_version_id == "v3"
    assert await state(8) is None  # deleted
    assert await state(None) is None


async def test_policy_version_and_whether_it_was_default(store: SqliteHistoryStore) -> None:
    await store.record(LIFE)
    v2 = await store.policy_version(ARN, "v2", before=at(6))  # just before DeletePolicyVersion
    assert v2 is not None
    assert (v2.document, v2.is_default) == (doc(2), False)
    assert v2.fact.event_id == "m2"
    v2_then = await store.policy_version(ARN, "v2", before=at(4))
    assert v2_then is not None
    assert v2_then.is_default is True
    assert await store.policy_version(ARN, "v2", before=at(7)) is None  # deleted by then
    assert await store.policy_version(ARN, "v9", before=at(6)) is None
    assert await store.policy_version(ARN, "v1") is None  # default before=None: after it all


async def test_recreated_policy_starts_afresh(store: SqliteHistoryStore) -> None:
    await store.record(LIFE)
    await store.record([managed("put", 9, "m9", version_id="v1", document=doc(9))])
    state = await store.managed_policy(ARN, before=None)
    assert state is not None
    assert state.versions == {"v1": doc(9)}
    assert state.default_version_id is None  # the fact did not say set_as_default


async def test_versions_without_the_creation_still_fold(store: SqliteHistoryStore) -> None:
    # History started after CreatePolicy: name and path come from the ARN.
    await store.record(
        [
            version(
                "put",
                1,
                "v",
                version_id="v4",
                document=doc(4),
                set_as_default=True,
                policy_name=None,
                path=None,
            ),
        ]
    )
    state = await store.managed_policy(ARN, before=None)
    assert state is not None
    assert (state.policy_name, state.path, state.default_version_id) == ("Guard", "/team/", "v4")


async def test_a_version_whose_id_is_unknown_makes_the_default_unknown(
    store: SqliteHistoryStore,
) -> None:
    await store.record(
        [
            managed("put", 1, "m1", version_id="v1", document=doc(1), set_as_default=True),
            version("put", 2, "m2", version_id=None, document=doc(2), set_as_default=True),
        ]
    )
    state = await store.managed_policy(ARN, before=None)
    assert state is not None
    assert (state.default_version_id, state.default_document) == (None, None)
    assert state.versions == {"v1": doc(1)}
    v1 = await store.policy_version(ARN, "v1")
    assert v1 is not None
    assert v1.is_default is None


async def test_snapshot_facts_take_part_in_time_order(store: SqliteHistoryStore) -> None:
    snap = "2026-11-01T12:05:00.250000Z"
    snapshot = [
        PolicyFact(
            kind="managed_policy",
            op="put",
            account_id=ACCT,
            principal_kind=None,
            principal_name=None,
            policy_name="Guard",
            policy_arn=ARN,
            version_id="v3",
            document=doc(3),
            path="/team/",
            set_as_default=True,
            event_id=f"snapshot:{snap}:{ACCT}:00000001",
            event_time=snap,
        ),
        PolicyFact(
            kind="policy_version",
            op="put",
            account_id=ACCT,
            principal_kind=None,
            principal_name=None,
            policy_name="Guard",
            policy_arn=ARN,
            version_id="v2",
            document=doc(2),
            path="/team/",
            set_as_default=False,
            event_id=f"snapshot:{snap}:{ACCT}:00000002",
            event_time=snap,
        ),
    ]
    await store.record(snapshot)
    await store.record([version("put", 6, "later", version_id="v4", document=doc(4))])
    await store.record([version("put", 1, "earlier", version_id="v9", document=doc(9))])
    state = await store.managed_policy(ARN, before=None)
    assert state is not None
    assert state.versions == {"v3": doc(3), "v2": doc(2), "v4": doc(4)}  # v9: superseded
    assert state.default_version_id == "v3"


# --------------------------------------------------------------------------------------------
# Durability and files
# --------------------------------------------------------------------------------------------


async def test_facts_survive_reopen(db_path: Path) -> None:
    async with await SqliteHistoryStore.open(db_path) as first:
        await first.record([*LIFE, inline("put", 1, "e1", doc(1))])
    async with await SqliteHistoryStore.open(db_path) as second:
        assert await second.record(LIFE) == 0
        found = await second.inline_policy(ACCT, "role", "app", "guard", before=None)
        assert found is not None
        assert found.document == doc(1)
        v3 = await second.policy_version(ARN, "v3", before=at(7))
        assert v3 is not None
        assert v3.is_default is True


async def test_concurrent_records_are_serialised(store: SqliteHistoryStore) -> None:
    batches = [[inline("put", i % 60, f"e{i}", doc(i))] for i in range(50)]
    counts = await asyncio.gather(*(store.record(batch) for batch in batches))
    assert sum(counts) == 50


async def test_shares_a_file_with_the_dedup_store(db_path: Path) -> None:
    dedup = await SqliteDedupStore.open(db_path, ttl_seconds=60)
    await dedup.record(["k"])
    async with await SqliteHistoryStore.open(db_path) as history:
        await history.record([inline("put", 1, "e1", doc(1))])
    await dedup.close()
    async with await SqliteDedupStore.open(db_path, ttl_seconds=60) as again:
        assert await again.filter_new(["k"]) == []
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT component, schema_version FROM meta").fetchall() == [
            ("policy_history", 2)
        ]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_newer_schema_is_refused(db_path: Path) -> None:
    async with await SqliteHistoryStore.open(db_path):
        pass
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE meta SET schema_version = 99 WHERE component = 'policy_history'")
    with pytest.raises(StateError, match="newer"):
        await SqliteHistoryStore.open(db_path)


async def test_foreign_tables_of_the_same_name_are_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE policy_fact (x)")
    with pytest.raises(StateError, match="policy_fact"):
        await SqliteHistoryStore.open(db_path)


async def test_not_a_database_or_a_directory(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a SQLite database, just some bytes" * 100)
    with pytest.raises(StateError, match="junk"):
        await SqliteHistoryStore.open(junk)
    with pytest.raises(StateError, match="directory"):
        await SqliteHistoryStore.open(tmp_path)


async def test_a_closed_store_refuses_work(db_path: Path) -> None:
    store = await SqliteHistoryStore.open(db_path)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StateError, match="closed"):
        await store.record([inline("put", 1, "e1", doc(1))])


async def test_bad_input_is_a_caller_error(store: SqliteHistoryStore) -> None:
    with pytest.raises(TypeError):
        await store.record(["not a fact"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="eventTime"):
        await store.record([inline("put", 1, "e1", doc(1), event_time="soon")])
    assert await store.inline_policy(ACCT, "role", "app", "guard", before=None) is None


def test_default_path_is_next_to_the_state_file() -> None:
    assert default_history_path("/var/lib/trailguard/state.sqlite3") == Path(
        "/var/lib/trailguard/state.history.sqlite3"
    )
    assert default_history_path("state") == Path("state.history")
