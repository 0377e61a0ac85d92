"""detect/process.py: which records a Detector decodes in full."""

from __future__ import annotations

from trailguard.config import Config
from trailguard.detect.policy_facts import HISTORY_EVENT_NAMES
from trailguard.detect.process import Detector
from trailguard.detect.rules import RuleSet
from trailguard.vocabulary import REMOVAL_EVENT_NAMES


def test_with_the_history_changes_and_facts_are_candidates() -> None:
    rules = RuleSet.from_config(Config())
    detector = Detector(rules, history=True)
    names = detector.candidates.event_names
    assert set(REMOVAL_EVENT_NAMES) <= names
    assert rules.change_event_names <= names
    assert names >= HISTORY_EVENT_NAMES
    assert detector.change_names == rules.change_event_names


def test_without_the_history_only_the_removals_are_decoded_in_full() -> None:
    """A change rule compares with the history: without one its records are not worth decoding
    (and no change is handed out to judge)."""
    rules = RuleSet.from_config(Config())
    assert "PutRolePolicy" in rules.change_event_names  # the change rules are on by default
    detector = Detector(rules, history=False)
    assert detector.candidates.event_names == rules.removal_event_names
    assert "PutRolePolicy" not in detector.candidates.event_names
    assert detector.change_names == frozenset()
