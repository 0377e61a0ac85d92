"""Decode one CloudTrail log file: choose the route, answer with :class:`DecodedFile`.

Input is the raw bytes of a file (gzip or not, told apart by the magic bytes, never by the name).
Output: how many records it holds, the candidate records (those whose ``eventName`` is one the
:class:`CandidateNames` names) decoded into :class:`~trailguard.detect.record.Record`, and the bad
records, each with its reason.  A problem with the file as a whole raises
:class:`~trailguard.errors.DecodeError` with a reason an operator can act on; no other exception
escapes for any input bytes.

What is a record and when it is bad is decided by one rule, :mod:`trailguard.detect.frame`'s
(docs/ARCHITECTURE.md, "Decoding"): a record that is not valid JSON, not UTF-8, too big, ... is
bad and its neighbours are decoded as usual.  Every route below either answers exactly as that
rule would, or hands the text on to a route that does; the result never depends on the CPU,
the C scanner or a JSON library's tolerance (tests compare all three on every input).

The routes, fastest first:

1. Digest and Insight files are skipped by their key.
2. gzip'd ``{"Records": [...]}`` up to ``stream_over`` bytes (every usual S3 delivery), with
   the C scanner: :func:`_scan.gunzip_records` inflates and scans in one call without the GIL
   (see ``_scan.c``), and only the record count and the few records that may be candidates
   come back; those are probed and decoded here.  The scanner accepts only a document with no
   bad record at all; anything else it declines, with the text.
3. The msgspec parts and the reference walk (:mod:`trailguard.detect.stream`), on the text in
   memory or, above ``stream_over``, as it inflates -- so memory stays bounded whatever the
   file holds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Final

import msgspec

from trailguard.detect.gunzip import GZIP_MAGIC, decompress, inflate_bounded, trailer_size
from trailguard.detect.keys import KeyKind, classify_key
from trailguard.detect.locate import CandidateNames
from trailguard.detect.records import (
    DEFAULT_LIMITS,
    Collector,
    DecodedFile,
    DecodeLimits,
    skipped,
)
from trailguard.detect.scanner import SCANNER, gil_free, scan_module
from trailguard.detect.stream import PieceDecoder
from trailguard.errors import DecodeError

__all__ = [
    "DEFAULT_LIMITS",
    "SCANNER",
    "CandidateNames",
    "DecodeLimits",
    "DecodedFile",
    "decode_file",
    "decompress",
    "gil_free",
]

Buffer = bytes | bytearray | memoryview


class _Probe(msgspec.Struct, gc=False):
    """What the scanner's doubtful records are probed for."""

    event_name: str | None = msgspec.field(default=None, name="eventName")
    event_source: str | None = msgspec.field(default=None, name="eventSource")


_DEC_PROBE: Final = msgspec.json.Decoder(_Probe)


def decode_file(
    data: Buffer,
    candidates: CandidateNames,
    *,
    source: str,
    key: str | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> DecodedFile:
    """Decode one CloudTrail file (see the module docstring); raise DecodeError when it is bad."""
    if isinstance(data, memoryview) and (data.format != "B" or not data.c_contiguous):
        data = data.tobytes()
    if len(data) == 0:
        raise DecodeError(source, "empty file (0 bytes)")
    if len(data) > limits.max_input_bytes:
        raise DecodeError(
            source,
            f"{'more than ' if len(data) == limits.max_input_bytes + 1 else ''}{len(data)} bytes, "
            f"over limits.max_object_bytes={limits.max_input_bytes} (CloudTrail writes at most "
            "50 MB compressed)",
        )
    compressed = bytes(data[:2]) == GZIP_MAGIC
    # (a substring test first: both layouts name "CloudTrail-Digest"/"-Insight", and the three
    # regex searches of classify_key cost ~25 us per file)
    if key and ("CloudTrail-Digest" in key or "CloudTrail-Insight" in key):
        kind = classify_key(key)
        if kind is KeyKind.DIGEST or kind is KeyKind.INSIGHT:
            return skipped(str(kind), compressed, 0)

    scan = scan_module() if SCANNER.enabled and not SCANNER.reference else None
    text: Buffer | None = None
    rest = None
    reopen = None
    scanned = False
    if compressed:
        blob = data.tobytes() if isinstance(data, memoryview) else data
        isize = trailer_size(blob, min(limits.stream_over, limits.max_inflated_bytes))
        if scan is not None and isize is not None and gil_free():
            # inflate and scan in one call without the GIL, into a buffer each thread keeps
            found = scan.gunzip_records(blob, isize, candidates.name_bytes, limits.max_record_bytes)
            if isinstance(found, tuple):
                count, first, doubtful = found
                pairs = list(zip(doubtful[0::2], doubtful[1::2], strict=True))
                result = _from_scan(candidates, limits, source, count, first, pairs, isize, True)
                if result is not None:
                    return result
            scanned = found is not None  # declined, or probed: not again
        if text is None:
            text, rest = inflate_bounded(blob, source=source, limits=limits)
        if rest is not None:
            reopen = functools.partial(inflate_bounded, blob, source=source, limits=limits)
    else:
        text = data
    if scan is not None and not scanned and rest is None and len(text) <= limits.stream_over:
        result = _scanned_text(scan, candidates, limits, source, text, compressed)
        if result is not None:
            return result
    decoder = PieceDecoder(
        candidates,
        limits,
        source=source,
        compressed=compressed,
        reference_only=SCANNER.reference,
    )
    return decoder.run(text, rest, reopen)


def _scanned_text(
    scan: object,
    candidates: CandidateNames,
    limits: DecodeLimits,
    source: str,
    text: Buffer,
    compressed: bool,
) -> DecodedFile | None:
    """``{"Records": [...]}`` text by the C scanner; None when it declines."""
    found = scan.records(  # type: ignore[attr-defined]
        text, candidates.name_bytes, max_record=limits.max_record_bytes
    )
    if isinstance(found, str):
        return None
    count, first_start, first_end, spans = found
    view = memoryview(text)
    doubtful = [(spans[at], view[spans[at + 1] : spans[at + 2]]) for at in range(0, len(spans), 3)]
    return _from_scan(
        candidates,
        limits,
        source,
        count,
        view[first_start:first_end],
        doubtful,
        len(text),
        compressed,
    )


def _from_scan(
    candidates: CandidateNames,
    limits: DecodeLimits,
    source: str,
    count: int,
    first: Buffer,
    doubtful: Sequence[tuple[int, Buffer]],
    size: int,
    compressed: bool,
) -> DecodedFile | None:
    """The scanner's answer (the record count, the first record, the records that may be
    candidates) made a DecodedFile; None where the reference rules need a closer look.

    The scanner accepted the whole text as JSON and UTF-8, every record an object with a plain
    string eventName and no plain ``aws:`` eventSource; a doubtful record (an escape or a
    second eventName key) is probed here, and one whose eventName decodes to null (or whose
    eventSource to ``aws:...``) sends the file to the reference walk, which judges it.
    """
    names = candidates.event_names
    collector = Collector(names, limits, source)
    if count:
        try:
            probes = [(index, raw, _DEC_PROBE.decode(raw)) for index, raw in doubtful]
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            return None
        if any(
            probe.event_name is None
            or (probe.event_source is not None and probe.event_source.startswith("aws:"))
            for _, _, probe in probes
        ):
            return None
        collector.usable(count)
        for index, raw, probe in probes:
            if probe.event_name in names:
                collector.candidate(raw, f"record {index}")
    return collector.result("records", compressed=compressed, size=size)
