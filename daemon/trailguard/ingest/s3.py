"""Fetching CloudTrail objects from S3, and listing them for backfill.

Objects are streamed in chunks into one buffer of the announced size with a hard limit
(``limits.max_object_bytes``; CloudTrail writes at most 50 MB compressed), so a huge or hostile
object fails early and permanently instead of exhausting memory; the caller's byte budget
(``limits.max_bytes_in_flight``, :mod:`trailguard.ingest.budget`) is reserved before the body is
read.  The compressed bytes then go to the decode pool,
which decompresses them (libdeflate) off the event loop.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from trailguard.aws import classify
from trailguard.detect.keys import KeyKind, classify_key, key_date, unsafe_key
from trailguard.errors import PermanentError, TransientError
from trailguard.telemetry.logging import get_logger

log = get_logger(__name__)

CHUNK_BYTES = 1 << 20


class ObjectStore(Protocol):
    """Where CloudTrail objects come from (S3; a fake in benchmarks)."""

    async def fetch(
        self,
        bucket: str,
        key: str,
        *,
        max_bytes: int,
        reserve: Callable[[int], Awaitable[None]] | None = None,
    ) -> bytes | bytearray:
        """The object's bytes (at most ``max_bytes``); ``reserve`` is awaited with its size (or
        ``max_bytes`` when S3 does not say) before the body is read."""
        ...


class S3ObjectStore:
    """Reads objects through an aiobotocore S3 client owned by the caller."""

    def __init__(self, client: Any, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._client = client
        self._chunk = chunk_bytes

    async def fetch(
        self,
        bucket: str,
        key: str,
        *,
        max_bytes: int,
        reserve: Callable[[int], Awaitable[None]] | None = None,
    ) -> bytes | bytearray:
        what = f"s3://{bucket}/{key}"
        try:
            response = await self._client.get_object(Bucket=bucket, Key=key)
            length = response.get("ContentLength")
            if isinstance(length, int) and length > max_bytes:
                response["Body"].close()
                raise PermanentError(
                    "s3_get",
                    "too_large",
                    f"{what}: object is {length} bytes, over limits.max_object_bytes={max_bytes}",
                )
            known = length if isinstance(length, int) and length >= 0 else None
            if reserve is not None:
                await reserve(max_bytes if known is None else known)
            # One buffer of the announced size, filled in place: no copy, no doubling on growth.
            buffer = bytearray(known if known is not None else 0)
            size = 0
            async with response["Body"] as body:
                async for chunk in body.iter_chunks(self._chunk):
                    end = size + len(chunk)
                    if end > max_bytes or (known is not None and end > known):
                        raise PermanentError(
                            "s3_get",
                            "too_large",
                            f"{what}: object exceeds limits.max_object_bytes={max_bytes}"
                            if end > max_bytes
                            else f"{what}: the body is longer than its ContentLength ({known})",
                        )
                    if known is None:
                        buffer += chunk
                    else:
                        buffer[size:end] = chunk
                    size = end
            if known is not None and size != known:
                raise TransientError(
                    "s3_get", "short_read", f"{what}: {size} of {known} bytes arrived"
                )
            return buffer
        except Exception as exc:  # CancelledError is a BaseException and passes through
            raise classify(exc, stage="s3_get", what=what) from exc


# --- backfill listing -------------------------------------------------------------------------

_ACCOUNT = re.compile(r"^\d{12}$")
_ORG = re.compile(r"^o-[a-z0-9]{10,32}$")


async def _children(client: Any, bucket: str, prefix: str) -> list[str]:
    """Immediate 'folders' under prefix (with their trailing slash)."""
    names: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for entry in page.get("CommonPrefixes", []):
            names.append(entry["Prefix"])
    return names


def _days(since: dt.date, until: dt.date) -> list[dt.date]:
    return [since + dt.timedelta(days=n) for n in range((until - since).days + 1)]


# Up to this many days, each day's folder is listed directly; a longer window (``--until``
# alone starts in November 2013: ~4,700 days) walks the YYYY/ and MM/ folders that exist.
MAX_DAY_PREFIXES = 31


def _folder_number(prefix: str) -> int | None:
    name = prefix.rstrip("/").rsplit("/", 1)[-1]
    return int(name) if name.isdigit() else None


async def _date_prefixes(
    client: Any, bucket: str, root: str, first: dt.date, last: dt.date
) -> list[tuple[str, bool]]:
    """(prefix, filter keys by date) covering ``first..last`` under a region folder."""
    if (last - first).days + 1 <= MAX_DAY_PREFIXES:
        return [(f"{root}{day:%Y/%m/%d}/", False) for day in _days(first, last)]
    prefixes: list[tuple[str, bool]] = []
    for year_prefix in await _children(client, bucket, root):
        year = _folder_number(year_prefix)
        if year is None or not first.year <= year <= last.year:
            continue
        for month_prefix in await _children(client, bucket, year_prefix):
            month = _folder_number(month_prefix)
            if month is None or not 1 <= month <= 12:
                continue
            start = dt.date(year, month, 1)
            end = (start + dt.timedelta(days=31)).replace(day=1) - dt.timedelta(days=1)
            if end < first or start > last:
                continue
            # a month only partly inside the window: its keys are filtered by their date
            prefixes.append((month_prefix, not (first <= start and end <= last)))
    return prefixes


async def _region_roots(client: Any, bucket: str, prefix: str) -> AsyncIterator[str]:
    """Expand ``prefix`` down to ``.../CloudTrail/<region>/`` folders by CloudTrail's layout.

    ``[prefix/]AWSLogs/[o-org/]<account>/CloudTrail/<region>/``: each level not given in
    ``prefix`` is listed (with a delimiter, so only folder names come back).  A prefix that is
    already inside a region folder is yielded as it is.
    """
    parts = [p for p in prefix.split("/") if p]
    base = "/".join(parts) + "/" if parts else ""
    if "CloudTrail" in parts:
        if parts[-1] != "CloudTrail":  # a region, maybe a date, is given already
            yield base
            return
        for region in await _children(client, bucket, base):
            yield region
        return
    if not parts or "AWSLogs" not in parts:
        base += "AWSLogs/"
    elif _ACCOUNT.match(parts[-1]):
        async for root in _region_roots(client, bucket, base + "CloudTrail/"):
            yield root
        return
    # at AWSLogs/ or AWSLogs/o-org/: the next level is organisations or accounts
    for child in await _children(client, bucket, base):
        name = child.rstrip("/").rsplit("/", 1)[-1]
        if _ORG.match(name) or _ACCOUNT.match(name):
            async for root in _region_roots(client, bucket, child):
                yield root


def _is_region_root(prefix: str) -> bool:
    parts = [p for p in prefix.split("/") if p]
    return len(parts) >= 2 and parts[-2] == "CloudTrail"


async def list_log_keys(
    client: Any,
    bucket: str,
    prefix: str,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> AsyncIterator[tuple[str, int]]:
    """(key, size) of the CloudTrail log files under ``prefix``, only on the days asked.

    With ``since``/``until`` (inclusive), only the ``YYYY/MM/DD/`` folders of those days are
    listed under each region folder, so a backfill of one day in a years-old organisation trail
    lists one day's keys per region; a window longer than a month lists the month folders that
    exist instead of every day's.  Digest and Insight files are left out, and so are keys
    CloudTrail could not have written (:func:`~trailguard.detect.keys.unsafe_key`; logged as
    ``s3.key_refused``).
    """
    paginator = client.get_paginator("list_objects_v2")
    prefixes: list[tuple[str, bool]] = []  # (prefix, filter keys by date)
    if since is None and until is None:
        prefixes.append((prefix, False))
    else:
        first = since or dt.date(2013, 11, 1)  # CloudTrail launched in November 2013
        last = until or dt.datetime.now(dt.UTC).date()
        try:
            async for root in _region_roots(client, bucket, prefix):
                if _is_region_root(root):
                    prefixes += await _date_prefixes(client, bucket, root, first, last)
                else:
                    prefixes.append((root, True))
        except Exception as exc:
            raise classify(exc, stage="s3_list", what=f"s3://{bucket}/{prefix}") from exc
    for day_prefix, by_date in prefixes:
        try:
            async for page in paginator.paginate(Bucket=bucket, Prefix=day_prefix):
                for entry in page.get("Contents", []):
                    key = entry["Key"]
                    if classify_key(key) is not KeyKind.LOG:
                        continue
                    if (unsafe := unsafe_key(key)) is not None:
                        # Someone else's object in the trail bucket: never fetched.
                        log.warning("s3.key_refused", bucket=bucket, key=key, reason=unsafe)
                        continue
                    if by_date:
                        day = key_date(key)
                        if day is None or (since and day < since) or (until and day > until):
                            continue
                    yield key, int(entry.get("Size", 0))
        except Exception as exc:
            raise classify(exc, stage="s3_list", what=f"s3://{bucket}/{day_prefix}") from exc
