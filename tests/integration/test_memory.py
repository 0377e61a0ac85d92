"""Memory is bounded for any input: hostile files through the real ``trailguard replay``.

Each file is replayed by the CLI in its own process (``--workers 1``, default settings) and that
process's peak RSS is read from the kernel (``os.wait4``).  README "Memory" promises less than
512 MiB whatever a file holds; before the streaming rework the whitespace file below took 2.7 GB.
The files are built here (a few seconds; zlib compresses runs of one byte at ~1 GB/s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.factories import delivery_key
from tests.integration.conftest import Boto3Clients
from tests.integration.daemon_harness import wait_until
from tests.integration.test_daemon import (
    depth,
    make_queue,
    notify_queue,
    put,
    stop_ok,
    wait_detections,
)
from tests.integration.test_daemon_ops import MakeDaemon, daemons  # noqa: F401 - the fixture

MiB = 1 << 20
PROMISE_MB = 512
REMOVAL = {
    "eventVersion": "1.08",
    "eventTime": "2026-11-01T12:00:00Z",
    "eventSource": "iam.amazonaws.com",
    "eventName": "DeleteUserPolicy",
    "eventID": "the-real-one",
    "recipientAccountId": "123456789012",
    "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/mallory"},
    "requestParameters": {"userName": "bob", "policyName": "guard"},
}


def gzip_of(parts: Iterator[bytes], *, isize: int | None = None) -> bytes:
    """gzip (level 1) of the concatenated parts; ``isize`` forges the size trailer."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    out = bytearray()
    for part in parts:
        out += packer.compress(part)
    out += packer.flush()
    if isize is not None:
        out[-4:] = isize.to_bytes(4, "little")
    return bytes(out)


