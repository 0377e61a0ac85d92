"""A seeded, bounded fuzzing campaign of the C scanner under AddressSanitizer and UBSan.

    python -m tests.fuzz.campaign [--seconds N] [--seed S] [--max-inputs N]

``_scan.c`` is built with ``-fsanitize=address,undefined -fno-sanitize-recover=all`` into
``build/fuzz/`` (rebuilt when the source changes) and loaded in place of the normal extension in
a child process that has ASan's runtime preloaded (CPython itself is not instrumented): a
memory error or undefined behaviour aborts it, and the campaign fails.  Every input is also
checked the differential way: the AVX2 masks against the portable ones, the gzip entry point
against the plain one, and ``decode_file`` on every path (scanner, msgspec parts, the reference
walk, streamed) against each other.

Inputs, in rounds until the time or input budget is spent (``--seed`` makes it repeatable):
the seed corpus in ``tests/fuzz/corpus/`` and the shipped CloudTrail corpus and examples;
truncations of each at every 64-byte block edge (and one byte either side); random mutations
(bytes flipped, deleted, repeated, JSON-significant bytes inserted, parts of two inputs
spliced); and documents from the property test's generator.  A failing input is written to
``build/fuzz/failures/`` before the campaign stops.

``make fuzz`` runs a long campaign (a person runs it before a release); ``make test`` runs a
short one (tests/integration/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "daemon" / "trailguard" / "detect" / "_scan.c"
BUILD = ROOT / "build" / "fuzz"
CORPUS = Path(__file__).resolve().parent / "corpus"
SPECIAL = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"\x00", b"\xff", b"\\u", b"\\ud800"]


def build() -> Path:
    """The sanitized extension, built once per source version."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out = BUILD / f"_scan_asan_{digest}.so"
    if out.exists():
        return out
    BUILD.mkdir(parents=True, exist_ok=True)
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        [
            os.environ.get("CC", "gcc"),
            "-O1",
            "-g",
            "-std=c11",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
            "-shared",
            "-fPIC",
            f"-I{include}",
            str(SOURCE),
            "-o",
            str(out),
            "-ldl",
        ],
        check=True,
    )
    return out


