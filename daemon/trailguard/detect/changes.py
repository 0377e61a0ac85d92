"""Policy changes: did a Put*Policy, a new default version or a new boundary weaken a policy?
(issue 16; pure: no I/O, no asyncio).

A *change* is a successful ``Put{User,Role,Group}Policy``, ``CreatePolicyVersion`` with
setAsDefault, ``SetDefaultPolicyVersion`` or ``Put{User,Role}PermissionsBoundary``.  The decode
side (:class:`~trailguard.detect.process.Detector`) turns each into a :class:`ChangeCandidate`:
its policy fact, its detection already built (actor, target, digest) and what the change rules
decided for each verdict (severity, suppression).  Whether it weakened anything depends on the
previous document, which only the policy history knows; the ingest side
(``ingest/changes.py``) looks the previous document up -- :class:`Baseline`, what the history
held just before the change in its own order (eventTime, then eventID) -- and :func:`judge`
compares the two with the policy engine (:func:`trailguard.policy.compare`):

* inline policy: the previous put of the same name on the same principal (a delete in between
  does not hide it: deleting a guardrail and putting back a weaker one is one rewrite);
* managed policy: the previous default version's document; the new one is the event's document
  (CreatePolicyVersion) or the document history knows for the version made default
  (SetDefaultPolicyVersion: the rollback to an older, more permissive version);
* permissions boundary: the previous boundary's document (its managed policy's default version
  then) against the new boundary's; the same boundary again is no change.

The result (:class:`Judgement`): ``weakened`` and ``possibly_weakened`` make a detection (the
change rule's, with a ``change`` object), ``not_weakened`` none, and with no previous document
to compare with, ``baseline_unknown``: no detection, only counted.  A document the engine cannot
read (over its limits, not IAM's grammar) and a change whose own record carries no readable
document are ``possibly_weakened``: never a silent pass.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

import msgspec

from trailguard.detect.detection import Detection, PolicyChange
from trailguard.detect.policy_facts import PolicyFact, is_snapshot_event_id
from trailguard.detect.rules import Match
from trailguard.detect.times import event_time_key
from trailguard.policy import Limits, Verdict, Witness, compare
from trailguard.vocabulary import ChangeCount, ChangeKind, ChangeVerdict

__all__ = [
    "Baseline",
    "ChangeCandidate",
    "Judgement",
    "change_kind",
    "document_sha256",
    "judge",
    "not_compared",
    "position",
]

_INLINE_PUTS: Final = frozenset({"PutUserPolicy", "PutRolePolicy", "PutGroupPolicy"})
# What a detection, a log line or an alert carries of a verdict is bounded: the engine's reason
# and its list of opaque constructs grow with the (attacker-chosen) documents -- 8,192 patterns
# of 2,048 characters would make a 16 MB line.  The witness's action and resource stay whole
# (each is at most a pattern long); its context keeps its first keys.
MAX_REASON_CHARS: Final = 1024
MAX_LISTED: Final = 16  # unmodelled constructs, statement labels, context keys
MAX_ITEM_CHARS: Final = 256
_BOUNDARY_PUTS: Final = frozenset({"PutUserPermissionsBoundary", "PutRolePermissionsBoundary"})


def change_kind(fact: PolicyFact) -> ChangeKind | None:
    """What a fact changes, when it is a change to compare; None for anything else (a new
    policy, a version not made default, a boundary set when a principal is created, removals)."""
    if fact.op != "put":
        return None
    if fact.kind == "inline_policy" and fact.event_name in _INLINE_PUTS:
        return "inline"
    if fact.kind == "policy_version" and fact.set_as_default is True:
        return "managed"
    if fact.kind == "default_version":
        return "managed"
    if fact.kind == "boundary" and fact.event_name in _BOUNDARY_PUTS:
        return "boundary"
    return None


class ChangeCandidate(msgspec.Struct, frozen=True, kw_only=True):
    """A change found in a record, waiting for its comparison.

    ``detection`` is the change's detection built from its record, with the rule fields of
    whichever match exists; ``weakened`` / ``possibly_weakened`` are what the change rules
    decided for that verdict (None: no enabled rule wants it).
    """

    kind: ChangeKind
    fact: PolicyFact
    detection: Detection
    weakened: Match | None = None
    possibly_weakened: Match | None = None


def position(candidate: ChangeCandidate) -> tuple[str, str]:
    """The change's place in the history's order: (eventTime key, eventID)."""
    fact = candidate.fact
    return event_time_key(fact.event_time) or fact.event_time, fact.event_id


class Baseline(msgspec.Struct, frozen=True, kw_only=True):
    """What the history held just before a change: the document it replaced and the new one.

    ``previous`` is the fact that recorded the previous document (inline: the previous put;
    managed: the creation of the previous default version; boundary: the event that set the
    previous boundary).  ``new_source`` is where the new document came from when the change's
    own record carries none.  ``unchanged``: the change put back the same version or boundary
    (no comparison needed).  ``missing`` says, for the log, what the history lacks.
    """

    previous: PolicyFact | None = None
    previous_document: str | None = None
    #: boundary: the fact that recorded the previous boundary policy's document
    previous_document_source: PolicyFact | None = None
    previous_version_id: str | None = None
    previous_policy_arn: str | None = None
    new_document: str | None = None
    new_source: PolicyFact | None = None
    new_version_id: str | None = None
    unchanged: bool = False
    missing: str | None = None


class Judgement(msgspec.Struct, frozen=True, kw_only=True):
    """How a change was judged: what to count, the engine's verdict (when it ran), the
    detection to report (None for ``not_weakened``, ``baseline_unknown``, or a verdict no
    enabled rule wants) and a reason for the log."""

    count: ChangeCount
    reason: str
    verdict: Verdict | None = None
    detection: Detection | None = None


def document_sha256(text: str) -> str:
    """``sha256:<hex>`` of a document's text (UTF-8), as the change object names documents."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def judge(
    candidate: ChangeCandidate, baseline: Baseline, *, limits: Limits | None = None
) -> Judgement:
    """Compare the change with its baseline; never raises (the engine never does)."""
    if baseline.unchanged:
        return Judgement(count="not_weakened", reason="the same version or boundary again")
    if baseline.previous is None or baseline.previous_document is None:
        return Judgement(
            count="baseline_unknown",
            reason=baseline.missing or "no previous document recorded",
        )
    new_document = baseline.new_document
    if new_document is None:
        if candidate.fact.kind in ("inline_policy", "policy_version"):
            # The change's own record carries no readable document (not JSON-object text):
            # it changed the policy to something trailguard cannot see.
            unseen = Verdict(
                verdict="possibly_weakened",
                kind="identity",
                reason="the change's own record carries no readable policy document",
                document="new",
            )
            return _report(candidate, baseline, unseen, "possibly_weakened")
        return Judgement(
            count="baseline_unknown",
            reason=baseline.missing or "the new document is not recorded",
        )
    verdict = compare(
        baseline.previous_document,
        new_document,
        kind="boundary" if candidate.kind == "boundary" else "identity",
        limits=limits,
    )
    if verdict.verdict == "not_weakened":
        return Judgement(count="not_weakened", reason=_clip(verdict.reason), verdict=verdict)
    if verdict.verdict == "weakened":
        return _report(candidate, baseline, verdict, "weakened")
    # possibly_weakened, or unknown_document: a document IAM accepted that trailguard cannot
    # read (over its limits, outside its grammar) is not proven harmless -- whichever it is,
    # a previous document planted to blind the comparison included.
    return _report(candidate, baseline, verdict, "possibly_weakened")


