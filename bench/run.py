"""Decode benchmark: trailguard's decode_file against decompression alone and the naive loop.

    python -m bench.run              # generates the sets on first use (bench/.cache/), then times
    python -m bench.run --quick      # fewer files and repetitions, for a smoke run

For each set, the same files (read into memory before timing) go through

    (a) decompression alone, with the decompressor decode_file uses (libdeflate), and zlib
    (b) the loop users write: gzip.decompress + json.loads + a Python loop over Records
    (c) trailguard: decode_file(data, Prefilter(ten removal names))

and, for the record, the design alternative that decode.py rejected (a byte-level regex
prefilter over the whole file, then a field-less Struct pass to count and validate).

Rates are records (and MB of decompressed JSON) per second of wall time (time.perf_counter) and
of process CPU time, best of several repetitions (median shown too).  Timings are never asserted:
this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec

from bench.generate import DEFAULT_SETS, REMOVAL_NAMES, SetSpec, ensure_set
from trailguard.detect.decode import Prefilter, decode_file, decompress

IAM = "iam.amazonaws.com"


@dataclass
class Timing:
    name: str
    work: Callable[[bytes], int | None]
    reps: int
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    found: int | None = None

    def rate(self, records: int) -> float:
        return records / min(self.wall)

    def line(self, records: int, megabytes: float) -> str:
        wall, cpu, median = min(self.wall), min(self.cpu), statistics.median(self.wall)
        found = "" if self.found is None else f"  found {self.found}"
        return (
            f"  {self.name:<44} {records / wall / 1e3:8.0f}k rec/s {megabytes / wall:7.0f} MB/s"
            f"   cpu {records / cpu / 1e3:6.0f}k rec/s   median {records / median / 1e3:6.0f}k"
            f" rec/s{found}"
        )


def run_once(timing: Timing, files: Sequence[bytes]) -> None:
    """One pass of ``timing.work`` over every file; it returns a count of hits (or None)."""
    gc.collect()
    total: int | None = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for blob in files:
        hits = timing.work(blob)
        total = None if hits is None or total is None else total + hits
    timing.wall.append(time.perf_counter() - wall0)
    timing.cpu.append(time.process_time() - cpu0)
    timing.found = total


def measure(timings: Sequence[Timing], files: Sequence[bytes]) -> None:
    """Round-robin repetitions, so that load from elsewhere hits every contender alike."""
    for rep in range(max(t.reps for t in timings)):
        for timing in timings:
            if rep < timing.reps:
                run_once(timing, files)


# -- the contenders ----------------------------------------------------------------------------


def naive(blob: bytes) -> int:
    """What a user writes first."""
    hits = 0
    for record in json.loads(gzip.decompress(blob))["Records"]:
        if record.get("eventSource") == IAM and record.get("eventName") in REMOVAL_NAMES:
            hits += 1
    return hits


def trailguard(prefilter: Prefilter) -> Callable[[bytes], int]:
    def work(blob: bytes) -> int:
        return len(decode_file(blob, prefilter, source="bench").candidates)

    return work


def libdeflate_only(blob: bytes) -> None:
    decompress(blob, source="bench")


def zlib_only(blob: bytes) -> None:
    zlib.decompress(blob, wbits=31)


class _Nothing(msgspec.Struct):
    pass


class _Count(msgspec.Struct):
    records: list[_Nothing] = msgspec.field(name="Records")


class _Raws(msgspec.Struct):
    records: list[msgspec.Raw] = msgspec.field(name="Records")


def rejected_alternative(prefilter: Prefilter) -> Callable[[bytes], int]:
    """Byte prefilter first, a field-less Struct pass to count; Raw + Record for candidates."""
    count = msgspec.json.Decoder(_Count).decode
    raws = msgspec.json.Decoder(_Raws).decode
    from trailguard.detect.record import Record

    record = msgspec.json.Decoder(Record).decode
    names = prefilter.event_names

    def work(blob: bytes) -> int:
        text = decompress(blob, source="bench")
        if not prefilter.may_match(text):
            count(text)
            return 0
        hits = 0
        for raw in raws(text).records:
            if prefilter.may_match(memoryview(raw)) and record(raw).event_name in names:
                hits += 1
        return hits

    return work


# -- driver ------------------------------------------------------------------------------------


def run_set(spec: SetSpec, reps: int, naive_reps: int) -> dict[str, Any]:
    paths = ensure_set(spec)
    files = [Path(p).read_bytes() for p in paths]
    records = spec.files * spec.records
    megabytes = sum(len(decompress(b, source="bench")) for b in files) / 1e6
    compressed = sum(len(b) for b in files) / 1e6
    prefilter = Prefilter(REMOVAL_NAMES)
    print(
        f"\n{spec.name}: {spec.files} files x {spec.records} records, "
        f"{compressed:.1f} MB gzip -> {megabytes:.1f} MB JSON "
        f"({megabytes * 1e6 / records:.0f} B/record, ratio {megabytes / compressed:.1f})"
    )
    a = Timing("(a) decompress: libdeflate", libdeflate_only, reps)
    az = Timing("    decompress: zlib (for comparison)", zlib_only, reps)
    b = Timing("(b) gzip + json.loads + Python loop", naive, naive_reps)
    c = Timing("(c) trailguard decode_file + prefilter", trailguard(prefilter), reps)
    alt = Timing(
        "    rejected: regex prefilter + Struct count", rejected_alternative(prefilter), reps
    )
    measure([a, az, b, c, alt], files)
    for timing in (a, az, b, c, alt):
        print(timing.line(records, megabytes))
    if b.found != c.found or c.found != alt.found:
        print(f"  MISMATCH: naive found {b.found}, decode_file {c.found}, alternative {alt.found}")
    ca, cb = c.rate(records) / a.rate(records), c.rate(records) / b.rate(records)
    print(
        f"  c/b = {cb:.1f}x faster than the naive loop;  c/a = {ca:.2f} of libdeflate alone;  "
        f"libdeflate/zlib = {a.rate(records) / az.rate(records):.1f}x"
    )
    return {
        "set": spec.name,
        "records": records,
        "rates": {t.name.strip(): round(t.rate(records)) for t in (a, az, b, c, alt)},
        "cpu_rates": {t.name.strip(): round(records / min(t.cpu)) for t in (a, az, b, c, alt)},
        "c_over_b": cb,
        "c_over_a": ca,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="trailguard decode benchmark")
    parser.add_argument("--quick", action="store_true", help="40 files, fewer repetitions")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    specs = list(DEFAULT_SETS)
    reps, naive_reps = args.reps, max(1, args.reps // 2)
    if args.quick:
        specs = [replace(s, name=s.name + "-quick", files=40) for s in specs]
        reps, naive_reps = 2, 1
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"python {sys.version.split()[0]}, msgspec {msgspec.__version__}; best of {reps} runs; "
        f"{os.cpu_count()} CPUs, load average {load} (other work on the machine lowers the "
        "figures: compare rows of one run)"
    )
    results = [run_set(spec, reps, naive_reps) for spec in specs]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
