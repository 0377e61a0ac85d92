"""Classify object keys and file names by CloudTrail's delivery layout.

Layout: ``[prefix/]AWSLogs/[o-orgid/]<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_
<region>_<YYYYMMDDTHHMMZ>_<random>.json.gz``; digests live under ``CloudTrail-Digest/`` and Insight
events under ``CloudTrail-Insight/``.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum


class KeyKind(StrEnum):
    LOG = "log"  # a CloudTrail log file
    DIGEST = "digest"  # an integrity digest file: no events
    INSIGHT = "insight"  # CloudTrail Insights events: no API calls
    OTHER = "other"  # not a CloudTrail delivery (or not recognisable as one)


_DIGEST = re.compile(r"(^|/)CloudTrail-Digest/|_CloudTrail-Digest_")
_INSIGHT = re.compile(r"(^|/)CloudTrail-Insight/|_CloudTrail-Insight_")
_LOG = re.compile(
    r"(^|/)AWSLogs/(o-[a-z0-9]{10,32}/)?(?P<account>\d{12})/CloudTrail/(?P<region>[a-z0-9-]+)/"
    r"(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})/[^/]+\.json(\.gz)?$"
)


def unsafe_key(key: str) -> str | None:
    """Why trailguard will not touch an S3 key, or None.

    S3 keys are opaque to S3, and CloudTrail writes only its layout above: a key with a control
    character (NUL, newline, escape ...) or a ``.``/``..`` path segment is forged or misrouted.
    trailguard never makes a file path of a key, but such a key could still forge a log line on
    a terminal, or be normalised by an HTTP layer on the way into a GET of another key.
    """
    if any(_is_control(char) for char in key):
        return "has a control character"
    if any(part in (".", "..") for part in key.split("/")):
        return "has a '.' or '..' path segment"
    return None


def _is_control(char: str) -> bool:
    return char < " " or "\x7f" <= char <= "\x9f"


def classify_key(key: str) -> KeyKind:
    """Classify an S3 key (already URL-decoded) or a local path by CloudTrail's layout."""
    if _DIGEST.search(key):
        return KeyKind.DIGEST
    if _INSIGHT.search(key):
        return KeyKind.INSIGHT
    if _LOG.search(key):
        return KeyKind.LOG
    return KeyKind.OTHER


def key_date(key: str) -> dt.date | None:
    """The delivery day in a CloudTrail log key (``.../YYYY/MM/DD/...``), or None."""
    match = _LOG.search(key)
    if match is None:
        return None
    try:
        return dt.date(int(match["year"]), int(match["month"]), int(match["day"]))
    except ValueError:
        return None


def key_account_region(key: str) -> tuple[str | None, str | None]:
    """(account, region) from a CloudTrail log key, or (None, None)."""
    match = _LOG.search(key)
    if match is None:
        return None, None
    return match["account"], match["region"]
