"""The entry point: two documents' text in, a :class:`~trailguard.policy.verdict.Verdict` out."""

from __future__ import annotations

from trailguard.policy.decide import decide
from trailguard.policy.document import Document, parse_document
from trailguard.policy.limits import Limits
from trailguard.policy.verdict import Kind, Verdict

__all__ = ["compare"]

_DEFAULT = Limits()


def compare(
    previous: str | bytes,
    new: str | bytes,
    *,
    kind: Kind = "identity",
    limits: Limits | None = None,
) -> Verdict:
    """Whether ``new`` allows some request ``previous`` did not.  Never raises.

    ``kind`` is recorded in the verdict: a permissions boundary is compared with the same test
    (the boundary allows more), an identity policy likewise.
    """
    limits = limits or _DEFAULT
    prev_doc = parse_document(previous, limits)
    if not isinstance(prev_doc, Document):
        return _unknown(kind, "previous", prev_doc.reason)
    new_doc = parse_document(new, limits)
    if not isinstance(new_doc, Document):
        return _unknown(kind, "new", new_doc.reason)
    if _same(prev_doc, new_doc):
        return Verdict(verdict="not_weakened", kind=kind, reason="the documents say the same thing")
    try:
        return decide(prev_doc, new_doc, kind, limits)
    except Exception as exc:  # noqa: BLE001 -- a bug must not turn into a pass or a crash
        return Verdict(
            verdict="possibly_weakened",
            kind=kind,
            reason=f"internal error in the policy engine ({type(exc).__name__}); not decided",
        )


def _same(a: Document, b: Document) -> bool:
    """Equal up to statement labels (Sid, position)."""
    if a.version != b.version or len(a.statements) != len(b.statements):
        return False
    return all(
        (x.effect, x.actions, x.not_action, x.resources, x.not_resource, x.principal, x.conditions)
        == (
            y.effect,
            y.actions,
            y.not_action,
            y.resources,
            y.not_resource,
            y.principal,
            y.conditions,
        )
        for x, y in zip(a.statements, b.statements, strict=True)
    )


def _unknown(kind: Kind, which: str, reason: str) -> Verdict:
    return Verdict(
        verdict="unknown_document",
        kind=kind,
        reason=f"the {which} document cannot be read: {reason}",
        document="previous" if which == "previous" else "new",
    )
