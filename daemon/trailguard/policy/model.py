"""The symbolic model: each statement as a union of boxes in the space of requests.

A request is a point (action, resource, one value per condition key, one truth value per opaque
predicate).  A statement matches exactly the points of a *box*: a product of one set per
dimension, because its action test, resource test and each condition clause look at one
dimension each and are joined by AND.  Lists inside one element (``Action: [...]``, values of
one clause) are ORs inside one dimension, so they stay one box; only a few constructs split a
statement into several boxes (variable patterns, ``...IfExists`` with variables).

Dimensions and their sets:

* ``action`` -- a regular language over lower-cased strings, always inside the universe of
  action names ``[^:]+:[^:]+`` (``*`` and ``*:*`` are then the same set, as in IAM);
* ``resource`` -- a regular language over strings, case-sensitive;
* ``k:<key>`` -- the values a condition key may take, typed by the operators used on the key
  in *both* documents: strings (String*/Arn*), numbers, dates, booleans or IP addresses, plus
  "absent" and, for typed keys, "present but not of the type" (:class:`KeySet`);
* ``o:<id>`` -- opaque predicates: what the engine does not model exactly (a set operator, an
  operator it does not know, a policy variable, a key used with two types, a Principal).  Each
  is an unknown Boolean of the request; the *same* construct in both documents is the *same*
  predicate, so an unchanged opaque condition does not stop an exact answer.

The opaque predicates make the model an abstraction: every concrete request maps to one point,
and a statement matches the request iff its boxes contain the point.  Inclusion decided in the
abstract space therefore holds for concrete requests (``not_weakened`` is sound); a difference
found in the abstract space is only a candidate until the concrete evaluator confirms it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final

from trailguard.policy.automata import (
    STAR,
    Algebra,
    Dfa,
    Token,
    one_except,
    one_of,
    star_except,
)
from trailguard.policy.document import Clause, Document, Statement
from trailguard.policy.evaluate import split_arn
from trailguard.policy.glob import Part, ascii_lower, has_variables, parse_pattern
from trailguard.policy.limits import Budget, BudgetExceeded, Limits
from trailguard.policy.operators import Operator, parse_operator
from trailguard.policy.values import (
    IP_MAX,
    IntSet,
    RealSet,
    parse_bool,
    parse_date,
    parse_ip_range,
    parse_number,
)

__all__ = ["Box", "KeySet", "Space"]

ACTION: Final = "action"
RESOURCE: Final = "resource"
_BOOLS: Final = frozenset({"true", "false", "other"})
_FULL_REAL: Final = RealSet(((None, False, None, False),))
_FULL_IP: Final = IntSet(((0, IP_MAX),))

Body = Dfa | RealSet | IntSet | frozenset[str]


@dataclass(frozen=True, slots=True)
class KeySet:
    """Values of one condition key: absent?, present-but-not-of-the-type?, and typed values."""

    absent: bool
    junk: bool
    body: Body


Value = Dfa | KeySet | frozenset[bool]
Box = dict[str, Value]  # dimension -> set; a missing dimension is unconstrained


@dataclass(slots=True)
class KeyInfo:
    """What the two documents do with one condition key."""

    text: str  # the key as first written
    families: set[str] = field(default_factory=set)
    multi: bool = False  # used with ForAllValues/ForAnyValue
    values: list[str] = field(default_factory=list)  # literal values, for witnesses

    @property
    def family(self) -> str | None:
        """The key's type, or None when it cannot be modelled exactly (opaque)."""
        fams = {"string" if f == "arn" else f for f in self.families}
        if self.multi or len(fams) > 1:
            return None
        return next(iter(fams), "string")


