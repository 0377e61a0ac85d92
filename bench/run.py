"""``make bench``: trailguard against the naive loop and the decompression limit, on every core.

    python -m bench.run          # generates the sets on first use (bench/.cache/); a few minutes
    python -m bench.run --quick  # fewer files, repetitions and seconds: a smoke run (not saved
                                 # over the release result: bench/.cache/results-quick.json)

On the same files (read into memory before timing), in the same run, round-robin so that load
from elsewhere on the machine hits every contender alike:

    (a) decompression alone, with trailguard's decompressor (libdeflate): the limit
    (b) the loop users write from AWS's docs: gzip.decompress + json.loads + a Python loop
    (c) trailguard's processing path in one process, as the daemon runs it: Detector.process_file
        with the policy history on (decode, candidate records, rules, detections, policy facts)
        and the detections encoded as JSON Lines
    (d) the same through the daemon's DecodePool on every core (compressed bytes in, outcome out,
        8 objects in flight as [limits] max_objects_in_flight), JSON Lines encoded in the parent

plus a reference row on the default set: (c) without the C scanner (msgspec's passes alone, as
on a machine without a compiler or AVX2).  (The rejected design of a byte prefilter in front of
decoding was measured until issue 14 dropped its code: bench/README.md keeps the figures.)

For each: records/s per core (the best of the repetitions, as timeit reports: on a shared machine
the slower ones measure the neighbours; medians are in the JSON; (d) divided by its workers), MB/s
of decompressed JSON, CPU seconds per million records (for (d): the parent, its threads, the
workers and the forkserver), peak RSS (each contender alone in a fresh process, reading the files
one at a time); the ratios c/b, c/a and d/c.  Then, each in a process of its own: the daemon end
to end with a fake queue and object store (bench/e2e.py) and a 50 MB gzip file in one process.

Timings are never asserted: this is a measurement, not a test.  Figures go to the terminal and
to bench/results/<version>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec

from bench import startup
from bench.generate import (
    CACHE,
    DEFAULT,
    DEFAULT_SETS,
    REMOVAL_NAMES,
    SetSpec,
    ensure_big_file,
    ensure_set,
)
from bench.procstat import helper_pids, own_peak_rss_mb, total_cpu, total_peak_rss_mb
from trailguard import __version__
from trailguard.config import Config
from trailguard.decode_pool import DecodePool
from trailguard.detect.decode import SCANNER, DecodeLimits, decode_file, decompress
from trailguard.detect.detection import S3Source, encode_detection
from trailguard.detect.process import Detector

IAM = "iam.amazonaws.com"
RESULTS = Path(__file__).resolve().parent / "results"
BUCKET = "org-trail-bucket"


def key_for(i: int) -> str:
    return (
        "AWSLogs/o-abcdefghij/123456789012/CloudTrail/eu-west-1/2024/06/01/"
        f"123456789012_CloudTrail_eu-west-1_20240601T{i // 60 % 24:02d}{i % 60:02d}Z"
        f"_{i:08x}.json.gz"
    )


# -- the contenders ----------------------------------------------------------------------------


def naive(blob: bytes) -> int:
    """What a user writes first (removal events of IAM)."""
    hits = 0
    for record in json.loads(gzip.decompress(blob))["Records"]:
        if record.get("eventSource") == IAM and record.get("eventName") in REMOVAL_NAMES:
            hits += 1
    return hits


def decompression(blob: bytes) -> None:
    decompress(blob, source="bench")


def processing(detector: Detector) -> Callable[[bytes, int], int]:
    """(c): the daemon's work on one object, in this process."""

    def work(blob: bytes, index: int) -> int:
        key = key_for(index)
        outcome = detector.process_file(
            blob, source=S3Source(bucket=BUCKET, key=key), name=key, key=key
        )
        b"".join(map(encode_detection, outcome.detections))
        return len(outcome.detections)

    return work


def msgspec_path(detector: Detector) -> Callable[[bytes, int], int]:
    """(c) with the C scanner off: msgspec's probe pass and the locator, as on a machine
    without a C compiler or AVX2 (and as trailguard 0.1.0 ran)."""
    work = processing(detector)

    def run(blob: bytes, index: int) -> int:
        before = SCANNER.enabled
        SCANNER.enabled = False
        try:
            return work(blob, index)
        finally:
            SCANNER.enabled = before

    return run


