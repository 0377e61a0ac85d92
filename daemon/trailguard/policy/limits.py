"""Bounds on what one comparison reads and does: sizes of the documents, steps of the engine.

Policy documents reach trailguard from CloudTrail records, which an attacker with IAM write
access shapes.  Every comparison therefore runs under :class:`Limits`: documents larger than the
bounds are refused before or while parsing (verdict ``unknown_document``), and the decision
procedure charges each automaton state, product state and box operation to a :class:`Budget`;
when the budget or the wall-clock deadline runs out the verdict is ``possibly_weakened`` with
the reason, never a pass.
"""

from __future__ import annotations

import time

import msgspec

__all__ = ["Budget", "BudgetExceeded", "Limits"]


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Defaults sit well above IAM's own quotas (a managed policy holds at most 6,144
    characters, an inline policy 10,240, both without whitespace; CloudTrail keeps at most
    100 KB of requestParameters) so that no document IAM accepts is refused."""

    #: characters of the text as given (URL-encoded text is longer than the JSON)
    max_document_chars: int = 262_144
    #: statements in one document
    max_statements: int = 512
    #: Action/NotAction/Resource/NotResource entries plus condition values, in one document
    max_values: int = 8_192
    #: characters in one pattern or condition value
    max_pattern_chars: int = 2_048
    #: conditions clauses (operator x key) in one statement
    max_clauses: int = 64
    #: boxes one statement may split into (lists of variable patterns, IfExists)
    max_boxes_per_statement: int = 256
    #: engine steps: automaton states built, box operations
    max_steps: int = 2_000_000
    #: wall-clock seconds for one comparison (checked with the steps)
    max_seconds: float = 5.0


class BudgetExceeded(Exception):
    """The comparison ran out of steps or time."""


class Budget:
    """Counts steps; raises :class:`BudgetExceeded` past the step or time limit."""

    __slots__ = ("_deadline", "_next_clock", "max_steps", "steps")

    def __init__(self, limits: Limits) -> None:
        self.steps = 0
        self.max_steps = limits.max_steps
        self._deadline = time.monotonic() + limits.max_seconds
        self._next_clock = 4096

    def charge(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.max_steps:
            raise BudgetExceeded(f"more than {self.max_steps} engine steps")
        if self.steps >= self._next_clock:
            self._next_clock = self.steps + 4096
            if time.monotonic() > self._deadline:
                raise BudgetExceeded("the comparison's time limit")
