"""Detections as JSON Lines, durably.

``write_batch`` returns only once the lines are flushed and, for a regular file, fsynced: the
daemon deletes an SQS message after this returns, so a crash can never lose a detection that a
deleted message produced.  Lines are written whole (one ``write`` per batch on an ``O_APPEND``
file) so a reader never sees a torn line from a live writer.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable
from typing import BinaryIO

from trailguard.detect.detection import Detection, encode_detection
from trailguard.errors import TrailguardError


class OutputError(TrailguardError):
    """The detections output could not be opened or written."""


class JsonlWriter:
    """Append detections to a file (or stdout with ``"-"``)."""

    def __init__(self, path: str, *, fsync: bool = True) -> None:
        self.path = path
        self._owned = path != "-"
        try:
            if self._owned:
                parent = os.path.dirname(os.path.abspath(path))
                os.makedirs(parent, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                self._stream: BinaryIO = os.fdopen(fd, "ab", buffering=0)
            else:
                self._stream = sys.stdout.buffer
            mode = os.fstat(self._stream.fileno()).st_mode
        except OSError as exc:
            raise OutputError(f"cannot open detections output {path!r}: {exc.strerror}") from exc
        # fsync only means something for regular files; pipes and terminals just get flushed.
        self._fsync = fsync and stat.S_ISREG(mode)

    def write_batch(self, detections: Iterable[Detection]) -> int:
        """Write the detections and make them durable; returns how many were written."""
        payload = bytearray()
        count = 0
        for detection in detections:
            payload += encode_detection(detection)
            count += 1
        if not count:
            return 0
        self.write_raw(bytes(payload))
        return count

    def write_raw(self, payload: bytes) -> None:
        """Write ready-made JSON lines (the remediation circuit breaker's records), durably."""
        try:
            self._stream.write(payload)
            self._stream.flush()
            if self._fsync:
                os.fsync(self._stream.fileno())
        except BrokenPipeError:
            raise  # the reader went away (`| head`): the CLI ends quietly
        except OSError as exc:
            raise OutputError(f"cannot write to {self.path!r}: {exc.strerror}") from exc

    def close(self) -> None:
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