class _Nothing(msgspec.Struct):
    pass


class _Count(msgspec.Struct):
    records: list[_Nothing] = msgspec.field(name="Records")


class PoolRun:
    """(d): every file through the daemon's DecodePool, ``in_flight`` at a time: as many
    coroutines, each awaiting one object after another (not a task per object behind a
    semaphore: that bookkeeping, ~15 us per object in the event loop's thread, is the
    harness's, not the processing path's; the end-to-end run measures the daemon's own)."""

    def __init__(self, config: Config, files: Sequence[bytes], in_flight: int) -> None:
        self.pool = DecodePool(config, config.limits.decode_worker_count())
        self.files = files
        self.in_flight = in_flight
        self.loop = asyncio.new_event_loop()

    def __call__(self) -> int:
        return self.loop.run_until_complete(self._all())

    async def _all(self) -> int:
        async def lane(first: int) -> int:
            found = 0
            for index in range(first, len(self.files), self.in_flight):
                key = key_for(index)
                outcome = await self.pool.process(
                    self.files[index], source=S3Source(bucket=BUCKET, key=key), name=key, key=key
                )
                b"".join(map(encode_detection, outcome.detections))
                found += len(outcome.detections)
            return found

        return sum(await asyncio.gather(*(lane(k) for k in range(self.in_flight))))

    def close(self) -> None:
        self.pool.shutdown()
        self.loop.run_until_complete(asyncio.sleep(0))  # let the pipes' transports close
        self.loop.close()


class Independent:
    """(c) in ``n`` processes at once, each over its share of the files, no IPC: how far this
    machine itself scales (shared caches, memory, other tenants) -- the ceiling of d/c."""

    def __init__(self, files: Sequence[bytes], n: int) -> None:
        context = multiprocessing.get_context("fork")  # before any thread of this process
        self.links = []
        self.processes = []
        for share in range(n):
            parent, child = context.Pipe()
            process = context.Process(
                target=self._serve, args=(child, files[share::n], share, n), daemon=True
            )
            process.start()
            child.close()
            self.links.append(parent)
            self.processes.append(process)

    @staticmethod
    def _serve(link: Any, files: Sequence[bytes], share: int, n: int) -> None:
        work = processing(Detector.from_config(Config()))
        while link.recv() == "go":
            link.send(sum(work(blob, share + i * n) for i, blob in enumerate(files)))

    def __call__(self) -> int:
        for link in self.links:
            link.send("go")
        return sum(link.recv() for link in self.links)

    def close(self) -> None:
        for link in self.links:
            link.send("stop")
        for process in self.processes:
            process.join(timeout=10)


# -- timing ------------------------------------------------------------------------------------


@dataclass
class Contender:
    key: str  # a, b, c, d, ...
    name: str
    run: Callable[[], int | None]  # one pass over every file; returns hits or None
    reps: int
    cores: int = 1
    cpu: Callable[[], float] = time.process_time
    wall: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    found: int | None = None
    rss_mb: float | None = None

    def once(self) -> None:
        gc.collect()
        wall0, cpu0 = time.perf_counter(), self.cpu()
        self.found = self.run()
        self.wall.append(time.perf_counter() - wall0)
        self.cpus.append(self.cpu() - cpu0)

    def rate(self, records: int) -> float:
        """Records per second in all (the best repetition)."""
        return records / min(self.wall)

    def rounds_over(self, other: Contender) -> float:
        """The median over the round-robin rounds of other's wall time / this one's in the
        same round: the speed-up measured a few tenths of a second apart, which the machine's
        drift (its CPUs' speed moves by ±20 % within seconds) disturbs less than comparing each
        contender's best round, taken at different moments."""
        pairs = zip(other.wall, self.wall, strict=False)
        return statistics.median(theirs / ours for theirs, ours in pairs)

    def figures(self, records: int, megabytes: float) -> dict[str, Any]:
        wall = min(self.wall)  # the best repetition: see "Timing" in bench/README.md
        return {
            "name": self.name,
            "cores": self.cores,
            "records_per_s": records / wall,
            "records_per_s_per_core": records / wall / self.cores,
            "mb_per_s": megabytes / wall,
            "cpu_s_per_million_records": min(self.cpus) / records * 1e6,
            "records_per_s_per_core_median": records / statistics.median(self.wall) / self.cores,
            "peak_rss_mb": self.rss_mb,
            "found": self.found,
            "wall_s": self.wall,
            "cpu_s": self.cpus,
        }


