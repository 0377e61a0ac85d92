"""The mutation suite (tests/policy_corpus.py): every verdict against its label, every witness."""

from __future__ import annotations

import collections

import pytest

from tests.policy_corpus import pairs
from trailguard.policy import Request, Verdict, compare, evaluate, parse_document
from trailguard.policy.document import Document

PAIRS = list(pairs())


def _doc(text: str) -> Document:
    doc = parse_document(text)
    assert isinstance(doc, Document), doc
    return doc


def _check_witness(v: Verdict, prev: str, new: str) -> None:
    assert v.witness is not None
    w = v.witness
    assert w.confirmed
    req = Request(action=w.action, resource=w.resource, context=w.context)
    assert evaluate(_doc(new), req).allowed is True
    assert evaluate(_doc(prev), req).allowed is False


def test_suite_is_large_and_balanced() -> None:
    labels = collections.Counter(p[3] for p in PAIRS)
    assert len(PAIRS) >= 500
    assert labels["weakening"] >= 200
    assert labels["safe"] >= 200


@pytest.mark.parametrize("case", [p for p in PAIRS if p[4] is not None], ids=lambda p: p[0])
def test_probe_proves_the_label(case: tuple[str, str, str, str, Request, bool]) -> None:
    """The construction's own witness: the new document allows it, the previous one did not."""
    _, prev, new, _, probe, _ = case
    assert evaluate(_doc(new), probe).allowed is True
    assert evaluate(_doc(prev), probe).allowed is False


def test_confusion_matrix() -> None:
    matrix: collections.Counter[tuple[str, str]] = collections.Counter()
    wrong: list[str] = []
    possibly: list[str] = []
    for name, prev, new, label, _, opaque in PAIRS:
        v = compare(prev, new)
        matrix[(label, v.verdict)] += 1
        if v.verdict == "weakened":
            _check_witness(v, prev, new)
        if v.verdict == "possibly_weakened":
            possibly.append(name)
            assert opaque, f"{name}: possibly_weakened on a decidable base: {v.reason}"
            assert v.reason
        elif label == "weakening" and v.verdict != "weakened":
            wrong.append(f"false negative {name}: {v.verdict} {v.reason}")
        elif label == "safe" and v.verdict != "not_weakened":
            wrong.append(f"false positive {name}: {v.verdict} {v.reason}")
    print(f"\nconfusion matrix: {dict(matrix)}; possibly_weakened: {possibly}")
    assert not wrong, "\n".join(wrong)
    # weakening is never missed outright, even where the engine cannot decide
    assert matrix[("weakening", "not_weakened")] == 0
    assert len(possibly) <= 8
