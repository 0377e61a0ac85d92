"""IAM patterns: split into literal text, wildcards and policy variables; match them concretely.

One parser serves both sides of the engine.  :func:`parse_pattern` turns the text of an Action,
Resource or condition value into :class:`Part` values; the symbolic side (``automata.py``) turns
parts into automaton tokens, the concrete evaluator (``evaluate.py``) substitutes variables and
calls :func:`glob_match`.

Rules (IAM's, as this engine models them):

* ``*`` matches any sequence of characters, including none and including ``:`` and ``/``;
  ``?`` matches exactly one character.  No other character is special (no ``[...]`` classes,
  no backslash escapes).
* With policy variables on (Version ``2012-10-17``; Resource, NotResource and string/ARN
  condition values), ``${name}`` and ``${name, 'default'}`` are variables; ``${*}``, ``${?}`` and
  ``${$}`` are the literal characters ``*``, ``?`` and ``$``.  A ``${`` without its ``}`` is a
  variable too (it can never be resolved).  With variables off, ``${`` is plain text.
* Actions compare without ASCII case (:func:`ascii_lower`); resources and ARNs with case.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "Part",
    "ascii_lower",
    "glob_match",
    "has_variables",
    "instantiate",
    "parse_pattern",
]

_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ESCAPES: Final = {"*": "*", "?": "?", "$": "$"}

PartKind = Literal["lit", "star", "any", "var"]


def ascii_lower(text: str) -> str:
    """Lower-case A-Z only: the case rule for actions and ``...IgnoreCase`` operators."""
    return text.translate(_LOWER)


class Part:
    """One piece of a pattern: literal text, ``*``, ``?`` or a variable (name, default)."""

    __slots__ = ("default", "kind", "text")

    def __init__(self, kind: PartKind, text: str = "", default: str | None = None) -> None:
        self.kind: PartKind = kind
        self.text = text  # literal text, or the variable's name
        self.default = default  # a variable's default value, if it has one

    def __repr__(self) -> str:
        return f"Part({self.kind!r}, {self.text!r}, {self.default!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Part) and (self.kind, self.text, self.default) == (
            other.kind,
            other.text,
            other.default,
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.text, self.default))


STAR: Final = Part("star")
ANY: Final = Part("any")


def _variable(body: str) -> Part:
    """``${body}`` as a part: an escape, a variable, or a variable with a default."""
    if body in _ESCAPES:
        return Part("lit", _ESCAPES[body])
    name, sep, rest = body.partition(",")
    default: str | None = None
    if sep:
        rest = rest.strip()
        if len(rest) >= 2 and rest[0] == rest[-1] == "'":
            default = rest[1:-1]
        else:  # a default we do not understand: never resolvable
            return Part("var", body, None)
    return Part("var", name.strip(), default)


def parse_pattern(text: str, *, wildcards: bool, variables: bool) -> tuple[Part, ...]:
    """Split ``text`` into parts; adjacent literal text is merged into one part."""
    parts: list[Part] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            parts.append(Part("lit", "".join(buf)))
            buf.clear()

    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if variables and ch == "$" and text.startswith("${", i):
            end = text.find("}", i + 2)
            part = Part("var", text[i + 2 :]) if end < 0 else _variable(text[i + 2 : end])
            i = n if end < 0 else end + 1
            if part.kind == "lit":
                buf.append(part.text)
            else:
                flush()
                parts.append(part)
            continue
        if wildcards and ch == "*":
            flush()
            if not parts or parts[-1] is not STAR:  # ** is *
                parts.append(STAR)
        elif wildcards and ch == "?":
            flush()
            parts.append(ANY)
        else:
            buf.append(ch)
        i += 1
    flush()
    return tuple(parts)


def has_variables(parts: tuple[Part, ...]) -> bool:
    return any(p.kind == "var" for p in parts)


def instantiate(parts: tuple[Part, ...], fill: str = "", var_fill: str = "example") -> str:
    """A concrete string the pattern matches: ``*`` -> ``fill``, ``?`` -> ``x``."""
    out: list[str] = []
    for p in parts:
        if p.kind == "lit":
            out.append(p.text)
        elif p.kind == "star":
            out.append(fill)
        elif p.kind == "any":
            out.append("x")
        else:
            out.append(var_fill)
    return "".join(out)


def glob_match(parts: tuple[Part, ...], text: str) -> bool:
    """Whether ``text`` matches the variable-free pattern ``parts`` (case-sensitive).

    Greedy with backtracking to the last ``*`` only: O(len(parts) * len(text)) at worst, no
    regular expression (patterns are attacker-influenced).
    """
    if any(p.kind == "var" for p in parts):
        raise ValueError("substitute variables before matching")
    items: list[str] = []  # one character, "?" for any one, "" for '*' (literal ? is "\\?")
    for p in parts:
        if p.kind == "lit":
            items.extend("\\" + c if c == "?" else c for c in p.text)
        else:
            items.append("?" if p.kind == "any" else "")
    ti = pi = 0
    star_pi = -1
    star_ti = 0
    n, m = len(text), len(items)
    while ti < n:
        if pi < m:
            item = items[pi]
            if item == "":
                star_pi, star_ti = pi, ti
                pi += 1
                continue
            if item == "?" or item == text[ti] or (item == "\\?" and text[ti] == "?"):
                ti += 1
                pi += 1
                continue
        if star_pi >= 0:
            star_ti += 1
            ti = star_ti
            pi = star_pi + 1
            continue
        return False
    while pi < m and items[pi] == "":
        pi += 1
    return pi == m