def over(
    files: Sequence[bytes], work: Callable[[bytes, int], int | None]
) -> Callable[[], int | None]:
    """One pass of ``work`` over ``files``: the sum of what it found (None: it finds nothing)."""

    def run() -> int | None:
        hits: int | None = None
        for i, blob in enumerate(files):
            found = work(blob, i)
            if found is not None:
                hits = (hits or 0) + found
        return hits

    return run


def measure(contenders: Sequence[Contender]) -> None:
    """Round-robin repetitions, so that load from elsewhere hits every contender alike."""
    for rep in range(max(c.reps for c in contenders)):
        for contender in contenders:
            if rep < contender.reps:
                contender.once()


# -- peak RSS, each contender alone in a fresh process -----------------------------------------


def probe(kind: str, set_name: str) -> dict[str, float]:
    """Run one contender over a set, reading one file at a time; its peak RSS (and time)."""
    started = time.perf_counter()
    if kind.startswith("big-"):
        path, _ = ensure_big_file(50)
        data = path.read_bytes()
        detector = Detector.from_config(Config())
        cpu0 = time.process_time()
        if kind == "big-stream":
            outcome = detector.process_file(
                data, source=S3Source(bucket=BUCKET, key="big"), name="big", key=None
            )
            records = outcome.decoded.records
        else:  # the whole object in memory, as before streaming
            whole = DecodeLimits(stream_over=1 << 40, max_candidate_bytes=1 << 40)
            decoded = decode_file(data, detector.candidates, source="big", limits=whole)
            records = decoded.records
        return {
            "peak_rss_mb": own_peak_rss_mb(),
            "seconds": time.perf_counter() - started,
            "cpu_s": time.process_time() - cpu0,
            "records": records,
        }
    spec = next(s for s in all_sets() + all_sets(quick=True) if s.name == set_name)
    paths = ensure_set(spec)
    if kind == "d":
        config = Config()
        pool = DecodePool(config, config.limits.decode_worker_count())
        loop = asyncio.new_event_loop()
        slots = asyncio.Semaphore(config.limits.max_objects_in_flight)

        async def one(index: int, path: Path) -> None:
            async with slots:
                key = key_for(index)
                data = path.read_bytes()  # noqa: ASYNC240 - a local file, as a fetch would be
                outcome = await pool.process(
                    data, source=S3Source(bucket=BUCKET, key=key), name=key, key=key
                )
            b"".join(map(encode_detection, outcome.detections))

        async def every() -> None:
            await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))

        loop.run_until_complete(every())
        peak = total_peak_rss_mb(helper_pids())
        pool.shutdown()
        return {"peak_rss_mb": peak, "seconds": time.perf_counter() - started}
    work: Callable[[bytes, int], int | None]
    if kind == "a":
        work = lambda blob, i: decompression(blob)  # noqa: E731
    elif kind == "b":
        work = lambda blob, i: naive(blob)  # noqa: E731
    else:
        work = processing(Detector.from_config(Config()))
    for i, path in enumerate(paths):
        work(path.read_bytes(), i)
    return {"peak_rss_mb": own_peak_rss_mb(), "seconds": time.perf_counter() - started}


def in_subprocess(*args: str) -> dict[str, Any]:
    """Run ``python -m ARGS`` in a fresh process; the JSON object its last line prints."""
    out = subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"python -m {' '.join(args)} failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- driver ------------------------------------------------------------------------------------


def all_sets(quick: bool = False) -> list[SetSpec]:
    specs = list(DEFAULT_SETS)
    if quick:
        specs = [replace(s, name=s.name + "-quick", files=40) for s in specs]
    return specs


