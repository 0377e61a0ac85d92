"""What a decoded file says, and the rules for one record that every decode path applies.

:class:`DecodedFile` is the result of decoding one file.  :class:`Collector` gathers it: the
record count, the candidate records (decoded in full into :class:`Record`, under the limits of
:class:`DecodeLimits`), the bad records with their reasons, and the two file-level rules about
records (the first record is an AWS event notification: not a CloudTrail log; no usable record
at all: not a CloudTrail log; only Insight records: skipped).  :meth:`Collector.judge` applies
the reference rules of :mod:`trailguard.detect.frame` to one framed element; the fast paths
feed :meth:`Collector.usable` and :meth:`Collector.candidate` only for records those rules would
accept, so every path ends in the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from trailguard.detect.frame import MAX_DECODE_DEPTH, depth_of
from trailguard.detect.json_tokens import Element
from trailguard.detect.record import Record
from trailguard.errors import DecodeError

__all__ = [
    "DEFAULT_LIMITS",
    "Collector",
    "DecodeLimits",
    "DecodedFile",
    "notification_problem",
    "utf8_ok",
]

_MAX_BAD_MESSAGES: Final = 100
_INSIGHT: Final = "AwsCloudTrailInsight"
_DEC_RECORD: Final = msgspec.json.Decoder(Record)
_DEC_OPT_STR: Final = msgspec.json.Decoder(str | None)


class DecodeLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What bounds the memory and CPU one file may take (``[limits]`` in the config)."""

    #: refuse a file bigger than this as it is stored (``limits.max_object_bytes``: CloudTrail
    #: writes at most 50 MB compressed)
    max_input_bytes: int = 50 << 20

    #: refuse a file that inflates to more than this (a gzip bomb); a 50 MB CloudTrail object
    #: (S3's largest delivery) inflates to ~10-20x
    max_inflated_bytes: int = 1 << 30
    #: decode a file in memory up to this size of JSON; above it, as it inflates, in pieces
    stream_over: int = 64 << 20
    #: ... of this many bytes
    stream_piece: int = 1 << 20
    #: a record bigger than this is bad (CloudTrail omits request parameters over 100 KB)
    max_record_bytes: int = 4 << 20
    #: refuse a file whose candidate records (decoded in full) total more than this many bytes
    #: of JSON: their decoded form is what a file may hold in memory
    max_candidate_bytes: int = 32 << 20


DEFAULT_LIMITS: Final = DecodeLimits()


class DecodedFile(msgspec.Struct, frozen=True):
    """What decoding one file found."""

    #: "records", "array", "jsonl", "lookup-events", "record"; "digest"/"insight" when skipped
    shape: str
    #: number of records in the file (0 when skipped), bad ones included
    records: int
    #: records whose eventName is one the caller asked for, decoded, in file order
    candidates: list[Record]
    #: None, or why the file was skipped: "digest" or "insight"
    skipped: str | None
    #: per-record problems that did not spoil the file ("record 17: expected an object, got
    #: an array"), at most 100, then "... and N more bad records"
    bad_records: list[str]
    #: gzip detected (by magic bytes)
    compressed: bool
    #: size of the JSON text after decompression (0 when skipped without decompressing)
    bytes_decompressed: int
    #: how many records were bad (``bad_records`` keeps only the first messages)
    bad_record_count: int = 0


def utf8_ok(text: bytes | bytearray | memoryview) -> bool:
    """Whether ``text`` is UTF-8 (a fast path's check: msgspec does not look inside strings it
    skips, so a path that relies on it checks the whole text once)."""
    if isinstance(text, memoryview):
        text = text.tobytes()
    if text.isascii():
        return True
    try:
        bytes(text).decode()
    except UnicodeDecodeError:
        return False
    return True


def notification_problem(event_source: str | None) -> str | None:
    """Why a record with this eventSource is not a CloudTrail record, or None: S3, SQS and SNS
    event notifications share the ``Records`` layout, with ``aws:``-prefixed sources."""
    if event_source is not None and event_source.startswith("aws:"):
        return (
            f"not a CloudTrail record: eventSource {event_source!r} is an AWS event notification "
            "(S3/SQS/SNS style), not a CloudTrail API record"
        )
    return None


