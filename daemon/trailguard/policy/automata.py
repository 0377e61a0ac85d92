"""Regular sets of strings as minimal DFAs: built from IAM globs, combined, tested, sampled.

Why a hand-written automaton: every question the engine asks about actions, resources and
string condition values is a Boolean combination of glob languages (``*``, ``?``, literal
characters, ``[^:]`` inside ARN components) followed by an emptiness test.  Those languages are
regular, so the questions are decided exactly by product automata.

Representation.  The alphabet is all of Unicode, so a state does not list every character: it
has a few *explicit* edges (character -> state) and one *default* edge taken by every other
character.  Globs only ever name finitely many characters, so this is exact.  Every automaton
handed out is complete, minimal (Moore partition refinement) and numbered in breadth-first order
from its start state 0, which makes equal languages equal objects: :class:`Algebra` interns them,
so "is this set empty / everything / the same as that one" are identity tests, and each product
is computed once per comparison.

Work is bounded: every state built charges one step to the
:class:`~trailguard.policy.limits.Budget`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from trailguard.policy.limits import Budget

__all__ = ["ANY_ONE", "STAR", "Algebra", "Dfa", "Token", "one_of", "star_except"]

# A token of a pattern: (kind, characters).
ONE_IN: Final = 0  # exactly one character from the set
ONE_NOT: Final = 1  # exactly one character outside the set
STAR_NOT: Final = 2  # any run of characters outside the set
Token = tuple[int, frozenset[str]]
_EMPTY: Final[frozenset[str]] = frozenset()
STAR: Final[Token] = (STAR_NOT, _EMPTY)
ANY_ONE: Final[Token] = (ONE_NOT, _EMPTY)
_PREFERRED: Final = "xabcdefghijklmnopqrstuvwyz0123456789-_./"


def one_of(chars: Iterable[str]) -> Token:
    return (ONE_IN, frozenset(chars))


def star_except(chars: Iterable[str]) -> Token:
    return (STAR_NOT, frozenset(chars))


def one_except(chars: Iterable[str]) -> Token:
    return (ONE_NOT, frozenset(chars))


class Dfa:
    """A complete, minimal, canonically numbered DFA over all of Unicode (start state 0)."""

    __slots__ = ("_hash", "accept", "default", "edges", "key")

    def __init__(
        self, accept: tuple[bool, ...], edges: tuple[dict[str, int], ...], default: tuple[int, ...]
    ) -> None:
        self.accept = accept
        self.edges = edges
        self.default = default
        self.key = (
            accept,
            default,
            tuple(tuple(sorted(e.items())) for e in edges),
        )
        self._hash = hash(self.key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Dfa) and self.key == other.key)

    def __len__(self) -> int:
        return len(self.accept)

    @property
    def is_empty(self) -> bool:
        return not any(self.accept)

    @property
    def is_full(self) -> bool:
        return all(self.accept)

    def contains(self, text: str) -> bool:
        s = 0
        for ch in text:
            s = self.edges[s].get(ch, self.default[s])
        return self.accept[s]

    def shortest(self) -> str | None:
        """A shortest member (readable characters preferred on default edges), or None."""
        if self.accept[0]:
            return ""
        parent: dict[int, tuple[int, str]] = {0: (-1, "")}
        queue = deque([0])
        while queue:
            s = queue.popleft()
            explicit = self.edges[s]
            steps = [(self.default[s], _other_char(explicit))]
            steps.extend((t, c) for c, t in sorted(explicit.items()))
            for t, ch in steps:
                if t in parent:
                    continue
                parent[t] = (s, ch)
                if self.accept[t]:
                    out: list[str] = []
                    while t != 0:
                        t, c = parent[t]
                        out.append(c)
                    return "".join(reversed(out))
                queue.append(t)
        return None


def _other_char(explicit: dict[str, int]) -> str:
    for ch in _PREFERRED:
        if ch not in explicit:
            return ch
    code = 0x4E00  # far from any character a pattern is likely to name
    while chr(code) in explicit:
        code += 1
    return chr(code)


State = frozenset[tuple[int, int]]


class Algebra:
    """Builds and combines :class:`Dfa` values; one per comparison (it caches and interns)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._interned: dict[Dfa, Dfa] = {}
        self._products: dict[tuple[int, int, str], Dfa] = {}
        self._patterns: dict[tuple[tuple[Token, ...], ...], Dfa] = {}
        self.full = self._finish([True], [{}], [0])
        self.empty = self._finish([False], [{}], [0])

    # -- construction -------------------------------------------------------------------------

    def patterns(self, patterns: Sequence[Sequence[Token]]) -> Dfa:
        """The union of the token patterns' languages (subset construction, then minimised)."""
        cache_key = tuple(tuple(p) for p in patterns)
        hit = self._patterns.get(cache_key)
        if hit is not None:
            return hit
        pats = cache_key

        def closure(positions: Iterable[tuple[int, int]]) -> State:
            out: set[tuple[int, int]] = set()
            todo = list(positions)
            while todo:
                pi, pos = todo.pop()
                if (pi, pos) in out:
                    continue
                out.add((pi, pos))
                pat = pats[pi]
                if pos < len(pat) and pat[pos][0] == STAR_NOT:
                    todo.append((pi, pos + 1))
            return frozenset(out)

        def step(state: State, ch: str | None) -> State:
            nxt: list[tuple[int, int]] = []
            for pi, pos in state:
                pat = pats[pi]
                if pos >= len(pat):
                    continue
                kind, chars = pat[pos]
                inside = ch is not None and ch in chars
                if kind == ONE_IN:
                    if inside:
                        nxt.append((pi, pos + 1))
                elif not inside:
                    nxt.append((pi, pos + 1) if kind == ONE_NOT else (pi, pos))
            return closure(nxt)

        start = closure((pi, 0) for pi in range(len(pats)))
        index: dict[State, int] = {start: 0}
        order = [start]
        accept: list[bool] = []
        edges: list[dict[str, int]] = []
        default: list[int] = []

        def number(state: State) -> int:
            n = index.get(state)
            if n is None:
                self.budget.charge()
                n = index[state] = len(order)
                order.append(state)
            return n

        i = 0
        while i < len(order):
            state = order[i]
            i += 1
            accept.append(any(pos == len(pats[pi]) for pi, pos in state))
            named: set[str] = set()
            for pi, pos in state:
                if pos < len(pats[pi]):
                    named |= pats[pi][pos][1]
            d = number(step(state, None))
            default.append(d)
            explicit: dict[str, int] = {}
            for ch in named:
                t = number(step(state, ch))
                if t != d:
                    explicit[ch] = t
            edges.append(explicit)
        dfa = self._minimise(accept, edges, default)
        self._patterns[cache_key] = dfa
        return dfa

    def literal(self, texts: Iterable[str]) -> Dfa:
        return self.patterns([tuple(one_of(c) for c in t) for t in texts])

    # -- Boolean operations -------------------------------------------------------------------

    def complement(self, a: Dfa) -> Dfa:
        return self._intern(Dfa(tuple(not x for x in a.accept), a.edges, a.default))

    def inter(self, a: Dfa, b: Dfa) -> Dfa:
        if a is b or b is self.full or a is self.empty:
            return a
        if a is self.full or b is self.empty:
            return b
        return self._product(a, b, "and", lambda x, y: x and y)

    def union(self, a: Dfa, b: Dfa) -> Dfa:
        if a is b or b is self.empty or a is self.full:
            return a
        if a is self.empty or b is self.full:
            return b
        return self._product(a, b, "or", lambda x, y: x or y)

    def diff(self, a: Dfa, b: Dfa) -> Dfa:
        if a is b or b is self.full or a is self.empty:
            return self.empty
        if b is self.empty:
            return a
        return self._product(a, b, "andnot", lambda x, y: x and not y)

    def _product(self, a: Dfa, b: Dfa, op: str, f: Callable[[bool, bool], bool]) -> Dfa:
        if op != "andnot" and id(a) > id(b):
            a, b = b, a
        key = (id(a), id(b), op)
        hit = self._products.get(key)
        if hit is not None:
            return hit
        index: dict[tuple[int, int], int] = {(0, 0): 0}
        order = [(0, 0)]
        accept: list[bool] = []
        edges: list[dict[str, int]] = []
        default: list[int] = []

        def number(pair: tuple[int, int]) -> int:
            n = index.get(pair)
            if n is None:
                self.budget.charge()
                n = index[pair] = len(order)
                order.append(pair)
            return n

        i = 0
        while i < len(order):
            p, q = order[i]
            i += 1
            accept.append(f(a.accept[p], b.accept[q]))
            ea, eb = a.edges[p], b.edges[q]
            da, db = a.default[p], b.default[q]
            d = number((da, db))
            default.append(d)
            explicit: dict[str, int] = {}
            for ch in ea.keys() | eb.keys():
                t = number((ea.get(ch, da), eb.get(ch, db)))
                if t != d:
                    explicit[ch] = t
            edges.append(explicit)
        dfa = self._minimise(accept, edges, default)
        self._products[key] = dfa
        return dfa

    # -- canonical form -----------------------------------------------------------------------

    def _minimise(self, accept: list[bool], edges: list[dict[str, int]], default: list[int]) -> Dfa:
        n = len(accept)
        cls = [1 if a else 0 for a in accept]
        count = len(set(cls))
        while True:
            self.budget.charge(n)
            sigs: dict[tuple[object, ...], int] = {}
            new = [0] * n
            for s in range(n):
                dc = cls[default[s]]
                sig = (
                    cls[s],
                    dc,
                    tuple(sorted((c, cls[t]) for c, t in edges[s].items() if cls[t] != dc)),
                )
                new[s] = sigs.setdefault(sig, len(sigs))
            cls = new
            if len(sigs) == count:
                break
            count = len(sigs)
        rep: dict[int, int] = {}
        for s in range(n):
            rep.setdefault(cls[s], s)
        q_accept = [False] * count
        q_edges: list[dict[str, int]] = [{} for _ in range(count)]
        q_default = [0] * count
        for c, s in rep.items():
            q_accept[c] = accept[s]
            d = cls[default[s]]
            q_default[c] = d
            q_edges[c] = {ch: cls[t] for ch, t in edges[s].items() if cls[t] != d}
        return self._finish(q_accept, q_edges, q_default, start=cls[0])

    def _finish(
        self, accept: list[bool], edges: list[dict[str, int]], default: list[int], start: int = 0
    ) -> Dfa:
        """Renumber breadth-first from ``start`` (explicit edges in character order, then the
        default edge) so equal minimal automata come out identical; intern the result."""
        number = {start: 0}
        order = [start]
        i = 0
        while i < len(order):
            s = order[i]
            i += 1
            for t in [edges[s][c] for c in sorted(edges[s])] + [default[s]]:
                if t not in number:
                    number[t] = len(order)
                    order.append(t)
        dfa = Dfa(
            tuple(accept[s] for s in order),
            tuple({c: number[t] for c, t in edges[s].items()} for s in order),
            tuple(number[default[s]] for s in order),
        )
        return self._intern(dfa)

    def _intern(self, dfa: Dfa) -> Dfa:
        return self._interned.setdefault(dfa, dfa)