def run_set(spec: SetSpec, reps: int, naive_reps: int, main: bool) -> dict[str, Any]:
    paths = ensure_set(spec)
    files = [Path(p).read_bytes() for p in paths]
    records = spec.files * spec.records
    texts = [decompress(b, source="bench") for b in files]
    megabytes = sum(map(len, texts)) / 1e6
    compressed = sum(map(len, files)) / 1e6
    config = Config()  # the daemon's defaults: policy history on, 8 objects in flight
    detector = Detector.from_config(config)
    with_candidates = sum(
        1 for t in texts if decode_file(t, detector.candidates, source="x").candidates
    )
    del texts
    print(
        f"\n{spec.name}: {spec.files} files x {spec.records} records, {compressed:.1f} MB gzip -> "
        f"{megabytes:.0f} MB JSON ({megabytes * 1e6 / records:.0f} B/record), "
        f"{with_candidates} files with a candidate (rules + policy history)"
    )
    independent = Independent(files, config.limits.decode_worker_count()) if main else None
    pool = PoolRun(config, files, config.limits.max_objects_in_flight)
    pool()  # warm up: workers forked, modules imported
    contenders = [
        Contender(
            "a",
            "(a) decompression alone (libdeflate)",
            over(files, lambda b, i: decompression(b)),
            reps,
        ),
        Contender(
            "b",
            "(b) naive: gzip + json.loads + loop",
            over(files, lambda b, i: naive(b)),
            naive_reps,
        ),
        Contender("c", "(c) trailguard, one process", over(files, processing(detector)), reps),
        Contender(
            "d",
            f"(d) trailguard, DecodePool x{pool.pool.workers}",
            pool,
            reps,
            cores=pool.pool.workers,
            cpu=lambda: total_cpu(helper_pids()),
        ),
    ]
    if main:
        assert independent is not None
        contenders += [
            Contender(
                "c_independent",
                f"    (c) in {len(independent.processes)} processes at once, no IPC",
                independent,
                reps,
                cores=len(independent.processes),
                cpu=lambda: total_cpu(helper_pids()),
            ),
            Contender(
                "c_msgspec",
                "    (c) without the C scanner (msgspec)",
                over(files, msgspec_path(detector)),
                reps,
            ),
        ]
    measure(contenders)
    pool.close()
    if independent is not None:
        independent.close()
    if main:
        for contender in contenders:
            if contender.key in ("a", "b", "c", "d"):
                contender.rss_mb = in_subprocess(
                    "bench.run", "--probe", contender.key, "--set", spec.name
                )["peak_rss_mb"]
    by = {c.key: c for c in contenders}
    rows = {c.key: c.figures(records, megabytes) for c in contenders}
    print(f"  {'':42} {'rec/s/core':>11} {'MB/s':>7} {'CPU s/M rec':>12} {'peak RSS':>9}  found")
    for c in contenders:
        row = rows[c.key]
        rss = "" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:6.0f} MB"
        print(
            f"  {c.name:<42} {row['records_per_s_per_core'] / 1e3:10.0f}k {row['mb_per_s']:7.0f}"
            f" {row['cpu_s_per_million_records']:12.2f} {rss:>9}  "
            + ("-" if row["found"] is None else str(row["found"]))
        )
    found = {k: by[k].found for k in ("b", "c", "d")}
    if len(set(found.values())) != 1:
        print(f"  MISMATCH in what was found: {found}")
    ratios = {
        "c_over_b": by["c"].rate(records) / by["b"].rate(records),
        "c_over_a": by["c"].rate(records) / by["a"].rate(records),
        "d_over_c": by["d"].rate(records) / by["c"].rate(records),
    }
    ratios["d_over_c_rounds"] = by["d"].rounds_over(by["c"])
    if "c_independent" in by:
        ratios["independent_over_c"] = by["c_independent"].rate(records) / by["c"].rate(records)
        ratios["independent_over_c_rounds"] = by["c_independent"].rounds_over(by["c"])
    print(
        f"  c/b = {ratios['c_over_b']:.1f}x the naive loop;  c/a = {ratios['c_over_a']:.2f} of "
        f"decompression alone;  d/c = {ratios['d_over_c']:.2f}x on {by['d'].cores} cores "
        f"(median of each round's own: {ratios['d_over_c_rounds']:.2f}x)"
        + (
            f"\n  the machine's own ceiling, independent processes: "
            f"{ratios['independent_over_c']:.2f}x (rounds: "
            f"{ratios['independent_over_c_rounds']:.2f}x)"
            if "independent_over_c" in ratios
            else ""
        )
    )
    return {
        "set": msgspec.to_builtins(spec),
        "records": records,
        "megabytes_json": megabytes,
        "megabytes_gzip": compressed,
        "files_with_candidates": with_candidates,
        "rows": rows,
        "ratios": ratios,
    }


