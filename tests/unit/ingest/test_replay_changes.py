"""``trailguard replay`` judges policy changes after the last file: each change is compared with
its true predecessor whatever order the files come in, and memory stays bounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from tests.factories import encode_file, make_record
from trailguard.config import Config
from trailguard.detect.process import Detector
from trailguard.detect.rules import RuleSet
from trailguard.ingest.replay import LocalReplay, ReplaySummary
from trailguard.outputs.jsonl import JsonlWriter
from trailguard.state.policy_history_memory import ScratchHistoryStore

GUARDED = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::payroll/*"},
        ],
    }
)
UNGUARDED = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
    }
)
#: narrower than both: reading one bucket only
NARROW = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::public/*"}
        ],
    }
)


def put(document: str, minute: int, role: str = "app") -> dict[str, Any]:
    return make_record(
        "PutRolePolicy",
        {"roleName": role, "policyName": "guard", "policyDocument": document},
        event_time=f"2026-11-01T12:{minute:02d}:00Z",
    )


async def replay(
    files: list[Path], out: Path, **kw: Any
) -> tuple[ReplaySummary, list[dict[str, Any]]]:
    detector = Detector(RuleSet.from_config(Config()), history=True)
    history = ScratchHistoryStore()
    try:
        with JsonlWriter(str(out), fsync=False) as writer:
            summary = await LocalReplay(detector, writer, history=history, **kw).run(
                [str(f) for f in files]
            )
    finally:
        await history.close()
    return summary, read_lines(out)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, *records: dict[str, Any]) -> Path:
    path.write_bytes(encode_file(list(records)))
    return path


async def test_a_predecessor_in_a_later_file_is_found(tmp_path: Path) -> None:
    """The weakening Put is in the first file read, the Put before it in the second: before,
    the change was judged at once and counted baseline_unknown; now it is compared with it."""
    first, weak = put(GUARDED, 0), put(UNGUARDED, 1)
    later = write(tmp_path / "a.json", weak)
    earlier = write(tmp_path / "b.json", first)
    summary, detections = await replay([later, earlier], tmp_path / "out.jsonl")
    (detection,) = detections
    assert detection["event_id"] == weak["eventID"]
    assert detection["change"]["verdict"] == "weakened"
    assert detection["change"]["previous_event_id"] == first["eventID"]
    assert summary.changes == {"baseline_unknown": 1, "weakened": 1}


async def test_each_change_is_compared_with_the_one_just_before_it(tmp_path: Path) -> None:
    """guarded (12:00) -> narrow (12:01) -> unguarded (12:02), read newest first: the last one
    is a weakening of the narrow one (compared with the guarded one it would not be), and the
    narrowing is not."""
    guarded, narrow, unguarded = put(GUARDED, 0), put(NARROW, 1), put(UNGUARDED, 2)
    files = [
        write(tmp_path / "3.json", unguarded),
        write(tmp_path / "1.json", guarded),
        write(tmp_path / "2.json", narrow),
    ]
    summary, detections = await replay(files, tmp_path / "out.jsonl")
    (detection,) = detections
    assert detection["event_id"] == unguarded["eventID"]
    assert detection["change"]["previous_event_id"] == narrow["eventID"]
    assert summary.changes == {"baseline_unknown": 1, "not_weakened": 1, "weakened": 1}


async def test_a_change_delivered_twice_is_judged_and_reported_once(tmp_path: Path) -> None:
    first, weak = put(GUARDED, 0), put(UNGUARDED, 1)
    files = [write(tmp_path / "a.json", first, weak), write(tmp_path / "b.json", weak)]
    summary, detections = await replay(files, tmp_path / "out.jsonl")
    assert [d["event_id"] for d in detections] == [weak["eventID"]]
    assert summary.changes == {"baseline_unknown": 1, "weakened": 1}


async def test_past_the_memory_bound_changes_are_judged_early_and_said(tmp_path: Path) -> None:
    """With a bound of nothing, every file's changes are judged as it is read: the predecessor
    in a later file is missed again, and the run says why."""
    first, weak = put(GUARDED, 0), put(UNGUARDED, 1)
    later = write(tmp_path / "a.json", weak)
    earlier = write(tmp_path / "b.json", first)
    with capture_logs() as logs:
        summary, detections = await replay(
            [later, earlier], tmp_path / "out.jsonl", max_pending_bytes=0
        )
    assert detections == []
    assert summary.changes == {"baseline_unknown": 2}
    (early,) = [e for e in logs if e["event"] == "replay.changes_judged_early"]
    assert early["log_level"] == "warning"
    assert early["changes"] == 1


async def test_changes_of_many_files_are_all_judged(tmp_path: Path) -> None:
    """More changes than one judging batch: every one is judged and each weakening reported."""
    files = []
    weak_ids = set()
    for i in range(300):
        role = f"r{i}"
        a, b = put(GUARDED, 0, role), put(UNGUARDED, 1, role)
        weak_ids.add(b["eventID"])
        files.append(write(tmp_path / f"{i:03d}-b.json", b))
        files.append(write(tmp_path / f"{i:03d}-a.json", a))
    summary, detections = await replay(files, tmp_path / "out.jsonl")
    assert {d["event_id"] for d in detections} == weak_ids
    assert summary.changes == {"baseline_unknown": 300, "weakened": 300}
