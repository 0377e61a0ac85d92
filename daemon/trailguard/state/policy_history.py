"""The policy history: every policy document and attachment the trail (or a snapshot) showed --
the interface, the states it answers with, and the fold both of its stores share.

:class:`PolicyHistoryStore` is the interface remediation reads ("what was the document of this
inline policy just before it was deleted?"); ``policy_history_sqlite.py`` implements it on one
SQLite file, ``dynamo/history.py`` on the shared DynamoDB table.

Facts (:class:`~trailguard.detect.policy_facts.PolicyFact`) are kept as they came, keyed by
(eventID, fact identity): recording the same event again changes nothing.  Every query folds the
facts in **eventTime order** (files arrive out of order; ties broken by eventID), considering only
facts whose eventTime is strictly before ``before`` (None: all of them).  A snapshot's facts take
part like any other, with eventIDs ``snapshot:<time>:<account>:<n>`` and the snapshot's time.

Schema versioning does not use ``PRAGMA user_version`` (the dedup store owns it): the table
``meta (component, schema_version)`` holds one row per component, ``policy_history`` here, so
several components can live in one database file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import msgspec

from trailguard.detect.detection import policy_name_from_arn
from trailguard.detect.policy_facts import (
    PolicyFact,
    PrincipalKind,
    event_time_key,
    path_from_policy_arn,
)

__all__ = [
    "COMPONENT",
    "SCHEMA_VERSION",
    "FoldedPolicy",
    "ManagedPolicyState",
    "PolicyHistoryStore",
    "PolicyVersionState",
    "attached_arns",
    "attached_principals",
    "attachment_account",
    "before_key",
    "check_facts",
    "default_history_path",
    "fold_managed",
    "identity",
    "version_state",
]

COMPONENT: Final = "policy_history"
#: 2 added ``event_name`` (facts recorded by version 1 have none: confirmation cannot match them)
SCHEMA_VERSION: Final = 2
_END_OF_TIME: Final = "\uffff"  # sorts after every time key
_SEP: Final = "\x1f"  # joins the parts of a fact's identity


class ManagedPolicyState(msgspec.Struct, frozen=True, kw_only=True):
    """A customer managed policy as history knows it at some time.

    ``versions`` maps each version id known to exist then to its document (None when the
    document was not recorded, e.g. truncated by CloudTrail).  ``default_version_id`` is None
    when history does not know which version was the default.
    """

    policy_arn: str
    account_id: str
    policy_name: str | None
    path: str | None
    default_version_id: str | None
    default_document: str | None
    versions: dict[str, str | None]
    #: eventID and eventTime of the last fact folded into this state
    event_id: str
    event_time: str


class PolicyVersionState(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a managed policy at some time, and the fact that recorded its document."""

    policy_arn: str
    version_id: str
    document: str | None
    #: whether it was the default version then; None when history does not know
    is_default: bool | None
    #: the CreatePolicy / CreatePolicyVersion / snapshot fact that recorded the version
    fact: PolicyFact
    #: when it was the default: the fact that made it so (CreatePolicy, CreatePolicyVersion with
    #: setAsDefault, SetDefaultPolicyVersion, a snapshot); otherwise None
    default_fact: PolicyFact | None = None


