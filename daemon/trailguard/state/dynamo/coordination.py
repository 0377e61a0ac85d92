"""What replicas coordinate through the shared table besides state: the per-account IAM write
lock (:class:`DynamoAccountLocks`, docs/DYNAMODB.md section 6) and the IAM token bucket
(:class:`DynamoTokenBucket`, section 7).

**The lock** is a lease item per account: acquired by a conditional update (absent, expired, or
ours), released by a conditional delete fenced by the acquisition's number.  It is held for one
attempt of one job, which ``job_timeout_secs`` bounds, so the lease (that timeout + 30 s of clock
skew) needs no renewal: a writer that outlived it was cancelled by its own timeout first.

**The bucket is shared** because ``iam_rate_per_sec`` exists to keep trailguard inside IAM's
request quota, which AWS counts per account for every caller together; per replica it would grow
with the replica count, and KEDA changes that count at will.  It costs one consistent read and one
conditional write per IAM call -- remediation makes a few calls per removal, so this is a few
requests a day for most organisations -- and within a replica the workers queue on a local lock
first, so the item sees one contender per replica.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from trailguard.errors import TransientError
from trailguard.state.dynamo import keys as k
from trailguard.state.dynamo.table import ConditionFailed, DynamoTable, n, num, opt_n, s
from trailguard.telemetry.logging import get_logger

__all__ = ["DynamoAccountLocks", "DynamoTokenBucket"]

log = get_logger(__name__)

#: Clock skew between replicas a lease allows for (keep replicas on NTP).
SKEW_SECS: Final = 30.0
_LOCK_SK: Final = "LOCK"
_BUCKET_KEY: Final = {"pk": {"S": "RATE#iam"}, "sk": {"S": "BUCKET"}}


class DynamoAccountLocks:
    """:class:`~trailguard.remediate.locks.AccountLocks` across replicas."""

    def __init__(
        self,
        table: DynamoTable,
        *,
        hold_secs: float,
        wait_secs: float,
        retry_secs: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self._table = table
        self._lease = hold_secs + SKEW_SECS
        self._wait = wait_secs
        self._retry = retry_secs
        self._rng = rng or random.Random()
        self._local: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, account_id: str) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        async with self._local.setdefault(account_id, asyncio.Lock()):
            fence = await self._acquire(account_id, deadline)
            try:
                yield
            finally:
                await asyncio.shield(self._release(account_id, fence))

    async def _acquire(self, account_id: str, deadline: float) -> str:
        table = self._table
        loop = asyncio.get_running_loop()
        tries = 0
        while True:
            tries += 1
            now = table.clock()
            try:
                response = await table.call(
                    "update_item",
                    Key={"pk": s(k.lock_key(account_id)), "sk": s(_LOCK_SK)},
                    UpdateExpression=(
                        "SET #owner = :me, lease_until = :until, account_id = :account,"
                        " fence = if_not_exists(fence, :zero) + :one, expires_at = :expires"
                    ),
                    ConditionExpression=(
                        "attribute_not_exists(pk) OR lease_until <= :now OR #owner = :me"
                    ),
                    ExpressionAttributeNames={"#owner": "owner"},
                    ExpressionAttributeValues={
                        ":me": s(table.owner),
                        ":until": num(now + self._lease),
                        ":account": s(account_id),
                        ":zero": num(0),
                        ":one": num(1),
                        ":now": num(now),
                        ":expires": num(int(now + self._lease + 86400)),
                    },
                    ReturnValues="UPDATED_NEW",
                )
            except ConditionFailed:
                left = deadline - loop.time()
                if left <= 0:
                    raise TransientError(
                        "remediate",
                        "account_locked",
                        f"account {account_id}: another replica is writing to its IAM "
                        f"(waited {self._wait:g} s, {tries} tries)",
                    ) from None
                await asyncio.sleep(min(left, self._rng.uniform(0.5, 1.5) * self._retry))
                continue
            return str(response["Attributes"]["fence"]["N"])

    async def _release(self, account_id: str, fence: str) -> None:
        table = self._table
        try:
            await table.call(
                "delete_item",
                Key={"pk": s(k.lock_key(account_id)), "sk": s(_LOCK_SK)},
                ConditionExpression="#owner = :me AND fence = :fence",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":me": s(table.owner), ":fence": {"N": fence}},
            )
        except ConditionFailed:
            log.warning("remediation.lock_lost", account_id=account_id)
        except Exception as exc:  # noqa: BLE001 - the lease ends the lock anyway
            log.warning("remediation.lock_release_failed", account_id=account_id, error=str(exc))


class DynamoTokenBucket:
    """``rate`` IAM calls per second for every replica together (``RATE#iam``)."""

    def __init__(
        self,
        table: DynamoTable,
        rate: float,
        burst: float | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._table = table
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._rng = rng or random.Random()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                wait = await self._take()
                if wait <= 0:
                    return
                await asyncio.sleep(wait)

    async def _take(self) -> float:
        """0 when a token was taken, else how long to wait before trying again."""
        table = self._table
        response = await table.call("get_item", Key=_BUCKET_KEY, ConsistentRead=True)
        item = response.get("Item")
        now = table.clock()
        if item is None:
            tokens, condition, seen = self.burst, "attribute_not_exists(pk)", None
        else:
            stamp = n(item, "stamp")
            tokens = min(
                self.burst, (opt_n(item, "tokens") or 0) + max(0.0, now - stamp) * self.rate
            )
            condition, seen = "stamp = :seen", item["stamp"]
        if tokens < 1 - 1e-9:
            return (1 - tokens) / self.rate
        values = {":left": num(max(0.0, tokens - 1)), ":now": num(max(now, 0.0))}
        if seen is not None:
            values[":seen"] = seen
        try:
            await table.call(
                "update_item",
                Key=_BUCKET_KEY,
                UpdateExpression="SET tokens = :left, stamp = :now",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ConditionFailed:
            return self._rng.uniform(0.005, 0.05)  # another replica took one: read again
        return 0.0
