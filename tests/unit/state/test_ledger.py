"""The event ledger (state/ledger.py): eventID -> the contents it was seen with.

The digests come from real records through detect/digest.py, as ingestion computes them: the same
record delivered twice (S3 and EventBridge, SQS redelivery) is one content; a copy with any
security-relevant field changed is another, and makes the eventID a conflict.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.factories import ACCOUNT, assumed_role_identity, make_record
from trailguard.detect.digest import EventDigest, digest_of, event_digest
from trailguard.detect.record import Record
from trailguard.errors import StateError
from trailguard.state.ledger import EventLedger, SqliteEventLedger
from trailguard.state.policy_history_sqlite import SqliteHistoryStore

DENY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*"}]}'
ALLOW = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*"}]}'


def decode(raw: dict[str, Any]) -> Record:
    return msgspec.json.decode(json.dumps(raw).encode(), type=Record)


def put(document: str = DENY, **changes: Any) -> dict[str, Any]:
    params = {"roleName": "app", "policyName": "guard", "policyDocument": document}
    return make_record("PutRolePolicy", params, event_id="evt-1") | changes


def digest(raw: dict[str, Any]) -> EventDigest:
    found = digest_of(decode(raw))
    assert found is not None
    return found


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SqliteEventLedger]:
    async with await SqliteEventLedger.open(tmp_path / "history.sqlite3") as opened:
        yield opened


# ---------------------------------------------------------------------------------------------
# The digest
# ---------------------------------------------------------------------------------------------


def test_the_same_record_has_one_digest_whatever_its_layout() -> None:
    raw = put()
    relaid = json.loads(json.dumps(raw, indent=3, sort_keys=True))
    assert event_digest(decode(raw)) == event_digest(decode(relaid))
    # Fields outside the projection (a delivery's envelope, tlsDetails, ...) do not count.
    assert event_digest(decode(raw)) == event_digest(decode(raw | {"requestID": "other"}))


@pytest.mark.parametrize(
    "changes",
    [
        {"eventName": "PutUserPolicy"},
        {"eventSource": "sts.amazonaws.com"},
        {"eventTime": "2026-11-01T11:59:59Z"},
        {"recipientAccountId": "111122223333"},
        {"errorCode": "AccessDenied"},
        {"userIdentity": assumed_role_identity("prod-app", "x")},
        {"requestParameters": {"roleName": "app", "policyName": "guard", "policyDocument": ALLOW}},
        {"responseElements": {"policyVersion": {"versionId": "v9"}}},
    ],
    ids=["name", "source", "time", "account", "error", "identity", "parameters", "response"],
)
def test_any_security_relevant_change_is_another_digest(changes: dict[str, Any]) -> None:
    assert event_digest(decode(put())) != event_digest(decode(put() | changes))


def test_the_issuer_alone_changes_the_digest() -> None:
    real = put(userIdentity=assumed_role_identity("ops", "alice"))
    forged = json.loads(json.dumps(real))
    forged["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] = (
        f"arn:aws:iam::{ACCOUNT}:role/prod-app"
    )
    assert event_digest(decode(real)) != event_digest(decode(forged))


def test_a_record_without_an_event_id_has_no_digest_entry() -> None:
    raw = put()
    del raw["eventID"]
    assert digest_of(decode(raw)) is None


# ---------------------------------------------------------------------------------------------
# The ledger
# ---------------------------------------------------------------------------------------------


async def test_sqlite_ledger_implements_the_protocol(ledger: SqliteEventLedger) -> None:
    as_protocol: EventLedger = ledger  # checked by mypy
    assert await as_protocol.conflicts(["evt-1"]) == {}


async def test_the_same_content_twice_is_no_conflict(ledger: SqliteEventLedger) -> None:
    assert await ledger.observe([digest(put())], path="s3") == []
    # The same event by EventBridge, then redelivered: still one content.
    assert await ledger.observe([digest(put()), digest(put())], path="eventbridge") == []
    assert await ledger.conflicts(["evt-1"]) == {}


async def test_a_second_content_is_a_conflict(ledger: SqliteEventLedger) -> None:
    real, forged = digest(put()), digest(put(ALLOW))
    assert await ledger.observe([real], path="s3") == []
    [conflict] = await ledger.observe([forged], path="eventbridge")
    assert conflict.event_id == "evt-1"
    assert conflict.new
    assert conflict.digests == (real.digest, forged.digest)  # first seen first
    assert [e.path for e in conflict.entries] == ["s3", "eventbridge"]
    assert "evt-1 seen with 2 different contents" in conflict.describe()
    # Seen again: still a conflict, but nothing new to report.
    [again] = await ledger.observe([forged, real], path="s3")
    assert not again.new
    assert again.digests == conflict.digests
    found = await ledger.conflicts(["evt-1", "evt-2"])
    assert list(found) == ["evt-1"]
    assert not found["evt-1"].new


async def test_two_contents_in_one_batch_are_a_conflict(ledger: SqliteEventLedger) -> None:
    other = digest(put(eventID="evt-2"))
    conflicts = await ledger.observe([digest(put()), other, digest(put(ALLOW))], path="file")
    assert [(c.event_id, c.new, len(c.entries)) for c in conflicts] == [("evt-1", True, 2)]


async def test_the_ledger_is_durable_and_shares_the_history_file(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    async with await SqliteHistoryStore.open(path):
        pass
    async with await SqliteEventLedger.open(path) as ledger:
        await ledger.observe([digest(put()), digest(put(ALLOW))], path="s3")
    async with await SqliteEventLedger.open(path) as ledger:
        assert list(await ledger.conflicts(["evt-1"])) == ["evt-1"]
    with sqlite3.connect(path) as conn:
        assert sorted(conn.execute("SELECT component, schema_version FROM meta")) == [
            ("event_ledger", 1),
            ("policy_history", 2),
        ]


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    async with await SqliteEventLedger.open(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET schema_version = 9 WHERE component = 'event_ledger'")
    with pytest.raises(StateError, match="event ledger schema version 9 is newer"):
        await SqliteEventLedger.open(path)


@pytest.mark.parametrize(
    ("table", "store"),
    [("event_ledger", SqliteEventLedger), ("policy_fact", SqliteHistoryStore)],
)
async def test_a_table_of_that_name_not_made_by_trailguard_is_refused(
    tmp_path: Path, table: str, store: type[SqliteEventLedger] | type[SqliteHistoryStore]
) -> None:
    """A file that already holds a table of the store's name but no version of it in ``meta``
    is someone else's: refused, left as it was."""
    path = tmp_path / "history.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE {table} (x TEXT)")
    with pytest.raises(StateError, match=f"a table named '{table}' not made by trailguard"):
        await store.open(path)
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert names == {table}


