"""Decode one CloudTrail log file: gunzip, find the candidate records, type them.

Input is the raw bytes of a file (gzip or not, told apart by the magic bytes, never by the name).
Output is a :class:`DecodedFile`: how many records the file holds, the candidate records (those
whose ``eventName`` is in :attr:`Prefilter.event_names`) decoded into :class:`Record`, and the
per-record problems that did not spoil the file.  A file-level problem raises
:class:`~trailguard.errors.DecodeError` with a reason an operator can act on; no other exception
escapes for any input bytes.

Shapes: ``{"Records": [...]}`` (S3 delivery), a JSON array of records, JSON Lines, the output of
``aws cloudtrail lookup-events`` (``CloudTrailEvent`` strings decoded) and a single record object.
Digest files and Insight files are recognised (by key, or by content) and skipped.

The fast path, and why it looks the way it does.  CPU per realistic file of 1000 records
(~1.4 MB of JSON, 150 KB gzip) on the 2-core machine of ``make bench``:

* gunzip with libdeflate: ~0.75 ms (zlib ~1.9 ms, 2-2.5x slower).  libdeflate needs the ISIZE
  trailer and stops after the first member without saying how much input it used, so its result
  is accepted only when the four size bytes it checked can only be the last four of the input
  (one ``bytes.find``, ~0.09 ms); otherwise (several members, trailing bytes, an ISIZE that
  lies) a bounded, chunked ``zlib.decompressobj`` loop does the work and names the error.
* ``{"Records": [...]}`` (every S3 delivery): the C scanner ``_scan.c`` when built and the CPU
  has AVX2 (:data:`SCANNER`), ~0.4 ms: one pass that checks the text and counts the records
  and returns the records that may be candidates (a name byte for byte, or any escape or
  duplicate key that could spell one); each is probed, then decoded in full, by msgspec
  (:meth:`_Decoder.scanned`).  What it declines goes to the msgspec passes below, which decide.
  The rest of this list is that msgspec path (other shapes; machines without the scanner):
* one msgspec pass over ``{"Records": list[_Probe]}``, ``_Probe`` holding only ``eventName`` and
  ``eventSource``: ~1.1 ms.  That one pass validates the whole JSON document, counts the records,
  checks each is an object and yields each record's *decoded* event name, so the candidate test
  is an exact set lookup (~0.08 ms), immune to JSON escapes (``Delete\\u0055serPolicy``).  A
  field-less Struct costs ~1.0 ms and ``list[msgspec.Raw]`` the same: the two strings cost ~5 %.
* a byte-level prefilter does not pay here, measured again with the policy history's names
  (23 names; ``make bench``, "rejected" rows): :meth:`Prefilter.may_match` costs ~8 ms per file
  (a regex alternation of names that share their first letters), and even the cheapest exact
  byte search, one ``bytes.find`` per name, runs at ~3.4 GB/s: ~0.4 ms per name per file.  The
  file would still need counting (``bytes.count`` of a record start: ~0.5 ms, and not exact)
  and validating -- which the probe pass does, with the names, in ~1.1 ms.  And on the default
  corpus (0.1 % policy writes) ~70 % of the files hold a history candidate anyway.
  ``decode_file`` therefore takes only the name set from the Prefilter; ``may_match`` stays,
  exact about misses, for callers that hold bytes they need not count.
* only when a candidate exists: the locator (:class:`_Locator`) finds the candidate records
  the probe pass named by their literal ``"eventName":"<name>"`` bytes (one ``bytes.find``
  scan per name, ~0.4 ms, or one for a part several names share; a memchr for escapes) and
  decodes just those slices into
  ``Record``; it answers only when the result provably equals a second pass as
  ``list[msgspec.Raw]`` (~1.1 ms), which stays the fallback.  No Python dict is built per
  record on any path.
* big files (more than ``DEFAULT_STREAM_OVER`` of JSON, e.g. a 50 MB gzip of ~470 MB) are
  decoded as they inflate (zlib, 1 MB pieces cut between records): peak memory is the
  compressed input plus a few MB, instead of ~10x the input (see :meth:`_Decoder.stream`).

Trade-offs, for speed: only candidates are fully type-checked against :class:`Record` (other
records: the types of ``eventName`` and ``eventSource``; skipped strings are not checked for
valid UTF-8).  The fast path checks every record for an ``eventName`` but the notification-style
``eventSource`` (``aws:s3``, ``aws:sqs``) on the first record only.  Any doubt (a record that is
not an object, has an impossible type, lacks an eventName) sends the file to the careful path,
which judges every record (eventTime or eventName present, no ``aws:*`` eventSource, Insight
events) and lists the odd ones in ``bad_records``; the file fails only if no record is usable.
"""

from __future__ import annotations

import functools
import operator
import os
import re
import zlib
from collections.abc import Callable, Generator, Iterable, Sequence
from types import ModuleType
from typing import Any, Final

import deflate
import msgspec

from trailguard.detect.keys import KeyKind, classify_key
from trailguard.detect.record import Record
from trailguard.errors import DecodeError

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED",
    "DEFAULT_STREAM_OVER",
    "DEFAULT_STREAM_PIECE",
    "DecodedFile",
    "Prefilter",
    "decode_file",
    "decompress",
]

Buffer = bytes | bytearray | memoryview

_scan: ModuleType | None
try:
    from trailguard.detect import _scan
except ImportError:  # pragma: no cover - built without a C compiler: msgspec does all the work
    _scan = None


class _Scanner:
    """Whether :func:`decode_file` uses the C scanner (``trailguard.detect._scan``).

    On when the extension is built and the CPU has AVX2 (its portable byte-by-byte masks are a
    reference for tests, slower than msgspec); ``TRAILGUARD_SCANNER=0`` in the environment turns
    it off, for an operator who suspects it.  Tests and ``make bench`` flip ``enabled``.
    """

    __slots__ = ("enabled",)

    def __init__(self) -> None:
        self.enabled = self.available and os.environ.get("TRAILGUARD_SCANNER", "1") != "0"

    @property
    def available(self) -> bool:
        return _scan is not None and bool(_scan.SIMD)

    def describe(self) -> str:
        """For the startup log line and ``--version``: which decoder runs, and why."""
        if self.enabled:
            return "c-avx2, libdeflate without the GIL" if _LIBDEFLATE else "c-avx2"
        if _scan is None:
            return "msgspec (C scanner not built)"
        if not _scan.SIMD:
            return "msgspec (no AVX2 on this CPU)"
        return "msgspec (TRAILGUARD_SCANNER=0)"