class PolicyHistoryStore(Protocol):
    """Policy facts in eventTime order; every method may raise :class:`StateError`.

    ``before`` is an eventTime (``2026-11-01T12:00:00Z``): only facts strictly earlier count;
    None counts them all.  A ``before`` that is not a time raises ValueError.  With
    ``before_event_id`` as well, facts at that very eventTime whose eventID sorts lower count
    too: the position of one event in the order the history folds (eventTime, then eventID), so
    that a change can be compared with the fact just before it even within one second.
    """

    async def record(self, facts: Sequence[PolicyFact]) -> int:
        """Store ``facts``; durable when this returns.  Returns how many were new.

        Idempotent: a fact whose (eventID, identity) is already stored is ignored.
        """
        ...

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
        """The last put of this inline policy before ``before`` (its ``document`` may be None:
        the latest put is known but its document is not), or None if no put is known."""
        ...

    async def managed_policy(
        self, policy_arn: str, *, before: str | None, before_event_id: str | None = None
    ) -> ManagedPolicyState | None:
        """The managed policy as of ``before``; None if unknown or deleted by then."""
        ...

    async def policy_version(
        self,
        policy_arn: str,
        version_id: str,
        *,
        before: str | None = None,
        before_event_id: str | None = None,
    ) -> PolicyVersionState | None:
        """One version as of ``before``; None if not known to exist then."""
        ...

    async def attachments(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[tuple[PrincipalKind, str]]:
        """The (principal kind, name) pairs the policy was attached to as of ``before``.

        ``account_id`` defaults to the account in the ARN; an AWS managed policy
        (``arn:aws:iam::aws:policy/...``) is attached in many accounts, so it needs one.
        """
        ...

    async def attachment_facts(
        self, policy_arn: str, *, before: str | None, account_id: str | None = None
    ) -> list[PolicyFact]:
        """Every attach/detach of the policy before ``before``, in eventTime order.

        IAM refuses DeletePolicy while a policy is attached, so the entities to reattach after a
        deletion are those attached before the detaches that preceded it: this timeline shows
        them.
        """
        ...

    async def attached_policies(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> list[str]:
        """The managed policy ARNs attached to the principal as of ``before`` (sorted)."""
        ...

    async def boundary(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> str | None:
        """The permissions-boundary policy ARN set on the principal as of ``before``: that of
        :meth:`boundary_fact` (every store inherits this one)."""
        fact = await self.boundary_fact(account_id, principal_kind, principal_name, before=before)
        return None if fact is None else fact.policy_arn

    async def boundary_fact(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
    ) -> PolicyFact | None:
        """The fact that set the boundary :meth:`boundary` returns (Put*PermissionsBoundary,
        CreateUser/CreateRole or a snapshot); None when no boundary is set as of ``before``."""
        ...

    async def boundary_put(
        self,
        account_id: str,
        principal_kind: PrincipalKind,
        principal_name: str,
        *,
        before: str | None,
        before_event_id: str | None = None,
    ) -> PolicyFact | None:
        """The last fact that set a boundary on the principal before ``before``, even one
        removed since (as :meth:`inline_policy` ignores deletes): what a new boundary is
        compared with.  None when no boundary was ever seen set."""
        ...

    async def close(self) -> None:
        """Release the store; idempotent."""
        ...


def default_history_path(state_path: str | Path) -> Path:
    """Where the history lives when ``[history] path`` is not set: next to ``[state] path``.

    ``/var/lib/trailguard/state.sqlite3`` -> ``/var/lib/trailguard/state.history.sqlite3``.
    """
    path = Path(state_path)
    return path.with_name(f"{path.stem}.history{path.suffix}")


@dataclass
class FoldedPolicy:
    """A managed policy's state while facts are folded in."""

    policy_arn: str
    account_id: str
    policy_name: str | None
    path: str | None
    default: str | None = None
    default_source: PolicyFact | None = None  # the fact that made ``default`` the default
    versions: dict[str, str | None] = field(default_factory=dict)
    sources: dict[str, PolicyFact] = field(default_factory=dict)
    last: PolicyFact | None = None

    @classmethod
    def empty(cls, policy_arn: str, fact: PolicyFact) -> FoldedPolicy:
        return cls(
            policy_arn=policy_arn,
            account_id=fact.account_id,
            policy_name=fact.policy_name or policy_name_from_arn(policy_arn),
            path=fact.path or path_from_policy_arn(policy_arn),
            last=fact,
        )

    def add_version(self, fact: PolicyFact) -> None:
        self.last = fact
        if fact.version_id is not None:
            self.versions[fact.version_id] = fact.document
            self.sources[fact.version_id] = fact
        if fact.set_as_default:
            self.default = fact.version_id  # None: a new default whose id is not known
            self.default_source = fact

    def apply(self, fact: PolicyFact) -> None:
        if fact.kind == "policy_version" and fact.op == "put":
            self.add_version(fact)
            return
        self.last = fact
        if fact.kind == "policy_version":  # DeletePolicyVersion (IAM refuses the default one)
            if fact.version_id is not None:
                self.versions.pop(fact.version_id, None)
                self.sources.pop(fact.version_id, None)
                if self.default == fact.version_id:
                    self.default = None
                    self.default_source = None
        elif fact.kind == "default_version":
            self.default = fact.version_id
            self.default_source = fact

    def state(self) -> ManagedPolicyState:
        assert self.last is not None
        return ManagedPolicyState(
            policy_arn=self.policy_arn,
            account_id=self.account_id,
            policy_name=self.policy_name,
            path=self.path,
            default_version_id=self.default,
            default_document=self.versions.get(self.default) if self.default else None,
            versions=dict(self.versions),
            event_id=self.last.event_id,
            event_time=self.last.event_time,
        )


# ---------------------------------------------------------------------- folding, shared
# (with the DynamoDB store, state/dynamo/history.py: both fold the same facts the same way)


def fold_managed(policy_arn: str, facts: Iterable[PolicyFact]) -> FoldedPolicy | None:
    """A managed policy's state after ``facts`` (its managed_policy, policy_version and
    default_version facts in (time_key, eventID, seq) order); None if unknown or deleted."""
    state: FoldedPolicy | None = None
    for fact in facts:
        if fact.kind == "managed_policy":
            if fact.op == "delete":
                state = None
                continue
            state = FoldedPolicy.empty(policy_arn, fact)  # CreatePolicy or a snapshot: anew
            state.add_version(fact)
            continue
        if state is None:  # versions of a policy whose creation history did not see
            state = FoldedPolicy.empty(policy_arn, fact)
        state.apply(fact)
    return state


def version_state(folded: FoldedPolicy | None, version_id: str) -> PolicyVersionState | None:
    """One version of a folded managed policy, or None if not known to exist."""
    if folded is None or version_id not in folded.versions:
        return None
    return PolicyVersionState(
        policy_arn=folded.policy_arn,
        version_id=version_id,
        document=folded.versions[version_id],
        is_default=None if folded.default is None else folded.default == version_id,
        fact=folded.sources[version_id],
        default_fact=folded.default_source if folded.default == version_id else None,
    )


def attached_principals(facts: Iterable[PolicyFact]) -> list[tuple[PrincipalKind, str]]:
    """The principals a policy's attach/detach facts (in order) leave it attached to."""
    attached: dict[tuple[PrincipalKind, str], bool] = {}
    for fact in facts:
        if fact.principal_kind is None or fact.principal_name is None:
            continue
        attached[(fact.principal_kind, fact.principal_name)] = fact.op == "put"
    return sorted(key for key, on in attached.items() if on)


def attached_arns(facts: Iterable[PolicyFact]) -> list[str]:
    """The policies a principal's attach/detach facts (in order) leave attached to it."""
    attached: dict[str, bool] = {}
    for fact in facts:
        if fact.policy_arn is not None:
            attached[fact.policy_arn] = fact.op == "put"
    return sorted(arn for arn, on in attached.items() if on)


def attachment_account(policy_arn: str, account_id: str | None) -> str:
    """The account whose attachments of ``policy_arn`` are asked for: ``account_id``, else the
    ARN's (an AWS managed policy is attached in many accounts: it needs one)."""
    if account_id is not None:
        return account_id
    owner = policy_arn.split(":", 5)[4] if policy_arn.count(":") >= 5 else ""
    if owner == "aws":
        raise ValueError(
            f"{policy_arn} is an AWS managed policy, attached in many accounts: give account_id"
        )
    return owner


def before_key(before: str | None) -> str:
    """The time key facts must sort strictly below (``before`` None: after every fact)."""
    return _before_key(before)


def identity(fact: PolicyFact) -> str:
    """What makes two facts of one event the same fact (the document is not part of it)."""
    return _identity(fact)


def check_facts(facts: Sequence[PolicyFact]) -> Sequence[PolicyFact]:
    return _check_facts(facts)


# ---------------------------------------------------------------------- helpers


def _before_key(before: str | None) -> str:
    if before is None:
        return _END_OF_TIME
    key = event_time_key(before)
    if key is None:
        raise ValueError(f"before must be an eventTime such as 2026-11-01T12:00:00Z: {before!r}")
    return key


def _check_facts(facts: Sequence[PolicyFact]) -> Sequence[PolicyFact]:
    for fact in facts:
        if not isinstance(fact, PolicyFact):
            raise TypeError(f"facts must be PolicyFact, got {type(fact).__name__}")
    return facts


def _identity(fact: PolicyFact) -> str:
    """What makes two facts of one event the same fact (the document is not part of it)."""
    parts = (
        fact.kind,
        fact.op,
        fact.account_id,
        fact.principal_kind,
        fact.principal_name,
        fact.policy_name,
        fact.policy_arn,
        fact.version_id,
    )
    return _SEP.join(part or "" for part in parts)
