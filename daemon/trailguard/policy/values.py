"""Typed condition values: parsing numbers, dates, booleans and IP ranges, and exact sets of them.

Both sides of the engine parse with these functions, so the concrete evaluator and the symbolic
model agree on what a value means.  Numbers and dates become exact :class:`~fractions.Fraction`
values (dates as seconds since the epoch, UTC), IP addresses integers on one line (IPv4 in
``[0, 2**32)``, IPv6 after it), and sets of them are unions of intervals (:class:`RealSet`,
:class:`IntSet`) with exact complement, intersection and a member to show.

Parsing is bounded: a number longer than 64 characters or with an exponent beyond +-400 is not a
number (``Fraction("1e999999999")`` would build a huge integer).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from fractions import Fraction
from typing import Final

__all__ = [
    "IP_MAX",
    "IntSet",
    "RealSet",
    "format_ip",
    "parse_bool",
    "parse_date",
    "parse_ip_range",
    "parse_number",
]

_NUMBER: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d{1,3}))?")
_V6_BASE: Final = 1 << 32
IP_MAX: Final = _V6_BASE + (1 << 128) - 1
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_number(text: str) -> Fraction | None:
    if len(text) > 64 or not _NUMBER.fullmatch(text):
        return None
    m = _NUMBER.fullmatch(text)
    if m and m.group(1) is not None and abs(int(m.group(1))) > 400:
        return None
    return Fraction(text)


def parse_date(text: str) -> Fraction | None:
    """ISO 8601 (``2024-01-31``, ``2024-01-31T12:00:00Z``, with offsets) or epoch seconds."""
    if len(text) > 64:
        return None
    number = parse_number(text)
    if number is not None:
        return number
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - _EPOCH
    return Fraction(delta.days * 86_400 + delta.seconds) + Fraction(delta.microseconds, 10**6)


def parse_bool(text: str) -> bool | None:
    low = text.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    return None


def parse_ip_range(text: str) -> tuple[int, int] | None:
    """A CIDR block or a single address as a closed integer range on the one line."""
    if len(text) > 64:
        return None
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
    base = 0 if net.version == 4 else _V6_BASE
    return base + int(net.network_address), base + int(net.broadcast_address)


def format_ip(value: int) -> str:
    if value < _V6_BASE:
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value - _V6_BASE))


# -- interval sets --------------------------------------------------------------------------

# An interval: (low, low_closed, high, high_closed); None bounds are infinite (never closed).
Interval = tuple[Fraction | None, bool, Fraction | None, bool]


def _lo_key(iv: Interval) -> tuple[int, Fraction, int]:
    lo, closed = iv[0], iv[1]
    return (0, Fraction(0), 0) if lo is None else (1, lo, 0 if closed else 1)


class RealSet:
    """A finite union of disjoint, sorted, non-empty intervals of rationals."""

    __slots__ = ("ivs",)

    def __init__(self, ivs: tuple[Interval, ...]) -> None:
        self.ivs = ivs

    @classmethod
    def of(cls, ivs: list[Interval]) -> RealSet:
        """Normalise: drop empty intervals, sort, merge overlapping or touching ones."""
        good = [iv for iv in ivs if not _empty(iv)]
        good.sort(key=_lo_key)
        out: list[Interval] = []
        for iv in good:
            if out and _touches(out[-1], iv):
                out[-1] = _hull(out[-1], iv)
            else:
                out.append(iv)
        return cls(tuple(out))

    @classmethod
    def point(cls, v: Fraction) -> RealSet:
        return cls(((v, True, v, True),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RealSet) and self.ivs == other.ivs

    def __hash__(self) -> int:
        return hash(self.ivs)

    def __repr__(self) -> str:
        return f"RealSet({self.ivs!r})"

    @property
    def is_empty(self) -> bool:
        return not self.ivs

    @property
    def is_full(self) -> bool:
        return self.ivs == ((None, False, None, False),)

    def complement(self) -> RealSet:
        out: list[Interval] = []
        lo: Fraction | None = None
        lo_closed = False
        for a, ac, b, bc in self.ivs:
            if a is not None:
                out.append((lo, lo_closed, a, not ac))
            if b is None:
                return RealSet.of(out)
            lo, lo_closed = b, not bc
        out.append((lo, lo_closed, None, False))
        return RealSet.of(out)

    def inter(self, other: RealSet) -> RealSet:
        out: list[Interval] = []
        for x in self.ivs:
            for y in other.ivs:
                out.append(_meet(x, y))
        return RealSet.of(out)

    def union(self, other: RealSet) -> RealSet:
        return RealSet.of(list(self.ivs + other.ivs))

    def diff(self, other: RealSet) -> RealSet:
        return self.inter(other.complement())

    def contains(self, v: Fraction) -> bool:
        return any(_in(iv, v) for iv in self.ivs)

    def pick(self, hints: list[Fraction]) -> Fraction | None:
        for h in hints:
            for d in (0, 1, -1):
                if self.contains(h + d):
                    return h + d
        for lo, lc, hi, hc in self.ivs:
            if lo is not None and lc:
                return lo
            if hi is not None and hc:
                return hi
            if lo is None and hi is None:
                return Fraction(0)
            if lo is None:
                assert hi is not None
                return hi - 1
            if hi is None:
                return lo + 1
            return (lo + hi) / 2
        return None


def _empty(iv: Interval) -> bool:
    lo, lc, hi, hc = iv
    if lo is None or hi is None:
        return False
    return lo > hi or (lo == hi and not (lc and hc))


def _in(iv: Interval, v: Fraction) -> bool:
    lo, lc, hi, hc = iv
    if lo is not None and (v < lo or (v == lo and not lc)):
        return False
    return not (hi is not None and (v > hi or (v == hi and not hc)))


def _touches(a: Interval, b: Interval) -> bool:
    """a starts no later than b; do they overlap or meet with no gap?"""
    ahi, ahc = a[2], a[3]
    blo, blc = b[0], b[1]
    if ahi is None or blo is None:
        return True
    return blo < ahi or (blo == ahi and (ahc or blc))


def _hull(a: Interval, b: Interval) -> Interval:
    hi, hc = a[2], a[3]
    if hi is not None and (b[2] is None or b[2] > hi or (b[2] == hi and b[3])):
        hi, hc = b[2], b[3]
    return (a[0], a[1], hi, hc)


def _meet(a: Interval, b: Interval) -> Interval:
    lo, lc = a[0], a[1]
    if lo is None or (b[0] is not None and (b[0] > lo or (b[0] == lo and not b[1]))):
        lo, lc = b[0], b[1]
    hi, hc = a[2], a[3]
    if hi is None or (b[2] is not None and (b[2] < hi or (b[2] == hi and not b[3]))):
        hi, hc = b[2], b[3]
    return (lo, lc, hi, hc)


class IntSet:
    """A finite union of disjoint, sorted, closed integer ranges within ``[0, IP_MAX]``."""

    __slots__ = ("ranges",)

    def __init__(self, ranges: tuple[tuple[int, int], ...]) -> None:
        self.ranges = ranges

    @classmethod
    def of(cls, ranges: list[tuple[int, int]]) -> IntSet:
        good = sorted((a, b) for a, b in ranges if a <= b)
        out: list[tuple[int, int]] = []
        for a, b in good:
            if out and a <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        return cls(tuple(out))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntSet) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __repr__(self) -> str:
        return f"IntSet({self.ranges!r})"

    @property
    def is_empty(self) -> bool:
        return not self.ranges

    @property
    def is_full(self) -> bool:
        return self.ranges == ((0, IP_MAX),)

    def complement(self) -> IntSet:
        out: list[tuple[int, int]] = []
        nxt = 0
        for a, b in self.ranges:
            if a > nxt:
                out.append((nxt, a - 1))
            nxt = b + 1
        if nxt <= IP_MAX:
            out.append((nxt, IP_MAX))
        return IntSet(tuple(out))

    def inter(self, other: IntSet) -> IntSet:
        out = [(max(a, c), min(b, d)) for a, b in self.ranges for c, d in other.ranges]
        return IntSet.of(out)

    def union(self, other: IntSet) -> IntSet:
        return IntSet.of(list(self.ranges + other.ranges))

    def diff(self, other: IntSet) -> IntSet:
        return self.inter(other.complement())

    def contains(self, v: int) -> bool:
        return any(a <= v <= b for a, b in self.ranges)

    def pick(self) -> int | None:
        if not self.ranges:
            return None
        a, b = self.ranges[0]
        # prefer an address inside the range rather than its network address
        return a + 1 if b > a + 1 else a
