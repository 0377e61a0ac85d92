"""The automata against the concrete glob matcher, on random patterns and strings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trailguard.policy.automata import ANY_ONE, STAR, Algebra, Token, one_of
from trailguard.policy.glob import glob_match, parse_pattern
from trailguard.policy.limits import Budget, Limits

PATTERN = st.text(alphabet="ab:*?", max_size=6)
WORD = st.text(alphabet="ab:c", max_size=7)


def _tokens(pattern: str) -> tuple[Token, ...]:
    out: list[Token] = []
    for p in parse_pattern(pattern, wildcards=True, variables=False):
        if p.kind == "lit":
            out.extend(one_of(c) for c in p.text)
        else:
            out.append(STAR if p.kind == "star" else ANY_ONE)
    return tuple(out)


def _matches(pattern: str, word: str) -> bool:
    return glob_match(parse_pattern(pattern, wildcards=True, variables=False), word)


@settings(max_examples=300, deadline=None)
@given(st.lists(PATTERN, max_size=3), st.lists(PATTERN, max_size=3), st.lists(WORD, max_size=12))
def test_boolean_operations_agree_with_glob_matching(
    xs: list[str], ys: list[str], words: list[str]
) -> None:
    alg = Algebra(Budget(Limits()))
    a = alg.patterns([_tokens(p) for p in xs])
    b = alg.patterns([_tokens(p) for p in ys])
    for w in words:
        in_a = any(_matches(p, w) for p in xs)
        in_b = any(_matches(p, w) for p in ys)
        assert a.contains(w) == in_a
        assert alg.inter(a, b).contains(w) == (in_a and in_b)
        assert alg.union(a, b).contains(w) == (in_a or in_b)
        assert alg.diff(a, b).contains(w) == (in_a and not in_b)
        assert alg.complement(a).contains(w) == (not in_a)
    d = alg.diff(a, b)
    member = d.shortest()
    assert (member is None) == d.is_empty
    if member is not None:
        assert any(_matches(p, member) for p in xs)
        assert not any(_matches(p, member) for p in ys)


@settings(max_examples=200, deadline=None)
@given(st.lists(PATTERN, min_size=1, max_size=3))
def test_equal_languages_are_the_same_object(xs: list[str]) -> None:
    alg = Algebra(Budget(Limits()))
    a = alg.patterns([_tokens(p) for p in xs])
    again = alg.patterns([_tokens(p) for p in reversed(xs)] + [_tokens(xs[0])])
    assert a is again
    assert alg.union(a, alg.complement(a)) is alg.full
    assert alg.inter(a, alg.complement(a)) is alg.empty


def test_star_and_question_mark() -> None:
    alg = Algebra(Budget(Limits()))
    star = alg.patterns([_tokens("a*")])
    assert [star.contains(w) for w in ("a", "a:b/c", "b")] == [True, True, False]
    one = alg.patterns([_tokens("a?")])
    assert [one.contains(w) for w in ("ab", "a", "abc")] == [True, False, False]
    assert alg.patterns([_tokens("*")]) is alg.full
    assert alg.patterns([]) is alg.empty


def test_glob_match_literal_question_mark_and_backtracking() -> None:
    lit = parse_pattern("a${?}b", wildcards=True, variables=True)
    assert glob_match(lit, "a?b")
    assert not glob_match(lit, "axb")
    assert _matches("*a*a*a*b", "a" * 200 + "b")
    assert not _matches("*a*a*a*b", "a" * 200)
