"""From the bytes of one CloudTrail file to its detections and policy facts.

decode (gunzip, find the candidate records, type them) -> rules -> detections; and, when the policy
history is on, -> policy facts (Put*/Attach*/Create* events and the removals themselves), which
the caller records so remediation can put a removed policy back, and the digest of every record
that yielded a detection or a fact, which the caller checks against the event ledger (an eventID
seen before with other content is a conflict: see detect/digest.py); and the policy *changes*
(Put*Policy, a new default version, a new boundary) the change rules want judged, which the
caller compares with the previous document from the history (detect/changes.py).

Pure and synchronous, so that it can run in the event loop's thread for small inputs, in a
worker process for big ones, and in tests with plain data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from trailguard.detect.changes import ChangeCandidate, change_kind
from trailguard.detect.decode import (
    DEFAULT_LIMITS,
    CandidateNames,
    DecodedFile,
    DecodeLimits,
    decode_file,
)
from trailguard.detect.detection import Detection, Source, build_detection
from trailguard.detect.digest import EventDigest, digest_of
from trailguard.detect.policy_facts import HISTORY_EVENT_NAMES, PolicyFact, facts_from_record
from trailguard.detect.record import Record
from trailguard.detect.rules import RuleSet

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trailguard.config import Config, Rule, SeverityConfig, Suppression


class FileOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one file yielded: its decode statistics, detections, policy facts, the digests of
    the records they came from and the policy changes to judge, in file order."""

    decoded: DecodedFile
    detections: list[Detection]
    facts: list[PolicyFact] = msgspec.field(default_factory=list)
    events: list[EventDigest] = msgspec.field(default_factory=list)
    changes: list[ChangeCandidate] = msgspec.field(default_factory=list)


class Detector:
    """Rules plus the candidate event names derived from them (and from the history's)."""

    __slots__ = ("candidates", "change_names", "history", "limits", "rules")

    def __init__(
        self, rules: RuleSet, *, history: bool = False, limits: DecodeLimits = DEFAULT_LIMITS
    ) -> None:
        self.rules = rules
        self.history = history
        self.limits = limits
        # Without the history a change rule has nothing to compare with: its records are not
        # worth decoding in full.
        names = rules.event_names | HISTORY_EVENT_NAMES if history else rules.removal_event_names
        self.candidates = CandidateNames(names)
        # Changes are judged against the history: without it there is nothing to compare with.
        self.change_names = rules.change_event_names if history else frozenset()

    @classmethod
    def from_config(cls, config: Config) -> Detector:
        return cls(
            RuleSet.from_config(config),
            history=config.history.enabled,
            limits=config.limits.decode_limits(),
        )

    def with_rules(
        self, rules: Sequence[Rule], suppress: Sequence[Suppression], severity: SeverityConfig
    ) -> Detector:
        """The same detector with other (resolved) rules, suppressions and severities."""
        ruleset = RuleSet(rules, suppress=suppress, severity=severity)
        return Detector(ruleset, history=self.history, limits=self.limits)

    def facts(self, record: Record) -> list[PolicyFact]:
        return facts_from_record(record) if self.history else []

    def detect(self, record: Record, source: Source) -> Detection | None:
        match = self.rules.evaluate(record)
        if match is None:
            return None
        return build_detection(record, match, source)

    def examine(
        self, record: Record, source: Source
    ) -> tuple[Detection | None, list[PolicyFact], EventDigest | None]:
        """One record: its detection, its policy facts and -- when it yielded either -- its
        digest, for the event ledger."""
        match = self.rules.evaluate(record)
        facts = self.facts(record)
        if match is None and not facts:
            return None, facts, None
        digest = digest_of(record)
        detection = (
            build_detection(
                record, match, source, digest=digest.digest if digest is not None else None
            )
            if match is not None
            else None
        )
        return detection, facts, digest

    def change(
        self,
        record: Record,
        source: Source,
        facts: list[PolicyFact],
        digest: EventDigest | None,
    ) -> ChangeCandidate | None:
        """The policy change ``record`` makes, to be judged against the history (its facts and
        digest as :meth:`examine` gave them); None when it is no change a rule wants judged."""
        if not facts or record.event_name not in self.change_names:
            return None
        kind = change_kind(facts[0])
        if kind is None:
            return None
        weakened = self.rules.evaluate_change(record, "weakened")
        possibly = self.rules.evaluate_change(record, "possibly_weakened")
        match = weakened or possibly
        if match is None:
            return None
        detection = build_detection(
            record, match, source, digest=digest.digest if digest is not None else None
        )
        return ChangeCandidate(
            kind=kind,
            fact=facts[0],
            detection=detection,
            weakened=weakened,
            possibly_weakened=possibly,
        )

    def process_file(
        self, data: bytes | bytearray | memoryview, *, source: Source, name: str, key: str | None
    ) -> FileOutcome:
        """Decode one file and evaluate its candidate records.

        ``name`` identifies the file in error messages; ``key`` (path or S3 key) lets the
        decoder recognise digest and Insight files by CloudTrail's layout.
        Raises :class:`trailguard.errors.DecodeError` for a file-level problem.
        """
        decoded = decode_file(data, self.candidates, source=name, key=key, limits=self.limits)
        detections: list[Detection] = []
        facts: list[PolicyFact] = []
        events: list[EventDigest] = []
        changes: list[ChangeCandidate] = []
        for record in decoded.candidates:
            detection, found, digest = self.examine(record, source)
            if detection is not None:
                detections.append(detection)
            facts.extend(found)
            if digest is not None:
                events.append(digest)
            if found and self.change_names:
                change = self.change(record, source, found, digest)
                if change is not None:
                    changes.append(change)
        return FileOutcome(
            decoded=decoded, detections=detections, facts=facts, events=events, changes=changes
        )
