"""What both decode engines share: the job, the outcome of decoding one object, the error.

A job is the caller's event loop and future, the object's bytes or a local path, and where it
came from; its outcome is ``(True, FileOutcome)`` or ``(False, the exception decoding raised)``,
handed back to the caller as itself.
"""

from __future__ import annotations

import asyncio

from trailguard.detect.detection import Source
from trailguard.detect.process import Detector

__all__ = ["DecodePoolBroken", "Future", "Job", "outcome", "read_local"]

Future = asyncio.Future[tuple[bool, object]]

# (the caller's loop, its future, the object's bytes or a local path, source, name, key)
Job = tuple[
    asyncio.AbstractEventLoop, Future, bytes | bytearray, str | None, Source, str, str | None
]


class DecodePoolBroken(RuntimeError):
    """A decode worker exited while it held an object (killed, out of memory, ...)."""


def outcome(
    detector: Detector,
    data: bytes | bytearray | memoryview,
    path: str | None,
    source: Source,
    name: str,
    key: str | None,
) -> tuple[bool, object]:
    """(True, the object's FileOutcome) or (False, what decoding it raised): in a decode thread
    or a worker process alike, the caller gets the exception as itself."""
    try:
        data = read_local(path, detector.limits.max_input_bytes) if path is not None else data
        return True, detector.process_file(data, source=source, name=name, key=key)
    except Exception as exc:  # noqa: BLE001 - handed to the caller, not swallowed
        return False, exc


def read_local(path: str, limit: int) -> bytes:
    """A local file for :meth:`DecodePool.process_path`, read where it is decoded: at most one
    byte past the limit (decode_file then refuses it by its size, as it does an S3 object)."""
    with open(path, "rb") as handle:
        return handle.read(limit + 1)
