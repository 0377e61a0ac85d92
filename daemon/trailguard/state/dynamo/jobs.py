"""Remediation jobs on the shared table: :class:`DynamoJobStore` (docs/DYNAMODB.md sections 4
and 5).

One item per job.  The attributes ``state``, ``attempts``, ``next_attempt_at``,
``lease_until`` and ``updated_at`` are authoritative; ``body`` (the Job as msgspec JSON, as
SQLite keeps it) holds the rest and is read with those overlaid.  Two sparse indexes find
candidates -- ``claim`` (due jobs, expired leases) and ``by_state`` -- and every decision is a
conditional write on the item itself, so an index's lag can cost a wasted call, never a double
claim:

- planned once: ``PutItem`` if absent;
- claimed by one worker: ``UpdateItem`` if due (or its lease ran out);
- completed only by its holder: ``UpdateItem`` fenced by state and attempt number; a restore
  that changed IAM is completed in one transaction with its ``RESTORE`` record, which the
  circuit breaker counts (``restores_since``), so every replica counts every restore;
- an operator's approve/retry/cancel applies to the state they saw (optimistic, read again on a
  race).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from trailguard.errors import StateError
from trailguard.remediate.job_store import change_for
from trailguard.remediate.jobs import (
    Job,
    JobConflictError,
    JobNotFoundError,
    JobState,
)
from trailguard.state.dynamo import keys as k
from trailguard.state.dynamo.table import (
    ConditionFailed,
    DynamoTable,
    Item,
    n,
    num,
    opt_n,
    s,
)
from trailguard.vocabulary import JOB_STATES, QUEUED_JOB_STATES

__all__ = ["DynamoJobStore"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Job)

_SK: Final = "JOB"
_DUE: Final = "DUE"
_LEASE: Final = "LEASE"
#: A restore record lives as long as the longest circuit-breaker window the config accepts.
RESTORE_TTL_SECS: Final = 30 * 86400
_TRANSITION_TRIES: Final = 5
_CLAIM_PAGES: Final = 8


class DynamoJobStore:
    """:class:`~trailguard.remediate.jobs.JobStore` on the shared table."""

    def __init__(self, table: DynamoTable) -> None:
        self._table = table

    # ------------------------------------------------------------------ enqueue

    async def enqueue_many(self, jobs: Sequence[Job]) -> int:
        if not jobs:
            return 0
        unique = list({job.id: job for job in jobs}.values())
        added = await self._table.gather([self._put(job) for job in unique])
        return sum(added)

    async def _put(self, job: Job) -> int:
        try:
            await self._table.call(
                "put_item", Item=_item(job), ConditionExpression="attribute_not_exists(pk)"
            )
        except ConditionFailed:
            return 0
        return 1

    # ------------------------------------------------------------------ claim

    async def claim_due(self, now: float, limit: int, *, lease_secs: float) -> list[Job]:
        if limit <= 0:
            return []
        bound = k.t(now) + k.ABOVE_SEP
        page = max(10, 3 * limit)
        starts: dict[str, dict[str, Any] | None] = {_DUE: None, _LEASE: None}
        claimed: list[Job] = []
        # Other workers race for the same candidates: read on (a few pages at most) while
        # every candidate read so far went to someone else.
        for _ in range(_CLAIM_PAGES):
            if not starts or len(claimed) >= limit:
                break
            kinds = list(starts)
            pages = await asyncio.gather(
                *(self._candidates(kind, bound, page, starts[kind]) for kind in kinds)
            )
            candidates: list[tuple[str, str]] = []
            for kind, (found, last) in zip(kinds, pages, strict=True):
                candidates += found
                if last is None:
                    del starts[kind]
                else:
                    starts[kind] = last
            for _, job_id in sorted(candidates):
                if len(claimed) >= limit:
                    break
                job = await self._claim_one(job_id, now, now + lease_secs)
                if job is not None:
                    claimed.append(job)
        return claimed

    async def _candidates(
        self, index_pk: str, bound: str, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
        """(sort key, job id) from the ``claim`` index, oldest first, and where to read on."""
        request: dict[str, Any] = {
            "IndexName": "claim",
            "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk < :bound",
            "ExpressionAttributeValues": {":pk": s(index_pk), ":bound": s(bound)},
            "Limit": limit,
        }
        if start is not None:
            request["ExclusiveStartKey"] = start
        response = await self._table.call("query", **request)
        found = []
        for item in response.get("Items", []):
            sort_key = str(item["gsi1sk"]["S"])
            found.append((sort_key, sort_key.rsplit("#", 1)[-1]))
        last: dict[str, Any] | None = response.get("LastEvaluatedKey")
        return found, last

    async def _claim_one(self, job_id: str, now: float, lease_until: float) -> Job | None:
        table = self._table
        try:
            response = await table.call(
                "update_item",
                Key=_key(job_id),
                UpdateExpression=(
                    "SET #state = :running, attempts = attempts + :one, lease_until = :until,"
                    " #owner = :me, updated_at = :now, gsi1pk = :lease, gsi1sk = :lease_sk,"
                    " gsi2pk = :state_running"
                ),
                ConditionExpression=(
                    "(#state IN (:pending, :failed) AND next_attempt_at <= :now)"
                    " OR (#state = :running AND lease_until <= :now)"
                ),
                ExpressionAttributeNames={"#state": "state", "#owner": "owner"},
                ExpressionAttributeValues={
                    ":running": s("running"),
                    ":pending": s("pending"),
                    ":failed": s("failed"),
                    ":one": num(1),
                    ":until": num(lease_until),
                    ":me": s(table.owner),
                    ":now": num(now),
                    ":lease": s(_LEASE),
                    ":lease_sk": s(f"{k.t(lease_until)}#{job_id}"),
                    ":state_running": s("STATE#running"),
                },
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed:
            return None  # another worker took it, or the index was behind
        return _job(response["Attributes"])

    # ------------------------------------------------------------------ complete

    async def complete(self, job: Job) -> bool:
        if job.state != "running":
            job = msgspec.structs.replace(job, lease_until=None)
        now_changed = job.changed and job.state == "succeeded"
        update = _update(job, changed_at=job.updated_at if now_changed else None)
        fence = {
            "ConditionExpression": "#state = :was_running AND attempts = :attempts",
        }
        values = {
            **update["ExpressionAttributeValues"],
            ":was_running": s("running"),
            ":attempts": num(job.attempts),
        }
        request = {**update, **fence, "ExpressionAttributeValues": values}
        try:
            if now_changed:
                restore = {
                    "pk": s(k.target_key(job.target_key)),
                    "sk": s(f"RESTORE#{k.t(job.updated_at)}#{job.id}"),
                    "job_id": s(job.id),
                    "target_key": s(job.target_key),
                    "changed_at": num(job.updated_at),
                    "expires_at": num(int(job.updated_at + RESTORE_TTL_SECS)),
                }
                await self._table.call(
                    "transact_write_items",
                    TransactItems=[
                        {"Update": {"TableName": self._table.name, **request}},
                        {"Put": {"TableName": self._table.name, "Item": restore}},
                    ],
                )
            else:
                await self._table.call("update_item", **request)
        except ConditionFailed:
            return False
        return True

    # ------------------------------------------------------------------ reads

    async def get(self, job_id: str) -> Job | None:
        item = await self._get_item(job_id)
        return None if item is None else _job(item)

    async def _get_item(self, job_id: str) -> Item | None:
        response = await self._table.call("get_item", Key=_key(job_id), ConsistentRead=True)
        item: Item | None = response.get("Item")
        return item

    async def list_jobs(
        self, *, states: Sequence[JobState] | None = None, limit: int = 100
    ) -> list[Job]:
        wanted = list(dict.fromkeys(states or JOB_STATES))
        if limit <= 0:
            return []
        per_state = await self._table.gather(
            [self._by_state(state, limit=limit) for state in wanted]
        )
        candidates = sorted(
            (sort_key for found in per_state for sort_key in found),
            key=lambda pair: (-pair[0], pair[1]),
        )
        jobs = await self._table.gather([self.get(job_id) for _, job_id in candidates[:limit]])
        # A job may have changed state since the index was read: keep those still wanted.
        kept = [job for job in jobs if job is not None and job.state in wanted]
        kept.sort(key=lambda job: (-job.created_at, job.id))
        return kept

    async def _by_state(self, state: str, *, limit: int) -> list[tuple[float, str]]:
        items = await self._table.query_all(
            limit_items=limit,
            IndexName="by_state",
            KeyConditionExpression="gsi2pk = :pk",
            ExpressionAttributeValues={":pk": s(f"STATE#{state}")},
            ScanIndexForward=False,
            Limit=limit,
        )
        found = []
        for item in items:
            created, job_id = str(item["gsi2sk"]["S"]).split("#", 1)
            found.append((float(created), job_id))
        return found

    async def counts(self) -> dict[tuple[str, str], int]:
        per_state = await self._table.gather([self._count(state) for state in QUEUED_JOB_STATES])
        counts: dict[tuple[str, str], int] = {}
        for state, by_action in zip(QUEUED_JOB_STATES, per_state, strict=True):
            for action, count in by_action.items():
                counts[(action, state)] = count
        return counts

    async def _count(self, state: str) -> dict[str, int]:
        items = await self._table.query_all(
            IndexName="by_state",
            KeyConditionExpression="gsi2pk = :pk",
            ExpressionAttributeValues={":pk": s(f"STATE#{state}")},
            ProjectionExpression="#action",
            ExpressionAttributeNames={"#action": "action"},
        )
        counts: dict[str, int] = {}
        for item in items:
            action = str(item.get("action", {}).get("S", "?"))
            counts[action] = counts.get(action, 0) + 1
        return counts

    async def oldest_due_age(self, now: float) -> float | None:
        response = await self._table.call(
            "query",
            IndexName="claim",
            KeyConditionExpression="gsi1pk = :pk AND gsi1sk < :bound",
            ExpressionAttributeValues={
                ":pk": s(_DUE),
                ":bound": s(k.t(now) + k.ABOVE_SEP),
            },
            Limit=1,
        )
        items = response.get("Items", [])
        if not items:
            return None
        oldest = float(str(items[0]["gsi1sk"]["S"]).split("#", 1)[0])
        return max(0.0, now - oldest)

    async def restores_since(self, target_key: str, since: float) -> int:
        items = await self._table.query_all(
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": s(k.target_key(target_key)),
                ":lo": s(f"RESTORE#{k.t(since)}"),
                ":hi": s("RESTORE" + k.ABOVE_SEP),
            },
            ConsistentRead=True,
            ProjectionExpression="target_key",
        )
        return sum(1 for item in items if item.get("target_key", {}).get("S") == target_key)

    # ------------------------------------------------------------------ operators

    async def approve(
        self, job_id: str, *, now: float, by: str = "operator", plan_sha256: str | None = None
    ) -> Job:
        change, allowed = change_for("approve", now=now, by=by, plan_sha256=plan_sha256)
        return await self._transition(job_id, "approve", allowed, change)

    async def retry(self, job_id: str, *, now: float, by: str = "operator") -> Job:
        change, allowed = change_for("retry", now=now, by=by)
        return await self._transition(job_id, "retry", allowed, change)

    async def cancel(self, job_id: str, *, now: float, by: str = "operator") -> Job:
        change, allowed = change_for("cancel", now=now, by=by)
        return await self._transition(job_id, "cancel", allowed, change)

    async def _transition(
        self,
        job_id: str,
        operation: str,
        allowed: Sequence[str],
        change: Callable[[Job], Job],
    ) -> Job:
        for _ in range(_TRANSITION_TRIES):
            item = await self._get_item(job_id)
            if item is None:
                raise JobNotFoundError(job_id)
            job = _job(item)
            if job.state not in allowed:
                raise JobConflictError(job_id, operation, job.state, allowed)
            changed = change(job)
            update = _update(changed, changed_at=None)
            values = {
                **update["ExpressionAttributeValues"],
                ":seen_state": s(job.state),
                ":seen_updated": item["updated_at"],
            }
            try:
                await self._table.call(
                    "update_item",
                    **{
                        **update,
                        "ConditionExpression": (
                            "#state = :seen_state AND updated_at = :seen_updated"
                        ),
                        "ExpressionAttributeValues": values,
                    },
                )
            except ConditionFailed:
                continue  # changed under us (a worker, another operator): decide again
            return changed
        raise StateError(f"job {job_id}: changed {_TRANSITION_TRIES} times while {operation}")

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------------- items


def _key(job_id: str) -> dict[str, Any]:
    return {"pk": s(k.job_key(job_id)), "sk": s(_SK)}


def _index_values(job: Job) -> dict[str, Any] | None:
    """gsi1pk/gsi1sk while claimable, None otherwise."""
    if job.state in ("pending", "failed"):
        return {
            "gsi1pk": s(_DUE),
            "gsi1sk": s(f"{k.t(job.next_attempt_at)}#{k.t(job.created_at)}#{job.id}"),
        }
    if job.state == "running" and job.lease_until is not None:
        return {"gsi1pk": s(_LEASE), "gsi1sk": s(f"{k.t(job.lease_until)}#{job.id}")}
    return None


def _item(job: Job) -> Item:
    item: Item = {
        **_key(job.id),
        "id": s(job.id),
        "action": s(job.action),
        "target_key": s(job.target_key),
        "state": s(job.state),
        "attempts": num(job.attempts),
        "next_attempt_at": num(job.next_attempt_at),
        "created_at": num(job.created_at),
        "updated_at": num(job.updated_at),
        "body": s(_encoder.encode(job).decode()),
        "gsi2pk": s(f"STATE#{job.state}"),
        "gsi2sk": s(f"{k.t(job.created_at)}#{job.id}"),
    }
    if job.account_id is not None:
        item["account_id"] = s(job.account_id)
    if job.lease_until is not None:
        item["lease_until"] = num(job.lease_until)
    item.update(_index_values(job) or {})
    return item


def _update(job: Job, *, changed_at: float | None) -> dict[str, Any]:
    """An UpdateItem request (no condition) storing ``job`` whole, index attributes included."""
    sets = [
        "#state = :state",
        "attempts = :attempts_now",
        "next_attempt_at = :next",
        "updated_at = :updated",
        "body = :body",
        "gsi2pk = :gsi2pk",
    ]
    removes: list[str] = []
    values: dict[str, Any] = {
        ":state": s(job.state),
        ":attempts_now": num(job.attempts),
        ":next": num(job.next_attempt_at),
        ":updated": num(job.updated_at),
        ":body": s(_encoder.encode(job).decode()),
        ":gsi2pk": s(f"STATE#{job.state}"),
    }
    if job.lease_until is not None:
        sets.append("lease_until = :lease_until")
        values[":lease_until"] = num(job.lease_until)
    else:
        removes.append("lease_until")
    index = _index_values(job)
    if index is not None:
        sets += ["gsi1pk = :gsi1pk", "gsi1sk = :gsi1sk"]
        values[":gsi1pk"] = index["gsi1pk"]
        values[":gsi1sk"] = index["gsi1sk"]
    else:
        removes += ["gsi1pk", "gsi1sk"]
    if changed_at is not None:
        sets.append("changed_at = :changed_at")
        values[":changed_at"] = num(changed_at)
    expression = "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    return {
        "Key": _key(job.id),
        "UpdateExpression": expression,
        "ExpressionAttributeNames": {"#state": "state"},
        "ExpressionAttributeValues": values,
    }


def _job(item: Item) -> Job:
    """The Job of an item: ``body`` with the authoritative attributes laid over it."""
    try:
        job = _decoder.decode(item["body"]["S"])
    except (KeyError, msgspec.DecodeError) as exc:
        raise StateError(f"job item {item.get('pk')}: unreadable job: {exc}") from exc
    return msgspec.structs.replace(
        job,
        state=str(item["state"]["S"]),
        attempts=int(n(item, "attempts")),
        next_attempt_at=n(item, "next_attempt_at"),
        lease_until=opt_n(item, "lease_until"),
        updated_at=n(item, "updated_at"),
    )
