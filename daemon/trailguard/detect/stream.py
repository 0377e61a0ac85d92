"""Decoding a file piece by piece, with memory bounded whatever the file holds.

The text comes as pieces: slices of a text already in memory, or a gzip stream as it inflates
(:func:`~trailguard.detect.gunzip.inflate_bounded`).  Two engines:

* **msgspec parts** (fast, for ``{"Records": [...]}`` and top-level arrays): the text is cut
  after the last ``},{"eventVersion":`` of what has arrived, each part is decoded as an array of
  two-field probes (eventName, eventSource), the candidates among them located by their bytes
  (:mod:`~trailguard.detect.locate`) and decoded in full.  A part that decodes is exactly a run
  of whole records: the first part starts at the array's ``[``, and a cut inside a record
  leaves a part that is not an array, so by induction every accepted part ends between records.
  msgspec does not look inside the strings it skips, so each part is also checked to be UTF-8.
* **the reference walk** (:class:`~trailguard.detect.frame.Walker`): anything a part cannot
  settle -- a part that does not decode, a record without an eventName, a run of bytes longer
  than a record may be with no cut in it, another shape, a BOM -- goes to the walk from the last
  record boundary on, for the rest of the file.  It frames each record itself and judges it
  alone (:meth:`~trailguard.detect.records.Collector.judge`): a bad record is reported, its
  neighbours decoded.

Either way, what is held is one part (about ``stream_piece`` bytes, or one record of at most
``max_record_bytes``) and the candidates decoded so far (at most ``max_candidate_bytes``).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Final

import msgspec

from trailguard.detect.frame import Walker
from trailguard.detect.json_tokens import Element, FrameError, describe
from trailguard.detect.locate import RECORD_SEP, CandidateNames
from trailguard.detect.records import Collector, DecodedFile, DecodeLimits, skipped, utf8_ok
from trailguard.errors import DecodeError

__all__ = ["PieceDecoder"]


class _Probe(msgspec.Struct, gc=False):
    """The two fields read from every record by the parts engine."""

    event_name: str | None = msgspec.field(default=None, name="eventName")
    event_source: str | None = msgspec.field(default=None, name="eventSource")


_DEC_PROBES: Final = msgspec.json.Decoder(list[_Probe])
_NAME: Final = operator.attrgetter("event_name")
_SOURCE: Final = operator.attrgetter("event_source")
_DEC_RAWS: Final = msgspec.json.Decoder(list[msgspec.Raw])
_DEC_OPT_STR: Final = msgspec.json.Decoder(str | None)
_RECORDS_HEAD: Final = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*"Records"[ \t\r\n]*:[ \t\r\n]*\[')
_ARRAY_HEAD: Final = re.compile(rb"[ \t\r\n]*\[")
_FIRST_NON_WS: Final = re.compile(rb"[^ \t\r\n]")
_WS: Final = b" \t\r\n"
_BOM: Final = b"\xef\xbb\xbf"
_HEAD: Final = 4096  # bytes looked at to choose the engine
_DIGEST_KEYS: Final = frozenset(
    {"digestStartTime", "digestEndTime", "digestS3Bucket", "digestS3Object", "logFiles"}
)
_RECORD_KEYS: Final = frozenset(
    {"eventVersion", "eventName", "eventTime", "eventSource", "eventID", "userIdentity"}
)

Piece = bytes | bytearray | memoryview


class _NotOneValue(Exception):
    """The text is not one JSON value (maybe JSON Lines): ``error`` if it is not that either."""

    def __init__(self, error: DecodeError) -> None:
        super().__init__(str(error))
        self.error = error


class PieceDecoder:
    """Decodes one file's text (see the module docstring)."""

    def __init__(
        self,
        candidates: CandidateNames,
        limits: DecodeLimits,
        *,
        source: str,
        compressed: bool,
        reference_only: bool = False,
    ) -> None:
        self.candidates = candidates
        self.names = candidates.event_names
        self.limits = limits
        self.source = source
        self.compressed = compressed
        self.reference_only = reference_only
        self.collector = Collector(self.names, limits, source)
        self.size = 0
        self.bom = 0  # a byte order mark was dropped from the start
        self.offset = 0  # bytes of the text before the part being decoded (after the BOM)
        self.lines_read = 0

    def fail(self, reason: str) -> DecodeError:
        return DecodeError(self.source, reason)

    # -- entry ----------------------------------------------------------------------------------

    def run(
        self,
        text: Piece,
        rest: Iterator[bytes] | None = None,
        reopen: Callable[[], tuple[Piece, Iterator[bytes] | None]] | None = None,
    ) -> DecodedFile:
        """Decode ``text`` (the whole text, or its first bytes when ``rest`` yields the others).

        ``reopen`` gives the text again from its start (a stream cannot be rewound): a document
        that turns out not to be one JSON value is read again as JSON Lines, in memory or not.
        """
        if reopen is None:
            if rest is not None:
                raise ValueError("a streamed text needs reopen")
            reopen = lambda: (text, None)  # noqa: E731 - the text is in memory
        pieces = _pieces(text, self.limits.stream_piece, rest)
        buf = bytearray()
        done = False
        while len(buf) < _HEAD and not done:
            piece = next(pieces, None)
            if piece is None:
                done = True
            else:
                buf += piece
                self.size += len(piece)
        if not buf:
            raise self.fail("empty file: the gzip data decompresses to 0 bytes")
        match = _FIRST_NON_WS.search(buf)
        if match is None and done:
            raise self.fail(f"empty file: only whitespace in {len(buf)} bytes of text")
        if buf.startswith(_BOM):  # some editors write one: tolerated
            del buf[: len(_BOM)]
            self.bom = len(_BOM)
        more = _counting(pieces, self)
        try:
            if not self.reference_only:
                head = _RECORDS_HEAD.match(buf)
                if head is not None:
                    del buf[: head.end()]
                    self.offset = head.end()
                    return self.parts(buf, more, done, "records", 2)
                head = _ARRAY_HEAD.match(buf)
                if head is not None:
                    del buf[: head.end()]
                    self.offset = head.end()
                    return self.parts(buf, more, done, "array", 1)
            return self.document(buf, more, done, reopen)
        except _NotOneValue as exc:
            if not self.json_lines_likely(*reopen()):
                raise exc.error from None
        self.collector = Collector(self.names, self.limits, self.source)
        return self.json_lines(*reopen())

    # -- msgspec parts --------------------------------------------------------------------------

    def parts(
        self, buf: bytearray, more: Iterator[bytes], done: bool, shape: str, depth: int
    ) -> DecodedFile:
        """The records array's elements, a part at a time; ``buf`` starts after its ``[``."""
        most = max(4 * self.limits.stream_piece, self.limits.max_record_bytes + _HEAD)
        first = True
        seek = 0
        while True:
            if not done:
                cut = buf.rfind(RECORD_SEP, seek)
                if cut < 0:
                    if len(buf) > most:
                        return self.walk_rest(buf, more, done, shape, depth, first)
                    seek = max(0, len(buf) - len(RECORD_SEP))
                    piece = next(more, None)
                    if piece is None:
                        done = True
                    else:
                        buf += piece
                    continue
                part_end, next_start = cut + 1, cut + 2
            else:
                end = _records_end(buf, shape)
                if end is None:
                    return self.walk_rest(buf, more, done, shape, depth, first)
                part_end = next_start = end
            if not self.part(memoryview(buf)[:part_end], first):
                return self.walk_rest(buf, more, done, shape, depth, first)
            first = False
            if done:
                return self.collector.result(shape, compressed=self.compressed, size=self.size)
            del buf[:next_start]
            self.offset += next_start
            seek = 0

    def part(self, text: memoryview, first: bool) -> bool:
        """Decode one part (whole records, comma-separated); False when it is not that simple."""
        data = b"[" + bytes(text) + b"]"
        if not utf8_ok(data):
            return False
        try:
            probes = _DEC_PROBES.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            return False
        if not probes:
            return bool(first and not text.tobytes().strip(_WS))
        if len(text) > self.limits.max_record_bytes:
            # a record may be too big, which the rule makes a bad record: the walk judges
            try:
                raws = _DEC_RAWS.decode(data)
            except (msgspec.DecodeError, RecursionError):
                return False
            if any(len(raw) > self.limits.max_record_bytes for raw in raws):
                return False
        names = list(map(_NAME, probes))
        if None in names:
            return False  # a record without an eventName: the walk judges it
        sources = set(map(_SOURCE, probes))
        if any(source is not None and source.startswith("aws:") for source in sources):
            return False  # an event notification among them: the walk judges it
        collector = self.collector
        base = collector.records
        collector.usable(len(probes))
        wanted = self.names
        if wanted.isdisjoint(names):
            return True
        picked = [(i, name) for i, name in enumerate(names) if name in wanted]
        located = self.candidates.locator.locate(data, picked, len(data) - 1)
        if located is None:
            try:
                raws = _DEC_RAWS.decode(data)
            except (msgspec.DecodeError, RecursionError):  # pragma: no cover - decoded just now
                raise self.fail("a part decoded once and not twice") from None
            located = [(i, memoryview(raws[i])) for i, _ in picked]
        for index, raw in located:
            collector.candidate(raw, f"record {base + index}")
        return True

    # -- the reference walk ---------------------------------------------------------------------

    def walk_rest(
        self,
        buf: bytearray,
        more: Iterator[bytes],
        done: bool,
        shape: str,
        depth: int,
        first: bool,
    ) -> DecodedFile:
        """Hand the rest of the records array (``buf`` starts at a record boundary) to the walk."""
        walker = Walker(max_record=self.limits.max_record_bytes)
        walker.enter_records(depth, first=first, count=self.collector.records, offset=self.offset)
        if shape == "records":
            walker.records_key = "Records"
            walker.envelope_keys.append("Records")
        self.walk(walker, buf, more, done, "record")
        return self.collector.result(shape, compressed=self.compressed, size=self.size)

    def walk(
        self, walker: Walker, buf: bytearray, more: Iterator[bytes], done: bool, label: str
    ) -> None:
        """Feed the walk to the end of the text, judging each element as it completes."""
        collector = self.collector
        while True:
            try:
                elements = walker.feed(buf, done)
            except FrameError as exc:
                raise _NotOneValue(self.fail(self.framing(exc))) from None
            for elem in elements:
                raw = None if elem.end is None else bytes(buf[elem.start : elem.end])
                if walker.lookup:
                    self.lookup_event(elem, raw)
                else:
                    collector.judge(elem, raw, f"{label} {elem.index}")
            if done:
                break
            keep = walker.keep_from()
            if keep > 0:
                del buf[:keep]
                walker.shift(keep)
            piece = next(more, None)
            if piece is None:
                done = True
            else:
                buf += piece
        try:
            walker.finish()
        except FrameError as exc:
            raise _NotOneValue(self.fail(self.framing(exc))) from None

    def framing(self, exc: FrameError) -> str:
        where = " of the decompressed data" if self.compressed else ""
        return f"{exc.reason} (byte {exc.at + self.bom}{where})"

    def lookup_event(self, elem: Element, raw: bytes | None) -> None:
        """One element of lookup-events output's ``Events``: its ``CloudTrailEvent`` string is
        the record."""
        label = f"event {elem.index}"
        collector = self.collector
        if elem.error is not None or raw is None or not utf8_ok(raw):
            collector.records += 1
            collector.bad(label, elem.error or "not valid UTF-8")
            return
        if elem.kind != "an object":
            collector.records += 1
            collector.bad(label, f"expected an object, got {elem.kind}")
            return
        spans = elem.fields.get("CloudTrailEvent")
        if not spans:
            collector.records += 1
            collector.bad(label, "no CloudTrailEvent string")
            return
        start, end = spans[-1]
        value = raw[start - elem.start : end - elem.start]
        if value[:1] != b'"':
            collector.records += 1
            collector.bad(label, f"CloudTrailEvent is {describe(value[0])}, not a string")
            return
        text = _DEC_OPT_STR.decode(value).encode()  # type: ignore[union-attr]
        self.one_value(text, label, elem.index, "CloudTrailEvent: ")

    # -- other shapes ---------------------------------------------------------------------------

    def document(
        self,
        buf: bytearray,
        more: Iterator[bytes],
        done: bool,
        reopen: Callable[[], tuple[Piece, Iterator[bytes] | None]],
    ) -> DecodedFile:
        """Any JSON document: the walk finds its records array (or none)."""
        walker = Walker(max_record=self.limits.max_record_bytes)
        first = _FIRST_NON_WS.search(buf)
        kind = buf[first.start()] if first is not None else 0
        self.walk(walker, buf, more, done, "record")  # raises DecodeError unless it is JSON
        if kind not in (0x7B, 0x5B):
            raise self.fail(
                f"not a CloudTrail log: the JSON document is {describe(kind)}, expected "
                '{"Records": [...]}, an array of records, JSON Lines or lookup-events output'
            )
        if kind == 0x5B:
            return self.collector.result("array", compressed=self.compressed, size=self.size)
        if walker.records_key is not None:
            if walker.records_not_array is not None:
                raise self.fail(
                    f"not a CloudTrail log: {walker.records_key} is {walker.records_not_array}, "
                    "expected an array"
                )
            shape = "records" if walker.records_key == "Records" else "lookup-events"
            return self.collector.result(shape, compressed=self.compressed, size=self.size)
        keys = set(walker.envelope_keys)
        if not _DIGEST_KEYS.isdisjoint(keys):
            return skipped("digest", self.compressed, self.size)
        if not _RECORD_KEYS.isdisjoint(keys):
            return self.single_record(*reopen())
        shown = ", ".join(sorted(keys)[:8]) or "none"
        raise self.fail(
            "not a CloudTrail log: the JSON object has no Records, Events or record fields "
            f"(keys: {shown})"
        )

    def single_record(self, text: Piece, rest: Iterator[bytes] | None) -> DecodedFile:
        """A document that is one record (``aws cloudtrail`` output for one event, a test)."""
        if self.size > self.limits.max_record_bytes:
            raise self.fail(
                "not a CloudTrail log: one record larger than "
                f"{self.limits.max_record_bytes} bytes (limits.max_record_bytes)"
            )
        text = b"".join(_pieces(text, self.limits.stream_piece, rest))
        if text.startswith(_BOM):
            text = text[len(_BOM) :]
        walker = Walker(element_mode=True, max_record=self.limits.max_record_bytes)
        elements = walker.feed(text, True)
        walker.finish()
        elem = elements[0]
        raw = None if elem.end is None else text[elem.start : elem.end]
        self.collector.judge(elem, raw, "record 0")
        return self.collector.result("record", compressed=self.compressed, size=self.size)

    def json_lines_likely(self, text: Piece, rest: Iterator[bytes] | None) -> bool:
        """Whether a text that is not one JSON value is JSON Lines: two or more non-blank lines,
        one of them a JSON object by itself.  (A broken pretty-printed document has no line
        that is an object by itself.)"""
        lines = 0
        found = False
        for line in self.lines(text, rest):
            if line is not None and not line.strip(_WS):
                continue
            lines += 1
            if not found and line is not None and line.lstrip(_WS)[:1] == b"{":
                walker = Walker(element_mode=True, max_record=self.limits.max_record_bytes)
                try:
                    elements = walker.feed(line, True)
                    walker.finish()
                except FrameError:
                    continue
                found = bool(elements) and elements[0].error is None
            if found and lines >= 2:
                return True
        return False

    def lines(self, text: Piece, rest: Iterator[bytes] | None) -> Iterator[bytes | None]:
        """The lines of the text (None for one longer than a record may be)."""
        buf = bytearray()
        skipping = False
        pieces = _pieces(text, self.limits.stream_piece, rest)
        done = False
        self.lines_read = 0
        while True:
            newline = buf.find(b"\n")
            if newline < 0 and not done:
                if len(buf) > self.limits.max_record_bytes:
                    if not skipping:
                        yield None
                    skipping = True
                    buf.clear()
                piece = next(pieces, None)
                if piece is None:
                    done = True
                else:
                    buf += piece
                    self.lines_read += len(piece)
                continue
            end = newline if newline >= 0 else len(buf)
            if skipping:
                skipping = False
            else:  # however the line arrived, a long one is too long
                yield bytes(buf[:end]) if end <= self.limits.max_record_bytes else None
            del buf[: end + 1]
            if newline < 0:
                return

    def json_lines(self, text: Piece, rest: Iterator[bytes] | None) -> DecodedFile:
        """One record per non-blank line; a line that is not one JSON value is a bad record."""
        bom = True
        for number, line in enumerate(self.lines(text, rest), start=1):
            if line is None:
                self.collector.records += 1
                self.collector.bad(
                    f"line {number}", f"larger than {self.limits.max_record_bytes} bytes"
                )
                continue
            if bom and line.startswith(_BOM):
                line = line[len(_BOM) :]
            bom = False
            self.line(line, number)
        self.size = self.lines_read
        return self.collector.result("jsonl", compressed=self.compressed, size=self.size)

    def line(self, line: bytes, number: int) -> None:
        text = line.strip(_WS)
        if text:
            self.one_value(text, f"line {number}", number - 1, "")

    def one_value(self, text: bytes, label: str, index: int, what: str) -> None:
        """Judge ``text`` as one record (a line, a lookup event's CloudTrailEvent)."""
        walker = Walker(element_mode=True, max_record=self.limits.max_record_bytes)
        try:
            elements = walker.feed(text, True)
            if not elements or elements[0].error is None:
                walker.finish()
        except FrameError as exc:
            self.collector.records += 1
            self.collector.bad(label, what + (walker.open_error or exc.reason))
            return
        elem = elements[0]
        if elem.error is not None:
            self.collector.records += 1
            self.collector.bad(label, what + elem.error)
            return
        elem.index = index
        raw = None if elem.end is None else text[elem.start : elem.end]
        self.collector.judge(elem, raw, label)


def _pieces(text: Piece, size: int, rest: Iterator[bytes] | None) -> Iterator[Piece]:
    view = memoryview(text)
    for start in range(0, len(view), size):
        yield view[start : start + size]
    if rest is not None:
        yield from rest


def _counting(pieces: Iterable[Piece], owner: PieceDecoder) -> Iterator[bytes]:
    for piece in pieces:
        owner.size += len(piece)
        yield bytes(piece)


def _records_end(buf: bytearray, shape: str) -> int | None:
    """Where the records end in the last bytes of a file (the ``]`` closing the array, then
    ``}`` for ``{"Records": [...]}``, whitespace around), or None if the tail is anything else."""
    end = len(buf.rstrip(_WS))
    if shape == "records":
        if end < 1 or buf[end - 1] != 0x7D:
            return None
        end = len(buf[: end - 1].rstrip(_WS))
    if end < 1 or buf[end - 1] != 0x5D:
        return None
    return end - 1
