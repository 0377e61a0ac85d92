"""CloudTrail's eventTime as a sortable key (pure; shared by history, digests and confirmation)."""

from __future__ import annotations

import datetime as dt

__all__ = ["event_time_key"]


def event_time_key(value: object) -> str | None:
    """A sortable UTC key for an eventTime (``2026-11-01T12:00:00Z``), or None if unparseable.

    CloudTrail writes ``YYYY-MM-DDTHH:MM:SSZ``; fractional seconds and offsets are accepted too
    and a time without a zone is taken as UTC.  The key has microsecond precision, so keys
    compare in time order as plain strings.
    """
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        parsed = parsed.astimezone(dt.UTC)
    except OverflowError:  # year 1 or 9999 moved across midnight
        return None
    # isoformat, not strftime (5x slower): the same text for years 1000-9999
    return parsed.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
