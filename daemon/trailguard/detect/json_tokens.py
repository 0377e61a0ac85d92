"""The JSON token rules of trailguard's reference decoder (detect/frame.py): the byte classes
of whitespace, strings, escapes, numbers and literals, the error a broken file raises, and the
element a walk yields.

Kept apart from the walk so that the rules read as one table, and the walk as one state
machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import msgspec

__all__ = [
    "HEX4",
    "KINDS",
    "LITERALS",
    "NUMBER",
    "NUMBER_CHARS",
    "SHORT_ESCAPES",
    "SKIP_RUN",
    "SKIP_STR_RUN",
    "STR_RUN",
    "WS_RUN",
    "Element",
    "FrameError",
    "decode_key",
    "describe",
]

WS_RUN: Final = re.compile(rb"[ \t\r\n]+")
STR_RUN: Final = re.compile(rb'[^"\\\x00-\x1f]+')
SKIP_STR_RUN: Final = re.compile(rb'[^"\\]+')
SKIP_RUN: Final = re.compile(rb'[^"\\{}\[\],]+')
NUMBER: Final = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
NUMBER_CHARS: Final = frozenset(b"0123456789+-.eE")
HEX4: Final = re.compile(rb"[0-9a-fA-F]{4}")
SHORT_ESCAPES: Final = frozenset(b'"\\/bfnrt')
LITERALS: Final = {0x74: b"true", 0x66: b"false", 0x6E: b"null"}
KINDS: Final = {
    0x7B: "an object",
    0x5B: "an array",
    0x22: "a string",
    0x74: "a boolean",
    0x66: "a boolean",
    0x6E: "null",
}


class FrameError(Exception):
    """The file's own structure is broken (not one record): the whole file is bad."""

    def __init__(self, reason: str, at: int) -> None:
        super().__init__(f"{reason} (byte {at})")
        self.reason = reason
        self.at = at


@dataclass(slots=True)
class Element:
    """One element of the records array (or the one value, in element mode).

    ``start``/``end`` are offsets in the bytes given to the walk (see :meth:`Walker.shift`);
    ``end`` is None when the element was too big to keep (``error`` says so).  ``fields`` maps a
    top-level key the decoder reads to the offsets of each of its values, in order.
    """

    index: int
    start: int
    end: int | None
    error: str | None
    kind: str
    depth: int
    fields: dict[str, list[tuple[int, int]]]


def describe(first: int) -> str:
    """ "an object", "a number", ... for the first byte of a JSON value."""
    return KINDS.get(first, "a number" if first in NUMBER_CHARS else "not JSON")


def decode_key(raw: bytes) -> str | None:
    """The text of a JSON string's inside (escapes decoded), or None if it is not valid."""
    if b"\\" not in raw:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return None
    try:
        return msgspec.json.decode(b'"' + raw + b'"', type=str)
    except msgspec.DecodeError:
        return None
