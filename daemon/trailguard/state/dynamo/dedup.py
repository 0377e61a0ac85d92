"""eventID dedup on the shared table: :class:`DynamoDedupStore` (docs/DYNAMODB.md section 1).

A key is **claimed** by a conditional put (absent, expired, or a claim whose lease ran out), the
detection line is written and fsynced, and the key is **recorded** (``state = done``) by its
claimant.  A replica that dies between its write and its record leaves a claim without its
``done`` mark; after the lease (the queue's visibility timeout) the redelivered message takes it
over and writes the line again: the one duplicate this design allows, reported in
:attr:`~trailguard.state.dedup.Claim.taken_over`.  A restarted replica closes that window
earlier: ``recover_from_output`` records what its output already holds (an unconditional
``done``).  Expiry: every read and condition treats ``expires_at <= now`` as absent, whatever
TTL has not deleted yet; TTL does the purge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from trailguard.state.dedup import Claim, check_keys
from trailguard.state.dynamo import keys as k
from trailguard.state.dynamo.table import ConditionFailed, DynamoTable, Item, num, opt_n, opt_s, s
from trailguard.telemetry.logging import get_logger

__all__ = ["DynamoDedupStore"]

log = get_logger(__name__)

_SK: Final = "DEDUP"
_CLAIM_CONDITION: Final = (
    "attribute_not_exists(pk) OR expires_at <= :now OR (#state = :claimed AND lease_until <= :now)"
)


class DynamoDedupStore:
    """:class:`~trailguard.state.dedup.DedupStore` on the shared table."""

    def __init__(self, table: DynamoTable, *, ttl_seconds: float, lease_secs: float) -> None:
        if not ttl_seconds > 0 or not lease_secs > 0:
            raise ValueError("ttl_seconds and lease_secs must be positive")
        self._table = table
        self._ttl = ttl_seconds
        self._lease = lease_secs
        self._mine: set[str] = set()  # keys claimed by this process and not yet recorded

    async def claim(self, keys: Sequence[str]) -> Claim:
        wanted = list(dict.fromkeys(check_keys(keys)))
        if not wanted:
            return Claim()
        outcomes = await self._table.gather([self._claim(key) for key in wanted])
        claim = Claim()
        for key, outcome in zip(wanted, outcomes, strict=True):
            if outcome in ("new", "taken_over"):
                claim.new.append(key)
                self._mine.add(key)
                if outcome == "taken_over":
                    claim.taken_over.append(key)
            elif outcome == "held":
                claim.held.append(key)
        if claim.taken_over:
            log.warning(
                "dedup.claim_taken_over",
                count=len(claim.taken_over),
                event_ids=claim.taken_over[:20],
            )
        return claim

    async def filter_new(self, keys: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(check_keys(keys)))
        items = await self._table.gather([self._get(key) for key in wanted])
        now = self._table.clock()
        return [key for key, item in zip(wanted, items, strict=True) if not _known(item, now)]

    async def record(self, keys: Sequence[str]) -> None:
        wanted = list(dict.fromkeys(check_keys(keys)))
        if wanted:
            await self._table.gather([self._record(key) for key in wanted])

    async def purge_expired(self) -> int:
        return 0  # TTL deletes; reads treat expired items as absent

    async def close(self) -> None:
        self._mine.clear()

    # ------------------------------------------------------------------ one key

    async def _claim(self, key: str, *, again: bool = True) -> str:
        """ "new", "taken_over", "done" or "held"."""
        table = self._table
        now = table.clock()
        try:
            response = await table.call(
                "put_item",
                Item={
                    "pk": s(k.dedup_key(key)),
                    "sk": s(_SK),
                    "key": s(key),
                    "state": s("claimed"),
                    "owner": s(table.owner),
                    "lease_until": num(now + self._lease),
                    "expires_at": num(now + self._ttl),
                },
                ConditionExpression=_CLAIM_CONDITION,
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":now": num(now), ":claimed": s("claimed")},
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ConditionFailed as exc:
            item = exc.item if exc.item is not None else await self._get(key)
            if item is None:  # gone (deleted by TTL) between the two calls: try once more
                return await self._claim(key, again=False) if again else "held"
            return "done" if opt_s(item, "state") == "done" else "held"
        old = response.get("Attributes")
        if old and opt_s(old, "state") == "claimed" and (opt_n(old, "expires_at") or 0) > now:
            return "taken_over"
        return "new"

    async def _record(self, key: str) -> None:
        table = self._table
        now = table.clock()
        done = {
            ":done": s("done"),
            ":now": num(now),
            ":expires": num(now + self._ttl),
        }
        pk = {"pk": s(k.dedup_key(key)), "sk": s(_SK)}
        if key in self._mine:
            try:
                await table.call(
                    "update_item",
                    Key=pk,
                    UpdateExpression=(
                        "SET #state = :done, recorded_at = :now, expires_at = :expires"
                        " REMOVE lease_until"
                    ),
                    ConditionExpression="#owner = :me",
                    ExpressionAttributeNames={"#state": "state", "#owner": "owner"},
                    ExpressionAttributeValues={**done, ":me": s(table.owner)},
                )
            except ConditionFailed:
                # Our lease ran out and another replica claimed the key: it may write the
                # line too.  Nothing to undo; say so.
                log.warning("dedup.claim_lost", event_id=key)
            finally:
                self._mine.discard(key)
            return
        # Not claimed here (recover_from_output, a replay): recorded as it is, idempotently.
        await table.call(
            "put_item",
            Item={
                **pk,
                "key": s(key),
                "state": s("done"),
                "owner": s(table.owner),
                "recorded_at": num(now),
                "expires_at": num(now + self._ttl),
            },
        )

    async def _get(self, key: str) -> Item | None:
        response = await self._table.call(
            "get_item",
            Key={"pk": s(k.dedup_key(key)), "sk": s(_SK)},
            ConsistentRead=True,
        )
        item: Item | None = response.get("Item")
        return item


def _known(item: Item | None, now: float) -> bool:
    """Recorded and not expired, or claimed with a live lease."""
    if item is None or (opt_n(item, "expires_at") or 0) <= now:
        return False
    if opt_s(item, "state") == "done":
        return True
    return (opt_n(item, "lease_until") or 0) > now
