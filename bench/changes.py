"""``python -m bench.changes``: what judging policy changes costs (issue 16).

    python -m bench.changes                      # ~2 minutes (the default set is generated once)
    python -m bench.changes --baseline main      # + the removal path of another commit, same run
    python -m bench.changes --quick              # a smoke run

Measured in one run:

1. **Cost per Put event through the compare path.**  The mutation suite's pairs
   (tests/policy_corpus.py: realistic documents, 566 previous/new pairs) become CloudTrail
   ``PutRolePolicy`` records, each pair on its own role -- the previous document first (nothing
   before it: ``baseline_unknown``), the new one later (compared) -- in gzip'd files of 100 records
   with 900 ordinary records around them (1000 records per file, as CloudTrail delivers them).
   Each file goes through the daemon's own steps: ``Detector.process_file`` (inflate, scan,
   decode the candidates, rules, policy facts, change candidates), ``history.record`` (the SQLite
   history, WAL with ``synchronous=FULL``), then for each change its baseline lookup
   (``ingest.changes.baseline``) and its comparison (``detect.changes.judge``, which the daemon
   runs in a thread).  Reported: wall and CPU time per Put event, by stage and for the compared
   ones alone, on a fresh history per repetition (best of N).
2. **The removal path.**  ``Detector.process_file`` over bench's default corpus (make bench's
   row (c): 200 files x 1000 records, 0.1 % policy writes, 0.01 % removals) with the change rules
   on (the default) and off (``enabled = false``: the decode path as it was before this issue),
   round-robin, best of N: records/s and the ratio.  With ``--baseline REF``, also the same
   measurement of REF's code (``git archive REF daemon``, the C scanner copied from this tree),
   each contender in a subprocess of its own, alternating.

Timings are never asserted: this is a measurement, not a test.  Figures go to the terminal and,
with ``--json PATH``, to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.generate import CACHE, DEFAULT, ensure_set
from trailguard.config import Config, parse_config
from trailguard.demo.records import make_record, noise_record
from trailguard.detect.changes import judge
from trailguard.detect.detection import S3Source, encode_detection
from trailguard.detect.policy_facts import is_json_object_text
from trailguard.detect.process import Detector
from trailguard.ingest.changes import baseline
from trailguard.state.policy_history_sqlite import SqliteHistoryStore

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "bench-trail"
CHANGE_RULES_OFF = (
    '[[rules]]\nid = "iam-policy-weakened"\nenabled = false\n'
    '[[rules]]\nid = "iam-policy-possibly-weakened"\nenabled = false\n'
)
PUTS_PER_FILE = 100
RECORDS_PER_FILE = 1000


def _key(index: int) -> str:
    return (
        "AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/"
        f"123456789012_CloudTrail_us-east-1_20261101T1200Z_bench{index:08d}.json.gz"
    )


# -- 1. the compare path -------------------------------------------------------------------------


def put_files(pairs: Sequence[tuple[str, str]]) -> tuple[list[bytes], int]:
    """Files of PutRolePolicy records: every pair's previous document, then every new one;
    ordinary records around them.  Returns (gzip'd files, Put events)."""
    import gzip

    puts: list[dict[str, Any]] = []
    for phase in (0, 1):
        for i, pair in enumerate(pairs):
            second = phase * 3600 + i
            puts.append(
                make_record(
                    "PutRolePolicy",
                    {
                        "roleName": f"app-{i:04d}",
                        "policyName": "guard",
                        "policyDocument": pair[phase],
                    },
                    event_time=f"2026-11-01T{10 + second // 3600:02d}:{second // 60 % 60:02d}:"
                    f"{second % 60:02d}Z",
                    event_id=f"put-{phase}-{i:05d}",
                )
            )
    files = []
    for start in range(0, len(puts), PUTS_PER_FILE):
        chunk = puts[start : start + PUTS_PER_FILE]
        body = [noise_record(n) for n in range(RECORDS_PER_FILE - len(chunk))]
        step = len(body) // max(1, len(chunk))
        for offset, put in enumerate(chunk):
            body.insert(offset * (step + 1), put)
        files.append(gzip.compress(json.dumps({"Records": body}).encode()))
    return files, len(puts)


@dataclass
class Stages:
    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    verdicts: Counter[str] = field(default_factory=Counter)
    compared_wall: list[float] = field(default_factory=list)  # lookup + judge, compared Puts


async def compare_path(files: Sequence[bytes], detector: Detector, scratch: Path) -> Stages:
    """One pass over ``files`` through the daemon's steps, on a fresh history."""
    stages = Stages()
    path = scratch / f"history-{time.monotonic_ns()}.sqlite3"  # fresh: no fact known yet
    async with await SqliteHistoryStore.open(path) as history:

        def tick() -> tuple[float, float]:
            return time.perf_counter(), time.process_time()

        def add(stage: str, since: tuple[float, float]) -> tuple[float, float]:
            now = tick()
            stages.wall[stage] = stages.wall.get(stage, 0.0) + now[0] - since[0]
            stages.cpu[stage] = stages.cpu.get(stage, 0.0) + now[1] - since[1]
            return now

        for index, blob in enumerate(files):
            key = _key(index)
            t = tick()
            outcome = detector.process_file(
                blob, source=S3Source(bucket=BUCKET, key=key), name=key, key=key
            )
            t = add("decode", t)
            await history.record(outcome.facts)
            t = add("record", t)
            for candidate in outcome.changes:
                start = t
                found = await baseline(history, candidate)
                t = add("lookup", t)
                judgement = judge(candidate, found)
                t = add("compare", t)
                stages.verdicts[judgement.count] += 1
                if judgement.count != "baseline_unknown":
                    stages.compared_wall.append(t[0] - start[0])
                if judgement.detection is not None:
                    encode_detection(judgement.detection)
    return stages


def run_compare_path(reps: int, quick: bool) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.policy_corpus import pairs

    # CloudTrail records policyDocument as the JSON text submitted (the suite also renders some
    # documents URL-encoded, as IAM returns them: not what a trail holds)
    suite = [
        (prev, new)
        for _n, prev, new, _l, _p, _o in pairs()
        if is_json_object_text(prev) and is_json_object_text(new)
    ]
    if quick:
        suite = suite[:100]
    files, puts = put_files(suite)
    detector = Detector.from_config(Config())
    decode_only = Detector.from_config(parse_config(CHANGE_RULES_OFF, file="bench"))
    runs: list[Stages] = []
    noise_only: list[float] = []
    with tempfile.TemporaryDirectory(prefix="trailguard-bench-") as scratch:
        for _ in range(reps):
            gc.collect()
            runs.append(asyncio.run(compare_path(files, detector, Path(scratch))))
            # the same files' decode with the change rules off: what the Puts add to decoding
            t = time.perf_counter()
            for index, blob in enumerate(files):
                key = _key(index)
                decode_only.process_file(
                    blob, source=S3Source(bucket=BUCKET, key=key), name=key, key=key
                )
            noise_only.append(time.perf_counter() - t)
    best = min(runs, key=lambda s: sum(s.wall.values()))
    total_wall = sum(best.wall.values())
    total_cpu = sum(best.cpu.values())
    compared = sorted(best.compared_wall)
    return {
        "pairs": len(suite),
        "files": len(files),
        "records": len(files) * RECORDS_PER_FILE,
        "put_events": puts,
        "repetitions": reps,
        "verdicts": dict(best.verdicts),
        "per_put_us": {
            stage: round(best.wall[stage] / puts * 1e6, 1)
            for stage in ("decode", "record", "lookup", "compare")
        },
        "per_put_total_us": round(total_wall / puts * 1e6, 1),
        "per_put_cpu_us": round(total_cpu / puts * 1e6, 1),
        "decode_with_change_rules_off_per_put_us": round(min(noise_only) / puts * 1e6, 1),
        "compared_put_ms": {
            "n": len(compared),
            "median": round(statistics.median(compared) * 1e3, 2),
            "p90": round(compared[int(0.9 * (len(compared) - 1))] * 1e3, 2),
            "p99": round(compared[int(0.99 * (len(compared) - 1))] * 1e3, 2),
            "max": round(compared[-1] * 1e3, 2),
        },
    }


# -- 2. the removal path -------------------------------------------------------------------------

_WORKER = """
import json, sys, time, gc
from pathlib import Path
from trailguard.config import Config, parse_config
from trailguard.detect.detection import S3Source, encode_detection
from trailguard.detect.policy_facts import is_json_object_text
from trailguard.detect.process import Detector
paths, toml, reps = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
files = [Path(p).read_bytes() for p in paths]
config = parse_config(toml, file="bench") if toml else Config()
detector = Detector.from_config(config)
out = []
for _ in range(reps):
    gc.collect()
    w, c = time.perf_counter(), time.process_time()
    found = 0
    for i, blob in enumerate(files):
        key = f"AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/x{i}.json.gz"
        o = detector.process_file(blob, source=S3Source(bucket="b", key=key), name=key, key=key)
        b"".join(map(encode_detection, o.detections))
        found += len(o.detections)
    out.append((time.perf_counter() - w, time.process_time() - c, found))
print(json.dumps(out))
"""


@dataclass
class Contender:
    name: str
    pythonpath: str
    toml: str
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    found: int = 0

    def once(self, paths: Sequence[Path], reps: int) -> None:
        env = {**os.environ, "PYTHONPATH": self.pythonpath, "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _WORKER,
                json.dumps([str(p) for p in paths]),
                self.toml,
                str(reps),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        for wall, cpu, found in json.loads(done.stdout):
            self.walls.append(wall)
            self.cpus.append(cpu)
            self.found = found


def baseline_tree(ref: str) -> Path:
    """``git archive REF daemon`` in bench/.cache, with this tree's C scanner (built from the
    same _scan.c when the ref did not change it: checked)."""
    sha = subprocess.run(
        ["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    target = CACHE / f"baseline-{sha[:12]}"
    if not (target / "daemon" / "trailguard").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "daemon"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    here = ROOT / "daemon" / "trailguard" / "detect"
    there = target / "daemon" / "trailguard" / "detect"
    if (here / "_scan.c").read_bytes() != (there / "_scan.c").read_bytes():
        raise SystemExit(f"{ref} has another _scan.c: build its scanner to compare")
    for built in here.glob("_scan*.so"):
        shutil.copy2(built, there / built.name)
    return target / "daemon"


def run_removal_path(reps: int, quick: bool, baseline_ref: str | None) -> dict[str, Any]:
    spec = replace(DEFAULT, name="default-quick", files=40) if quick else DEFAULT
    paths = ensure_set(spec)
    records = spec.files * spec.records
    here = str(ROOT / "daemon")
    contenders = [
        Contender("change rules on (default)", here, ""),
        Contender("change rules off", here, CHANGE_RULES_OFF),
    ]
    if baseline_ref is not None:
        contenders.append(
            Contender(f"{baseline_ref} (before)", str(baseline_tree(baseline_ref)), "")
        )
    for _ in range(reps):  # round-robin; each subprocess times two passes, the first warms up
        for contender in contenders:
            contender.once(paths, 2)
    result: dict[str, Any] = {"set": spec.name, "records": records, "repetitions": reps}
    for contender in contenders:
        timed = contender.walls[1::2]  # the second pass of each subprocess
        cpu = contender.cpus[1::2]
        result[contender.name] = {
            "records_per_s": round(records / min(timed)),
            "best_s": round(min(timed), 4),
            "median_s": round(statistics.median(timed), 4),
            "cpu_s_per_m_records": round(min(cpu) / records * 1e6, 3),
            "detections": contender.found,
            "walls": [round(w, 4) for w in timed],
        }
    # throughput ratios (records/s of the default over the other): 1.0 = unchanged
    on = contenders[0]
    for other, key in ((contenders[1], "off"), *((c, "before") for c in contenders[2:])):
        rounds = [b / a for a, b in zip(on.walls[1::2], other.walls[1::2], strict=True)]
        result[f"throughput_on_over_{key}"] = round(min(other.walls[1::2]) / min(on.walls[1::2]), 3)
        result[f"throughput_on_over_{key}_rounds_median"] = round(statistics.median(rounds), 3)
        # CPU per pass, which other tenants of a shared machine disturb less than wall time
        result[f"cpu_on_over_{key}"] = round(min(on.cpus[1::2]) / min(other.cpus[1::2]), 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.changes", description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", metavar="REF", help="also measure REF's removal path")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    reps = 2 if args.quick else args.reps
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    path = run_compare_path(min(reps, 5), args.quick)
    per = path["per_put_us"]
    print(
        f"\n1. the compare path: {path['put_events']} PutRolePolicy events ({path['pairs']} pairs) "
        f"in {path['files']} files of {RECORDS_PER_FILE} records; verdicts {path['verdicts']}"
    )
    print(
        f"   per Put event: {path['per_put_total_us']:.0f} us wall, "
        f"{path['per_put_cpu_us']:.0f} us CPU = decode {per['decode']:.0f} (the whole file's, "
        "shared by its Puts; "
        f"{path['decode_with_change_rules_off_per_put_us']:.0f} with the change rules off) + "
        f"history record {per['record']:.0f} + baseline lookup {per['lookup']:.0f} + "
        f"compare {per['compare']:.0f}"
    )
    cp = path["compared_put_ms"]
    print(
        f"   a compared Put (lookup + compare): median {cp['median']} ms, p90 {cp['p90']} ms, "
        f"p99 {cp['p99']} ms, max {cp['max']} ms (n={cp['n']})"
    )
    removal = run_removal_path(reps, args.quick, args.baseline)
    print(
        f"\n2. the removal path: Detector.process_file over the {removal['set']} set "
        f"({removal['records']} records), best of {removal['repetitions']}, round-robin"
    )
    for name, figures in removal.items():
        if isinstance(figures, dict):
            print(
                f"   {name:<28} {figures['records_per_s'] / 1000:7.0f}k records/s   "
                f"{figures['cpu_s_per_m_records']:.3f} CPU s/M records   "
                f"detections {figures['detections']}"
            )
    line = (
        f"   throughput on/off = {removal['throughput_on_over_off']:.3f} (median of the rounds' "
        f"own ratio {removal['throughput_on_over_off_rounds_median']:.3f})"
    )
    if "throughput_on_over_before" in removal:
        line += (
            f"; on/{args.baseline} = {removal['throughput_on_over_before']:.3f} "
            f"(rounds {removal['throughput_on_over_before_rounds_median']:.3f})"
        )
    line += "  (1.0 = unchanged)\n   CPU per pass on/off = " + f"{removal['cpu_on_over_off']:.3f}"
    if "cpu_on_over_before" in removal:
        line += f"; on/{args.baseline} = {removal['cpu_on_over_before']:.3f}"
    print(line + "  (1.0 = unchanged)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"compare_path": path, "removal_path": removal}, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