TARGETS = (
    # (name, where in the results, how it compares, bound)
    (
        "processing path >= 500k records/s per core (default corpus)",
        ("main", "c_rate"),
        ">=",
        500e3,
    ),
    ("processing path >= 6x the naive loop", ("main", "c_over_b"), ">=", 6.0),
    ("processing path >= 0.5 of decompression alone", ("main", "c_over_a"), ">=", 0.5),
    ("2 cores >= 1.7x one core", ("main", "d_over_c"), ">=", 1.7),
    ("peak RSS <= 200 MB, default concurrency (daemon + workers)", ("e2e", "rss"), "<=", 200.0),
    ("peak RSS <= 400 MB with a 50 MB object (daemon + workers)", ("e2e", "big_rss"), "<=", 400.0),
    ("p99 < 250 ms, 100 KB objects at 50 objects/s", ("e2e", "p99"), "<", 250.0),
    # issue 14: commands that never talk to AWS start without the AWS SDK
    (
        "whole-process replay >= 0.7 of decompression alone (1M records, no history)",
        ("startup", "ratio_no_history"),
        ">=",
        0.7,
    ),
    ("--version <= 0.1 s", ("startup", "--version"), "<=", 0.1),
    ("check-config <= 0.1 s", ("startup", "check-config"), "<=", 0.1),
    ("replay of one small file <= 0.1 s", ("startup", "replay of one small file"), "<=", 0.1),
)


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    main = results["sets"][0]
    e2e = results.get("e2e") or {}
    startup = results.get("startup") or {}
    values = {
        ("startup", "ratio_no_history"): startup.get("replay_no_history_over_decompression"),
        **{("startup", name): secs for name, secs in startup.get("startup_s", {}).items()},
        ("main", "c_rate"): main["rows"]["c"]["records_per_s_per_core"],
        ("main", "c_over_b"): main["ratios"]["c_over_b"],
        ("main", "c_over_a"): main["ratios"]["c_over_a"],
        ("main", "d_over_c"): main["ratios"]["d_over_c"],
        ("e2e", "rss"): max(e2e["steady"]["peak_rss_mb"], e2e["backlog"]["peak_rss_mb"])
        if e2e
        else None,
        ("e2e", "big_rss"): e2e["big"]["peak_rss_mb"] if "big" in e2e else None,
        ("e2e", "p99"): e2e["steady"]["latency_ms_p99"] if e2e else None,
    }
    checks = []
    print("\ntargets (issues 6 and 14):")
    for name, where, op, bound in TARGETS:
        value = values[where]
        if value is None:
            verdict = "not measured"
        else:
            holds = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]
            verdict = "HOLDS" if holds else "MISSED"
        shown = (
            "-" if value is None else (f"{value / 1e3:.0f}k" if value > 10_000 else f"{value:.2f}")
        )
        print(f"  {verdict:<12} {name}: {shown}")
        checks.append(
            {"target": name, "value": value, "bound": bound, "op": op, "verdict": verdict}
        )
    return checks


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(
                line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "msgspec": msgspec.__version__,
        "decoder": SCANNER.describe(),
        "platform": platform.platform(),
        "load_average_start": os.getloadavg(),
    }


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="trailguard benchmark")
    parser.add_argument("--quick", action="store_true", help="40 files, fewer repetitions")
    parser.add_argument(
        "--reps",
        type=_positive,
        default=11,
        help="repetitions of each contender (the naive loop: 4)",
    )
    parser.add_argument(
        "--json", type=Path, help=f"where to write the figures (default: {RESULTS}/<version>.json)"
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end run")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--set", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe, args.set or DEFAULT.name)))
        return 0
    reps, naive_reps = args.reps, max(1, min(4, (args.reps + 1) // 2))
    if args.quick:
        reps, naive_reps = 2, 1
    info = machine()
    print(
        f"trailguard {__version__}: python {info['python']}, msgspec {info['msgspec']}, "
        f"decoder {info['decoder']}; "
        f"{info['cpus']} x {info['cpu']}; load average "
        + ", ".join(f"{x:.2f}" for x in info["load_average_start"])
        + f"\nbest of {reps} runs (naive: {naive_reps}), round-robin; other work on the machine "
        "lowers the figures: compare rows of one run"
    )
    results: dict[str, Any] = {"version": __version__, "command": "make bench", "machine": info}
    results["sets"] = [
        run_set(spec, reps, naive_reps, main=(i == 0))
        for i, spec in enumerate(all_sets(args.quick))
    ]
    results["startup"] = startup.measure(reps if not args.quick else 2)
    startup.report(results["startup"])
    big = {
        "stream": in_subprocess("bench.run", "--probe", "big-stream"),
        "in_memory": in_subprocess("bench.run", "--probe", "big-memory"),
    }
    results["big_file"] = big
    print(
        f"\n50 MB gzip file ({big['stream']['records']} records), one process: streamed "
        f"{big['stream']['seconds']:.1f} s, peak RSS {big['stream']['peak_rss_mb']:.0f} MB "
        f"(in memory, as before: {big['in_memory']['seconds']:.1f} s, "
        f"{big['in_memory']['peak_rss_mb']:.0f} MB)"
    )
    if not args.no_e2e:
        e2e_args = ["--seconds", "6", "--backlog", "200"] if args.quick else []
        e2e = in_subprocess("bench.e2e", *e2e_args)
        results["e2e"] = e2e
        steady, backlog = e2e["steady"], e2e["backlog"]
        by_process = steady["peak_rss_mb_by_process"]
        print(
            f"\nend to end (daemon + fake SQS/S3, {e2e['decode_workers']} decode workers "
            f"({e2e.get('decode_in', '?')}), "
            f"{e2e['max_objects_in_flight']} objects in flight, {e2e['object_kb_gzip']:.0f} KB "
            f"objects of {e2e['records_per_object']} records):\n"
            f"  steady {steady['rate_objects_per_s']:.0f} objects/s: message-to-detection p50 "
            f"{steady['latency_ms_p50']:.1f} ms, p99 {steady['latency_ms_p99']:.1f} ms "
            f"(max {steady['latency_ms_max']:.1f}); {steady['cpu_s_per_million_records']:.1f} "
            f"CPU s/M records; peak RSS {steady['peak_rss_mb']:.0f} MB (daemon "
            f"{by_process['self']:.0f} MB incl. the fake store's ~10 MB, "
            + (
                "forkserver and workers "
                + ", ".join(f"{v:.0f}" for k, v in by_process.items() if k != "self")
                + " MB"
                if len(by_process) > 1
                else f"decoding in {e2e.get('decode_in', 'threads')}"
            )
            + f"; PSS now {steady['pss_mb_now']:.0f} MB)\n"
            f"  backlog of {backlog['objects']}: sustained "
            f"{backlog['objects_per_s']:.0f} objects/s = {backlog['records_per_s'] / 1e3:.0f}k "
            "records/s; "
            f"{backlog['cpu_s_per_million_records']:.1f} CPU s/M records (daemon process alone "
            f"{backlog['daemon_process_cpu_s_per_million_records']:.1f}); peak RSS "
            f"{backlog['peak_rss_mb']:.0f} MB"
        )
        if "big" in e2e:
            b = e2e["big"]
            print(
                f"  one {b['megabytes_gzip']:.0f} MB gzip object ({b['records']} records): "
                f"{b['seconds']:.1f} s, peak RSS {b['peak_rss_mb']:.0f} MB"
            )
    results["targets"] = check_targets(results)
    results["load_average_end"] = os.getloadavg()
    # A quick run is a smoke test: it never replaces the committed result of a release.
    default = CACHE / "results-quick.json" if args.quick else RESULTS / f"{__version__}.json"
    out = args.json or default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