class Space:
    """The dimensions of one comparison and the set operations on them."""

    def __init__(self, docs: Iterable[Document], limits: Limits, budget: Budget) -> None:
        self.limits = limits
        self.budget = budget
        self.algebra = Algebra(budget)
        a = self.algebra
        self.action_universe = a.patterns(
            [(one_except(":"), star_except(":"), one_of(":"), one_except(":"), star_except(":"))]
        )
        self.keys: dict[str, KeyInfo] = {}
        self.opaque: dict[str, str] = {}  # id -> description for reports
        #: id -> ("res", (pattern,)) or ("cond", (key as written, *values)): for witnesses
        self.opaque_detail: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.action_texts: list[str] = []
        self.resource_texts: list[str] = []
        #: names of the policy variables either document uses (witnesses give them values)
        self.variable_names: set[str] = set()
        for doc in docs:
            self._survey(doc)

    # -- survey: what the documents use ----------------------------------------------------------

    def _survey(self, doc: Document) -> None:
        texts: list[str] = []
        for stmt in doc.statements:
            self.action_texts.extend(stmt.actions)
            self.resource_texts.extend(stmt.resources)
            texts.extend(stmt.resources)
            texts.extend(v for c in stmt.conditions for v in c.values)
            for clause in stmt.conditions:
                info = self.keys.setdefault(clause.key, KeyInfo(clause.key_text))
                op = parse_operator(clause.operator)
                if op is None:
                    continue
                if op.qualifier:
                    info.multi = True
                elif op.family != "null":
                    info.families.add(op.family)
                info.values.extend(v for v in clause.values if "${" not in v)
        if doc.variables:
            for t in texts:
                if "${" in t:
                    parts = parse_pattern(t, wildcards=True, variables=True)
                    self.variable_names.update(p.text for p in parts if p.kind == "var")

    # -- set operations per dimension --------------------------------------------------------------

    def full(self, dim: str) -> Value:
        if dim == ACTION:
            return self.action_universe
        if dim == RESOURCE:
            return self.algebra.full
        if dim.startswith("o:"):
            return frozenset((True, False))
        family = self.keys[dim[2:]].family
        return KeySet(absent=True, junk=family != "string", body=self._full_body(family))

    def _full_body(self, family: str | None) -> Body:
        if family in ("numeric", "date"):
            return _FULL_REAL
        if family == "ip":
            return _FULL_IP
        if family == "bool":
            return _BOOLS
        return self.algebra.full

    def is_empty(self, v: Value) -> bool:
        if isinstance(v, Dfa):
            return v.is_empty
        if isinstance(v, KeySet):
            return not v.absent and not v.junk and _body_empty(v.body)
        return not v

    def inter(self, x: Value, y: Value) -> Value:
        self.budget.charge()
        if isinstance(x, Dfa) and isinstance(y, Dfa):
            return self.algebra.inter(x, y)
        if isinstance(x, KeySet) and isinstance(y, KeySet):
            return KeySet(
                absent=x.absent and y.absent,
                junk=x.junk and y.junk,
                body=self._body_op(x.body, y.body, "and"),
            )
        assert isinstance(x, frozenset)
        assert isinstance(y, frozenset)
        return x & y

    def diff(self, x: Value, y: Value) -> Value:
        self.budget.charge()
        if isinstance(x, Dfa) and isinstance(y, Dfa):
            return self.algebra.diff(x, y)
        if isinstance(x, KeySet) and isinstance(y, KeySet):
            return KeySet(
                absent=x.absent and not y.absent,
                junk=x.junk and not y.junk,
                body=self._body_op(x.body, y.body, "andnot"),
            )
        assert isinstance(x, frozenset)
        assert isinstance(y, frozenset)
        return x - y

    def _body_op(self, x: Body, y: Body, op: str) -> Body:
        if isinstance(x, Dfa) and isinstance(y, Dfa):
            return self.algebra.inter(x, y) if op == "and" else self.algebra.diff(x, y)
        if isinstance(x, RealSet) and isinstance(y, RealSet):
            return x.inter(y) if op == "and" else x.diff(y)
        if isinstance(x, IntSet) and isinstance(y, IntSet):
            return x.inter(y) if op == "and" else x.diff(y)
        assert isinstance(x, frozenset)
        assert isinstance(y, frozenset)
        return x & y if op == "and" else x - y

    def _union(self, x: KeySet, y: KeySet) -> KeySet:
        bx, by = x.body, y.body
        body: Body
        if isinstance(bx, Dfa) and isinstance(by, Dfa):
            body = self.algebra.union(bx, by)
        elif (isinstance(bx, RealSet) and isinstance(by, RealSet)) or (
            isinstance(bx, IntSet) and isinstance(by, IntSet)
        ):
            body = bx.union(by)  # type: ignore[arg-type]
        else:
            assert isinstance(bx, frozenset)
            assert isinstance(by, frozenset)
            body = bx | by
        return KeySet(absent=x.absent or y.absent, junk=x.junk or y.junk, body=body)

    def _complement(self, x: KeySet, dim: str) -> KeySet:
        full = self.full(dim)
        assert isinstance(full, KeySet)
        return KeySet(
            absent=not x.absent,
            junk=full.junk and not x.junk,
            body=self._body_op(full.body, x.body, "andnot"),
        )

    # -- statements to boxes ----------------------------------------------------------------------

    def boxes(self, stmt: Statement, doc: Document) -> list[Box]:
        """The boxes whose union is the set of requests ``stmt`` matches."""
        a = self.algebra
        acts = a.patterns(
            [
                _tokens(parse_pattern(ascii_lower(p), wildcards=True, variables=False))
                for p in stmt.actions
            ]
        )
        act = (
            a.diff(self.action_universe, acts)
            if stmt.not_action
            else a.inter(self.action_universe, acts)
        )
        if act.is_empty:
            return []  # NotAction "*", an empty Action list: matches nothing
        alternatives: list[Box] = []  # ORed pieces from the resource element
        plain: list[tuple[Part, ...]] = []
        var_ids: list[tuple[str, tuple[Part, ...]]] = []
        for p in stmt.resources:
            parts = parse_pattern(p, wildcards=True, variables=doc.variables)
            if has_variables(parts):
                oid = self._opaque(
                    f"res|{p}", f"Resource pattern with a policy variable: {p}", ("res", (p,))
                )
                var_ids.append((oid, parts))
            else:
                plain.append(parts)
        plain_set = a.patterns([_tokens(p) for p in plain])
        if stmt.not_resource:
            box: Box = {RESOURCE: a.complement(plain_set)}
            for oid, _ in var_ids:
                box[oid] = frozenset((False,))
            alternatives.append(box)
        else:
            if plain:
                alternatives.append({RESOURCE: plain_set})
            for oid, parts in var_ids:
                alternatives.append(
                    {RESOURCE: a.patterns([_tokens(parts)]), oid: frozenset((True,))}
                )
        base: Box = {ACTION: act}
        if stmt.principal is not None:
            oid = self._opaque(f"principal|{stmt.principal}", f"Principal {stmt.principal}")
            base[oid] = frozenset((True,))
        combos = [self._merge(base, alt) for alt in alternatives]
        for clause in stmt.conditions:
            frags = self._clause(clause, doc)
            combos = [self._merge(c, f) for c in combos if c is not None for f in frags]
            if len(combos) > self.limits.max_boxes_per_statement:
                raise BudgetExceeded(f"statement {stmt.label} splits into too many boxes")
        return [c for c in combos if c is not None]

    def _merge(self, x: Box | None, y: Box) -> Box | None:
        if x is None:
            return None
        out = dict(x)
        for dim, v in y.items():
            cur = out.get(dim)
            nv = v if cur is None else self.inter(cur, v)
            if self.is_empty(nv):
                return None
            out[dim] = nv
        return out

    def _opaque(
        self, ident: str, description: str, detail: tuple[str, tuple[str, ...]] | None = None
    ) -> str:
        oid = "o:" + ident
        self.opaque.setdefault(oid, description)
        if detail is not None:
            self.opaque_detail.setdefault(oid, detail)
        return oid

    def _clause(self, clause: Clause, doc: Document) -> list[Box]:
        """The clause as ORed fragments (each a partial box)."""
        op = parse_operator(clause.operator)
        info = self.keys[clause.key]
        dim = "k:" + clause.key
        canon = op.name if op else clause.operator
        vals = sorted(set(clause.values))
        vars_on = doc.variables and any("${" in v for v in vals)
        ident = f"cond|{canon}|{clause.key}|{json.dumps(vals)}" + ("|vars" if vars_on else "")
        detail = ("cond", (clause.key_text, *clause.values))
        oid = self._opaque(ident, f"{canon} on {clause.key_text}", detail)
        opaque: list[Box] = [{oid: frozenset((True,))}]
        if op is None or op.family == "binary" or info.family is None or op.qualifier:
            return opaque
        if op.family == "null":
            flags = [parse_bool(v) for v in clause.values]
            if any(f is None for f in flags):
                return opaque
            full = self.full(dim)
            assert isinstance(full, KeySet)
            out = KeySet(absent=True in flags, junk=False, body=self._empty_body(info.family))
            if False in flags:
                out = KeySet(absent=out.absent, junk=full.junk, body=full.body)
            return [{dim: out}]
        literal: list[tuple[Part, ...]] = []
        variable: list[tuple[Part, ...]] = []
        for v in clause.values:
            parts = parse_pattern(
                v, wildcards=op.wildcards, variables=doc.variables and op.variables
            )
            (variable if has_variables(parts) else literal).append(parts)
        pos = self._positive(op, literal, info.family)
        if pos is None:
            return opaque
        frags: list[Box] = []
        if variable:
            vtext = json.dumps(sorted(v for v in clause.values if "${" in v))
            vid = self._opaque(
                f"var|{op.positive}|{clause.key}|{vtext}",
                f"{op.positive} on {clause.key_text} with a policy variable",
                detail,
            )
        if op.negated:
            frag: Box = {dim: self._complement(pos, dim)}
            if variable:
                frag[vid] = frozenset((False,))
            return [frag]
        value = KeySet(absent=op.if_exists, junk=False, body=pos.body)
        if not self.is_empty(value):
            frags.append({dim: value})
        if variable:
            full = self.full(dim)
            assert isinstance(full, KeySet)
            present = KeySet(absent=False, junk=full.junk, body=full.body)
            frags.append({dim: present, vid: frozenset((True,))})
        return frags

    def _empty_body(self, family: str | None) -> Body:
        full = self._full_body(family)
        return self._body_op(full, full, "andnot")

    def _positive(
        self, op: Operator, literal: list[tuple[Part, ...]], family: str | None
    ) -> KeySet | None:
        """The present values the positive operator accepts for the literal values; None when a
        value cannot be read (the whole clause is then opaque)."""
        a = self.algebra
        if family == "string":
            if op.family == "arn":
                toks = []
                for parts in literal:
                    t = _arn_tokens(parts)
                    if t is None:
                        return None
                    toks.append(t)
                return KeySet(absent=False, junk=False, body=a.patterns(toks))
            fold = op.positive == "StringEqualsIgnoreCase"
            return KeySet(
                absent=False, junk=False, body=a.patterns([_tokens(p, fold) for p in literal])
            )
        texts = ["".join(p.text for p in parts) for parts in literal]
        if family in ("numeric", "date"):
            parse = parse_number if family == "numeric" else parse_date
            nums = [parse(t) for t in texts]
            if any(n is None for n in nums):
                return None
            ivs = [_interval(op.positive, n) for n in nums if n is not None]
            return KeySet(absent=False, junk=False, body=RealSet.of(ivs))
        if family == "bool":
            flags = [parse_bool(t) for t in texts]
            if any(f is None for f in flags):
                return None
            return KeySet(
                absent=False, junk=False, body=frozenset("true" if f else "false" for f in flags)
            )
        ranges = [parse_ip_range(t) for t in texts]
        if any(r is None for r in ranges):
            return None
        return KeySet(
            absent=False, junk=False, body=IntSet.of([r for r in ranges if r is not None])
        )


