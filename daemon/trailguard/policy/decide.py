"""The decision procedure: does the new document allow a request the previous one did not?

With ``A`` the boxes of Allow statements and ``D`` those of Deny statements, a document allows
``union(A) - union(D)``.  The change is *not weakening* iff for every new Allow box ``a``::

    P = a - union(D_new)                 (what a lets through in the new document)
    P & d = {}     for every previous Deny box d     (nothing the previous one denied)
    P - union(A_prev) = {}               (nothing the previous one did not allow)

Box difference is exact: ``b - u`` is the union of the boxes that leave ``u`` in one dimension
(``(b1 - u1) x b2 x ...``, ``(b1 & u1) x (b2 - u2) x b3 x ...``, ...), each dimension's difference
computed exactly by its own set type; a box is empty iff one of its sets is.  Every non-empty
piece that survives is a set of requests on which the documents differ in the abstract space.

A piece becomes a concrete request (:mod:`trailguard.policy.witness`) which the concrete
evaluator runs on both documents: confirmed -> ``weakened``; not confirmed (the piece relies on
an opaque predicate) -> the search goes on, and ``possibly_weakened`` is the answer if nothing
is confirmed.  No piece at all -> ``not_weakened``, sound because the abstraction is.
"""

from __future__ import annotations

from collections.abc import Iterator

from trailguard.policy.document import Document, Statement
from trailguard.policy.evaluate import evaluate
from trailguard.policy.limits import Budget, BudgetExceeded, Limits
from trailguard.policy.model import Box, Space
from trailguard.policy.verdict import Kind, Verdict, Witness
from trailguard.policy.witness import requests_for

__all__ = ["decide"]

#: pieces whose candidate requests are tried before settling for possibly_weakened
_MAX_PIECES = 64

Labelled = list[tuple[Statement, Box]]


def subtract(space: Space, b: Box, u: Box) -> list[Box]:
    """``b \\ u`` as disjoint boxes."""
    space.budget.charge()
    for dim, uv in u.items():
        bv = b.get(dim)
        if space.is_empty(uv if bv is None else space.inter(bv, uv)):
            return [b]  # disjoint: nothing to take away
    out: list[Box] = []
    cur = dict(b)
    for dim, uv in u.items():
        bv = cur.get(dim)
        if bv is None:
            bv = space.full(dim)
        d = space.diff(bv, uv)
        if not space.is_empty(d):
            out.append({**cur, dim: d})
        cur[dim] = space.inter(bv, uv)
    return out


def intersect(space: Space, b: Box, u: Box) -> Box | None:
    out = dict(b)
    for dim, uv in u.items():
        bv = out.get(dim)
        nv = uv if bv is None else space.inter(bv, uv)
        if space.is_empty(nv):
            return None
        out[dim] = nv
    return out


def _boxes(space: Space, doc: Document, effect: str) -> Labelled:
    return [(s, b) for s in doc.statements if s.effect == effect for b in space.boxes(s, doc)]


def differences(space: Space, prev: Document, new: Document) -> Iterator[Box]:
    """Boxes of requests the new document may allow and the previous one may not."""
    new_allow, new_deny = _boxes(space, new, "Allow"), _boxes(space, new, "Deny")
    prev_allow, prev_deny = _boxes(space, prev, "Allow"), _boxes(space, prev, "Deny")
    for _, a in new_allow:
        pieces = [a]
        for _, d in new_deny:
            pieces = [q for p in pieces for q in subtract(space, p, d)]
        for p in pieces:
            for _, d in prev_deny:
                q = intersect(space, p, d)
                if q is not None:
                    yield q
        for _, o in prev_allow:
            pieces = [q for p in pieces for q in subtract(space, p, o)]
        yield from pieces


def decide(prev: Document, new: Document, kind: Kind, limits: Limits) -> Verdict:
    budget = Budget(limits)
    space = Space([prev, new], limits, budget)
    first: Witness | None = None
    first_opaque: list[str] = []
    tried = 0
    try:
        for piece in differences(space, prev, new):
            tried += 1
            for request in requests_for(space, piece):
                budget.charge(len(prev.statements) + len(new.statements))
                ev_new, ev_prev = evaluate(new, request), evaluate(prev, request)
                confirmed = ev_new.allowed is True and ev_prev.allowed is False
                witness = Witness(
                    action=request.action,
                    resource=request.resource,
                    context=dict(request.context),
                    confirmed=confirmed,
                    allowed_by=ev_new.allows,
                    previously_denied_by=ev_prev.denies,
                )
                if confirmed:
                    return _weakened(kind, witness, space, budget)
                if first is None:
                    first = witness
                    first_opaque = [space.opaque[d] for d in piece if d in space.opaque]
            if tried >= _MAX_PIECES:
                break
    except BudgetExceeded as exc:
        return Verdict(
            verdict="possibly_weakened",
            kind=kind,
            reason=f"not decided within the engine's limits ({exc}); treat as a possible weakening",
            witness=first,
            unmodelled=_unmodelled(space),
            steps=budget.steps,
        )
    if first is None:
        return Verdict(
            verdict="not_weakened",
            kind=kind,
            reason="every request the new document allows was allowed by the previous one",
            unmodelled=_unmodelled(space),
            steps=budget.steps,
        )
    if first_opaque:
        why = "; ".join(sorted(set(first_opaque)))
        reason = (
            "the new document may allow requests the previous one did not, depending on "
            f"what this engine does not decide exactly: {why}"
        )
    else:  # the model and the evaluator disagree: say so rather than pass
        reason = "a difference was found but its witness could not be confirmed"
    return Verdict(
        verdict="possibly_weakened",
        kind=kind,
        reason=reason,
        witness=first,
        unmodelled=_unmodelled(space),
        steps=budget.steps,
    )


def _unmodelled(space: Space) -> tuple[str, ...]:
    return tuple(sorted(set(space.opaque.values())))


def _weakened(kind: Kind, w: Witness, space: Space, budget: Budget) -> Verdict:
    by = ", ".join(repr(s) for s in w.allowed_by)
    if w.previously_denied_by:
        before = "denied by " + ", ".join(repr(s) for s in w.previously_denied_by)
    else:
        before = "allowed by no statement"
    where = f" with context {w.context}" if w.context else ""
    return Verdict(
        verdict="weakened",
        kind=kind,
        reason=(
            f"the new document allows {w.action} on {w.resource}{where} (statement {by}); "
            f"the previous document had it {before}"
        ),
        witness=w,
        unmodelled=_unmodelled(space),
        steps=budget.steps,
    )
