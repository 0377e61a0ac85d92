"""SQS: receive, extend visibility, release, delete — each call mapped into the error tree.

This module only speaks to SQS; the decision *when* a message is deleted lives in
:mod:`trailguard.ingest.messages` (after every object it names is processed and every detection
durably written).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trailguard.aws import classify


@dataclass(frozen=True, slots=True)
class Message:
    queue_url: str
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    visibility_timeout_secs: int
    has_redrive_policy: bool
    approximate_messages: int


class SqsQueue:
    """One SQS queue through an aiobotocore SQS client owned by the caller."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self.url = queue_url

    async def info(self) -> QueueInfo:
        try:
            response = await self._client.get_queue_attributes(
                QueueUrl=self.url,
                AttributeNames=[
                    "VisibilityTimeout",
                    "RedrivePolicy",
                    "ApproximateNumberOfMessages",
                ],
            )
        except Exception as exc:
            raise classify(exc, stage="sqs_attributes", what=self.url) from exc
        attrs = response.get("Attributes", {})
        return QueueInfo(
            visibility_timeout_secs=int(attrs.get("VisibilityTimeout", 30)),
            has_redrive_policy=bool(attrs.get("RedrivePolicy")),
            approximate_messages=int(attrs.get("ApproximateNumberOfMessages", 0)),
        )

    async def receive(
        self, *, max_messages: int, wait_time_secs: int, visibility_timeout_secs: int
    ) -> list[Message]:
        try:
            response = await self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_time_secs,
                VisibilityTimeout=visibility_timeout_secs,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        except Exception as exc:
            raise classify(exc, stage="sqs_receive", what=self.url) from exc
        messages = []
        for raw in response.get("Messages", []):
            attrs = raw.get("Attributes", {})
            sent = attrs.get("SentTimestamp")
            messages.append(
                Message(
                    queue_url=self.url,
                    message_id=raw["MessageId"],
                    receipt_handle=raw["ReceiptHandle"],
                    body=raw.get("Body", ""),
                    receive_count=int(attrs.get("ApproximateReceiveCount", 1)),
                    sent_timestamp_ms=int(sent) if sent and str(sent).isdigit() else None,
                )
            )
        return messages

    async def delete(self, message: Message) -> None:
        try:
            await self._client.delete_message(
                QueueUrl=self.url, ReceiptHandle=message.receipt_handle
            )
        except Exception as exc:
            raise classify(exc, stage="sqs_delete", what=message.message_id) from exc

    async def set_visibility(self, message: Message, seconds: int) -> None:
        """Extend (heartbeat) or release (0) a message's visibility."""
        try:
            await self._client.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=seconds
            )
        except Exception as exc:
            raise classify(exc, stage="sqs_visibility", what=message.message_id) from exc
