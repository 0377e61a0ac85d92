"""Judging policy changes against the policy history: the async half of detect/changes.py, used by
the daemon (ingest/messages.py) and by ``trailguard replay`` (ingest/replay.py) alike.

For each :class:`~trailguard.detect.changes.ChangeCandidate` of a message or file, in the
history's order (eventTime, then eventID): look up what the history held just before it
(:func:`baseline`), compare off the event loop (:func:`~trailguard.detect.changes.judge` in a
thread: the engine is pure Python and a hostile document may take its whole work limit).  The
facts of the batch are recorded in the history *before* this runs: each lookup is bounded by the
change's own position, so a Put and a second Put in the same file compare in order, and what
arrives later in the same batch cannot leak into an earlier change's baseline.  Each judgement is
reported as a :class:`~trailguard.observe.PolicyChangeJudged` event: the observers count it
(``trailguard_policy_changes_total``) and log it (``policy.change_judged``).

Every comparison is bounded by the engine's :class:`~trailguard.policy.Limits`; a batch by
``budget_secs`` of comparing: once spent, the rest of the batch is reported ``possibly_weakened``
("not compared") rather than passed in silence or left to hold the message.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from trailguard.detect.changes import (
    Baseline,
    ChangeCandidate,
    Judgement,
    judge,
    not_compared,
    position,
)
from trailguard.detect.detection import Detection
from trailguard.detect.policy_facts import PolicyFact
from trailguard.observe import Observer, PolicyChangeJudged
from trailguard.policy import Limits

if TYPE_CHECKING:
    from trailguard.state.policy_history import PolicyHistoryStore

__all__ = ["DEFAULT_BUDGET_SECS", "ChangeJudge", "Judged", "baseline"]

#: Seconds of comparing one message's (or file's) changes may take before the rest are reported
#: without comparison.  Honest files hold a handful of policy writes (milliseconds each).
DEFAULT_BUDGET_SECS: Final = 60.0


@dataclass(frozen=True, slots=True)
class Judged:
    """What one batch's changes came to: the detections to report, and the count by verdict."""

    detections: list[Detection]
    counts: Counter[str]