def not_compared(candidate: ChangeCandidate, baseline: Baseline, why: str) -> Judgement:
    """A change that was not compared (``why``: e.g. its batch's time budget was spent):
    ``possibly_weakened`` when there was something to compare, never a pass."""
    if baseline.unchanged or baseline.previous_document is None:
        return judge(candidate, baseline)  # nothing to compare: exact and cheap
    unseen = Verdict(
        verdict="possibly_weakened",
        kind="boundary" if candidate.kind == "boundary" else "identity",
        reason=f"not compared: {why}",
    )
    return _report(candidate, baseline, unseen, "possibly_weakened")


def _report(
    candidate: ChangeCandidate, baseline: Baseline, verdict: Verdict, name: ChangeVerdict
) -> Judgement:
    match = candidate.weakened if name == "weakened" else candidate.possibly_weakened
    reason = _clip(verdict.reason)
    if match is None:
        return Judgement(count=name, reason=reason, verdict=verdict)
    previous = baseline.previous
    assert previous is not None
    assert baseline.previous_document is not None
    new_source = baseline.new_source
    document_source = baseline.previous_document_source
    change = PolicyChange(
        kind=candidate.kind,
        verdict=name,
        reason=reason,
        witness=_bounded(verdict.witness),
        previous_event_id=previous.event_id,
        previous_event_time=previous.event_time,
        previous_source=_source(previous),
        previous_document_sha256=document_sha256(baseline.previous_document),
        new_document_sha256=(
            document_sha256(baseline.new_document) if baseline.new_document is not None else None
        ),
        previous_version_id=baseline.previous_version_id,
        new_version_id=baseline.new_version_id,
        previous_policy_arn=baseline.previous_policy_arn,
        previous_document_event_id=(
            document_source.event_id if document_source is not None else None
        ),
        new_document_event_id=new_source.event_id if new_source is not None else None,
        unmodelled=_listed(verdict.unmodelled),
    )
    detection = msgspec.structs.replace(
        candidate.detection,
        rule=match.rule,
        severity=match.severity,
        outcome=match.outcome,
        disposition=match.disposition,
        suppressed_by=match.suppressed_by,
        change=change,
    )
    return Judgement(count=name, reason=reason, verdict=verdict, detection=detection)


def _clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _listed(items: tuple[str, ...]) -> tuple[str, ...]:
    shown = tuple(_clip(item, MAX_ITEM_CHARS) for item in items[:MAX_LISTED])
    if len(items) > MAX_LISTED:
        shown += (f"... and {len(items) - MAX_LISTED} more",)
    return shown


def _bounded(witness: Witness | None) -> Witness | None:
    if witness is None:
        return None
    context = dict(list(witness.context.items())[:MAX_LISTED])
    return msgspec.structs.replace(
        witness,
        context=context,
        allowed_by=_listed(witness.allowed_by),
        previously_denied_by=_listed(witness.previously_denied_by),
    )


def _source(fact: PolicyFact) -> Literal["trail", "snapshot"]:
    return "snapshot" if is_snapshot_event_id(fact.event_id) else "trail"
