"""A replay's scratch policy history: :class:`ScratchHistoryStore`, in memory until it grows, then
in a temporary SQLite file.

``trailguard replay`` without a config file has no state to write to, yet judges the policy
changes in the files it reads against what those files said before (issue 16).  That history
lives only for the run, so it needs no durability, and every lookup is on the path of every file
with a policy write: in memory a lookup is a few list scans instead of a hop to the SQLite
store's thread.  Its documents are attacker-sized (up to CloudTrail's 100 KB field each), so it
is bounded: past ``max_bytes`` of facts it moves everything it holds, batch by batch as recorded,
into a :class:`~trailguard.state.policy_history_sqlite.SqliteHistoryStore` (``durable=False``)
in the scratch directory, and answers from there on.  The answers are the SQLite store's, fact
for fact: the same order (eventTime key, eventID, position in the batch), the same strict
``before``, the same positions within one second (``tests/integration/test_contract_history.py``
runs the protocol's tests on it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from trailguard.detect.policy_facts import PolicyFact, PrincipalKind, event_time_key
from trailguard.errors import StateError
from trailguard.state.policy_history import (
    FoldedPolicy,
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

if TYPE_CHECKING:
    import tempfile

__all__ = ["MAX_SCRATCH_BYTES", "ScratchHistoryStore"]

#: Facts held in memory at most (their documents and names, roughly); past it, a SQLite file.
MAX_SCRATCH_BYTES: Final = 64 << 20
_MANAGED_KINDS: Final = frozenset({"managed_policy", "policy_version", "default_version"})

_Entry = tuple[str, str, int, PolicyFact]  # (time key, eventID, seq, fact): the fold's order
_Principal = tuple[str, str | None, str | None]


def _size(fact: PolicyFact) -> int:
    return 256 + sum(
        len(value)
        for value in (fact.document, fact.policy_arn, fact.policy_name, fact.principal_name)
        if value is not None
    )


class ScratchHistoryStore(PolicyHistoryStore):
    """:class:`~trailguard.state.policy_history.PolicyHistoryStore` for one replay run."""

    def __init__(
        self,
        scratch: Path | None = None,
        *,
        max_bytes: int = MAX_SCRATCH_BYTES,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``scratch``: the directory for the SQLite file if it comes to that (None: a temporary
        directory made then, and removed by :meth:`close`)."""
        self._scratch = scratch
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._max_bytes = max_bytes
        self._clock = clock
        self._bytes = 0
        self._seen: set[tuple[str, str]] = set()
        self._batches: list[list[PolicyFact]] = []
        self._by_principal: dict[_Principal, list[_Entry]] = {}
        self._by_policy: dict[str, list[_Entry]] = {}
        self._spilled: PolicyHistoryStore | None = None
        self._closed = False

    @property
    def in_memory(self) -> bool:
        """False once the facts moved to the scratch SQLite file."""
        return self._spilled is None

    # ------------------------------------------------------------------ writing

    async def record(self, facts: Sequence[PolicyFact]) -> int:
        self._check_open()
        check_facts(facts)
        if self._spilled is not None:
            return await self._spilled.record(facts)
        keys = [event_time_key(fact.event_time) for fact in facts]
        for fact, key in zip(facts, keys, strict=True):  # all or nothing, as in SQLite
            if key is None:
                raise ValueError(
                    f"fact {fact.event_id!r}: eventTime {fact.event_time!r} is not a time"
                )
        added = 0
        for seq, (fact, key) in enumerate(zip(facts, keys, strict=True)):
            assert key is not None
            ident = (fact.event_id, identity(fact))
            if ident in self._seen:
                continue
            self._seen.add(ident)
            added += 1
            entry = (key, fact.event_id, seq, fact)
            if fact.principal_name is not None:
                principal = (fact.account_id, fact.principal_kind, fact.principal_name)
                _insert(self._by_principal.setdefault(principal, []), entry)
            if fact.policy_arn is not None:
                _insert(self._by_policy.setdefault(fact.policy_arn, []), entry)
            self._bytes += _size(fact)
        self._batches.append(list(facts))  # to move to SQLite as recorded, if it comes to that
        if self._bytes > self._max_bytes:
            await self._spill()
        return added

    async def _spill(self) -> None:
        from trailguard.state.policy_history_sqlite import SqliteHistoryStore

        directory = self._scratch
        if directory is None:
            import tempfile  # only a replay whose history grows pays for it

            self._tempdir = tempfile.TemporaryDirectory(prefix="trailguard-replay-")
            directory = Path(self._tempdir.name)
        store = await SqliteHistoryStore.open(
            directory / "history.sqlite3", clock=self._clock, durable=False
        )
        for batch in self._batches:
            await store.record(batch)
        self._spilled = store
        self._batches.clear()
        self._by_principal.clear()
        self._by_policy.clear()
        self._seen.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise StateError("scratch policy history: closed")

    async def close(self) -> None:
        self._closed = True
        if self._spilled is not None:
            await self._spilled.close()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    # ------------------------------------------------------------------ reading

    def _principal(
        self, account_id: str, principal_kind: PrincipalKind, principal_name: str
    ) -> list[_Entry]:
        return self._by_principal.get((account_id, principal_kind, principal_name), [])

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
        self._check_open()
        if self._spilled is not None:
            return await self._spilled.inline_policy(
                account_id,
                principal_kind,
                principal_name,
                policy_name,
                before=before,
                before_event_id=before_event_id,
            )
        return _last(
            fact
            for fact in _upto(
                self._principal(account_id, principal_kind, principal_name), before, before_event_id
            )
            if fact.kind == "inline_policy" and fact.policy_name == policy_name and fact.op == "put"
        )

    async def managed_policy(
        self, policy_arn: str, *, before: str | None, before_event_id: str | None = None
    ) -> ManagedPolicyState | None:
        self._check_open()
        if self._spilled is not None:
            return await self._spilled.managed_policy(
                policy_arn, before=before, before_event_id=before_event_id
            )
        folded = self._fold(policy_arn, before, before_event_id)
        return folded.state() if folded is not None else None

    async def policy_version(
        self,
        policy_arn: str,
        version_id: str,
        *,
        before: str | None = None,
        before_event_id: str | None = None,
    ) -> PolicyVersionState | None:
        self._check_open()
        if self._spilled is not None:
            return await self._spilled.policy_version(
                policy_arn, version_id, before=before, before_event_id=before_event_id
            )
        return version_state(self._fold(policy_arn, before, before_event_id), version_id)

    def _fold(
        self, policy_arn: str, before: str | None, before_event_id: str | None
    ) -> FoldedPolicy | None:
        facts = [
            fact
            for fact in _upto(self._by_policy.get(policy_arn, []), before, before_event_id)
            if fact.kind in _MANAGED_KINDS
        ]
        return fold_managed(policy_arn, facts)

    async def attachments(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[tuple[PrincipalKind, str]]:
        facts = await self.attachment_facts(policy_arn, before=before, account_id=account_id)
        return attached_principals(facts)

    async def attachment_facts(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[PolicyFact]:
        self._check_open()
        if self._spilled is not None:
            return await self._spilled.attachment_facts(
                policy_arn, before=before, account_id=account_id
            )
        account = attachment_account(policy_arn, account_id)
        return [
            fact
            for fact in _upto(self._by_policy.get(policy_arn, []), before, None)
            if fact.kind == "attachment" and fact.account_id == account
        ]

    async def attached_policies(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> list[str]:
        self._check_open()
        if self._spilled is not None:
            return await self._spilled.attached_policies(
                account_id, principal_kind, principal_name, before=before
            )
        return attached_arns(
            fact
            for fact in _upto(
                self._principal(account_id, principal_kind, principal_name), before, None
            )
            if fact.kind == "attachment"
        )

    async def boundary_fact(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> PolicyFact | None:
        self._check_open()
        if self._spilled is not None:
            return await self._spilled.boundary_fact(
                account_id, principal_kind, principal_name, before=before
            )
        last = _last(
            fact
            for fact in _upto(
                self._principal(account_id, principal_kind, principal_name), before, None
            )
            if fact.kind == "boundary"
        )
        return last if last is not None and last.op == "put" else None

    async def boundary_put(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
        before_event_id: str | None = None,
    ) -> PolicyFact | None:
        self._check_open()
        if self._spilled is not None:
            return await self._spilled.boundary_put(
                account_id,
                principal_kind,
                principal_name,
                before=before,
                before_event_id=before_event_id,
            )
        return _last(
            fact
            for fact in _upto(
                self._principal(account_id, principal_kind, principal_name), before, before_event_id
            )
            if fact.kind == "boundary" and fact.op == "put"
        )


def _insert(entries: list[_Entry], entry: _Entry) -> None:
    """Keep ``entries`` in the fold's order; a replay mostly appends (files in time order)."""
    position = len(entries)
    key = entry[:3]
    while position and entries[position - 1][:3] > key:
        position -= 1
    entries.insert(position, entry)


def _upto(
    entries: Sequence[_Entry], before: str | None, before_event_id: str | None
) -> Iterable[PolicyFact]:
    """The facts strictly before the position, in the fold's order."""
    key = before_key(before)
    for time_key, event_id, _, fact in entries:
        if time_key < key or (
            before_event_id is not None and time_key == key and event_id < before_event_id
        ):
            yield fact
        elif time_key > key:
            return


def _last(facts: Iterable[PolicyFact]) -> PolicyFact | None:
    last = None
    for last in facts:  # noqa: B007 - the last one is the answer
        pass
    return last