def runtime() -> str:
    """ASan's runtime, to preload into an uninstrumented Python."""
    found = subprocess.run(
        [os.environ.get("CC", "gcc"), "-print-file-name=libasan.so"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not os.path.isabs(found):
        raise SystemExit("fuzz: gcc has no libasan.so (Debian: apt-get install gcc libasan8)")
    return found


def seeds() -> list[bytes]:
    texts = [path.read_bytes() for path in sorted(CORPUS.iterdir()) if path.is_file()]
    corpus = ROOT / "tests" / "data" / "corpus"
    for path in sorted((corpus / "stratus-red-team").glob("*.json"))[:12]:
        records = json.loads(path.read_text())
        texts.append(json.dumps({"Records": records}, separators=(",", ":")).encode())
    for path in sorted((ROOT / "examples").rglob("*.json.gz")):
        texts.append(gzip.decompress(path.read_bytes()))
    return texts


def truncations(text: bytes) -> Iterator[bytes]:
    for edge in range(0, len(text) + 1, 64):
        for cut in (edge - 1, edge, edge + 1):
            if 0 <= cut <= len(text):
                yield text[:cut]


def mutate(rng: random.Random, text: bytes, other: bytes) -> bytes:
    data = bytearray(text)
    for _ in range(rng.randint(1, 4)):
        if not data:
            data += rng.choice(SPECIAL)
            continue
        at = rng.randrange(len(data))
        op = rng.randrange(6)
        if op == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            del data[at : at + rng.randint(1, 16)]
        elif op == 2:
            data[at:at] = data[at : at + rng.randint(1, 64)]
        elif op == 3:
            data[at:at] = rng.choice(SPECIAL)
        elif op == 4:
            data[at:at] = b"[" * rng.randint(1, 1100)
        else:
            start = rng.randrange(len(other) + 1)
            data[at:] = other[start:]
    return bytes(data)


class Campaign:
    def __init__(self, seconds: float, max_inputs: int, seed: int) -> None:
        self.deadline = time.monotonic() + seconds
        self.max_inputs = max_inputs
        self.rng = random.Random(seed)
        self.count = 0
        from tests.unit.detect.test_decode_differential import PF, all_agree
        from trailguard.detect import _scan

        self.scan = _scan
        self.all_agree = all_agree
        self.names = PF.name_bytes

    def more(self) -> bool:
        return self.count < self.max_inputs and time.monotonic() < self.deadline

    def check(self, text: bytes) -> None:
        self.count += 1
        try:
            self.entry_points(text)
            self.all_agree(text)
            if self.count % 8 == 0:
                self.all_agree(gzip.compress(text, compresslevel=1, mtime=0))
        except BaseException:
            failures = BUILD / "failures"
            failures.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(text).hexdigest()[:16]
            (failures / f"{name}.bin").write_bytes(text)
            print(f"fuzz: failing input saved to {failures / name}.bin", file=sys.stderr)
            raise

    def entry_points(self, text: bytes) -> None:
        scan = self.scan
        fast = scan.records(text, self.names)
        slow = scan.records(text, self.names, simd=False)
        assert fast == slow, f"AVX2 and portable masks differ: {fast!r} != {slow!r}"
        if not text:
            return
        packed = gzip.compress(text, compresslevel=1, mtime=0)
        both = scan.gunzip_records(packed, len(text), self.names)
        assert both is not None, "gunzip_records refused a well-formed one-member gzip"
        if isinstance(fast, str):
            assert both == fast, f"declined differently: {both!r} != {fast!r}"
        else:
            assert isinstance(both, tuple), f"gunzip_records declined: {both!r}"
            count, first_start, first_end, spans = fast
            assert both[0] == count, "gunzip_records counted differently"
            assert both[1] == text[first_start:first_end] if count else True
            expected: list[int | bytes] = []
            for at in range(0, len(spans), 3):
                expected += [spans[at], text[spans[at + 1] : spans[at + 2]]]
            assert list(both[2]) == expected, "gunzip_records found other records"
        assert scan.gunzip(packed, len(text)) == text, "gunzip changed the text"

    def run(self) -> None:
        texts = seeds()
        for text in texts:
            if not self.more():
                return
            self.check(text)
            for cut in truncations(text):
                if not self.more():
                    return
                self.check(cut)
        from hypothesis import HealthCheck, given, seed, settings

        from tests.unit.detect.test_decode_differential import documents

        @settings(
            max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(doc=documents())
        def generated(doc: bytes) -> None:
            if self.more():
                self.check(doc)

        while self.more():
            for _ in range(500):  # a round of mutations, then one of generated documents
                if not self.more():
                    return
                text = self.rng.choice(texts)
                self.check(mutate(self.rng, text, self.rng.choice(texts)))
            seed(self.rng.randrange(1 << 32))(generated)()


def child(seconds: float, max_inputs: int, seed: int) -> None:
    """In the process with ASan preloaded: load the sanitized module, run the campaign."""
    spec = importlib.util.spec_from_file_location(
        "trailguard.detect._scan", os.environ["TG_FUZZ_MODULE"]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["trailguard.detect._scan"] = module
    from trailguard.detect.scanner import SCANNER

    if not SCANNER.available:
        raise SystemExit("fuzz: the CPU has no AVX2: the scanner cannot be fuzzed here")
    campaign = Campaign(seconds, max_inputs, seed)
    started = time.monotonic()
    campaign.run()
    print(
        f"fuzz: {campaign.count} inputs in {time.monotonic() - started:.0f} s (seed {seed}): "
        "no sanitizer report, every path agreed"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-inputs", type=int, default=10**9)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    if os.environ.get("TG_FUZZ_CHILD") == "1":
        child(args.seconds, args.max_inputs, args.seed)
        return
    module = build()
    env = dict(os.environ)
    env.update(
        TG_FUZZ_CHILD="1",
        TG_FUZZ_MODULE=str(module),
        LD_PRELOAD=runtime(),
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
        TRAILGUARD_SCANNER="1",
    )
    command = [sys.executable, "-m", "tests.fuzz.campaign", *sys.argv[1:]]
    raise SystemExit(subprocess.run(command, env=env, cwd=ROOT, check=False).returncode)


if __name__ == "__main__":
    main()