def _body_empty(body: Body) -> bool:
    if isinstance(body, Dfa | RealSet | IntSet):
        return body.is_empty
    return not body


def _interval(positive: str, n: Fraction) -> tuple[Fraction | None, bool, Fraction | None, bool]:
    if positive.endswith("LessThanEquals"):
        return (None, False, n, True)
    if positive.endswith("LessThan"):
        return (None, False, n, False)
    if positive.endswith("GreaterThanEquals"):
        return (n, True, None, False)
    if positive.endswith("GreaterThan"):
        return (n, False, None, False)
    return (n, True, n, True)


def _char(c: str, fold: bool) -> Token:
    if fold and ("a" <= c <= "z" or "A" <= c <= "Z"):
        return one_of((c.lower(), c.upper()))
    return one_of(c)


def _tokens(parts: tuple[Part, ...], fold: bool = False) -> tuple[Token, ...]:
    """Automaton tokens of a pattern; a variable becomes ``*`` (an upper bound)."""
    out: list[Token] = []
    for p in parts:
        if p.kind == "lit":
            out.extend(_char(c, fold) for c in p.text)
        elif p.kind == "any":
            out.append(one_except(()))
        else:
            out.append(STAR)
    return tuple(out)


def _arn_tokens(parts: tuple[Part, ...]) -> tuple[Token, ...] | None:
    """ArnLike: six components, wildcards stay inside each of the first five."""
    comps = split_arn(parts)
    if comps is None:
        return None
    out: list[Token] = []
    for i, comp in enumerate(comps):
        if i:
            out.append(one_of(":"))
        if i == 5:
            out.extend(_tokens(comp))
            continue
        for p in comp:
            if p.kind == "lit":
                out.extend(one_of(c) for c in p.text)
            elif p.kind == "any":
                out.append(one_except(":"))
            else:
                out.append(star_except(":"))
    return tuple(out)