async def test_observe_refuses_what_is_not_a_digest(ledger: SqliteEventLedger) -> None:
    with pytest.raises(TypeError):
        await ledger.observe(["evt-1"], path="s3")  # type: ignore[list-item]
    assert await ledger.observe([], path="s3") == []


# ---------------------------------------------------------------------------------------------
# Replay feeds the ledger too
# ---------------------------------------------------------------------------------------------


async def test_replay_reports_a_conflict_and_flags_its_detections(tmp_path: Path) -> None:
    from tests.factories import encode_file
    from trailguard.config import Config
    from trailguard.detect.process import Detector
    from trailguard.detect.rules import RuleSet
    from trailguard.ingest.replay import LocalReplay
    from trailguard.outputs.jsonl import JsonlWriter

    real = make_record("DeleteRolePolicy", event_id="evt-9")
    forged = real | {"userIdentity": assumed_role_identity("prod-app", "x")}
    (tmp_path / "a.json").write_bytes(encode_file([real]))
    (tmp_path / "b.json").write_bytes(encode_file([forged, real]))
    out = tmp_path / "detections.jsonl"
    detector = Detector(RuleSet.from_config(Config()), history=True)
    async with (
        await SqliteHistoryStore.open(tmp_path / "h.sqlite3") as history,
        await SqliteEventLedger.open(tmp_path / "h.sqlite3") as ledger,
    ):
        with JsonlWriter(str(out), fsync=False) as writer:
            replay = LocalReplay(detector, writer, history=history, ledger=ledger)
            summary = await replay.run([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
        assert list(await ledger.conflicts(["evt-9"])) == ["evt-9"]
    assert summary.conflicts == 1
    assert "event ledger: 1 eventIDs seen with two different contents" in summary.render()
    written = [json.loads(line) for line in out.read_text().splitlines()]
    # The real one first (unflagged), then each content once, flagged.
    assert [(d["event_id"], d["forgery_suspected"]) for d in written] == [
        ("evt-9", False),
        ("evt-9", True),
        ("evt-9", True),
    ]
    assert summary.duplicates == 0


async def test_history_schema_1_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    async with await SqliteHistoryStore.open(path):
        pass
    arn = f"arn:aws:iam::{ACCOUNT}:policy/DevBoundary"
    with sqlite3.connect(path) as conn:  # what trailguard before schema 2 left
        conn.execute("ALTER TABLE policy_fact DROP COLUMN event_name")
        conn.execute("UPDATE meta SET schema_version = 1 WHERE component = 'policy_history'")
        conn.execute(
            "INSERT INTO policy_fact (event_id, identity, time_key, seq, recorded_at, kind, op,"
            " account_id, principal_kind, principal_name, policy_name, policy_arn, event_time)"
            " VALUES ('old-1', 'x', '2026-01-01T00:00:00.000000Z', 0, 0, 'boundary', 'put', ?,"
            " 'role', 'app', 'DevBoundary', ?, '2026-01-01T00:00:00Z')",
            (ACCOUNT, arn),
        )
    async with await SqliteHistoryStore.open(path) as history:
        old = await history.boundary_fact(ACCOUNT, "role", "app", before=None)
    assert old is not None
    assert (old.policy_arn, old.event_name) == (arn, None)  # kept, but with no eventName
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT schema_version FROM meta WHERE component = 'policy_history'"
        ).fetchone() == (2,)
