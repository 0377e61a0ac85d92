"""DetectionSink's dedup keys for conflicted events: each content of a conflicted eventID is
reported once, flagged ``forgery_suspected`` -- even after the first content went out unflagged
-- and the keys survive a restart (recover_from_output reads them back from the output)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tests.factories import assumed_role_identity
from tests.remediation_support import detection
from trailguard.detect.detection import Detection
from trailguard.outputs.jsonl import JsonlWriter
from trailguard.outputs.sink import DetectionSink, recover_from_output
from trailguard.state.dedup import SqliteDedupStore


@pytest.fixture
async def dedup(tmp_path: Path) -> AsyncIterator[SqliteDedupStore]:
    async with await SqliteDedupStore.open(tmp_path / "state.sqlite3", ttl_seconds=3600) as store:
        yield store


def flagged(d: Detection) -> Detection:
    return msgspec.structs.replace(d, forgery_suspected=True)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def test_each_content_of_a_conflicted_event_is_reported_once(
    tmp_path: Path, dedup: SqliteDedupStore
) -> None:
    out = tmp_path / "detections.jsonl"
    real = detection("DeleteRolePolicy", event_id="evt-1")
    forged = detection(
        "DeleteRolePolicy", event_id="evt-1", user_identity=assumed_role_identity("prod-app")
    )
    assert real.event_digest != forged.event_digest
    with JsonlWriter(str(out), fsync=False) as writer:
        sink = DetectionSink(writer, dedup)
        assert len((await sink.commit([real])).written) == 1
        # The same content again: a duplicate, as always.
        assert (await sink.commit([real])).duplicates == 1
        # The forged content, flagged: written, once.
        assert len((await sink.commit([flagged(forged)])).written) == 1
        assert (await sink.commit([flagged(forged)])).duplicates == 1
        # The real content, now known to be conflicted: reported again, flagged, once.
        assert len((await sink.commit([flagged(real)])).written) == 1
        assert (await sink.commit([flagged(real), flagged(forged)])).duplicates == 2
    assert [(d["event_id"], d["forgery_suspected"]) for d in lines(out)] == [
        ("evt-1", False),
        ("evt-1", True),
        ("evt-1", True),
    ]


async def test_flagged_keys_are_recovered_from_the_output(
    tmp_path: Path, dedup: SqliteDedupStore
) -> None:
    out = tmp_path / "detections.jsonl"
    forged = flagged(detection("DeleteRolePolicy", event_id="evt-1"))
    with JsonlWriter(str(out), fsync=False) as writer:
        writer.write_batch([forged])  # written, then a crash before the dedup record
    assert await recover_from_output(str(out), dedup) == 1
    assert await dedup.filter_new(["evt-1", f"evt-1#{forged.event_digest}"]) == ["evt-1"]