class ChangeJudge:
    """Judges changes against one history, reporting each as a
    :class:`~trailguard.observe.PolicyChangeJudged` event (metric, log, tally)."""

    def __init__(
        self,
        history: PolicyHistoryStore,
        observer: Observer,
        *,
        limits: Limits | None = None,
        budget_secs: float = DEFAULT_BUDGET_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._history = history
        self._observer = observer
        self._limits = limits
        self._budget = budget_secs
        self._clock = clock

    async def judge(self, candidates: Sequence[ChangeCandidate]) -> Judged:
        """Judge ``candidates`` (the history must already hold the batch's facts); raises
        StateError when the history fails."""
        detections: list[Detection] = []
        counts: Counter[str] = Counter()
        spent = 0.0
        for candidate in sorted(candidates, key=position):
            found = await baseline(self._history, candidate)
            started = self._clock()
            if spent >= self._budget:
                judgement = not_compared(
                    candidate, found, f"this batch's comparisons took over {self._budget:g} s"
                )
            elif needs_engine(found):
                judgement = await asyncio.to_thread(judge, candidate, found, limits=self._limits)
            else:  # nothing to compare: answered at once, no thread hop
                judgement = judge(candidate, found, limits=self._limits)
            took = max(0.0, self._clock() - started)
            spent += took
            counts[judgement.count] += 1
            self._observer.observe(_event(candidate, found, judgement, took))
            if judgement.detection is not None:
                detections.append(judgement.detection)
        return Judged(detections, counts)


def _event(
    candidate: ChangeCandidate, found: Baseline, judgement: Judgement, took: float
) -> PolicyChangeJudged:
    fact = candidate.fact
    return PolicyChangeJudged(
        kind=candidate.kind,
        verdict=judgement.count,
        reason=judgement.reason,
        reported=judgement.detection is not None,
        event_id=fact.event_id,
        event_name=fact.event_name,
        account_id=fact.account_id,
        target=candidate.detection.target.name,
        policy=fact.policy_arn or fact.policy_name,
        previous_event_id=found.previous.event_id if found.previous is not None else None,
        steps=judgement.verdict.steps if judgement.verdict is not None else None,
        duration_secs=took,
    )


def needs_engine(found: Baseline) -> bool:
    """Whether judging runs the policy engine (both documents known): only then is it worth a
    thread; the other answers (unchanged, baseline unknown, an unreadable new document) are
    immediate."""
    return (
        not found.unchanged
        and found.previous is not None
        and found.previous_document is not None
        and found.new_document is not None
    )


async def baseline(history: PolicyHistoryStore, candidate: ChangeCandidate) -> Baseline:
    """What ``history`` held just before the change: its previous document and the new one."""
    fact = candidate.fact
    if candidate.kind == "inline":
        return await _inline(history, fact)
    if candidate.kind == "managed":
        return await _managed(history, fact)
    return await _boundary(history, fact)


async def _inline(history: PolicyHistoryStore, fact: PolicyFact) -> Baseline:
    if fact.principal_kind is None or fact.principal_name is None or not fact.policy_name:
        return Baseline(missing="the change names no principal or policy")
    previous = await history.inline_policy(
        fact.account_id,
        fact.principal_kind,
        fact.principal_name,
        fact.policy_name,
        before=fact.event_time,
        before_event_id=fact.event_id,
    )
    if previous is None:
        return Baseline(missing="no earlier document of this inline policy is recorded")
    if previous.document is None:
        return Baseline(
            missing=f"the previous put (event {previous.event_id}) has no readable document"
        )
    return Baseline(
        previous=previous, previous_document=previous.document, new_document=fact.document
    )


async def _managed(history: PolicyHistoryStore, fact: PolicyFact) -> Baseline:
    arn = fact.policy_arn
    if arn is None:
        return Baseline(missing="the change names no policy")
    before, tie = fact.event_time, fact.event_id
    state = await history.managed_policy(arn, before=before, before_event_id=tie)
    if state is None or state.default_version_id is None:
        return Baseline(missing=f"no earlier default version of {arn} is recorded")
    previous_id = state.default_version_id
    if fact.kind == "default_version" and fact.version_id == previous_id:
        return Baseline(unchanged=True, previous_version_id=previous_id)
    previous = await history.policy_version(arn, previous_id, before=before, before_event_id=tie)
    if previous is None or previous.document is None:
        return Baseline(
            missing=f"the document of {arn} {previous_id} (the default before) is not recorded"
        )
    if fact.kind != "default_version":  # CreatePolicyVersion with setAsDefault
        return Baseline(
            previous=previous.fact,
            previous_document=previous.document,
            previous_version_id=previous_id,
            new_document=fact.document,
            new_version_id=fact.version_id,
        )
    new = (
        await history.policy_version(arn, fact.version_id, before=before, before_event_id=tie)
        if fact.version_id is not None
        else None
    )
    return Baseline(
        previous=previous.fact,
        previous_document=previous.document,
        previous_version_id=previous_id,
        new_document=new.document if new is not None else None,
        new_source=new.fact if new is not None and new.document is not None else None,
        new_version_id=fact.version_id,
        missing=None
        if new is not None and new.document is not None
        else f"the document of {arn} {fact.version_id} (made the default) is not recorded: "
        "`trailguard snapshot` records every version IAM holds",
    )


async def _boundary(history: PolicyHistoryStore, fact: PolicyFact) -> Baseline:
    new_arn = fact.policy_arn
    if fact.principal_kind is None or fact.principal_name is None or new_arn is None:
        return Baseline(missing="the change names no principal or boundary")
    before, tie = fact.event_time, fact.event_id
    previous = await history.boundary_put(
        fact.account_id,
        fact.principal_kind,
        fact.principal_name,
        before=before,
        before_event_id=tie,
    )
    if previous is None or previous.policy_arn is None:
        return Baseline(missing="no earlier boundary of this principal is recorded")
    if previous.policy_arn == new_arn:
        return Baseline(unchanged=True, previous_policy_arn=new_arn)
    old_document, old_source = await _default_document(history, previous.policy_arn, before, tie)
    if old_document is None:
        return Baseline(
            missing=f"the document of the previous boundary {previous.policy_arn} is not recorded"
        )
    new_document, new_source = await _default_document(history, new_arn, before, tie)
    return Baseline(
        previous=previous,
        previous_document=old_document,
        previous_document_source=old_source,
        previous_policy_arn=previous.policy_arn,
        new_document=new_document,
        new_source=new_source,
        missing=None
        if new_document is not None
        else f"the document of the new boundary {new_arn} is not recorded",
    )


async def _default_document(
    history: PolicyHistoryStore, policy_arn: str, before: str, tie: str
) -> tuple[str | None, PolicyFact | None]:
    """A managed policy's default document at a position, and the fact that recorded it."""
    state = await history.managed_policy(policy_arn, before=before, before_event_id=tie)
    if state is None or state.default_version_id is None:
        return None, None
    version = await history.policy_version(
        policy_arn, state.default_version_id, before=before, before_event_id=tie
    )
    if version is None or version.document is None:
        return None, None
    return version.document, version.fact
