"""Scale-out: N replicas of the real daemon as N processes, each fed by in-process fakes.

    python -m bench.scaleout                    # 1, 2, 4, 8 replicas; prints a table and JSON
    python -m bench.scaleout --replicas 1 2 --objects 200

SQS makes replicas competing consumers: each message goes to one of them.  Here each replica
process has its own fake queue holding its share of one backlog (``--objects`` in all, 100 KB
objects of ~700 records, the e2e set), and all start at the same moment (a start line on their
stdin).  The figure is the aggregate: every replica's records over the wall time from the start
to the last replica's last deletion.  Each replica's CPU per record is measured too, which is
what the model in bench/README.md ("Scale-out") extends past this machine's cores.

The state is SQLite per replica (the fakes have no DynamoDB): a record that is no IAM policy
write touches no state at all on either backend, so the shared table's cost per object is the
request count of docs/DYNAMODB.md ("Cost per million CloudTrail records"), modelled, not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.generate import ensure_set
from bench.procstat import helper_pids, total_cpu

ROOT = Path(__file__).resolve().parents[1]


async def replica(objects: int) -> dict[str, Any]:
    """One replica: load the set, start the daemon, wait for the start line, drain ``objects``."""
    from bench.e2e import E2E_SET, Harness, key_for

    paths = ensure_set(E2E_SET)
    with tempfile.TemporaryDirectory(prefix="trailguard-scaleout-") as tmp:
        h = Harness(Path(tmp))
        keys = [key_for(i) for i in range(len(paths))]
        for key, path in zip(keys, paths, strict=True):
            h.add(key, path.read_bytes(), E2E_SET.records)
        task = asyncio.create_task(h.daemon.run())
        await h.daemon.started.wait()
        for key in keys[:10]:  # warm-up
            h.queue.send(h.body(key))
        await h.wait(10)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cpu0, rec0 = h.usage()
        start = time.time()
        for i in range(objects):
            h.queue.send(h.body(keys[i % len(keys)]), at=start)
        await h.wait(objects)
        end = time.time()
        cpu1, rec1 = h.usage()
        h.daemon.request_stop()
        await task
    return {"start": start, "end": end, "records": rec1 - rec0, "cpu_s": cpu1 - cpu0}


def run_replicas(count: int, objects: int) -> dict[str, Any]:
    share = [objects // count + (1 if i < objects % count else 0) for i in range(count)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.scaleout", "--replica", str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "TRAILGUARD_BENCH_QUIET": "1"},
        )
        for n in share
    ]
    try:
        for proc in procs:  # every replica loaded and warm
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"replica did not start: {line!r}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=900)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    start = min(r["start"] for r in results)
    wall = max(r["end"] for r in results) - start
    records = sum(r["records"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
    return {
        "replicas": count,
        "objects": objects,
        "records": records,
        "wall_s": wall,
        "records_per_s": records / wall,
        "objects_per_s": objects / wall,
        "cpu_us_per_record": cpu / max(1, records) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="trailguard scale-out (replicas as processes)")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--objects", type=int, default=400, help="the backlog, in all")
    parser.add_argument("--replica", type=int, help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)
    from trailguard.telemetry.logging import configure_logging

    if args.replica is not None:
        with open(os.devnull, "w") as devnull:
            configure_logging("info", "json", stream=devnull)
            print(json.dumps(asyncio.run(replica(args.replica))), flush=True)
        return 0
    ensure_set(__import__("bench.e2e", fromlist=["E2E_SET"]).E2E_SET)  # generate once, here
    rows = [run_replicas(n, args.objects) for n in args.replicas]
    base = rows[0]["records_per_s"] / rows[0]["replicas"]
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; {args.objects} objects")
    print("replicas   records/s   objects/s   speed-up   CPU us/record")
    for row in rows:
        print(
            f"{row['replicas']:>8}  {row['records_per_s']:>10,.0f}  {row['objects_per_s']:>10.1f}"
            f"  {row['records_per_s'] / base:>9.2f}  {row['cpu_us_per_record']:>14.2f}"
        )
    print(json.dumps({"helpers": len(helper_pids()), "own_cpu_s": total_cpu([]), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