def repeated(byte: bytes, total: int) -> Iterator[bytes]:
    chunk = byte * MiB
    for _ in range(total // MiB):
        yield chunk


def whitespace(total: int) -> Iterator[bytes]:
    yield b'{"Records":['
    yield from repeated(b" ", total)
    yield b"]}"


def huge_string(total: int) -> Iterator[bytes]:
    yield b'{"Records":[' + json.dumps(REMOVAL).encode() + b',{"eventName":"X","a":"'
    yield from repeated(b"A", total)
    yield b'"}]}'


def candidate_flood(count: int) -> Iterator[bytes]:
    yield b'{"Records":['
    one = b'{"eventName":"DeletePolicy","eventTime":"t","requestParameters":{"policyArn":"x"}},'
    for _ in range(count // 10_000):
        yield one * 10_000
    yield json.dumps(REMOVAL).encode() + b"]}"


def deep(levels: int) -> Iterator[bytes]:
    yield b'{"Records":[' + json.dumps(REMOVAL).encode() + b',{"a":'
    yield from repeated(b"[", levels)


CASES: dict[str, tuple[Callable[[], bytes], str]] = {
    # name: (the file, what replay must say of it)
    "whitespace, 1.1 GiB (over max_inflated_bytes)": (
        lambda: gzip_of(whitespace(1100 * MiB)),
        "refusing a possible gzip bomb",
    ),
    "whitespace, 600 MiB, ISIZE trailer forged to 100": (
        lambda: gzip_of(whitespace(600 * MiB), isize=100),
        "truncated or corrupt gzip",
    ),
    "whitespace, 600 MiB, honest": (lambda: gzip_of(whitespace(600 * MiB)), "records: 0"),
    "NUL bytes, 600 MiB": (lambda: gzip_of(repeated(b"\0", 600 * MiB)), "invalid JSON"),
    "one 600 MiB string beside a real removal": (
        lambda: gzip_of(huge_string(600 * MiB)),
        "detections: 1",
    ),
    "2 million tiny removals": (
        lambda: gzip_of(candidate_flood(2_000_000)),
        "limits.max_candidate_bytes",
    ),
    "brackets 200 MiB deep": (lambda: gzip_of(deep(200 * MiB)), "nested more than 65536"),
}


def replay_peak_rss(path: Path, tmp: Path) -> tuple[int, str, int]:
    """(exit code, output, peak RSS in MiB) of ``trailguard replay --workers 1`` on one file."""
    out = tmp / "out.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trailguard",
            "replay",
            "--workers",
            "1",
            "--no-progress",
            "-o",
            str(out),
            str(path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, output, usage.ru_maxrss // 1024


@pytest.mark.integration
@pytest.mark.parametrize("case", list(CASES))
def test_replay_memory_is_bounded_for_hostile_files(case: str, tmp_path: Path) -> None:
    make, says = CASES[case]
    path = tmp_path / "hostile.json.gz"
    path.write_bytes(make())
    code, output, peak = replay_peak_rss(path, tmp_path)
    assert says in output, output[-3000:]
    assert peak < PROMISE_MB, f"{case}: peak RSS {peak} MiB"
    if says == "detections: 1":  # the neighbour of the hostile record is found, not hidden
        assert code == 0, output[-3000:]
        assert "the-real-one" in (tmp_path / "out.jsonl").read_text()


# --------------------------------------------------------------------------- the daemon


def big_honest_file(compressed: int, seed: int) -> bytes:
    """A CloudTrail-shaped gzip of about ``compressed`` bytes (records carrying random base64,
    which barely compresses): what a busy account's biggest deliveries cost to fetch."""
    import base64
    import random

    rng = random.Random(seed)
    record = {**REMOVAL, "eventName": "GetObject", "eventSource": "s3.amazonaws.com"}
    parts = [b'{"Records":[']
    size = 0
    count = 0
    while size < compressed * 4 // 3:
        blob = base64.b64encode(rng.randbytes(48 << 10)).decode()
        body = dict(record, eventID=f"big-{seed}-{count}", requestParameters={"blob": blob})
        parts.append((b"," if count else b"") + json.dumps(body).encode())
        size += len(blob)
        count += 1
    parts.append(b"]}")
    return gzip_of(iter(parts))


def vm_hwm_mib(pid: int) -> int:
    """A live process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


@pytest.mark.integration
def test_daemon_memory_is_bounded_for_hostile_and_maximal_objects(
    aws: Boto3Clients,
    daemons: MakeDaemon,  # noqa: F811 - the fixture imported above
) -> None:
    """The real daemon at the default concurrency (8 objects, 2 decode threads), against the
    moto server: three ~40 MB objects and four hostile ones arrive together. The byte budget
    (128 MiB) lets two big objects in at once; each decode worker streams what it inflates."""
    url, arn, _ = make_queue(aws, "memory", max_receive=1)
    notify_queue(aws, arn)
    harness = daemons(
        queue_urls=[url], max_objects_in_flight=8, decode_workers=2, visibility_timeout_secs=20
    )
    run = harness.start()
    for n in range(3):
        put(aws, delivery_key(suffix=f"Big{n:08d}"), big_honest_file(40 * MiB, n))
    put(aws, delivery_key(suffix="Whitespace01"), gzip_of(whitespace(600 * MiB)))
    put(aws, delivery_key(suffix="Nuls00000001"), gzip_of(repeated(b"\0", 600 * MiB)))
    put(aws, delivery_key(suffix="HugeString01"), gzip_of(huge_string(600 * MiB)))
    put(aws, delivery_key(suffix="Flood0000001"), gzip_of(candidate_flood(2_000_000)))
    wait_detections(harness, {"the-real-one"}, timeout=120)
    wait_until(
        lambda: depth(aws, url) == (0, 0),
        timeout=180,
        what="every message deleted or moved to the dead-letter queue",
        context=lambda: f"depth={depth(aws, url)}\n{harness.describe()}",
    )
    peak = vm_hwm_mib(run.pid)
    processed = {e["key"].rsplit("_", 1)[-1] for e in run.events("s3.object_processed")}
    assert {"Big00000000.json.gz", "Big00000001.json.gz", "Big00000002.json.gz"} <= processed
    assert "HugeString01.json.gz" in processed  # its neighbour detected, the string a bad record
    assert peak < PROMISE_MB, f"daemon peak RSS {peak} MiB"
    stop_ok(harness, run)
