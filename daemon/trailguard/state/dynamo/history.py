"""The policy history on the shared table: :class:`DynamoHistoryStore` (docs/DYNAMODB.md
section 3).

A fact is stored under the principal it concerns, under the policy it concerns, or both (an
attachment), each copy a whole item, so every read is one strongly consistent Query on one
partition.  Facts are folded exactly as the SQLite store folds them (the shared functions of
``state/policy_history.py``), in (time_key, eventID, seq) order, strictly before ``before`` --
or, with ``before_event_id``, before that position: the second of ``before`` is read whole and
its facts kept when their (raw) eventID sorts lower, as SQLite compares them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from trailguard.detect.policy_facts import PolicyFact, PrincipalKind, event_time_key
from trailguard.state.dynamo import keys as k
from trailguard.state.dynamo.table import ConditionFailed, DynamoTable, Item, n, num, s
from trailguard.state.policy_history import (
    ManagedPolicyState,
    PolicyHistoryStore,
    PolicyVersionState,
    attached_arns,
    attached_principals,
    attachment_account,
    before_key,
    check_facts,
    fold_managed,
    identity,
    version_state,
)

__all__ = ["DynamoHistoryStore"]

_SCHEMA: Final = 2  # the item shape (PolicyFact with event_name), as the SQLite schema 2
_STR_FIELDS: Final = (
    "kind",
    "op",
    "account_id",
    "principal_kind",
    "principal_name",
    "policy_name",
    "policy_arn",
    "version_id",
    "document",
    "path",
    "event_id",
    "event_time",
    "event_name",
)


class DynamoHistoryStore(PolicyHistoryStore):
    """:class:`~trailguard.state.policy_history.PolicyHistoryStore` on the shared table."""

    def __init__(self, table: DynamoTable) -> None:
        self._table = table

    # ------------------------------------------------------------------ writing

    async def record(self, facts: Sequence[PolicyFact]) -> int:
        checked = list(check_facts(facts))
        if not checked:
            return 0
        now = self._table.clock()
        items = [_items(fact, seq, now) for seq, fact in enumerate(checked)]
        added = await self._table.gather([self._put_fact(copies) for copies in items])
        return sum(added)

    async def _put_fact(self, copies: list[Item]) -> int:
        """Put each copy if absent; 1 when the first copy was new (the fact is new)."""
        new = 0
        for index, item in enumerate(copies):
            try:
                await self._table.call(
                    "put_item", Item=item, ConditionExpression="attribute_not_exists(pk)"
                )
            except ConditionFailed:
                continue  # the first content of (eventID, fact) stays
            if index == 0:
                new = 1
        return new

    # ------------------------------------------------------------------ the protocol

    async def inline_policy(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        policy_name: str,
        *,
        before: str | None,
        before_event_id: str | None = None,
    ) -> PolicyFact | None:
        prefix = f"INLINE#{k.part(policy_name)}#put#"
        return await self._latest(
            _principal(account_id, principal_kind, principal_name), prefix, before, before_event_id
        )

    async def managed_policy(
        self, policy_arn: str, *, before: str | None, before_event_id: str | None = None
    ) -> ManagedPolicyState | None:
        facts = await self._managed_facts(policy_arn, before, before_event_id)
        folded = fold_managed(policy_arn, facts)
        return folded.state() if folded is not None else None

    async def policy_version(
        self,
        policy_arn: str,
        version_id: str,
        *,
        before: str | None = None,
        before_event_id: str | None = None,
    ) -> PolicyVersionState | None:
        facts = await self._managed_facts(policy_arn, before, before_event_id)
        return version_state(fold_managed(policy_arn, facts), version_id)

    async def attachments(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[tuple[PrincipalKind, str]]:
        facts = await self.attachment_facts(policy_arn, before=before, account_id=account_id)
        return attached_principals(facts)

    async def attachment_facts(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[PolicyFact]:
        account = attachment_account(policy_arn, account_id)
        facts = await self._range(_policy(policy_arn), f"ATTACH#{k.part(account)}#", before)
        return [f for f in facts if f.kind == "attachment" and f.account_id == account]

    async def attached_policies(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> list[str]:
        facts = await self._range(
            _principal(account_id, principal_kind, principal_name), "ATTACH#", before
        )
        return attached_arns(facts)

    async def boundary_fact(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> PolicyFact | None:
        fact = await self._latest(
            _principal(account_id, principal_kind, principal_name), "BOUNDARY#", before
        )
        return fact if fact is not None and fact.op == "put" else None

    async def boundary_put(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
        before_event_id: str | None = None,
    ) -> PolicyFact | None:
        return await self._latest(
            _principal(account_id, principal_kind, principal_name),
            "BOUNDARY#",
            before,
            before_event_id,
            accept=lambda item: item["op"]["S"] == "put",
        )

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------------ reading

    async def _managed_facts(
        self, policy_arn: str, before: str | None, before_event_id: str | None = None
    ) -> list[PolicyFact]:
        facts = await self._range(_policy(policy_arn), "MANAGED#", before, before_event_id)
        return [f for f in facts if f.policy_arn == policy_arn]

    async def _range(
        self, pk: str, prefix: str, before: str | None, before_event_id: str | None = None
    ) -> list[PolicyFact]:
        """Every fact of partition ``pk`` whose sort key is ``prefix<time_key>...`` with
        ``time_key`` strictly before ``before`` (or before the position ``before_event_id``
        makes of it), in (time_key, eventID, seq) order."""
        before_position = _position(before, before_event_id)
        items = await self._table.query_all(
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": s(pk),
                ":lo": s(prefix),
                ":hi": s(prefix + _upper(before, before_event_id)),
            },
            ConsistentRead=True,
        )
        items = [item for item in items if before_position(item)]
        items.sort(key=_order)
        return [_fact(item) for item in items]

    async def _latest(
        self,
        pk: str,
        prefix: str,
        before: str | None,
        before_event_id: str | None = None,
        *,
        accept: Callable[[Item], bool] | None = None,
    ) -> PolicyFact | None:
        """The greatest (time_key, eventID, seq) fact of the range :meth:`_range` reads (of
        those ``accept`` takes): read newest first while the time_key is the first item's
        (eventIDs order differently once escaped, so the greatest is chosen among those)."""
        before_position = _position(before, before_event_id)
        request: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": s(pk),
                ":lo": s(prefix),
                ":hi": s(prefix + _upper(before, before_event_id)),
            },
            "ConsistentRead": True,
            "ScanIndexForward": False,
            "Limit": 10,
        }
        same: list[Item] = []
        while True:
            response = await self._table.call("query", **request)
            for item in response.get("Items", []):
                if not before_position(item) or (accept is not None and not accept(item)):
                    continue
                if same and item["time_key"]["S"] != same[0]["time_key"]["S"]:
                    return _fact(max(same, key=_order))
                same.append(item)
            last = response.get("LastEvaluatedKey")
            if not last:
                return _fact(max(same, key=_order)) if same else None
            request["ExclusiveStartKey"] = last


# ---------------------------------------------------------------------- items


def _principal(account_id: str, kind: str, name: str) -> str:
    return f"PRINCIPAL#{k.part(account_id)}#{k.part(kind)}#{k.part(name)}"


def _policy(policy_arn: str) -> str:
    return f"POLICY#{k.part(policy_arn)}"


def _upper(before: str | None, before_event_id: str | None) -> str:
    """The sort-key bound after ``prefix``: below ``before``'s time key, or -- with a position
    within its second -- past every item of that second (tails are ``<time_key>#...``)."""
    key = before_key(before)
    return key if before_event_id is None else key + "$"  # "$" sorts right after "#"


def _position(before: str | None, before_event_id: str | None) -> Callable[[Item], bool]:
    """Whether an item lies before the position: an earlier time key, or the same and a lower
    (raw) eventID."""
    key = before_key(before)

    def before_it(item: Item) -> bool:
        time_key = str(item["time_key"]["S"])
        if time_key != key:
            return time_key < key
        return before_event_id is not None and str(item["event_id"]["S"]) < before_event_id

    return before_it


def _order(item: Item) -> tuple[str, str, float]:
    return (str(item["time_key"]["S"]), str(item["event_id"]["S"]), n(item, "seq"))


def _items(fact: PolicyFact, seq: int, now: float) -> list[Item]:
    """The fact's item(s): under its principal, its policy, or both (docs/DYNAMODB.md)."""
    time_key = event_time_key(fact.event_time)
    if time_key is None:
        raise ValueError(f"fact {fact.event_id!r}: eventTime {fact.event_time!r} is not a time")
    fid = k.fact_id(identity(fact))
    tail = f"{time_key}#{k.part(fact.event_id)}#{fid}"
    principal = (
        _principal(fact.account_id, fact.principal_kind, fact.principal_name)
        if fact.principal_kind is not None and fact.principal_name is not None
        else None
    )
    policy = _policy(fact.policy_arn) if fact.policy_arn is not None else None
    keys: list[tuple[str, str]] = []
    if fact.kind == "inline_policy" and principal is not None and fact.policy_name is not None:
        keys.append((principal, f"INLINE#{k.part(fact.policy_name)}#{fact.op}#{tail}"))
    elif fact.kind == "attachment":
        if principal is not None:
            keys.append((principal, f"ATTACH#{tail}"))
        if policy is not None:
            keys.append((policy, f"ATTACH#{k.part(fact.account_id)}#{tail}"))
    elif fact.kind == "boundary" and principal is not None:
        keys.append((principal, f"BOUNDARY#{tail}"))
    elif fact.kind in ("managed_policy", "policy_version", "default_version") and policy:
        keys.append((policy, f"MANAGED#{tail}"))
    if not keys:  # no partition any query reads: kept (and counted) as SQLite keeps it
        keys.append((f"ORPHAN#{k.part(fact.event_id)}", f"FACT#{fid}"))
    body: Item = {
        "time_key": s(time_key),
        "seq": num(seq),
        "recorded_at": num(now),
        "schema": num(_SCHEMA),
    }
    for name in _STR_FIELDS:
        value = getattr(fact, name)
        if value is not None:
            body[name] = s(value)
    if fact.set_as_default is not None:
        body["set_as_default"] = {"BOOL": fact.set_as_default}
    return [{"pk": s(pk), "sk": s(sk), **body} for pk, sk in keys]


def _fact(item: Item) -> PolicyFact:
    values: dict[str, Any] = {
        name: (str(item[name]["S"]) if name in item else None) for name in _STR_FIELDS
    }
    flag = item.get("set_as_default")
    values["set_as_default"] = None if flag is None else bool(flag["BOOL"])
    return PolicyFact(**values)
