"""``trailguard replay s3://bucket/prefix``: backfill from a trail bucket.

Lists the CloudTrail log keys (only the days asked, following the ``AWSLogs/[o-org/]account/
CloudTrail/region/YYYY/MM/DD/`` layout), then fetches and decodes them through the same path as
the daemon (:class:`~trailguard.ingest.s3.S3ObjectStore` and the decode pool), several at a time,
into the same summary and writer as a local replay.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TextIO
from urllib.parse import urlsplit

from trailguard.aws import check_region, client_config, client_kwargs, make_session
from trailguard.config import Config
from trailguard.decode_pool import DecodePool
from trailguard.detect.detection import S3Source
from trailguard.errors import DecodeError, OperationError, UsageError
from trailguard.ingest.budget import ByteBudget, Reservation
from trailguard.ingest.replay import LocalReplay
from trailguard.ingest.s3 import S3ObjectStore, list_log_keys
from trailguard.retry import retry_transient
from trailguard.telemetry.logging import get_logger

log = get_logger(__name__)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise UsageError(f"not an s3://bucket/prefix URI: {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


async def replay_s3(
    uris: list[str],
    *,
    config: Config,
    replay: LocalReplay,
    since: dt.date | None,
    until: dt.date | None,
    progress: TextIO | None,
) -> None:
    summary = replay.summary
    session = make_session()
    kwargs = client_kwargs(check_region(session, config.aws.region), config.aws.endpoint_url)
    async with session.create_client("s3", config=client_config(), **kwargs) as s3:
        keys: list[tuple[str, str]] = []
        for uri in uris:
            bucket, prefix = parse_s3_uri(uri)
            try:
                async for key, _size in list_log_keys(s3, bucket, prefix, since=since, until=until):
                    keys.append((bucket, key))
            except OperationError as exc:
                summary.files += 1
                summary.failed.append((uri, exc.detail))
                log.error("replay.list_failed", uri=uri, reason=exc.reason, detail=exc.detail)
        store = S3ObjectStore(s3)
        pool = DecodePool(config, config.limits.decode_worker_count())
        bar = None
        if progress is not None:
            from tqdm import tqdm

            bar = tqdm(total=len(keys), unit="file", file=progress, dynamic_ncols=True)
        max_bytes = config.limits.max_object_bytes
        budget = ByteBudget(config.limits.max_bytes_in_flight)

        async def one(bucket: str, key: str) -> None:
            name = f"s3://{bucket}/{key}"
            summary.files += 1
            held = Reservation(budget)

            async def fetch() -> bytes | bytearray:
                held.release()  # what a failed attempt took goes back first
                return await store.fetch(bucket, key, max_bytes=max_bytes, reserve=held.take)

            try:
                data = await retry_transient(fetch, attempts=4, what=name)
                outcome = await pool.process(
                    data, source=S3Source(bucket=bucket, key=key), name=name, key=key
                )
            except OperationError as exc:
                replay.fail(name, exc.detail)
            except DecodeError as exc:
                replay.fail(name, exc.reason)
            else:
                await replay.account(name, outcome)
            finally:
                held.release()
            if bar is not None:
                bar.set_postfix(
                    records=summary.records, detections=summary.detections_total, refresh=False
                )
                bar.update(1)

        todo = iter(keys)

        async def worker() -> None:
            for bucket, key in todo:  # shared iterator: each key is taken by one worker
                await one(bucket, key)

        try:
            workers = min(len(keys), config.limits.max_objects_in_flight) or 1
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            pool.shutdown()
            if bar is not None:
                bar.close()
