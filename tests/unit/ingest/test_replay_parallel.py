"""``trailguard replay`` over worker processes gives what one process gives, in the same order."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.unit.decode_pool.test_decode_pool import blob, record
from trailguard.config import Config
from trailguard.decode_pool import DecodePool
from trailguard.detect.process import Detector
from trailguard.detect.rules import RuleSet
from trailguard.ingest import replay as replay_mod
from trailguard.ingest.replay import LocalReplay, ReplaySummary
from trailguard.outputs.jsonl import JsonlWriter


def folder(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(24):
        records = [record(i * 100 + j) for j in range(i % 3)] + [record(9999)]  # one duplicate
        (root / "a" / f"{i:03d}.json.gz").write_bytes(blob(*records))
    (root / "b" / "corrupt.json.gz").write_bytes(gzip.compress(b'{"Records": [{"eventN'))
    (root / "b" / "plain.json").write_text(json.dumps({"Records": [record(5000)]}))
    (root / "b" / "gone.json").symlink_to(root / "nowhere.json")  # listed, cannot be read
    (root / "b" / "README").write_text("not a log")
    return root


async def replay(root: Path, out: Path, pool: Any) -> ReplaySummary:
    detector = Detector(RuleSet.from_config(Config()))
    with JsonlWriter(str(out), fsync=False) as writer:
        return await LocalReplay(detector, writer).run([str(root)], pool=pool)


@pytest.mark.parametrize(
    ("decode_in", "workers"), [("processes", 2), ("threads", 2), ("threads", -1)]
)
async def test_parallel_replay_is_the_sequential_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decode_in: str, workers: int
) -> None:
    root = folder(tmp_path)
    monkeypatch.setattr(replay_mod, "PARALLEL_MIN_BYTES", 1)
    config = msgspec.structs.replace(
        Config(),
        history=msgspec.structs.replace(Config().history, enabled=False),
        limits=msgspec.structs.replace(Config().limits, decode_in=decode_in),
    )
    made: list[DecodePool] = []

    def make() -> DecodePool:
        made.append(DecodePool(config, workers))
        return made[-1]

    one = await replay(root, tmp_path / "one.jsonl", None)
    many = await replay(root, tmp_path / "many.jsonl", make)
    assert len(made) == 1
    assert made[0].mode == decode_in
    assert many == one
    assert (tmp_path / "many.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert one.files == 28
    assert one.records == 24 + 24 + 1
    assert one.duplicates == 23
    assert sorted(os.path.basename(path) for path, _ in one.failed) == [
        "corrupt.json.gz",
        "gone.json",
    ]
    assert any("cannot read" in reason for _, reason in many.failed)


async def test_small_inputs_stay_in_one_process(tmp_path: Path) -> None:
    root = folder(tmp_path)

    def make() -> DecodePool:
        raise AssertionError("no pool for a few KB")

    summary = await replay(root, tmp_path / "out.jsonl", make)
    assert summary.files == 28
