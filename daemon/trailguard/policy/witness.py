"""From a box of differing requests to concrete requests worth running through the evaluator.

Each dimension's set gives one member: preferably text the documents themselves contain (an
action or resource named in a statement, a condition value), instantiated (``*`` -> ``""`` or
``example``), else the automaton's shortest member; numbers, dates and addresses from their
interval sets.  A key whose set admits "absent" is left out of the context.

Opaque dimensions have no member to read off, so :func:`requests_for` also yields a bounded
number of variants that try to make each opaque predicate take the required truth value: set
operator keys given as lists, policy variables given a value and a resource built from the
variable pattern.  Whatever they produce is only a candidate: the evaluator decides.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from fractions import Fraction
from typing import Final

from trailguard.policy.automata import Dfa
from trailguard.policy.evaluate import ContextValue, Request
from trailguard.policy.glob import ascii_lower, instantiate, parse_pattern
from trailguard.policy.model import ACTION, RESOURCE, Box, KeySet, Space
from trailguard.policy.values import (
    IntSet,
    RealSet,
    format_ip,
    parse_date,
    parse_number,
)

__all__ = ["requests_for"]

_MAX_VARIANTS: Final = 48
_VAR_VALUE: Final = "trailguard-witness"
Patch = tuple[str | None, dict[str, ContextValue]]


def requests_for(space: Space, piece: Box) -> Iterator[Request]:
    action = _pick_text(piece.get(ACTION, space.action_universe), space.action_texts, fold=True)
    resource = _pick_text(piece.get(RESOURCE, space.algebra.full), space.resource_texts)
    context: dict[str, ContextValue] = {}
    for dim, value in piece.items():
        if dim.startswith("k:") and isinstance(value, KeySet) and not value.absent:
            info = space.keys[dim[2:]]
            member = _pick_key(value, info.family, info.values)
            if member is not None:
                context[info.text] = member
    if action is None or resource is None:
        return
    for name in sorted(space.variable_names):  # a value for each variable, unless constrained
        dim = "k:" + name.lower()
        if dim not in piece and not any(k.lower() == name.lower() for k in context):
            context[name] = _VAR_VALUE
    base = Request(action=action, resource=resource, context=context)
    yield base
    options: list[list[Patch]] = []
    for dim, value in piece.items():
        if dim in space.opaque_detail and isinstance(value, frozenset) and len(value) == 1:
            options.append(_patches(space, dim, True in value))
    if not options:
        return
    for combo in itertools.islice(itertools.product(*options), _MAX_VARIANTS):
        res = base.resource
        ctx = dict(base.context)
        for r, extra in combo:
            res = r if r is not None else res
            ctx.update(extra)
        yield Request(action=base.action, resource=res, context=ctx)


def _patches(space: Space, dim: str, want: bool) -> list[Patch]:
    kind, detail = space.opaque_detail[dim]
    out: list[Patch] = []
    if kind == "res":
        parts = parse_pattern(detail[0], wildcards=True, variables=True)
        ctx: dict[str, ContextValue] = {p.text: _VAR_VALUE for p in parts if p.kind == "var"}
        if want:
            out.append((instantiate(parts, "", _VAR_VALUE), ctx))
        out.append((None, ctx))
        return out
    key_text, values = detail[0], detail[1:]
    var_names = sorted(
        {
            p.text
            for v in values
            for p in parse_pattern(v, wildcards=True, variables=True)
            if p.kind == "var"
        }
    )
    var_ctx: dict[str, ContextValue] = dict.fromkeys(var_names, _VAR_VALUE)
    samples = [
        instantiate(parse_pattern(v, wildcards=True, variables=True), "", _VAR_VALUE)
        for v in values[:4]
    ]
    out.append((None, {}))
    for s in samples:
        out.append((None, {**var_ctx, key_text: s}))
        out.append((None, {**var_ctx, key_text: [s]}))
    out.append((None, {**var_ctx, key_text: "other"}))
    out.append((None, {**var_ctx, key_text: ["other"]}))
    if samples:
        out.append((None, {**var_ctx, key_text: [samples[0], "other"]}))
    out.append((None, {key_text: []}))
    return out


def _pick_text(dfa: Dfa | object, texts: list[str], *, fold: bool = False) -> str | None:
    if not isinstance(dfa, Dfa) or dfa.is_empty:
        return None
    seen: set[str] = set()
    for fill in (None, "example", ""):
        for t in texts:
            parts = parse_pattern(t, wildcards=True, variables=False)
            if fill is None:
                if any(p.kind != "lit" for p in parts):
                    continue
                cand = t
            else:
                cand = instantiate(parts, fill)
            if cand in seen:
                continue
            seen.add(cand)
            if dfa.contains(ascii_lower(cand) if fold else cand):
                return cand
    for extra in ("*", "example:example"):
        if dfa.contains(extra):
            return extra
    return dfa.shortest()


def _pick_key(value: KeySet, family: str | None, hints: list[str]) -> str | None:
    body = value.body
    if isinstance(body, Dfa):
        return _pick_text(body, [*hints, "example"]) if not body.is_empty else None
    if isinstance(body, RealSet) and not body.is_empty:
        parse = parse_date if family == "date" else parse_number
        picked = body.pick([n for n in (parse(h) for h in hints) if n is not None])
        if picked is not None:
            return _format_date(picked) if family == "date" else _format_number(picked)
    if isinstance(body, IntSet) and not body.is_empty:
        ip = body.pick()
        if ip is not None:
            return format_ip(ip)
    if isinstance(body, frozenset) and body:
        for flag in ("true", "false", "other"):
            if flag in body:
                return flag if flag != "other" else "maybe"
    return "not-a-value" if value.junk else None


def _format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    for k in range(1, 400):
        scaled = value * 10**k
        if scaled.denominator == 1:
            sign = "-" if scaled < 0 else ""
            digits = str(abs(scaled.numerator)).rjust(k + 1, "0")
            return f"{sign}{digits[:-k]}.{digits[-k:]}"
    return str(float(value))  # not reached: sets are built from decimal text


def _format_date(value: Fraction) -> str:
    if value.denominator == 1 and -62_135_596_800 <= value <= 253_402_300_799:
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=int(value))
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return _format_number(value)
