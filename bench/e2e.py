"""End to end: the real daemon (``trailguard.app.Daemon``) fed by an in-process fake queue and
object store at a fixed rate, in a process of its own so that its peak RSS is its own.

    python -m bench.e2e                     # prints one JSON object (bench.run reads it)
    python -m bench.e2e --seconds 5 --backlog 200 --big 0

Phases, one daemon:

1. steady: ``--rate`` objects/s of ~100 KB (gzip; ~700 records, the default mix) for
   ``--seconds``: the latency from a message's send to its deletion, which the daemon does only
   after the object's detections are written and fsynced (and its policy facts recorded), so it
   is the message-to-detection latency, p50/p99;
2. backlog: ``--backlog`` messages at once: sustained objects/s and records/s;
3. big: one message naming a ``--big`` MB gzip object (CloudTrail's largest is 50 MB).

CPU (the daemon and its decode workers) per million records, and peak RSS (the daemon plus each
worker's and the forkserver's own peak, added: an upper bound of the total) after each phase.
The fake store holds the objects in the daemon's process: ~10 MB for the 100 KB set, plus the
big object in phase 3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.generate import DEFAULT, ensure_big_file, ensure_set
from bench.procstat import helper_pids, peak_rss_breakdown, pss_mb, total_cpu, total_peak_rss_mb
from trailguard.config import parse_config

if TYPE_CHECKING:
    from bench.fakes import FakeQueue, FakeStore
    from trailguard.app import Daemon

# The decode workers import this module again (multiprocessing's __mp_main__): the daemon's own
# modules (aiobotocore, ...) are imported in functions, so that the workers are as light as they
# are under `trailguard run` (whose __main__ imports nothing heavy).

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/trailguard-bench"
E2E_SET = replace(DEFAULT, name="e2e-100kb", files=100, records=700)


def key_for(i: int, account: str = "123456789012", region: str = "eu-west-1") -> str:
    return (
        f"AWSLogs/o-abcdefghij/{account}/CloudTrail/{region}/2024/06/01/"
        f"{account}_CloudTrail_{region}_20240601T{i // 60 % 24:02d}{i % 60:02d}Z_{i:08x}.json.gz"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Harness:
    def __init__(self, folder: Path) -> None:
        from bench.fakes import FakeQueue, FakeStore
        from trailguard.app import Daemon

        config = parse_config(
            f"""
            [[sources.sqs]]
            queue_url = "{QUEUE_URL}"
            wait_time_secs = 1
            [outputs.jsonl]
            path = "{folder / "detections.jsonl"}"
            [state]
            path = "{folder / "state.sqlite3"}"
            [http]
            enabled = false
            [logging]
            level = "info"
            format = "json"
            """,
            file="bench",
        )
        self.queue: FakeQueue = FakeQueue(QUEUE_URL)
        self.store: FakeStore = FakeStore()
        self.daemon: Daemon = Daemon(config, queues=lambda src: self.queue, store=self.store)
        self.records: dict[str, int] = {}  # key -> records in the object

    def add(self, key: str, data: bytes, records: int) -> None:
        from bench.fakes import BUCKET

        self.store.put(BUCKET, key, data)
        self.records[key] = records

    def body(self, key: str) -> str:
        from bench.fakes import BUCKET, notification

        return notification(BUCKET, key, len(self.store.objects[(BUCKET, key)]))

    async def wait(self, count: int) -> None:
        self.queue.expected = self.queue.deleted + count
        if self.queue.deleted < self.queue.expected:
            self.queue.all_done.clear()
            await self.queue.all_done.wait()

    def usage(self) -> tuple[float, int]:
        return total_cpu(helper_pids()), self.daemon.tally.records

    def own_cpu(self) -> float:
        return total_cpu([])


async def steady(h: Harness, keys: list[str], rate: float, seconds: float) -> dict[str, Any]:
    count = int(rate * seconds)
    cpu0, rec0 = h.usage()
    start = time.perf_counter() + 0.05
    ids = []
    for i in range(count):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        ids.append(h.queue.send(h.body(keys[i % len(keys)]), at=at))
    await h.wait(count - sum(1 for m in ids if h.queue.sent[m].done is not None))
    wall = time.perf_counter() - start
    cpu1, rec1 = h.usage()
    latencies = [(h.queue.sent[m].done or 0) - h.queue.sent[m].at for m in ids]
    return {
        "objects": count,
        "rate_objects_per_s": rate,
        "achieved_objects_per_s": count / wall,
        "latency_ms_p50": 1000 * statistics.median(latencies),
        "latency_ms_p99": 1000 * percentile(latencies, 0.99),
        "latency_ms_max": 1000 * max(latencies),
        "records": rec1 - rec0,
        "cpu_s_per_million_records": (cpu1 - cpu0) / max(1, rec1 - rec0) * 1e6,
        "peak_rss_mb": total_peak_rss_mb(helper_pids()),
        "peak_rss_mb_by_process": peak_rss_breakdown(helper_pids()),
        "pss_mb_now": pss_mb(helper_pids()),
    }


async def backlog(h: Harness, keys: list[str], count: int) -> dict[str, Any]:
    cpu0, rec0 = h.usage()
    own0 = h.own_cpu()
    start = time.perf_counter()
    for i in range(count):
        h.queue.send(h.body(keys[i % len(keys)]), at=start)
    await h.wait(count)
    wall = time.perf_counter() - start
    cpu1, rec1 = h.usage()
    return {
        "objects": count,
        "objects_per_s": count / wall,
        "records_per_s": (rec1 - rec0) / wall,
        "records": rec1 - rec0,
        "cpu_s_per_million_records": (cpu1 - cpu0) / max(1, rec1 - rec0) * 1e6,
        "daemon_process_cpu_s_per_million_records": (h.own_cpu() - own0)
        / max(1, rec1 - rec0)
        * 1e6,
        "peak_rss_mb": total_peak_rss_mb(helper_pids()),
    }


async def big(h: Harness, megabytes: int) -> dict[str, Any]:
    path, records = ensure_big_file(megabytes)
    data = path.read_bytes()
    key = key_for(10**6)
    h.add(key, data, records)
    cpu0, rec0 = h.usage()
    start = time.perf_counter()
    h.queue.send(h.body(key), at=start)
    await h.wait(1)
    wall = time.perf_counter() - start
    cpu1, rec1 = h.usage()
    return {
        "megabytes_gzip": len(data) / 1e6,
        "records": rec1 - rec0,
        "seconds": wall,
        "cpu_s": cpu1 - cpu0,
        "peak_rss_mb": total_peak_rss_mb(helper_pids()),
        "peak_rss_mb_by_process": peak_rss_breakdown(helper_pids()),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    paths = ensure_set(E2E_SET)
    with tempfile.TemporaryDirectory(prefix="trailguard-bench-") as tmp:
        h = Harness(Path(tmp))
        keys = [key_for(i) for i in range(len(paths))]
        sizes = []
        for key, path in zip(keys, paths, strict=True):
            data = path.read_bytes()
            sizes.append(len(data))
            h.add(key, data, E2E_SET.records)
        task = asyncio.create_task(h.daemon.run())
        await h.daemon.started.wait()
        for key in keys[:20]:  # warm-up: workers started, caches filled
            h.queue.send(h.body(key))
        await h.wait(20)
        from trailguard.decode_pool import decode_mode

        result: dict[str, Any] = {
            "object_kb_gzip": statistics.mean(sizes) / 1e3,
            "records_per_object": E2E_SET.records,
            "decode_workers": h.daemon.config.limits.decode_worker_count(),
            "decode_in": decode_mode(h.daemon.config),
            "max_objects_in_flight": h.daemon.config.limits.max_objects_in_flight,
        }
        result["steady"] = await steady(h, keys, args.rate, args.seconds)
        result["backlog"] = await backlog(h, keys, args.backlog)
        if args.big:
            result["big"] = await big(h, args.big)
        result["detections"] = h.daemon.tally.detections
        result["duplicates_dropped"] = h.daemon.tally.duplicates
        h.daemon.request_stop()
        await task
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="trailguard end-to-end benchmark (fakes)")
    parser.add_argument("--rate", type=float, default=50.0, help="objects/s in the steady phase")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backlog", type=int, default=600)
    parser.add_argument("--big", type=int, default=50, help="MB gzip; 0: skip")
    args = parser.parse_args(argv)
    from trailguard.telemetry.logging import configure_logging

    with open(os.devnull, "w") as devnull:
        # Logs as in production (info, JSON), into /dev/null: their cost counts, not their text.
        configure_logging("info", "json", stream=devnull)
        result = asyncio.run(main_async(args))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