class Collector:
    """Gathers one file's result; the rules for records that are not decided by framing."""

    __slots__ = (
        "_bad",
        "_candidate_bytes",
        "_first_reason",
        "bad_count",
        "candidates",
        "insight",
        "limits",
        "names",
        "records",
        "source",
        "usable_count",
    )

    def __init__(self, names: frozenset[str], limits: DecodeLimits, source: str) -> None:
        self.names = names
        self.limits = limits
        self.source = source
        self.records = 0
        self.usable_count = 0
        self.insight = 0
        self.bad_count = 0
        self.candidates: list[Record] = []
        self._bad: list[str] = []
        self._first_reason: str | None = None
        self._candidate_bytes = 0

    # -- what the paths report ------------------------------------------------------------------

    def bad(self, label: str, reason: str) -> None:
        self.bad_count += 1
        message = f"{label}: {reason}"
        self._first_reason = self._first_reason or message
        if len(self._bad) < _MAX_BAD_MESSAGES:
            self._bad.append(message)

    def usable(self, count: int) -> None:
        """``count`` records a fast path accepted: usable, none an Insight event."""
        self.records += count
        self.usable_count += count

    def candidate(self, raw: bytes | bytearray | memoryview | msgspec.Raw, label: str) -> None:
        """Decode a record whose eventName is one of the names (by the rules: depth, types)."""
        # each counts at least 1 KiB: a decoded record costs a few hundred bytes of Python
        # objects however short its JSON (a flood of tiny ones must not slip under the bound)
        self._candidate_bytes += max(len(raw), 1024)
        if self._candidate_bytes > self.limits.max_candidate_bytes:
            raise DecodeError(
                self.source,
                f"its candidate records take more than {self.limits.max_candidate_bytes} bytes "
                "(limits.max_candidate_bytes): refusing to decode them all",
            )
        if depth_of(raw) > MAX_DECODE_DEPTH:
            self.bad(label, f"nested too deeply to decode (more than {MAX_DECODE_DEPTH} levels)")
            return
        try:
            record = _DEC_RECORD.decode(raw)
        except msgspec.ValidationError as exc:
            self.bad(label, f"a field has the wrong type ({exc})")
            return
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            # framing and the UTF-8 check said it was JSON: a decoder that disagrees is a bug to
            # report, never a reason to lose the neighbours
            self.bad(label, "could not be decoded")
            return
        self.candidates.append(record)

    # -- the reference rules for one framed element -------------------------------------------

    def judge(self, elem: Element, raw: bytes | None, label: str) -> None:
        """One element of the records array, framed by :class:`~trailguard.detect.frame.Walker`
        (``raw``: its bytes, None when it was too big to keep)."""
        self.records += 1
        if elem.error is not None or raw is None:
            self.bad(label, elem.error or "not kept")
            return
        if not utf8_ok(raw):
            self.bad(label, "a string is not valid UTF-8")
            return
        if elem.kind != "an object":
            self.bad(label, f"expected an object, got {elem.kind}")
            return
        fields = elem.fields
        try:
            name = _string_field(raw, elem.start, fields.get("eventName"), "eventName")
            source = _string_field(raw, elem.start, fields.get("eventSource"), "eventSource")
        except ValueError as exc:
            self.bad(label, str(exc))
            return
        problem = notification_problem(source)
        if problem is not None:
            self.bad(label, problem)
            return
        has_time = _last_not_null(raw, elem.start, fields.get("eventTime"))
        if name is None and not has_time:
            self.bad(label, "not a CloudTrail record: it has neither eventTime nor eventName")
            return
        self.usable_count += 1
        if name is None and _last_is(raw, elem.start, fields.get("eventType"), _INSIGHT):
            self.insight += 1  # an Insight event (they have no eventName)
        if name is not None and name in self.names:
            self.candidate(raw, label)

    # -- the result -----------------------------------------------------------------------------

    def result(self, shape: str, *, compressed: bool, size: int) -> DecodedFile:
        if self.records and not self.usable_count:
            raise DecodeError(
                self.source, f"not a CloudTrail log: no usable record ({self._first_reason})"
            )
        if self.usable_count and self.insight == self.usable_count:
            return skipped("insight", compressed, size)
        bad = self._bad
        if self.bad_count > len(bad):
            bad = [*bad, f"... and {self.bad_count - len(bad)} more bad records"]
        return DecodedFile(
            shape=shape,
            records=self.records,
            candidates=self.candidates,
            skipped=None,
            bad_records=bad,
            compressed=compressed,
            bytes_decompressed=size,
            bad_record_count=self.bad_count,
        )


def skipped(reason: str, compressed: bool, size: int) -> DecodedFile:
    return DecodedFile(
        shape=reason,
        records=0,
        candidates=[],
        skipped=reason,
        bad_records=[],
        compressed=compressed,
        bytes_decompressed=size,
    )


def _string_field(
    raw: bytes, base: int, spans: Sequence[tuple[int, int]] | None, name: str
) -> str | None:
    """The last value of a top-level key that must be a string or null (each occurrence is
    checked, as a decoder assigning them in turn would)."""
    value: str | None = None
    for start, end in spans or ():
        text = raw[start - base : end - base]
        head = text[:1]
        if head == b'"':
            value = _DEC_OPT_STR.decode(text)
        elif text == b"null":
            value = None
        else:
            raise ValueError(f"{name} is not a string or null")
    return value


def _last_not_null(raw: bytes, base: int, spans: Sequence[tuple[int, int]] | None) -> bool:
    if not spans:
        return False
    start, end = spans[-1]
    return raw[start - base : end - base] != b"null"


def _last_is(raw: bytes, base: int, spans: Sequence[tuple[int, int]] | None, expected: str) -> bool:
    if not spans:
        return False
    start, end = spans[-1]
    text = raw[start - base : end - base]
    if text[:1] != b'"':
        return False
    return _DEC_OPT_STR.decode(text) == expected
