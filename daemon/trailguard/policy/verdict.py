"""The answer of a comparison: the verdict, its reason and a witness request (JSON via msgspec)."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Kind", "Verdict", "VerdictName", "Witness"]

VerdictName = Literal["not_weakened", "weakened", "possibly_weakened", "unknown_document"]
Kind = Literal["identity", "boundary"]


class Witness(msgspec.Struct, frozen=True, kw_only=True):
    """A request the new document allows and the previous one did not.

    ``confirmed`` is True when the concrete evaluator ran the request on both documents and
    found exactly that (always so for ``weakened``); a ``possibly_weakened`` verdict may carry
    an unconfirmed candidate.  ``context`` holds the condition keys the request must carry (as
    the documents spell them); a key not listed is absent from the request.
    """

    action: str
    resource: str
    context: dict[str, str | list[str]]
    confirmed: bool
    #: labels (Sid, else ``#index``) of the new document's Allow statements that allow it
    allowed_by: tuple[str, ...]
    #: labels of the previous document's Deny statements that denied it; empty when no Allow
    #: statement of the previous document allowed it
    previously_denied_by: tuple[str, ...]


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    verdict: VerdictName
    kind: Kind
    #: one sentence a person can read
    reason: str
    witness: Witness | None = None
    #: for unknown_document: which document could not be read
    document: Literal["previous", "new"] | None = None
    #: constructs the engine treated as opaque predicates (they did not decide this verdict
    #: unless it is possibly_weakened)
    unmodelled: tuple[str, ...] = ()
    #: engine steps spent (automaton states, box operations)
    steps: int = 0

    @property
    def needs_attention(self) -> bool:
        """Everything but a proven ``not_weakened``."""
        return self.verdict != "not_weakened"
