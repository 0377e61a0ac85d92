"""In-process stand-ins for SQS and S3 that can serve load (moto's SQS slows with queue depth).

:class:`FakeQueue` is an :class:`~trailguard.ingest.sqs.SqsQueue` whose calls never leave the
process: ``receive`` long-polls an in-memory deque, ``delete`` records when each message was
done.  :class:`FakeStore` is an :class:`~trailguard.ingest.s3.ObjectStore` over a dict.  Both
go into :class:`trailguard.app.Daemon` through its ``queues``/``store`` parameters, so the
benchmark runs the daemon's own code from receive to delete.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from trailguard.errors import PermanentError
from trailguard.ingest.sqs import Message, QueueInfo, SqsQueue

BUCKET = "org-trail-bucket"


def notification(bucket: str, key: str, size: int) -> str:
    """An S3 ObjectCreated notification body, as S3 sends it to SQS."""
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-1",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                        "object": {"key": key, "size": size},
                    },
                }
            ]
        }
    )


@dataclass
class Sent:
    """One message's life: when it was meant to be sent and when the daemon deleted it."""

    at: float  # time.perf_counter() of the send
    done: float | None = None


class FakeQueue(SqsQueue):
    """An SQS queue in memory; ``sent`` maps message ids to their :class:`Sent`."""

    def __init__(self, url: str) -> None:
        super().__init__(None, url)
        self.sent: dict[str, Sent] = {}
        self.deleted = 0
        self.expected = 0  # all_done is set once this many messages were deleted
        self.all_done = asyncio.Event()
        self._waiting: collections.deque[Message] = collections.deque()
        self._arrived = asyncio.Event()
        self._count = 0

    def send(self, body: str, *, at: float | None = None) -> str:
        self._count += 1
        message_id = f"m-{self._count}"
        self.sent[message_id] = Sent(time.perf_counter() if at is None else at)
        self._waiting.append(
            Message(
                queue_url=self.url,
                message_id=message_id,
                receipt_handle=f"r-{self._count}",
                body=body,
                receive_count=1,
                sent_timestamp_ms=int(time.time() * 1000),
            )
        )
        self._arrived.set()
        return message_id

    async def info(self) -> QueueInfo:
        return QueueInfo(
            visibility_timeout_secs=300,
            has_redrive_policy=True,
            approximate_messages=len(self._waiting),
        )

    async def receive(
        self, *, max_messages: int, wait_time_secs: int, visibility_timeout_secs: int
    ) -> list[Message]:
        if not self._waiting:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=wait_time_secs)
            except TimeoutError:
                return []
        batch: list[Message] = []
        while self._waiting and len(batch) < max_messages:
            batch.append(self._waiting.popleft())
        return batch

    async def delete(self, message: Message) -> None:
        self.sent[message.message_id].done = time.perf_counter()
        self.deleted += 1
        if self.deleted >= self.expected:
            self.all_done.set()

    async def set_visibility(self, message: Message, seconds: int) -> None:
        if seconds == 0:  # released: back in the queue
            self._waiting.append(message)
            self._arrived.set()


class FakeStore:
    """Objects in a dict: ``fetch`` returns them as S3ObjectStore would."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.objects[(bucket, key)] = data

    async def fetch(
        self,
        bucket: str,
        key: str,
        *,
        max_bytes: int,
        reserve: Callable[[int], Awaitable[None]] | None = None,
    ) -> bytes:
        data = self.objects.get((bucket, key))
        if reserve is not None and data is not None:
            await reserve(len(data))
        if data is None:
            raise PermanentError("s3_get", "not_found", f"s3://{bucket}/{key}: no such key")
        if len(data) > max_bytes:
            raise PermanentError("s3_get", "too_large", f"s3://{bucket}/{key}: too large")
        return data
