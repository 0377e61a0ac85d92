"""Policy weakening: is a new IAM policy document weaker than the previous one? (issue 16).

Pure and offline: no I/O, no asyncio.  :func:`compare` takes the two documents' text (as
CloudTrail recorded it, or URL-encoded as IAM returns it) and answers with a :class:`Verdict`:

* ``not_weakened`` -- proven: every request the new document allows, the previous one allowed;
* ``weakened`` -- with a :class:`Witness` request that the concrete evaluator ran on both
  documents: the new one allows it, the previous one did not;
* ``possibly_weakened`` -- the engine could not decide (constructs it treats as opaque, or its
  work limits); the reason says which, and a candidate witness comes with it when there is one;
* ``unknown_document`` -- a document could not be read (``document`` says which).

Nothing raises.  See docs/POLICY_ENGINE.md for the semantics and the soundness argument.
"""

from __future__ import annotations

from trailguard.policy.compare import compare
from trailguard.policy.document import Document, Malformed, parse_document
from trailguard.policy.evaluate import Evaluation, Request, evaluate
from trailguard.policy.limits import Limits
from trailguard.policy.verdict import Kind, Verdict, VerdictName, Witness

__all__ = [
    "Document",
    "Evaluation",
    "Kind",
    "Limits",
    "Malformed",
    "Request",
    "Verdict",
    "VerdictName",
    "Witness",
    "compare",
    "evaluate",
    "parse_document",
]
