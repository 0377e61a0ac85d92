"""The event ledger on the shared table: :class:`DynamoEventLedger` (docs/DYNAMODB.md section 2).

One item per (eventID, digest) under the eventID's partition, added with
``attribute_not_exists``; the contents of an eventID are one strongly consistent Query.  Items
never expire (a time limit would let a forger wait it out).
"""

from __future__ import annotations

from collections.abc import Sequence

from trailguard.detect.digest import EventDigest
from trailguard.state.dynamo import keys as k
from trailguard.state.dynamo.table import ConditionFailed, DynamoTable, n, opt_s, s
from trailguard.state.ledger import LedgerConflict, LedgerEntry

__all__ = ["DynamoEventLedger"]

_DIGEST = "DIGEST#"


class DynamoEventLedger:
    """:class:`~trailguard.state.ledger.EventLedger` on the shared table."""

    def __init__(self, table: DynamoTable) -> None:
        self._table = table

    async def observe(self, events: Sequence[EventDigest], *, path: str) -> list[LedgerConflict]:
        for event in events:
            if not isinstance(event, EventDigest):
                raise TypeError(f"events must be EventDigest, got {type(event).__name__}")
        unique = list({(e.event_id, e.digest): e for e in events}.values())
        if not unique:
            return []
        now = self._table.clock()
        added = await self._table.gather([self._put(event, path, now) for event in unique])
        new = {event.event_id for event, was in zip(unique, added, strict=True) if was}
        found = await self._select(list(dict.fromkeys(e.event_id for e in unique)))
        return [
            LedgerConflict(event_id=c.event_id, entries=c.entries, new=c.event_id in new)
            for c in found
        ]

    async def conflicts(self, event_ids: Sequence[str]) -> dict[str, LedgerConflict]:
        wanted = list(dict.fromkeys(event_ids))
        if not wanted:
            return {}
        return {c.event_id: c for c in await self._select(wanted)}

    async def close(self) -> None:
        return None

    async def _put(self, event: EventDigest, path: str, now: float) -> bool:
        item = {
            "pk": s(k.event_key(event.event_id)),
            "sk": s(_DIGEST + k.part(event.digest)),
            "event_id": s(event.event_id),
            "digest": s(event.digest),
            "path": s(path),
            "first_seen": {"N": repr(now)},
        }
        if event.event_name is not None:
            item["event_name"] = s(event.event_name)
        if event.account_id is not None:
            item["account_id"] = s(event.account_id)
        try:
            await self._table.call(
                "put_item", Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ConditionFailed:
            return False
        return True

    async def _select(self, event_ids: list[str]) -> list[LedgerConflict]:
        results = await self._table.gather([self._contents(event_id) for event_id in event_ids])
        return [
            LedgerConflict(event_id=event_id, entries=entries)
            for event_id, entries in zip(event_ids, results, strict=True)
            if len(entries) > 1
        ]

    async def _contents(self, event_id: str) -> tuple[LedgerEntry, ...]:
        items = await self._table.query_all(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :digest)",
            ExpressionAttributeValues={":pk": s(k.event_key(event_id)), ":digest": s(_DIGEST)},
            ConsistentRead=True,
        )
        entries = [
            LedgerEntry(
                digest=str(item["digest"]["S"]),
                event_name=opt_s(item, "event_name"),
                account_id=opt_s(item, "account_id"),
                path=str(item["path"]["S"]),
                first_seen=n(item, "first_seen"),
            )
            for item in items
            # a hashed eventID part shared by two long eventIDs: only this eventID's items
            if opt_s(item, "event_id") == event_id
        ]
        entries.sort(key=lambda entry: (entry.first_seen, entry.digest))
        return tuple(entries)