SCANNER: Final = _Scanner()


def _bind_libdeflate() -> bool:
    """Let _scan call the `deflate` package's libdeflate without the GIL (see _scan.c)."""
    if _scan is None:
        return False
    library = getattr(getattr(deflate, "_deflate", None), "__file__", None)
    return bool(library) and bool(_scan.bind_libdeflate(str(library)))


_LIBDEFLATE: Final = _bind_libdeflate()


def gil_free() -> bool:
    """Whether a gzip'd S3 delivery is inflated and scanned without the GIL (the C scanner on,
    libdeflate bound to it), so that decoding in threads uses every core."""
    return SCANNER.enabled and _LIBDEFLATE


#: Refuse to inflate more than this (bytes) unless told otherwise: a gzip bomb must not take the
#: daemon's memory.  CloudTrail files are at most 50 MB compressed and compress ~10x.
DEFAULT_MAX_DECOMPRESSED: Final = 1 << 30
#: gzip files that inflate to more than this are decoded as they inflate (see decode_file).
DEFAULT_STREAM_OVER: Final = 64 << 20
#: ... in pieces of this many bytes of JSON (about as big as a usual CloudTrail file: the
#: locator then has few names to look for in each).
DEFAULT_STREAM_PIECE: Final = 1 << 20

_GZIP_MAGIC: Final = b"\x1f\x8b"
_DEFLATE_MAX_RATIO: Final = 1032  # deflate cannot expand one input byte into more output bytes
_ZLIB_CHUNK: Final = 1 << 20  # input fed per call on the zlib path: bounds unused_data copies
_MAX_BAD_RECORDS: Final = 100
_INSIGHT_EVENT_TYPE: Final = "AwsCloudTrailInsight"
_DIGEST_KEYS: Final = frozenset(
    {"digestStartTime", "digestEndTime", "digestS3Bucket", "digestS3Object", "logFiles"}
)
_RECORD_KEYS: Final = frozenset(
    {"eventVersion", "eventName", "eventTime", "eventSource", "eventID", "userIdentity"}
)


# -- the prefilter ---------------------------------------------------------------------------------


