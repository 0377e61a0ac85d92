"""The reference decoder: trailguard's own rule for a record's bounds and when it is bad.

Every path that decodes a CloudTrail file (the C scanner, msgspec's passes, the streaming
decoder) either answers exactly as this module would, or hands the text to it.  Nothing here
depends on how a JSON library words or tolerates an error: a record is judged by these rules.

**Framing** (the file's own structure; a problem here fails the whole file, which then stays
in the queue for its redrive policy): strings are closed (a backslash inside a string always
takes the byte after it), brackets are matched by type, the records are the elements of the
document's ``Records`` array (or of a top-level array, or of ``Events`` for lookup-events
output) separated by exactly one comma, and the JSON around them (the envelope) is valid.

**A record** is judged alone; whatever is wrong inside its brackets makes *that record* bad
(counted, reported with its index, never a detection) and its neighbours are decoded as usual:
invalid JSON (token order, escapes, numbers, literals, control characters in strings), a
``\\u`` escape that is half of a UTF-16 surrogate pair, bytes that are not UTF-8, more than
``max_record`` bytes, not an object, an ``eventName`` or ``eventSource`` that is neither a
string nor null, neither ``eventName`` nor ``eventTime``.  Nesting deeper than
:data:`MAX_FRAME_DEPTH` fails the file (the walk keeps its own stack, and that bounds it); a
record trailguard decodes in full (a candidate) nested deeper than :data:`MAX_DECODE_DEPTH`
levels is bad, because a recursive decoder's limit would otherwise decide.  A key given twice
counts with its last value, as JSON parsers do; every occurrence of ``eventName`` or
``eventSource`` must have the right type.

The walk is incremental (``feed`` as the bytes arrive) and never holds more than one record
(at most ``max_record`` bytes) plus one token, so the streaming decoder can hand any hostile
file to it with bounded memory.  It runs at Python speed (a few tens of MB/s): it is the
reference, and the fallback for files the fast paths decline, not the fast path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from trailguard.detect.json_tokens import (
    HEX4,
    LITERALS,
    NUMBER,
    SHORT_ESCAPES,
    SKIP_RUN,
    SKIP_STR_RUN,
    STR_RUN,
    WS_RUN,
    Element,
    FrameError,
    decode_key,
    describe,
)

__all__ = ["MAX_DECODE_DEPTH", "MAX_FRAME_DEPTH", "RECORD_FIELDS", "Walker", "depth_of"]

#: A candidate record nested deeper than this is bad ("nested too deeply to decode"): msgspec
#: decodes it recursively, and its limit depends on the Python stack it is called from.
MAX_DECODE_DEPTH: Final = 256
#: Brackets open at once, at most: deeper, the file is refused (the walk's own stack is what a
#: file of nothing but "[" would otherwise make grow; no CloudTrail record nests past a few
#: dozen levels).
MAX_FRAME_DEPTH: Final = 65536
#: The top-level keys of a record the decoder reads (and the lookup-events wrapper's one).
RECORD_FIELDS: Final = frozenset({"eventName", "eventSource", "eventTime", "eventType"})
_LOOKUP_FIELDS: Final = frozenset({"CloudTrailEvent"})
_MAX_KEY: Final = 64  # a longer key is none of the keys read here (escapes included)
_MAX_TOKEN: Final = 1 << 20  # outside a record, a token (number, literal) may not wait longer
_KEEP_KEY: Final = 8 * _MAX_KEY  # a key string being read is kept while it could still be short
_ENDS_IN_STRING: Final = "truncated JSON: the data ends inside a string"
_ENDS_EARLY: Final = "truncated JSON: the data ends before the JSON document does"
_TOO_DEEP: Final = f"not a CloudTrail log: brackets nested more than {MAX_FRAME_DEPTH} levels deep"

# parse states: what may come next in the current container
_VALUE, _ARR_FIRST, _OBJ_FIRST, _KEY, _COLON, _AFTER, _END = range(7)
_OBJ: Final = 0x7B  # {
_ARR: Final = 0x5B  # [


@dataclass(slots=True)
class _Open:
    """A container the walk is inside of."""

    kind: int
    #: in an object: the key whose value is being read, when it is one the caller wants
    wanted: str | None = None


@dataclass(slots=True)
class _Pending:
    key: str
    start: int


@dataclass
class Walker:
    """Walks JSON text incrementally and reports the elements of its records array.

    Document mode (``element_mode=False``): the text is a whole file; the records are the
    elements of its top-level array, or of the array under the top-level key ``Records`` (or
    ``Events`` with ``lookup=True``).  Element mode: the text is one record.  Call :meth:`feed`
    with the text (``final=True`` with the last bytes); it returns the elements completed, in
    order, and raises :class:`FrameError` for a framing problem.  :meth:`keep_from` tells a
    streaming caller which bytes it must keep; :meth:`shift` follows it dropping the others.
    """

    element_mode: bool = False
    max_record: int = 1 << 62
    lookup: bool = False
    pos: int = 0
    #: top-level keys of the document (document mode), in order, decoded
    envelope_keys: list[str] = field(default_factory=list)
    #: what the Records/Events value was when it was not an array ("a string", ...)
    records_not_array: str | None = None
    records_key: str | None = None
    count: int = 0
    _base: int = 0  # bytes dropped by the caller before offset 0 (for error positions)
    _stack: list[_Open] = field(default_factory=list)
    _state: int = _VALUE
    _rec_depth: int = -1  # depth of the records array's elements; -1: not inside it (yet)
    _seen_records: bool = False
    _pending_key: _Pending | None = None  # an envelope/record key whose value comes next
    _in_string: bool = False
    _string_start: int = 0
    _string_is_key: bool = False
    _string_ok: bool = True
    # the element being read
    _elem: Element | None = None
    _skip: bool = False  # framing only: the element being read is already bad (or too big)
    _value_start: int = -1  # start of a wanted field's value
    _value_key: str | None = None
    _value_depth: int = -1

    def __post_init__(self) -> None:
        if self.element_mode:
            self._rec_depth = 0
        self._fields = _LOOKUP_FIELDS if self.lookup else RECORD_FIELDS

    # -- the caller's side ----------------------------------------------------------------------

    def enter_records(self, depth: int, *, first: bool, count: int, offset: int) -> None:
        """Start inside a records array whose elements are at ``depth`` (2 for ``{"Records":
        [...]}``, 1 for a top-level array), just after its ``[`` (``first``) or after the comma
        that follows element ``count - 1``; the text given to :meth:`feed` starts ``offset``
        bytes into the file."""
        self._base = offset
        self._stack = [_Open(_OBJ) for _ in range(depth - 1)] + [_Open(_ARR)]
        self._rec_depth = depth
        self._seen_records = True
        self._state = _ARR_FIRST if first else _VALUE
        self.count = count

    def keep_from(self) -> int:
        """The first offset a streaming caller must keep (the element being read, or the token
        the walk waits to complete)."""
        if self._elem is not None and self._elem.end is not None:
            return min(self._elem.start, self.pos)
        if self._in_string and self._string_is_key and self.pos - self._string_start <= _KEEP_KEY:
            return min(self._string_start, self.pos)
        return self.pos

    def shift(self, dropped: int) -> None:
        """The caller dropped the first ``dropped`` bytes: move every offset back."""
        if dropped <= 0:
            return
        self._base += dropped
        self.pos -= dropped
        self._string_start -= dropped
        if self._value_start >= 0:
            self._value_start -= dropped
        if self._pending_key is not None:
            self._pending_key.start -= dropped
        elem = self._elem
        if elem is not None:
            elem.start -= dropped
            for spans in elem.fields.values():
                spans[:] = [(a - dropped, b - dropped) for a, b in spans]

    @property
    def open_error(self) -> str | None:
        """The problem of the element still being read, if it has one (element mode: a bad
        value that never ended says more than "truncated")."""
        return None if self._elem is None else self._elem.error

    def finish(self) -> None:
        """After the last ``feed``: the text must have ended where a document may end."""
        if self._in_string:
            raise FrameError(_ENDS_IN_STRING, self._base + self.pos)
        if self._stack or self._state != _END:
            if self._state == _VALUE and not self._stack:
                raise FrameError("truncated JSON: no JSON value", self._base + self.pos)
            raise FrameError(_ENDS_EARLY, self._base + self.pos)

    # -- the walk -------------------------------------------------------------------------------

    def feed(self, buf: bytes | bytearray | memoryview, final: bool) -> list[Element]:
        """Walk ``buf[self.pos:]``; the elements completed.  ``buf`` is the whole text kept so
        far (offsets as :meth:`shift` left them)."""
        out: list[Element] = []
        n = len(buf)
        while True:
            if self._in_string:
                if not self._string(buf, n, final):
                    break
                self._in_string = False
                self._string_done(buf, out)
                continue
            i = self.pos
            if i < n and buf[i] in b" \t\r\n":
                m = WS_RUN.match(buf, i)
                assert m is not None
                i = self.pos = m.end()
            if i >= n:
                break
            if self._skip:
                if not self._skip_step(buf, i, n, final, out):
                    break
                continue
            if not self._step(buf, i, n, final, out):
                break
        self._check_size(n)
        return out

    def _check_size(self, n: int) -> None:
        elem = self._elem
        if elem is not None and elem.end is not None and self.pos - elem.start > self.max_record:
            elem.end = None  # nothing of it is kept from now on (_end_element words the error)
            elem.fields.clear()
            self._skip = True
            self._value_start = -1
        elif elem is None and n - self.pos > _MAX_TOKEN and not self._in_string:
            raise FrameError(
                "invalid JSON: a token longer than 1 MiB outside the records", self._base + self.pos
            )

    # -- strings --------------------------------------------------------------------------------

    def _string(self, buf: bytes | bytearray | memoryview, n: int, final: bool) -> bool:
        """Continue the string at self.pos; True when it ended (pos after the quote)."""
        j = self.pos
        skip = self._skip
        run = SKIP_STR_RUN if skip else STR_RUN
        while True:
            m = run.match(buf, j)
            if m is not None:
                j = m.end()
            if j >= n:
                self.pos = j
                if final:
                    raise FrameError(_ENDS_IN_STRING, self._base + n)
                return False
            c = buf[j]
            if c == 0x22:  # "
                self.pos = j + 1
                return True
            if c == 0x5C:  # backslash
                if skip:
                    if j + 1 >= n:
                        self.pos = j
                        if final:
                            raise FrameError(_ENDS_IN_STRING, self._base + n)
                        return False
                    j += 2
                    continue
                step = self._escape(buf, j, n, final)
                if step == 0:
                    self.pos = j
                    return False
                j += step
                continue
            # a control character inside a string (framing goes on)
            self._bad("control character in a string", j)
            j += 1
            if self._skip and not skip:
                skip, run = True, SKIP_STR_RUN

    def _escape(self, buf: bytes | bytearray | memoryview, j: int, n: int, final: bool) -> int:
        """Check the escape at ``j``; how many bytes it takes, or 0 to wait for more."""
        if j + 1 >= n:
            if final:
                raise FrameError(_ENDS_IN_STRING, self._base + n)
            return 0
        c = buf[j + 1]
        if c in SHORT_ESCAPES:
            return 2
        if c != 0x75:  # u
            self._bad("invalid escape", j)
            return 2
        if j + 6 > n and not final:
            return 0
        if HEX4.fullmatch(bytes(buf[j + 2 : j + 6])) is None:
            self._bad("invalid \\u escape", j)
            return 2
        code = int(bytes(buf[j + 2 : j + 6]), 16)
        if 0xDC00 <= code <= 0xDFFF:
            self._bad("a lone UTF-16 low surrogate escape", j)
            return 6
        if 0xD800 <= code <= 0xDBFF:
            if j + 12 > n and not final:
                return 0
            low = bytes(buf[j + 6 : j + 12])
            if (
                len(low) == 6
                and low[:2] == b"\\u"
                and HEX4.fullmatch(low[2:]) is not None
                and 0xDC00 <= int(low[2:], 16) <= 0xDFFF
            ):
                return 12
            self._bad("a UTF-16 high surrogate escape without its low half", j)
            return 6
        return 6

    def _string_done(self, buf: bytes | bytearray | memoryview, out: list[Element]) -> None:
        start, end = self._string_start, self.pos
        if self._skip:
            if self._elem is not None and len(self._stack) == self._rec_depth:
                self._end_element(end, out)  # a bad string element
            return
        if self._string_is_key:
            self._state = _COLON
            depth = len(self._stack)
            if start >= 0 and end - start - 2 <= _MAX_KEY:
                key = decode_key(bytes(buf[start + 1 : end - 1]))
                if key is not None:
                    self._on_key(key, depth, start)
            return
        self._value_done(end, out)

    def _on_key(self, key: str, depth: int, start: int) -> None:
        if self._elem is None:
            if depth == 1 and not self.element_mode:
                self.envelope_keys.append(key)
                if key in ("Records", "Events"):
                    if self.records_key is not None:
                        raise FrameError(
                            f"not a CloudTrail log: the document has both {self.records_key} and "
                            f"{key}"
                            if key != self.records_key
                            else f"not a CloudTrail log: the document has two {key} arrays",
                            self._base + start,
                        )
                    self.records_key = key
                    self.lookup = key == "Events"
                    self._fields = _LOOKUP_FIELDS if self.lookup else RECORD_FIELDS
                    self._pending_key = _Pending(key, start)
            return
        if depth == self._rec_depth + 1 and key in self._fields:
            self._stack[-1].wanted = key

    # -- values and containers ------------------------------------------------------------------

    def _value_start_at(self, i: int, first: int) -> None:
        """A value begins at ``i``: maybe an element, maybe a wanted field."""
        depth = len(self._stack)
        if self._elem is None and depth == self._rec_depth:
            self._elem = Element(
                index=self.count,
                start=i,
                end=i,
                error=None,
                kind=describe(first),
                depth=0,
                fields={},
            )
            return
        if self._elem is not None and depth == self._rec_depth + 1:
            top = self._stack[-1]
            if top.wanted is not None:
                self._value_start, self._value_key, self._value_depth = i, top.wanted, depth
                top.wanted = None
            return
        if depth == 0 and first == _ARR and not self.element_mode:
            self._seen_records = True
            self._rec_depth = 1  # a top-level array: its elements are the records
            return
        pending = self._pending_key
        if pending is not None and depth == 1:
            self._pending_key = None
            if first == _ARR:
                self._seen_records = True
                self._rec_depth = 2
            else:
                self.records_not_array = describe(first)

    def _value_done(self, end: int, out: list[Element]) -> None:
        """A value ended at ``end`` (exclusive); the parent expects a comma or its close."""
        self._state = _AFTER
        depth = len(self._stack)
        if self._value_start >= 0 and depth == self._value_depth:
            elem = self._elem
            if elem is not None and self._value_key is not None:
                elem.fields.setdefault(self._value_key, []).append((self._value_start, end))
            self._value_start = -1
        if self._elem is not None and depth == self._rec_depth:
            self._end_element(end, out)
        elif not self._stack:
            self._state = _END

    def _end_element(self, end: int, out: list[Element]) -> None:
        elem = self._elem
        assert elem is not None
        size = end - elem.start
        if size > self.max_record:  # the same answer whether the bytes were kept or not
            elem.error = f"larger than {self.max_record} bytes ({size} bytes)"
            elem.end = None
            elem.fields.clear()
        elif elem.end is not None:
            elem.end = end
        out.append(elem)
        self._elem = None
        self._skip = False
        self._value_start = -1
        self.count += 1
        self._state = _END if not self._stack else _AFTER

    def _bad(self, reason: str, at: int) -> None:
        """Something is wrong at ``at``: the element's problem (its first one is kept, with the
        position counted from the element's first byte), or the file's."""
        elem = self._elem
        if elem is None:
            raise FrameError(f"invalid JSON: {reason}", self._base + at)
        if elem.error is None:
            elem.error = f"invalid JSON: {reason} at byte {at - elem.start} of the record"
        self._skip = True
        self._value_start = -1

    def _step(
        self,
        buf: bytes | bytearray | memoryview,
        i: int,
        n: int,
        final: bool,
        out: list[Element],
    ) -> bool:
        """One token at ``i`` (not whitespace); False to wait for more bytes."""
        c = buf[i]
        state = self._state
        stack = self._stack
        if c == 0x22:  # "
            if state in (_OBJ_FIRST, _KEY):
                self._string_is_key = True
            elif state in (_VALUE, _ARR_FIRST):
                self._string_is_key = False
                self._value_start_at(i, c)
            else:
                return self._unexpected(i, c)
            self._in_string = True
            self._string_start = i
            self.pos = i + 1
            return True
        if c == 0x7B or c == 0x5B:  # { [
            if state not in (_VALUE, _ARR_FIRST):
                return self._unexpected(i, c)
            self._value_start_at(i, c)
            if len(stack) >= MAX_FRAME_DEPTH:
                raise FrameError(_TOO_DEEP, self._base + i)
            stack.append(_Open(c))
            if self._elem is not None:
                self._elem.depth = max(self._elem.depth, len(stack) - self._rec_depth)
            self._state = _OBJ_FIRST if c == 0x7B else _ARR_FIRST
            self.pos = i + 1
            return True
        if c == 0x7D or c == 0x5D:  # } ]
            if not stack:
                return self._unexpected(i, c)
            kind = stack[-1].kind
            closes = (c == 0x7D) == (kind == _OBJ)
            if not closes:
                if self._elem is not None and len(stack) > self._rec_depth:
                    raise FrameError("invalid JSON: mismatched brackets", self._base + i)
                return self._unexpected(i, c)
            if state != _AFTER and state != (_OBJ_FIRST if c == 0x7D else _ARR_FIRST):
                return self._unexpected(i, c)
            stack.pop()
            self.pos = i + 1
            if self._rec_depth >= 0 and len(stack) == self._rec_depth - 1 and self._elem is None:
                self._rec_depth = -1 if not self.element_mode else 0  # the records array ended
            self._value_done(i + 1, out)
            return True
        if c == 0x3A:  # :
            if state != _COLON:
                return self._unexpected(i, c)
            self._state = _VALUE
            self.pos = i + 1
            return True
        if c == 0x2C:  # ,
            if state != _AFTER or not stack:
                return self._unexpected(i, c)
            self._state = _KEY if stack[-1].kind == _OBJ else _VALUE
            self.pos = i + 1
            return True
        # a scalar: true, false, null or a number
        if state not in (_VALUE, _ARR_FIRST):
            return self._unexpected(i, c)
        literal = LITERALS.get(c)
        if literal is not None:
            end = i + len(literal)
            if end >= n and not final and bytes(buf[i:n]) == literal[: n - i]:
                return False  # wait for the rest (and the byte after it)
            if bytes(buf[i:end]) != literal or (end < n and buf[end] not in b" \t\r\n,]}"):
                return self._junk(buf, i, n, final, out)
        elif c in b"-0123456789":
            m = NUMBER.match(buf, i)
            end = i if m is None else m.end()
            if end >= n and not final:
                return False  # the number may go on
            if m is None or (end < n and buf[end] not in b" \t\r\n,]}"):
                return self._junk(buf, i, n, final, out)
        else:
            return self._junk(buf, i, n, final, out)
        self._value_start_at(i, c)
        self.pos = end
        self._value_done(end, out)
        return True

    def _unexpected(self, i: int, c: int) -> bool:
        shown = chr(c) if 0x20 < c < 0x7F else f"0x{c:02x}"
        self.pos = i
        if self._state == _END and not self._stack:
            raise FrameError("invalid JSON: more than one JSON value", self._base + i)
        if self._elem is None:
            if (
                self._rec_depth >= 0
                and len(self._stack) == self._rec_depth
                and self._state in (_AFTER,)
            ):
                raise FrameError(
                    f"invalid JSON: records not separated by one comma ({shown!r})", self._base + i
                )
            raise FrameError(f"invalid JSON: unexpected {shown!r}", self._base + i)
        self._bad(f"unexpected {shown!r}", i)
        return True

    def _junk(
        self,
        buf: bytes | bytearray | memoryview,
        i: int,
        n: int,
        final: bool,
        out: list[Element],
    ) -> bool:
        """An invalid token at ``i`` where a value may start."""
        if self._elem is None and len(self._stack) == self._rec_depth:
            self._value_start_at(i, buf[i])  # a junk element: bad, up to the next , or ]
        if self._elem is None:
            raise FrameError("invalid JSON: invalid character", self._base + i)
        self._bad("invalid character", i)
        self.pos = i
        return True

    def _skip_step(
        self,
        buf: bytes | bytearray | memoryview,
        i: int,
        n: int,
        final: bool,
        out: list[Element],
    ) -> bool:
        """Framing only, inside a bad element: strings and brackets, until it ends."""
        c = buf[i]
        stack = self._stack
        if c == 0x22:
            self._in_string = True
            self._string_is_key = False
            self._string_start = i
            self.pos = i + 1
            return True
        if c == 0x7B or c == 0x5B:
            if len(stack) >= MAX_FRAME_DEPTH:
                raise FrameError(_TOO_DEEP, self._base + i)
            stack.append(_Open(c))
            elem = self._elem
            if elem is not None:
                elem.depth = max(elem.depth, len(stack) - self._rec_depth)
            self.pos = i + 1
            return True
        depth = len(stack)
        if c == 0x7D or c == 0x5D:
            if depth <= self._rec_depth:  # closes the records array: the element ended
                self._end_element(i, out)
                self._state = _AFTER
                return True
            if (c == 0x7D) != (stack[-1].kind == _OBJ):
                raise FrameError("invalid JSON: mismatched brackets", self._base + i)
            stack.pop()
            self.pos = i + 1
            if len(stack) == self._rec_depth:
                self._end_element(i + 1, out)
            return True
        if c == 0x2C and depth == self._rec_depth:  # a junk element ends before the comma
            self._end_element(i, out)
            self._state = _AFTER
            return True
        if c == 0x5C:  # a backslash outside a string: junk
            self.pos = i + 1
            return True
        m = SKIP_RUN.match(buf, i)
        self.pos = m.end() if m is not None else i + 1
        return True


def depth_of(text: bytes | bytearray | memoryview) -> int:
    """The nesting depth of the JSON value ``text`` (brackets outside strings), exactly.

    Cheap when the count of brackets says the answer cannot exceed :data:`MAX_DECODE_DEPTH`.
    """
    raw = bytes(text)
    if raw.count(b"{") + raw.count(b"[") <= MAX_DECODE_DEPTH:
        return min(MAX_DECODE_DEPTH, raw.count(b"{") + raw.count(b"["))
    walker = Walker(element_mode=True)
    try:
        elements = walker.feed(raw, True)
    except FrameError:
        return MAX_DECODE_DEPTH + 1
    return elements[0].depth if elements else 0
