"""Which records are candidates: the event names asked for, and where their bytes are.

:class:`CandidateNames` holds the names (the rules' and the policy history's) in the forms the
decoders compare them in; its :class:`_Locator` finds the bytes of the candidate records the
msgspec probe pass named, so that only those few are decoded in full.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

__all__ = ["RECORD_SEP", "CandidateNames"]


class _Name(msgspec.Struct, gc=False):
    event_name: str | None = msgspec.field(default=None, name="eventName")


_DEC_NAME: Final = msgspec.json.Decoder(_Name)


class CandidateNames:
    """The event names whose records are decoded in full (compared exactly, case-sensitive, as
    the rules compare them), and where to find such records' bytes."""

    __slots__ = ("_names", "locator", "name_bytes")

    def __init__(self, event_names: Iterable[str]) -> None:
        names = frozenset(event_names)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"event names must be strings, got {name!r}")
            if not name:
                raise ValueError("event names must not be empty")
        self._names = names
        self.locator = _Locator(names)
        #: the names as the C scanner compares them (UTF-8, as JSON text spells them unescaped)
        self.name_bytes = tuple(sorted(name.encode() for name in names))

    @property
    def event_names(self) -> frozenset[str]:
        return self._names

    def __repr__(self) -> str:
        return f"CandidateNames({sorted(self._names)!r})"


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


def _escape_pattern(names: frozenset[str]) -> re.Pattern[bytes] | None:
    """The escapes that could spell a character of one of ``names`` (a JSON string may spell
    any character as an escape: ``"Delete\\u0055serPolicy"`` is ``DeleteUserPolicy``): for
    ASCII names ``\\u00`` followed by the character's high nibble, and the short escape of such
    a character."""
    if not names:
        return None
    chars = set("".join(names))
    if any(ord(c) > 0x7F for c in chars):
        escapes = [rb"u"]  # a non-ASCII character may be escaped as any \uXXXX
    else:
        nibbles = "".join(sorted({f"{ord(c) >> 4:x}" for c in chars}))
        escapes = [rb"u00[" + nibbles.encode() + rb"]"]
    escapes += [re.escape(_SHORT_ESCAPES[c]) for c in sorted(chars) if c in _SHORT_ESCAPES]
    return re.compile(rb"\\(?:" + b"|".join(escapes) + rb")")


# -- locating candidate records by their bytes ----------------------------------------------------

#: Between two records of CloudTrail's compact files: the end of one, the start of the next.
_RECORD_SEP: Final = b'},{"eventVersion":'
RECORD_SEP: Final = _RECORD_SEP
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
        self._escapes = _escape_pattern(spelled)
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
    ) -> list[tuple[int, memoryview]] | None:
        """The bytes of the candidate records ``picked`` [(index, eventName)] of ``text``, as
        (index, slice), or None.  ``limit`` is the position of the ``]`` that closes the records
        array.  Each slice is proved to be exactly one JSON object whose eventName is the name
        the probe pass gave (decoding it in full is the caller's business).
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
        found: list[tuple[int, memoryview]] = []
        end = 0
        view = memoryview(text)
        for at, (index, name) in zip(hits, picked, strict=True):
            start = text.rfind(_RECORD_START, end, at)
            if start < 0:
                return None
            stop = text.find(_RECORD_SEP, at, limit)
            end = stop + 1 if stop >= 0 else text.rfind(b"}", at, limit) + 1
            if end <= at:
                return None
            piece = view[start:end]
            try:
                probe = _DEC_NAME.decode(piece)
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                return None
            if probe.event_name != name:
                return None
            found.append((index, piece))
        return found

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