class Prefilter:
    """Byte-level prefilter built from the event names the rules and policy history care about.

    :meth:`may_match` is conservative: it is true whenever a JSON text *could* hold one of the
    names once decoded.  A JSON string may spell any character as an escape
    (``"Delete\\u0055serPolicy"`` is ``DeleteUserPolicy``), which a search for the literal bytes
    misses; so besides the literal names, any ``\\u`` escape that could stand for a character of
    one of the names (for ASCII names ``\\u00`` followed by the character's high nibble), and any
    short escape (``\\"``, ``\\/``, ...) of such a character, counts as "may match".  Real
    CloudTrail rarely escapes letters, so the false positives stay rare; false negatives are
    impossible.  Event names are compared exactly (case-sensitive), as the rules compare them.
    """

    __slots__ = ("_escapes", "_literals", "_names", "locator", "name_bytes")

    def __init__(self, event_names: Iterable[str]) -> None:
        names = frozenset(event_names)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"event names must be strings, got {name!r}")
            if not name:
                raise ValueError("event names must not be empty")
        self._names = names
        self._literals, self._escapes = _prefilter_patterns(names)
        self.locator = _Locator(names)
        #: the names as the C scanner compares them (UTF-8, as JSON text spells them unescaped)
        self.name_bytes = tuple(sorted(name.encode() for name in names))

    @property
    def event_names(self) -> frozenset[str]:
        return self._names

    def may_match(self, data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` (decompressed JSON bytes) may hold one of the event names."""
        if self._literals is None or self._escapes is None:
            return False
        if self._literals.search(data) is not None:
            return True
        # Two searches beat one regex holding both: sre finds the first byte of the names
        # quickly but not an alternation that also starts with a backslash.  Most CloudTrail
        # files hold no backslash at all, which memchr (bytes.find) tells at once.
        start = 0 if isinstance(data, memoryview) else data.find(b"\\")
        return start >= 0 and self._escapes.search(data, start) is not None

    def __repr__(self) -> str:
        return f"Prefilter({sorted(self._names)!r})"


# JSON's short escapes: the character, and the byte that follows the backslash
_SHORT_ESCAPES: Final = {
    '"': b'"',
    "\\": b"\\",
    "/": b"/",
    "\b": b"b",
    "\f": b"f",
    "\n": b"n",
    "\r": b"r",
    "\t": b"t",
}


def _prefilter_patterns(
    names: frozenset[str],
) -> tuple[re.Pattern[bytes] | None, re.Pattern[bytes] | None]:
    """(the literal names, the escapes that could spell one of their characters)."""
    if not names:
        return None, None
    chars = set("".join(names))
    literals = b"|".join(re.escape(n.encode()) for n in sorted(names))
    if any(ord(c) > 0x7F for c in chars):
        escapes = [rb"u"]  # a non-ASCII character may be escaped as any \uXXXX
    else:
        nibbles = "".join(sorted({f"{ord(c) >> 4:x}" for c in chars}))
        escapes = [rb"u00[" + nibbles.encode() + rb"]"]
    escapes += [re.escape(_SHORT_ESCAPES[c]) for c in sorted(chars) if c in _SHORT_ESCAPES]
    return re.compile(literals), re.compile(rb"\\(?:" + b"|".join(escapes) + rb")")


# -- locating candidate records by their bytes ----------------------------------------------------

#: Between two records of CloudTrail's compact files: the end of one, the start of the next.
_RECORD_SEP: Final = b'},{"eventVersion":'
_RECORD_START: Final = b'{"eventVersion":'
_EVENT_NAME_KEY: Final = b'"eventName"'
_JSON_WS: Final = frozenset(b" \t\r\n")
_MAX_BACKSLASHES: Final = 256  # then the regex takes over
# One bytes.find scan runs at ~3.4 GB/s, the list[Raw] pass at ~1.1 GB/s: at most 3 scans.
_MAX_LOCATED_NAMES: Final = 3
_MIN_SHARED: Final = 6  # a shorter shared part ("Po") would have too many occurrences to visit
_MAX_SCAN_HITS: Final = 512  # occurrences of the searched part visited, at most


class _Locator:
    """Finds the bytes of the candidate records the probe pass named, without a second pass.

    The probe pass has already validated the whole document and told, for every record, its
    decoded eventName.  For the candidates it names, this searches the literal bytes
    ``"<name>"`` that follow a ``"eventName":`` key, cuts the record around each hit at the
    record boundaries of CloudTrail's compact files (``{"eventVersion":`` ...
    ``},{"eventVersion":``) and decodes only those slices.  It answers only when the answer is
    provably the same as the list[Raw] pass would give, otherwise None (the caller then takes
    that pass):

    * the text holds no JSON escape that could spell a character of a candidate name or of
      ``eventName`` (``\\u0044``, ...), so every record whose decoded eventName is a candidate
      shows it literally and is found;
    * exactly as many hits as the probe pass counted candidates, in the same order with the same
      names: a hit that is not a record's own top-level eventName (a nested object imitating a
      record) would be one too many;
    * each slice decodes as exactly one JSON value containing the hit's record-level key: a slice
      that started or ended inside a nested object, or spanned two records, is not one value.
    """

    __slots__ = ("_escapes", "_needles", "_nibbles")

    def __init__(self, names: frozenset[str]) -> None:
        # Names with characters that need escaping in JSON are left to the Raw pass.
        self._needles = {
            name: b'"' + name.encode() + b'"'
            for name in names
            if not any(c in _SHORT_ESCAPES or ord(c) < 0x20 for c in name)
        }
        spelled = names | {"eventName"}
        self._escapes = _prefilter_patterns(spelled)[1]
        # Plain ASCII names (the usual case): only \u00XX escapes could spell them, and a
        # bytes.find loop for "\u00" beats the regex; ``_nibbles`` are the possible X's.
        chars = set("".join(spelled))
        plain = all(ord(c) < 0x80 and c not in _SHORT_ESCAPES for c in chars)
        self._nibbles = frozenset(f"{ord(c) >> 4:x}".encode()[0] for c in chars) if plain else None

    def _may_escape(self, text: bytes | bytearray) -> bool:
        """Whether ``text`` holds an escape that could spell a character of a name."""
        backslash = text.find(b"\\")  # memchr: ~0.05 ms per MB; most files hold none
        if backslash < 0:
            return False
        nibbles = self._nibbles
        if nibbles is not None:
            # Visit the backslashes (a policy document holds a few dozen \" escapes); a
            # 4-byte find for "\u00" would cost 15x a memchr, the regex 8x.
            end = len(text) - 5
            for _ in range(_MAX_BACKSLASHES):
                if backslash > end:
                    return False
                if text[backslash + 1] == 0x5C:  # an escaped backslash: skip both
                    backslash += 1
                elif text.startswith(b"u00", backslash + 1) and text[backslash + 4] in nibbles:
                    return True
                backslash = text.find(b"\\", backslash + 2)
                if backslash < 0:
                    return False
        return self._escapes is None or self._escapes.search(text, backslash) is not None

    def locate(
        self,
        text: bytes | bytearray,
        picked: Sequence[tuple[int, str]],
        limit: int,
        label: Callable[[int], str],
        bad: _Bad,
    ) -> list[Record] | None:
        """The candidate records ``picked`` [(index, eventName)] of ``text``, or None.

        ``limit`` is the position of the ``]`` that closes the records array.
        """
        wanted = frozenset(name for _, name in picked)
        if (
            not wanted.issubset(self._needles)
            or (len(wanted) > _MAX_LOCATED_NAMES and _shared_part(wanted) is None)
            or self._may_escape(text)
        ):
            return None
        hits = self._hits(text, wanted, len(picked))
        if len(hits) != len(picked):
            return None
        records: list[Record] = []
        messages: list[str] = []
        end = 0
        for at, (index, name) in zip(hits, picked, strict=True):
            start = text.rfind(_RECORD_START, end, at)
            if start < 0:
                return None
            stop = text.find(_RECORD_SEP, at, limit)
            end = stop + 1 if stop >= 0 else text.rfind(b"}", at, limit) + 1
            if end <= at:
                return None
            piece = memoryview(text)[start:end]
            try:
                record = _DEC_RECORD.decode(piece)
            except msgspec.ValidationError as exc:
                # A type error may stop msgspec before the end: prove the slice is the record.
                try:
                    probe = _DEC_PROBE.decode(piece)
                except _ITEM_FAILURES:
                    return None
                if probe.event_name != name:
                    return None
                messages.append(f"{label(index)}: {_why_item(exc)}")
                continue
            except _DECODE_FAILURES:
                return None
            if record.event_name != name:
                return None
            records.append(record)
        for message in messages:
            bad.add(message)
        return records

    def _hits(self, text: bytes | bytearray, wanted: frozenset[str], most: int) -> list[int]:
        """Where ``"<name>"`` (a name in ``wanted``) is an eventName value, in order; stops
        after ``most`` + 1 (one too many is enough to decline).

        A ``bytes.find`` scan costs ~0.3-0.5 ms per MB, less the longer the needle: one name
        is searched as ``"<name>"``; several names that share a long part (``Policy`` in
        PutRolePolicy and AttachUserPolicy) by one scan for that part, each occurrence checked
        for the whole quoted name around it; otherwise one scan per name.
        """
        shared = _shared_part(wanted) if len(wanted) > 1 else None
        if shared is None:
            return self._hits_by_name(text, wanted, most)
        tokens = {self._needles[name][1:-1] for name in wanted}
        longest = max(map(len, tokens))
        hits: list[int] = []
        previous = -1
        visited = 0
        at = text.find(shared)
        while at >= 0 and len(hits) <= most:
            visited += 1
            if visited > _MAX_SCAN_HITS:  # too common a part: a scan per name after all
                return self._hits_by_name(text, wanted, most)
            # the string around this occurrence: from the quote before it to the quote after
            start = text.rfind(b'"', max(0, at - longest), at + 1)
            if start >= 0 and start != previous:
                end = text.find(b'"', at + len(shared), start + longest + 2)
                if (
                    end >= 0
                    and bytes(text[start + 1 : end]) in tokens
                    and _after_event_name_key(text, start)
                ):
                    previous = start
                    hits.append(start)
            at = text.find(shared, at + 1)
        return hits

    def _hits_by_name(
        self, text: bytes | bytearray, wanted: frozenset[str], most: int
    ) -> list[int]:
        hits: list[int] = []
        for name in wanted:
            needle = self._needles[name]
            at = text.find(needle)
            while at >= 0 and len(hits) <= most:
                if _after_event_name_key(text, at):
                    hits.append(at)
                at = text.find(needle, at + len(needle))
        hits.sort()
        return hits


@functools.lru_cache(maxsize=256)
def _shared_part(names: frozenset[str]) -> bytes | None:
    """The longest part (6 characters or more) of every name in ``names``, or None."""
    shortest = min(names, key=len)
    for size in range(len(shortest), _MIN_SHARED - 1, -1):
        for start in range(len(shortest) - size + 1):
            part = shortest[start : start + size]
            if all(part in name for name in names):
                return part.encode()
    return None


def _after_event_name_key(text: bytes | bytearray, at: int) -> bool:
    """Whether ``text[at:]`` (a string) is the value of an ``"eventName"`` key."""
    i = at - 1
    while i >= 0 and text[i] in _JSON_WS:
        i -= 1
    if i < 0 or text[i] != 0x3A:  # :
        return False
    i -= 1
    while i >= 0 and text[i] in _JSON_WS:
        i -= 1
    return text.startswith(_EVENT_NAME_KEY, i - len(_EVENT_NAME_KEY) + 1)


# -- results ---------------------------------------------------------------------------------------


class DecodedFile(msgspec.Struct, frozen=True):
    """What :func:`decode_file` found in one file."""

    #: "records", "array", "jsonl", "lookup-events", "record"; "digest"/"insight" when skipped
    shape: str
    #: number of records in the file (0 when skipped), bad ones included
    records: int
    #: Records whose eventName is in the prefilter's event names, in file order
    candidates: list[Record]
    #: None, or why the file was skipped: "digest" or "insight"
    skipped: str | None
    #: per-record problems that did not spoil the file ("record 17: expected an object, got ...")
    bad_records: list[str]
    #: gzip detected (by magic bytes)
    compressed: bool
    #: size of the JSON text after decompression (0 when skipped without decompressing)
    bytes_decompressed: int


# -- decompression ---------------------------------------------------------------------------------


def decompress(
    data: bytes | bytearray | memoryview,
    *,
    source: str,
    max_size: int = DEFAULT_MAX_DECOMPRESSED,
) -> bytes | bytearray | memoryview:
    """Gunzip ``data`` when it starts with the gzip magic bytes; otherwise return it unchanged.

    Multi-member gzip is handled, trailing zero padding ignored.  Truncated or corrupt gzip,
    trailing garbage and output beyond ``max_size`` bytes raise :class:`DecodeError`.
    """
    if bytes(data[:2]) != _GZIP_MAGIC:
        return data
    blob = data.tobytes() if isinstance(data, memoryview) else data
    size = len(blob)
    isize = _trailer_size(blob, max_size)
    if isize is not None and gil_free() and _scan is not None:
        # the same libdeflate, without the GIL (see _scan.c): exactly one member that ends at
        # the end of the input, or None and zlib judges
        whole: bytes | None = _scan.gunzip(blob, isize)
        if whole is not None:
            return whole
    elif isize is not None:
        try:
            out = deflate.gzip_decompress(blob, isize)
        except deflate.DeflateError:
            pass  # let zlib say precisely what is wrong, or handle several members
        else:
            # libdeflate stops after the first member and checks it against that member's own
            # trailer.  Accept the result only if no earlier 4 bytes equal the size trailer:
            # then the first member's trailer is the end of the input, nothing (a second
            # member, garbage) was left unread.  A chance earlier hit only costs the slower
            # zlib path.
            if len(out) == isize and blob.find(blob[-4:], 10) == size - 4:
                return out
    return _gunzip_zlib(blob, source=source, max_size=max_size)


def _trailer_size(blob: bytes | bytearray | memoryview, max_size: int) -> int | None:
    """The size a gzip file says it inflates to (its ISIZE trailer), when that is plausible:
    not 0, at most ``max_size``, at most ``_DEFLATE_MAX_RATIO`` times the input; else None."""
    if len(blob) < 18:  # header (10) + empty deflate block (2) + trailer (8)
        return None
    isize = int.from_bytes(blob[-4:], "little")
    return isize if 0 < isize <= max_size and isize <= len(blob) * _DEFLATE_MAX_RATIO else None


def _gunzip_zlib(blob: bytes | bytearray, *, source: str, max_size: int) -> bytearray:
    out = bytearray()
    for piece in _inflate(blob, source=source, max_size=max_size, piece=max_size + 1):
        out += piece
    return out


def _inflate(
    blob: bytes | bytearray, *, source: str, max_size: int, piece: int
) -> Generator[bytes, None, None]:
    """Gunzip ``blob`` with zlib, yielding the output in pieces of at most ``piece`` bytes.

    Several members, trailing zero padding; truncated or corrupt data, trailing garbage and more
    than ``max_size`` bytes of output raise :class:`DecodeError` (when the generator gets there).
    """
    view = memoryview(blob)
    size = len(view)
    total = 0
    pos = 0
    members = 0
    while pos < size:
        if view[pos : pos + 2].tobytes() != _GZIP_MAGIC:
            if members and not view[pos:].tobytes().strip(b"\x00"):
                break  # zero padding after the last member, as tape-era gzip allowed
            if members:
                raise DecodeError(
                    source,
                    f"truncated or corrupt gzip: {size - pos} bytes of non-gzip data after "
                    f"member {members} (at byte {pos})",
                )
            raise DecodeError(source, "truncated or corrupt gzip: bad header")
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        members += 1
        full = False  # the last call filled its output limit: zlib may hold more output
        while not inflater.eof:
            chunk: bytes | memoryview = inflater.unconsumed_tail
            if not chunk and not full:
                if pos >= size:
                    raise DecodeError(
                        source,
                        f"truncated or corrupt gzip: the data ends inside member {members} "
                        f"after {size} bytes (truncated download?)",
                    )
                chunk = view[pos : pos + _ZLIB_CHUNK]
                pos += len(chunk)
            limit = min(piece, max_size - total + 1)
            try:
                out = inflater.decompress(chunk, limit)
            except zlib.error as exc:
                raise DecodeError(
                    source, f"truncated or corrupt gzip: {exc} (member {members})"
                ) from exc
            full = len(out) == limit
            total += len(out)
            if total > max_size:
                raise DecodeError(
                    source,
                    f"gzip data inflates to more than {max_size} bytes (the limit); "
                    "refusing a possible gzip bomb",
                )
            if out:
                yield out
        pos -= len(inflater.unused_data)


# -- typed views used while decoding ---------------------------------------------------------------


class _Probe(msgspec.Struct, gc=False):
    """The two fields read from every record on the fast path."""

    event_name: str | None = msgspec.field(default=None, name="eventName")
    event_source: str | None = msgspec.field(default=None, name="eventSource")


class _FullProbe(msgspec.Struct):
    """The careful path: also presence of eventTime and the eventType (Insight)."""

    event_name: str | None = msgspec.field(default=None, name="eventName")
    event_source: str | None = msgspec.field(default=None, name="eventSource")
    event_time: Any = msgspec.field(default=None, name="eventTime")
    event_type: Any = msgspec.field(default=None, name="eventType")


class _RecordsProbe(msgspec.Struct, gc=False):
    records: list[_Probe] = msgspec.field(name="Records")


class _RecordsRaw(msgspec.Struct, gc=False):
    records: list[msgspec.Raw] = msgspec.field(name="Records")


class _LookupEvent(msgspec.Struct, gc=False):
    cloudtrail_event: str | None = msgspec.field(default=None, name="CloudTrailEvent")


_DEC_PROBE: Final = msgspec.json.Decoder(_Probe)
_DEC_RECORDS_PROBE: Final = msgspec.json.Decoder(_RecordsProbe)
_DEC_ARRAY_PROBE: Final = msgspec.json.Decoder(list[_Probe])
_DEC_RECORDS_RAW: Final = msgspec.json.Decoder(_RecordsRaw)
_DEC_ARRAY_RAW: Final = msgspec.json.Decoder(list[msgspec.Raw])
_DEC_TOP_KEYS: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_DEC_RAW: Final = msgspec.json.Decoder(msgspec.Raw)
_DEC_FULL_PROBE: Final = msgspec.json.Decoder(_FullProbe)
_DEC_LOOKUP_EVENT: Final = msgspec.json.Decoder(_LookupEvent)
_DEC_RECORD: Final = msgspec.json.Decoder(Record)

_EVENT_NAME: Final = operator.attrgetter("event_name")
_STREAM_HEAD: Final = re.compile(
    rb'(?:\xef\xbb\xbf)?[ \t\r\n]*\{[ \t\r\n]*"Records"[ \t\r\n]*:[ \t\r\n]*\['
)
_WS: Final = b" \t\r\n"
_FIRST_NON_WS: Final = re.compile(rb"[^ \t\r\n]")
_BYTE_POS: Final = re.compile(r"\(byte (\d+)\)")
_BOM: Final = b"\xef\xbb\xbf"

# Everything msgspec (or the data it meets) may raise while decoding untrusted bytes.
_DECODE_FAILURES: Final = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)
_ITEM_FAILURES: Final = (msgspec.ValidationError, *_DECODE_FAILURES)


def _head(raw: Buffer | msgspec.Raw) -> bytes:
    """The first byte of a JSON value (Raw values carry no surrounding whitespace)."""
    return memoryview(raw)[:1].tobytes()


def _json_kind(raw: Buffer | msgspec.Raw) -> str:
    """What kind of JSON value ``raw`` (valid JSON) is, for messages."""
    head = _head(raw)
    return {
        b"{": "an object",
        b"[": "an array",
        b'"': "a string",
        b"t": "a boolean",
        b"f": "a boolean",
        b"n": "null",
    }.get(head, "a number")


def _why_json(exc: BaseException, *, offset: int = 0, compressed: bool = False) -> str:
    """An operator-readable reason for a msgspec decode failure of a whole document."""
    if isinstance(exc, RecursionError):
        return "invalid JSON: nested too deeply to decode"
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid JSON: a string is not valid UTF-8 ({exc.reason})"
    message = str(exc)
    if message == "Input data was truncated":
        return "truncated JSON: the data ends before the JSON document does"
    message = message.removeprefix("JSON is malformed: ")
    where = " of the decompressed data" if compressed else ""
    message = _BYTE_POS.sub(lambda m: f"(byte {int(m.group(1)) + offset}{where})", message)
    return f"invalid JSON: {message}"


def _why_item(exc: BaseException) -> str:
    """A reason for one record's failure (bad_records entry, after the label)."""
    if isinstance(exc, msgspec.ValidationError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "nested too deeply to decode"
    if isinstance(exc, UnicodeDecodeError):
        return f"a string is not valid UTF-8 ({exc.reason})"
    message = str(exc)
    if message == "Input data was truncated":
        return "invalid JSON: truncated"
    return "invalid JSON: " + message.removeprefix("JSON is malformed: ")


class _Bad:
    """Collects per-record problems, keeping at most ``_MAX_BAD_RECORDS`` messages."""

    __slots__ = ("count", "messages")

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < _MAX_BAD_RECORDS:
            self.messages.append(message)

    def result(self) -> list[str]:
        if self.count > len(self.messages):
            return [*self.messages, f"... and {self.count - len(self.messages)} more bad records"]
        return self.messages


# -- decode_file -----------------------------------------------------------------------------------


def decode_file(
    data: bytes | bytearray | memoryview,
    prefilter: Prefilter,
    *,
    source: str,
    key: str | None = None,
    max_size: int = DEFAULT_MAX_DECOMPRESSED,
    stream_over: int = DEFAULT_STREAM_OVER,
    stream_piece: int = DEFAULT_STREAM_PIECE,
) -> DecodedFile:
    """Decode one CloudTrail file (see the module docstring); raise DecodeError when it is bad.

    gzip input that would inflate to more than ``stream_over`` bytes (its ISIZE trailer says so,
    or it is over ``stream_over / 8`` bytes compressed) is decoded as it inflates, in pieces of
    ``stream_piece`` bytes, so memory stays bounded; the result is the same as in memory.
    """
    if isinstance(data, memoryview) and (data.format != "B" or not data.c_contiguous):
        data = data.tobytes()
    if len(data) == 0:
        raise DecodeError(source, "empty file (0 bytes)")
    compressed = bytes(data[:2]) == _GZIP_MAGIC
    # (a substring test first: both layouts name "CloudTrail-Digest"/"-Insight", and the three
    # regex searches of classify_key cost ~25 us per file)
    kind = (
        classify_key(key)
        if key and ("CloudTrail-Digest" in key or "CloudTrail-Insight" in key)
        else KeyKind.OTHER
    )
    if kind is KeyKind.DIGEST or kind is KeyKind.INSIGHT:
        return _skipped(str(kind), compressed, 0)

    if compressed and (
        len(data) > stream_over // 8 or int.from_bytes(data[-4:], "little") > stream_over
    ):
        streamed = _Decoder(prefilter, source, compressed, 0, 0).stream(
            data, max_size, stream_piece
        )
        if streamed is not None:
            return streamed
    scanned_already = False
    text: bytes | bytearray | memoryview | None = None
    isize = _trailer_size(data, max_size) if compressed and gil_free() else None
    if isize is not None and _scan is not None:
        # inflate and scan in one call without the GIL (see _scan.c), into a buffer each
        # thread keeps: only the record count and the few doubtful records come back
        found = _scan.gunzip_records(data, isize, prefilter.name_bytes)
        if found is not None and isinstance(found[0], int):
            count, first, doubtful = found
            result = _Decoder(prefilter, source, compressed, isize, 0).from_scan(
                count, first, list(zip(doubtful[0::2], doubtful[1::2], strict=True))
            )
            if result is not None:
                return result
        elif found is not None:
            text, scanned_already = found[1], True  # declined: the msgspec path decides
    if text is None:
        text = decompress(data, source=source, max_size=max_size)
    size = len(text)
    if size == 0:
        raise DecodeError(source, "empty file: the gzip data decompresses to 0 bytes")
    bom = len(_BOM) if bytes(text[:3]) == _BOM else 0  # some editors write one: tolerated
    match = _FIRST_NON_WS.search(text, bom)
    if match is None:
        raise DecodeError(source, f"empty file: only whitespace in {size} bytes of text")
    first = text[match.start()]
    view = memoryview(text)[bom:] if bom else text
    decoder = _Decoder(prefilter, source, compressed, size, bom)
    decoder.scanned_already = scanned_already
    if first == 0x7B:  # {
        return decoder.object_document(view)
    if first == 0x5B:  # [
        return decoder.array_document(view)
    try:
        value = _DEC_RAW.decode(view)
    except _DECODE_FAILURES as exc:
        return decoder.json_lines(view, exc)  # JSON Lines whose first line is not an object?
    raise DecodeError(
        source,
        f"not a CloudTrail log: the JSON document is {_json_kind(value)}, "
        'expected {"Records": [...]}, an array of records, JSON Lines or lookup-events output',
    )


def _skipped(reason: str, compressed: bool, size: int) -> DecodedFile:
    return DecodedFile(
        shape=reason,
        records=0,
        candidates=[],
        skipped=reason,
        bad_records=[],
        compressed=compressed,
        bytes_decompressed=size,
    )


class _Decoder:
    """State for decoding one file; methods are the shapes."""

    __slots__ = (
        "compressed",
        "locator",
        "name_bytes",
        "names",
        "offset",
        "scanned_already",
        "size",
        "source",
    )

    def __init__(
        self, prefilter: Prefilter, source: str, compressed: bool, size: int, offset: int
    ) -> None:
        self.names = prefilter.event_names
        self.name_bytes = prefilter.name_bytes
        self.locator = prefilter.locator
        self.source = source
        self.compressed = compressed
        self.size = size
        self.offset = offset  # bytes before ``view`` in the text (a BOM), for error positions
        self.scanned_already = False  # the C scanner declined this text once: not again

    def why(self, exc: BaseException) -> str:
        return _why_json(exc, offset=self.offset, compressed=self.compressed)

    def fail(self, reason: str) -> DecodeError:
        return DecodeError(self.source, reason)

    def done(
        self, shape: str, records: int, candidates: list[Record], bad: list[str]
    ) -> DecodedFile:
        return DecodedFile(
            shape=shape,
            records=records,
            candidates=candidates,
            skipped=None,
            bad_records=bad,
            compressed=self.compressed,
            bytes_decompressed=self.size,
        )

    # -- fast path ---------------------------------------------------------------------------

    def fast(
        self,
        shape: str,
        probes: list[_Probe],
        raws: Callable[[], Sequence[msgspec.Raw]],
        view: Buffer,
    ) -> DecodedFile | None:
        """Finish a file whose every record decoded as a _Probe; None: take the careful path."""
        if not probes:
            return self.done(shape, 0, [], [])
        # One C-level pass over the probes (~80 us per 1000 records): a record without an
        # eventName (Insight, or not CloudTrail) sends the file to the careful path.  The
        # eventSource of notifications (aws:s3, ...) is checked on the first record only: a
        # second set costs as much again, for files nobody produces.
        seen = set(map(_EVENT_NAME, probes))
        if None in seen or (probes[0].event_source or "").startswith("aws:"):
            return None
        if self.names.isdisjoint(seen):
            return self.done(shape, len(probes), [], [])
        bad = _Bad()
        candidates = self.candidates(probes, raws, view, 0, bad)
        return self.done(shape, len(probes), candidates, bad.result())

    def candidates(
        self,
        probes: Sequence[_Probe],
        raws: Callable[[], Sequence[msgspec.Raw]],
        view: Buffer,
        base: int,
        bad: _Bad,
    ) -> list[Record]:
        """The candidate records among ``probes`` (record ``base`` is the first), typed.

        First the locator (a byte search for the few candidates), else a list[Raw] pass.
        """
        # Indices by list.index over the names (a C loop): the candidates are few.
        every = list(map(_EVENT_NAME, probes))
        picked: list[tuple[int, str]] = []
        for name in self.names.intersection(every):
            at = every.index(name)
            while True:
                picked.append((at, name))
                try:
                    at = every.index(name, at + 1)
                except ValueError:
                    break
        if not picked:
            return []
        picked.sort()
        if not isinstance(view, memoryview):
            located = self.locator.locate(
                view, picked, view.rfind(b"]"), lambda i: f"record {base + i}", bad
            )
            if located is not None:
                return located
        try:
            records = raws()
        except _ITEM_FAILURES as exc:  # pragma: no cover - the same bytes just decoded
            raise self.fail(self.why(exc)) from exc
        return [
            record
            for i, _ in picked
            if (record := _decode_record(records[i], f"record {base + i}", bad)) is not None
        ]

    def scanned(self, view: Buffer) -> DecodedFile | None:
        """``{"Records": [...]}`` by the C scanner (see _scan.c); None: use the msgspec passes.

        The scanner counts the records, checks the text and returns the few records that may
        be candidates (conservatively: escapes, duplicate keys); each is probed here, and
        decoded in full when its decoded eventName is one of the names.  Anything the msgspec
        fast path would send to the careful path (an odd first record, a probe that fails)
        returns None, so both paths give the same result.
        """
        if _scan is None or not SCANNER.enabled or self.scanned_already:
            return None
        found = _scan.records(view, self.name_bytes)
        if isinstance(found, str):
            return None
        count, first_start, first_end, spans = found
        text = memoryview(view)
        return self.from_scan(
            count,
            text[first_start:first_end],
            [(spans[at], text[spans[at + 1] : spans[at + 2]]) for at in range(0, len(spans), 3)],
        )

    def from_scan(
        self, count: int, first: Buffer, doubtful: Sequence[tuple[int, Buffer]]
    ) -> DecodedFile | None:
        """The scanner's answer (the record count, the first record, the records that may be
        candidates) made a DecodedFile: each doubtful record probed, and decoded in full when
        its decoded eventName is one of the names.  None where the msgspec fast path would take
        the careful path (an odd first record, a probe that fails): both give the same result.
        """
        if count == 0:
            return self.done("records", 0, [], [])
        try:
            head = _DEC_PROBE.decode(first)
            picked = [
                (index, raw)
                for index, raw in doubtful
                if _DEC_PROBE.decode(raw).event_name in self.names
            ]
        except _ITEM_FAILURES:
            return None
        if head.event_name is None or (head.event_source or "").startswith("aws:"):
            return None
        bad = _Bad()
        candidates = [
            record
            for index, raw in picked
            if (record := _decode_record(raw, f"record {index}", bad)) is not None
        ]
        return self.done("records", count, candidates, bad.result())

    # -- streaming ---------------------------------------------------------------------------

    def stream(
        self, data: bytes | bytearray | memoryview, max_size: int, piece: int
    ) -> DecodedFile | None:
        """Decode a big ``{"Records": [...]}`` file as it inflates; None: decode it in memory.

        The inflated text is cut after the last ``},{"eventVersion":`` of each piece and each
        part, made an array (its ``[`` and the ``,`` that ended it, turned ``]``, in place), is
        decoded on its own by the fast path.  Such a cut could fall inside a record (a nested
        object starting with that key), but then the part is not a valid array: the first part
        starts at the real ``[``, so by induction a part that decodes ends between two records
        and the next one starts at a record.  Anything that does not decode, or that the fast
        path would hand to the careful path, or another shape, returns None, and the caller
        decodes the file in memory: same result, same errors, bounded only by ``max_size``.
        gzip errors are raised here as the in-memory path raises them (the same zlib loop).
        """
        pieces = _inflate(
            data if not isinstance(data, memoryview) else data.tobytes(),
            source=self.source,
            max_size=max_size,
            piece=piece,
        )
        buf = bytearray()
        size = 0
        head = None
        for out in pieces:
            buf += out
            size += len(out)
            head = _STREAM_HEAD.match(buf)
            if head is not None or len(buf) >= 4096:
                break
        if head is None:
            pieces.close()
            return None
        del buf[: head.end() - 1]  # buf starts with the records' "["
        records = 0
        candidates: list[Record] = []
        bad = _Bad()
        done = False
        while not done:
            try:
                out = next(pieces)
            except StopIteration:
                done = True
            else:
                # Only the new bytes can hold a cut: the part before the last cut is gone.
                seek = max(0, len(buf) - len(_RECORD_SEP))
                buf += out
                size += len(out)
            if done:
                # the end: "]" ws "}" ws
                end = len(buf.rstrip(_WS))
                if end < 2 or buf[end - 1] != 0x7D:
                    return None
                end = len(buf[: end - 1].rstrip(_WS))
                if end < 1 or buf[end - 1] != 0x5D:
                    return None
                cut = end - 1
            else:
                cut = buf.rfind(_RECORD_SEP, seek) + 1
                if cut <= 0:
                    continue  # no record ends in this piece: wait for more
                buf[cut] = 0x5D  # the "," between two records becomes the part's "]"
            count = self.stream_part(buf, cut + 1, records, candidates, bad)
            if count is None:
                pieces.close()
                return None
            records += count
            if not done:
                del buf[:cut]
                buf[0] = 0x5B  # the "]" (was ",") starts the next part as "["
        self.size = size
        return self.done("records", records, candidates, bad.result())

    def stream_part(
        self, buf: bytearray, end: int, base: int, candidates: list[Record], bad: _Bad
    ) -> int | None:
        """Decode ``buf[:end]`` (an array of records); its record count, or None."""
        view = memoryview(buf)[:end]
        try:
            probes = _DEC_ARRAY_PROBE.decode(view)
        except _ITEM_FAILURES:
            return None
        finally:
            view.release()
        if not probes:
            return 0
        seen = set(map(_EVENT_NAME, probes))
        if None in seen or (base == 0 and (probes[0].event_source or "").startswith("aws:")):
            return None
        if not self.names.isdisjoint(seen):
            part = bytes(memoryview(buf)[:end])
            candidates += self.candidates(
                probes, lambda: _DEC_ARRAY_RAW.decode(part), part, base, bad
            )
        return len(probes)

    # -- shapes ------------------------------------------------------------------------------

    def object_document(self, view: Buffer) -> DecodedFile:
        scanned = self.scanned(view)
        if scanned is not None:
            return scanned
        try:
            probes = _DEC_RECORDS_PROBE.decode(view).records
        except (msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            pass  # no Records array, or an odd record: find out below
        except msgspec.DecodeError as exc:
            return self.json_lines(view, exc)
        else:
            result = self.fast(
                "records", probes, lambda: _DEC_RECORDS_RAW.decode(view).records, view
            )
            if result is not None:
                return result
        try:
            top = _DEC_TOP_KEYS.decode(view)
        except _DECODE_FAILURES as exc:
            return self.json_lines(view, exc)
        if "Records" in top:
            items = self.array_of(top["Records"], "Records")
            return self.careful("records", items, "record")
        if "Events" in top:
            return self.lookup_events(top["Events"])
        if not _DIGEST_KEYS.isdisjoint(top):
            return _skipped("digest", self.compressed, self.size)
        if not _RECORD_KEYS.isdisjoint(top):
            return self.careful("record", [msgspec.Raw(bytes(view))], "record")
        shown = ", ".join(sorted(top)[:8]) or "none"
        raise self.fail(
            "not a CloudTrail log: the JSON object has no Records, Events or record fields "
            f"(keys: {shown})"
        )

    def array_document(self, view: Buffer) -> DecodedFile:
        try:
            probes = _DEC_ARRAY_PROBE.decode(view)
        except (msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            pass
        except msgspec.DecodeError as exc:
            raise self.fail(self.why(exc)) from exc
        else:
            result = self.fast("array", probes, lambda: _DEC_ARRAY_RAW.decode(view), view)
            if result is not None:
                return result
        try:
            items = _DEC_ARRAY_RAW.decode(view)
        except _DECODE_FAILURES as exc:
            raise self.fail(self.why(exc)) from exc
        return self.careful("array", items, "record")

    def array_of(self, raw: msgspec.Raw, field: str) -> list[msgspec.Raw]:
        try:
            return _DEC_ARRAY_RAW.decode(raw)
        except msgspec.ValidationError as exc:
            raise self.fail(
                f"not a CloudTrail log: {field} is {_json_kind(raw)}, expected an array"
            ) from exc
        except _DECODE_FAILURES as exc:  # pragma: no cover - the document decoded already
            raise self.fail(self.why(exc)) from exc

    def lookup_events(self, raw: msgspec.Raw) -> DecodedFile:
        events = self.array_of(raw, "Events")
        items: list[msgspec.Raw | None] = []
        problems: dict[int, str] = {}
        for i, event in enumerate(events):
            try:
                inner = _DEC_LOOKUP_EVENT.decode(event).cloudtrail_event
            except msgspec.ValidationError as exc:
                kind = _json_kind(event)
                problems[i] = str(exc) if kind == "an object" else f"expected an object, got {kind}"
                inner = None
            except _DECODE_FAILURES as exc:
                problems[i] = _why_item(exc)
                inner = None
            item: msgspec.Raw | None = None
            if inner is None:
                problems.setdefault(i, "no CloudTrailEvent string")
            else:
                try:
                    item = _DEC_RAW.decode(inner.encode())
                except _DECODE_FAILURES as exc:
                    problems[i] = "CloudTrailEvent: " + _why_item(exc)
            items.append(item)
        return self.careful("lookup-events", items, "event", problems)

    def json_lines(self, view: Buffer, whole_error: BaseException) -> DecodedFile:
        """JSON Lines, tried when the document as a whole is not JSON.

        It is JSON Lines when there are several non-blank lines and at least one of them is a
        JSON object on its own; otherwise the error of the whole document is the file's error
        (a broken pretty-printed document has no line that is an object by itself).
        """
        items: list[msgspec.Raw | None] = []
        problems: dict[int, str] = {}
        numbers: list[int] = []
        objects = 0
        for number, line in enumerate(bytes(view).split(b"\n"), start=1):
            line = line.strip(_WS)
            if not line:
                continue
            index = len(items)
            numbers.append(number)
            try:
                item = _DEC_RAW.decode(line)
            except _DECODE_FAILURES as exc:
                problems[index] = _why_item(exc)
                items.append(None)
            else:
                objects += line[:1] == b"{"
                items.append(item)
        if objects == 0 or len(items) < 2:
            raise self.fail(self.why(whole_error)) from whole_error
        return self.careful("jsonl", items, "line", problems, numbers)

    # -- careful path ------------------------------------------------------------------------

    def careful(
        self,
        shape: str,
        items: Sequence[msgspec.Raw | None],
        label: str,
        problems: dict[int, str] | None = None,
        numbers: list[int] | None = None,
    ) -> DecodedFile:
        """Examine every record: per-record problems become bad_records."""
        problems = problems or {}
        bad = _Bad()
        usable: list[tuple[int, _FullProbe]] = []
        first_reason: str | None = None
        insight = 0

        def name(i: int) -> str:
            return f"{label} {numbers[i] if numbers else i}"

        for i, raw in enumerate(items):
            reason = problems.get(i)
            probe: _FullProbe | None = None
            if reason is None and raw is not None:
                if _head(raw) != b"{":
                    reason = f"expected an object, got {_json_kind(raw)}"
                else:
                    try:
                        probe = _DEC_FULL_PROBE.decode(raw)
                    except _ITEM_FAILURES as exc:
                        reason = _why_item(exc)
            if probe is not None:
                reason = _not_cloudtrail(probe)
                if probe.event_type == _INSIGHT_EVENT_TYPE and reason is None:
                    insight += 1
            if reason is not None or probe is None:
                reason = reason or "no data"
                first_reason = first_reason or f"{name(i)}: {reason}"
                bad.add(f"{name(i)}: {reason}")
                continue
            usable.append((i, probe))
        if items and not usable:
            raise self.fail(f"not a CloudTrail log: no usable record ({first_reason})")
        if usable and insight == len(usable):
            return _skipped("insight", self.compressed, self.size)
        candidates = []
        for i, probe in usable:
            if probe.event_name in self.names:
                raw = items[i]
                assert raw is not None
                record = _decode_record(raw, name(i), bad)
                if record is not None:
                    candidates.append(record)
        return self.done(shape, len(items), candidates, bad.result())


def _not_cloudtrail(probe: _FullProbe) -> str | None:
    """Why a well-typed record is not a CloudTrail record, or None when it is one."""
    source = probe.event_source or ""
    if source.startswith("aws:"):
        return (
            f"not a CloudTrail record: eventSource {source!r} is an AWS event notification "
            "(S3/SQS/SNS style), not a CloudTrail API record"
        )
    if probe.event_name is None and probe.event_time is None:
        return "not a CloudTrail record: it has neither eventTime nor eventName"
    return None


def _decode_record(raw: Buffer | msgspec.Raw, name: str, bad: _Bad) -> Record | None:
    try:
        return _DEC_RECORD.decode(raw)
    except _ITEM_FAILURES as exc:
        bad.add(f"{name}: {_why_item(exc)}")
        return None
