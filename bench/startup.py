"""Whole processes, start-up included: ``trailguard replay`` over a million records (the default
set, five times) against a read + libdeflate loop in its own process, and the start-up of the
commands that never talk to AWS (``--version``, ``check-config``, a local ``replay`` of one
small file).

Run by ``make bench`` (bench/run.py) after the default set; on its own::

    .venv/bin/python -m bench.startup [--reps N]

Every contender is a fresh ``python`` process per repetition, round-robin, best of N (as the
rest of the bench).  The package is byte-compiled first and the children run with bytecode
caching allowed, as an installed trailguard runs (this machine's environment sets
PYTHONDONTWRITEBYTECODE, which would make every start-up compile the sources again).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.generate import DEFAULT, ensure_set

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "daemon" / "trailguard"
SMALL_FILE = (
    ROOT
    / "tests"
    / "data"
    / "corpus"
    / "stratus-red-team"
    / "aws.credential-access.ec2-get-password-data.json"
)
DECOMPRESS = (
    "import sys, deflate\n"
    "n = 0\n"
    "for p in sys.argv[1:]:\n"
    "    with open(p, 'rb') as f:\n"
    "        n += len(deflate.gzip_decompress(f.read()))\n"
    "print(n)\n"
)


@dataclass
class Command:
    name: str
    argv: list[str]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    output: str = ""

    def once(self, env: dict[str, str]) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(self.argv, capture_output=True, text=True, env=env, check=False)
        self.wall.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise SystemExit(f"{self.name} failed (exit {done.returncode}):\n{done.stderr}")
        self.output = done.stdout + done.stderr

    @property
    def best(self) -> float:
        return min(self.wall)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def round_robin(commands: Sequence[Command], reps: int, env: dict[str, str]) -> None:
    for command in commands:  # warm-up: page cache, bytecode, the C scanner's first load
        command.once(env)
        command.wall.clear()
        command.cpu.clear()
    for _ in range(reps):
        for command in commands:
            command.once(env)


#: The default set read this many times: 1000 files, a million records -- the "1M-record local
#: replay" the start-up is weighed against (the same files again: the page cache holds them, and
#: replay drops the repeated eventIDs, so the detections stay those of one pass).
PASSES = 5


class _NoHistory:
    """A config file turning the policy history off, in bench/.cache."""

    path = ROOT / "bench" / ".cache" / "no-history.toml"

    def write_config(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("[history]\nenabled = false\n")
        return self.path


NO_HISTORY = _NoHistory()


def measure(reps: int = 7, files: Sequence[Path] | None = None) -> dict[str, Any]:
    compileall.compile_dir(str(PACKAGE), quiet=1)
    chosen = files if files is not None else ensure_set(DEFAULT) * PASSES
    paths = [str(p) for p in chosen]
    py = sys.executable
    env = child_env()
    replay = Command(
        "trailguard replay (whole process)",
        [py, "-m", "trailguard", "replay", "--no-progress", "--output", os.devnull, *paths],
    )
    # The same without the policy history: what replay did before it judged policy changes
    # (issue 16 gave it a scratch history and a comparison per policy change).
    no_history = NO_HISTORY.write_config()
    detections_only = Command(
        "trailguard replay, [history] enabled = false (whole process)",
        [
            py, "-m", "trailguard", "replay", "--config", str(no_history), "--no-progress",
            "--output", os.devnull, *paths,
        ],
    )  # fmt: skip
    decompression = Command("read + libdeflate (whole process)", [py, "-c", DECOMPRESS, *paths])
    round_robin([decompression, replay, detections_only], reps, env)
    found = re.search(r"detections: (\d+)", replay.output)
    startup = [
        Command("--version", [py, "-m", "trailguard", "--version"]),
        Command(
            "check-config",
            [py, "-m", "trailguard", "check-config", str(ROOT / "config/trailguard.example.toml")],
        ),
        Command(
            "replay of one small file",
            [py, "-m", "trailguard", "replay", "--output", os.devnull, str(SMALL_FILE)],
        ),
    ]
    round_robin(startup, reps, env)
    return {
        "files": len(paths),
        "replay_s": replay.best,
        "replay_cpu_s": min(replay.cpu),
        "decompression_s": decompression.best,
        "replay_over_decompression": decompression.best / replay.best,
        "replay_no_history_s": detections_only.best,
        "replay_no_history_over_decompression": decompression.best / detections_only.best,
        "detections": int(found.group(1)) if found else None,
        "startup_s": {c.name: c.best for c in startup},
        "wall_s": {c.name: c.wall for c in (replay, detections_only, decompression, *startup)},
    }


def report(result: dict[str, Any]) -> None:
    startup = ", ".join(f"{name} {secs * 1e3:.0f} ms" for name, secs in result["startup_s"].items())
    print(
        f"\nwhole processes, start-up included ({result['files']} files: the default set "
        f"x{PASSES}):\n"
        f"  trailguard replay {result['replay_s']:.2f} s ({result['replay_cpu_s']:.2f} CPU s, "
        f"{result['detections']} detections) against read + libdeflate "
        f"{result['decompression_s']:.2f} s: {result['replay_over_decompression']:.2f} of "
        f"decompression alone\n"
        f"  the same with [history] enabled = false (no scratch history, no policy changes "
        f"judged, as before issue 16): {result['replay_no_history_s']:.2f} s: "
        f"{result['replay_no_history_over_decompression']:.2f}\n"
        f"  start-up without AWS: {startup}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    result = measure(args.reps)
    report(result)
    print(json.dumps({k: v for k, v in result.items() if k != "wall_s"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
