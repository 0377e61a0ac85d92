"""The concrete evaluator: is one request allowed by one identity policy document?

This is the engine's referee.  Every witness the decision procedure proposes is run through
:func:`evaluate` on both documents, and a change is reported ``weakened`` only when the new
document allows the request and the previous one does not.  It is written independently of the
symbolic side (direct string matching, no automata) so that the two check each other.

IAM's rules for one identity policy: a request is allowed when some Allow statement matches and
no Deny statement matches.  A statement matches when its action, resource and every condition
clause match.  The answer is three-valued (Kleene logic): ``None`` where this evaluator does not
know -- an operator it does not implement, a policy variable it cannot resolve, a Principal in an
identity policy, a multi-valued context value given to a single-valued operator.

Context keys compare without case; a context value is a string or, for multi-valued keys, a
list of strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

import msgspec

from trailguard.policy.document import Clause, Document, Statement
from trailguard.policy.glob import Part, ascii_lower, glob_match, parse_pattern
from trailguard.policy.operators import Operator, parse_operator
from trailguard.policy.values import (
    parse_bool,
    parse_date,
    parse_ip_range,
    parse_number,
)

__all__ = ["Evaluation", "Request", "Tri", "evaluate", "split_arn"]

Tri = bool | None
ContextValue = str | list[str]


class Request(msgspec.Struct, frozen=True, kw_only=True):
    action: str
    resource: str
    context: dict[str, ContextValue] = msgspec.field(default_factory=dict)


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    allowed: Tri
    #: labels of the Allow / Deny statements that match (True), and those that may (None)
    allows: tuple[str, ...]
    denies: tuple[str, ...]
    unknown: tuple[str, ...]


def _and(values: Sequence[Tri]) -> Tri:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _or(values: Sequence[Tri]) -> Tri:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def _not(value: Tri) -> Tri:
    return None if value is None else not value


def evaluate(doc: Document, request: Request) -> Evaluation:
    ctx = {k.lower(): v for k, v in request.context.items()}
    allow: list[Tri] = []
    deny: list[Tri] = []
    allows: list[str] = []
    denies: list[str] = []
    unknown: list[str] = []
    for stmt in doc.statements:
        m = match_statement(stmt, request.action, request.resource, ctx, doc.variables)
        (allow if stmt.effect == "Allow" else deny).append(m)
        if m is True:
            (allows if stmt.effect == "Allow" else denies).append(stmt.label)
        elif m is None:
            unknown.append(stmt.label)
    return Evaluation(
        allowed=_and([_or(allow), _not(_or(deny))]),
        allows=tuple(allows),
        denies=tuple(denies),
        unknown=tuple(unknown),
    )


def match_statement(
    stmt: Statement,
    action: str,
    resource: str,
    ctx: Mapping[str, ContextValue],
    variables: bool,
) -> Tri:
    low = ascii_lower(action)
    hit = any(
        glob_match(parse_pattern(ascii_lower(p), wildcards=True, variables=False), low)
        for p in stmt.actions
    )
    parts: list[Tri] = [hit != stmt.not_action]
    res = _or([_resource(p, resource, ctx, variables) for p in stmt.resources])
    parts.append(_not(res) if stmt.not_resource else res)
    if stmt.principal is not None:
        parts.append(None)
    parts.extend(clause_holds(c, ctx, variables) for c in stmt.conditions)
    return _and(parts)


def _resource(pattern: str, resource: str, ctx: Mapping[str, ContextValue], variables: bool) -> Tri:
    parts = substitute(parse_pattern(pattern, wildcards=True, variables=variables), ctx)
    return None if parts is None else glob_match(parts, resource)


def substitute(parts: tuple[Part, ...], ctx: Mapping[str, ContextValue]) -> tuple[Part, ...] | None:
    """Variables replaced by their (literal) values; None when one cannot be resolved."""
    out: list[Part] = []
    for p in parts:
        if p.kind != "var":
            out.append(p)
            continue
        value = ctx.get(p.text.lower())
        if value is None:
            value = p.default
        if not isinstance(value, str) or "*" in value or "?" in value:
            return None  # absent without default, multi-valued, or a value with wildcards
        out.append(Part("lit", value))
    return tuple(out)


def clause_holds(clause: Clause, ctx: Mapping[str, ContextValue], variables: bool) -> Tri:
    op = parse_operator(clause.operator)
    if op is None or op.family == "binary":
        return None
    raw = ctx.get(clause.key)
    if op.family == "null":
        flags = [parse_bool(v) for v in clause.values]
        if any(f is None for f in flags):
            return None
        absent = raw is None
        return any(f == absent for f in flags)
    if op.qualifier is None:
        if raw is None:
            return op.negated or op.if_exists
        if not isinstance(raw, str):
            return None
        m = _any_value(op, clause.values, raw, ctx, variables)
        return _not(m) if op.negated else m
    items = [] if raw is None else [raw] if isinstance(raw, str) else list(raw)
    each = []
    for item in items:
        m = _any_value(op, clause.values, item, ctx, variables)
        each.append(_not(m) if op.negated else m)
    return _and(each) if op.qualifier == "ForAllValues" else _or(each)


def _any_value(
    op: Operator,
    values: Sequence[str],
    item: str,
    ctx: Mapping[str, ContextValue],
    variables: bool,
) -> Tri:
    return _or([_value_matches(op, v, item, ctx, variables and op.variables) for v in values])


def _value_matches(
    op: Operator, value: str, item: str, ctx: Mapping[str, ContextValue], variables: bool
) -> Tri:
    family = op.family
    if family == "string":
        parts = substitute(parse_pattern(value, wildcards=op.wildcards, variables=variables), ctx)
        if parts is None:
            return None
        if op.positive == "StringLike":
            return glob_match(parts, item)
        text = "".join(p.text for p in parts)
        if op.positive == "StringEqualsIgnoreCase":
            return ascii_lower(text) == ascii_lower(item)
        return text == item
    if family == "arn":
        parts = substitute(parse_pattern(value, wildcards=True, variables=variables), ctx)
        if parts is None:
            return None
        pattern = split_arn(parts)
        if pattern is None:
            return None  # not six components: this engine does not say what IAM does
        comps = item.split(":", 5)
        if len(comps) != 6:
            return False
        return all(glob_match(pc, c) for pc, c in zip(pattern, comps, strict=True))
    if family in ("numeric", "date"):
        parse = parse_number if family == "numeric" else parse_date
        want, got = parse(value), parse(item)
        if want is None:
            return None
        return got is not None and _compare(op.positive, got, want)
    if family == "bool":
        flag = parse_bool(value)
        return None if flag is None else parse_bool(item) == flag
    rng = parse_ip_range(value)
    if rng is None:
        return None
    addr = parse_ip_range(item) if "/" not in item else None
    return addr is not None and addr[0] == addr[1] and rng[0] <= addr[0] <= rng[1]


def _compare(positive: str, got: Fraction, want: Fraction) -> bool:
    if positive.endswith("LessThanEquals"):
        return got <= want
    if positive.endswith("LessThan"):
        return got < want
    if positive.endswith("GreaterThanEquals"):
        return got >= want
    if positive.endswith("GreaterThan"):
        return got > want
    return got == want


def split_arn(parts: tuple[Part, ...]) -> list[tuple[Part, ...]] | None:
    """Split a pattern at its first five literal ``:`` into six component patterns."""
    comps: list[list[Part]] = [[]]
    for p in parts:
        if p.kind != "lit" or len(comps) == 6:
            comps[-1].append(p)
            continue
        pieces = p.text.split(":", 6 - len(comps))
        for i, piece in enumerate(pieces):
            if i:
                comps.append([])
            if piece:
                comps[-1].append(Part("lit", piece))
    if len(comps) != 6:
        return None
    return [tuple(c) for c in comps]
