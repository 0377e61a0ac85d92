"""Keys of the shared table (docs/DYNAMODB.md, "Keys are built, never trusted"): pure functions.

Every variable part of a key comes from a CloudTrail record or an operator, so it is escaped
(:func:`enc`: ``%`` -> ``%25``, ``#`` -> ``%23``, ``~`` -> ``%7E``: no value can end a part
early and reach another item's key space, and none can pose as a hashed part) and, when long,
replaced by its hash (:func:`part`).  Times sort as
text: :func:`t` writes Unix seconds zero-padded to a fixed width; eventTimes use
``detect/times.py``'s ``event_time_key``.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = [
    "MAX_PART_BYTES",
    "dedup_key",
    "enc",
    "event_key",
    "fact_id",
    "job_key",
    "lock_key",
    "part",
    "t",
    "target_key",
]

#: A part longer than this (UTF-8 bytes, after escaping) is replaced by its hash.
MAX_PART_BYTES: Final = 512
SEP: Final = "#"
#: Sorts just above ``#`` (0x23 < 0x24): ``PREFIX$`` bounds every ``PREFIX#...`` key.
ABOVE_SEP: Final = "$"


def enc(value: str) -> str:
    """``value`` with ``%``, ``#`` and ``~`` escaped: one part, which cannot end early, and
    never starts with ``~`` (the mark of a hashed part)."""
    return value.replace("%", "%25").replace("#", "%23").replace("~", "%7E")


def part(value: str) -> str:
    """One variable part of a key: escaped, or ``~sha256:<hex>`` of the value when too long.

    :func:`enc` never leaves a ``~``, so an escaped value cannot pose as a hashed one.
    """
    escaped = enc(value)
    if len(escaped.encode("utf-8", "surrogatepass")) <= MAX_PART_BYTES:
        return escaped
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"~sha256:{digest}"


def t(unix_secs: float) -> str:
    """Unix seconds as sortable text: ``%017.6f`` (``1793880000.000000``)."""
    return f"{max(0.0, unix_secs):017.6f}"


def fact_id(identity: str) -> str:
    """The first 16 hex digits of the sha256 of a fact's identity (state/policy_history.py)."""
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def dedup_key(key: str) -> str:
    return f"DEDUP#{part(key)}"


def event_key(event_id: str) -> str:
    return f"EVENT#{part(event_id)}"


def job_key(job_id: str) -> str:
    return f"JOB#{part(job_id)}"


def target_key(target: str) -> str:
    return f"TARGET#{part(target)}"


def lock_key(account_id: str) -> str:
    return f"LOCK#{part(account_id)}"
