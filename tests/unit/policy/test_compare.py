"""compare(): the issue's cases, malformed and hostile documents, limits, the verdict as JSON."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import msgspec
import pytest

from trailguard.policy import Limits, Request, compare, evaluate, parse_document
from trailguard.policy.document import Document

GUARD = {
    "Sid": "DenyIamWithoutMfa",
    "Effect": "Deny",
    "Action": "iam:*",
    "Resource": "*",
    "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
}
ADMIN = {"Sid": "Admin", "Effect": "Allow", "Action": "*", "Resource": "*"}


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _verify(prev: str, new: str) -> None:
    v = compare(prev, new)
    assert v.verdict == "weakened", v
    assert v.witness is not None
    assert v.witness.confirmed
    req = Request(action=v.witness.action, resource=v.witness.resource, context=v.witness.context)
    p, n = parse_document(prev), parse_document(new)
    assert isinstance(p, Document)
    assert isinstance(n, Document)
    assert evaluate(n, req).allowed is True
    assert evaluate(p, req).allowed is False


def test_put_role_policy_without_its_deny_is_weakened() -> None:
    prev, new = _doc(ADMIN, GUARD), _doc(ADMIN)
    _verify(prev, new)
    v = compare(prev, new)
    assert v.witness is not None
    assert v.witness.action.lower().startswith("iam:")
    assert v.witness.previously_denied_by == ("DenyIamWithoutMfa",)
    assert v.witness.allowed_by == ("Admin",)


def test_removed_condition_and_widened_allow() -> None:
    scoped = {
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::b/*",
        "Condition": {"StringEquals": {"aws:PrincipalTag/team": "data"}},
    }
    unscoped = {k: v for k, v in scoped.items() if k != "Condition"}
    _verify(_doc(scoped), _doc(unscoped))
    _verify(_doc(unscoped), _doc({**unscoped, "Action": "s3:*"}))
    _verify(_doc(unscoped), _doc({**unscoped, "Resource": "*"}))
    _verify(
        _doc(unscoped),
        _doc(unscoped, {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}),
    )


def test_cosmetic_changes_are_not_weakening() -> None:
    prev = _doc(ADMIN, GUARD)
    same = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["IAM:*"],
                "Resource": ["*"],
                "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": [False]}},
            },
            {"Sid": "Everything", "Effect": "Allow", "Action": ["*:*"], "Resource": "*"},
        ],
    }
    assert compare(prev, json.dumps(same, indent=4)).verdict == "not_weakened"
    assert compare(prev, urllib.parse.quote(json.dumps(same))).verdict == "not_weakened"
    assert compare(urllib.parse.quote(prev), prev).verdict == "not_weakened"


def test_narrowing_is_not_weakening_and_widening_back_is() -> None:
    wide = _doc({"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "*"})
    narrow = _doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"})
    assert compare(wide, narrow).verdict == "not_weakened"
    _verify(narrow, wide)  # the rollback to an older, wider version


def test_boundary_kind_is_recorded() -> None:
    v = compare(_doc(ADMIN, GUARD), _doc(ADMIN), kind="boundary")
    assert v.kind == "boundary"
    assert v.verdict == "weakened"


def test_not_action_not_resource() -> None:
    prev = _doc(
        {"Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:*", "NotResource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]},
    )
    assert (
        compare(prev, _doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})).verdict
        == "weakened"
    )
    narrower = _doc(
        {
            "Effect": "Allow",
            "NotAction": ["iam:*", "organizations:*", "account:*"],
            "Resource": "*",
        },
        {"Effect": "Deny", "Action": "s3:*", "NotResource": "arn:aws:s3:::b/*"},
    )
    assert compare(prev, narrower).verdict == "not_weakened"


def test_undecidable_is_possibly_weakened_never_a_pass() -> None:
    prev = _doc(
        {
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": "*",
            "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}},
        }
    )
    new = _doc(
        {
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": "*",
            "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}},
        }
    )
    v = compare(prev, new)
    assert v.verdict == "possibly_weakened"
    assert "ForAllValues:StringEquals" in v.reason
    # an unknown operator changed: not decidable either
    p2 = _doc(
        {
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": "*",
            "Condition": {"StringFancy": {"k": "a"}},
        }
    )
    n2 = _doc(
        {
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": "*",
            "Condition": {"StringFancy": {"k": "b"}},
        }
    )
    assert compare(p2, n2).verdict == "possibly_weakened"
    # ... but unchanged opaque conditions do not stop an exact answer
    assert compare(p2, _doc(*json.loads(p2)["Statement"], GUARD)).verdict == "not_weakened"


def test_variables_can_still_be_decided_or_confirmed() -> None:
    own = {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::home/${aws:username}/*"}
    assert compare(_doc(own), _doc(own, GUARD)).verdict == "not_weakened"
    _verify(_doc(own), _doc({**own, "Resource": "arn:aws:s3:::home/*"}))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not a JSON object"),
        ("not json", "not a JSON object"),
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"Statement": []', "not JSON"),
        ('{"Version": "2012-10-17"}', "no Statement"),
        ('{"Version": "2019-01-01", "Statement": []}', "Version"),
        ('{"Statement": [], "Extra": 1}', "unknown top-level"),
        ('{"Statement": {"Effect": "allow", "Action": "*", "Resource": "*"}}', "Effect"),
        ('{"Statement": {"Effect": "Allow", "Resource": "*"}}', "Action"),
        (
            '{"Statement": {"Effect": "Allow", "Action": "*", "NotAction": "*", "Resource": "*"}}',
            "Action",
        ),
        ('{"Statement": {"Effect": "Allow", "Action": "*"}}', "Resource"),
        ('{"Statement": {"Effect": "Allow", "Action": 5, "Resource": "*"}}', "string"),
        (
            '{"Statement": {"Effect": "Allow", "Effect": "Deny", "Action": "*", "Resource": "*"}}',
            "twice",
        ),
        (
            '{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": []}}',
            "Condition",
        ),
        (
            '{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*",'
            ' "Condition": {"Bool": {"k": {}}}}}',
            "condition value",
        ),
        ('{"Statement": NaN}', "NaN"),
        ("%7B%ZZ", "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "not a JSON object"),
        ('{"Statement":' + "[" * 50_000 + "]" * 50_000 + "}", "nested"),
    ],
)
def test_malformed_documents(text: str, why: str) -> None:
    for prev, new, which in ((text, _doc(ADMIN), "previous"), (_doc(ADMIN), text, "new")):
        v = compare(prev, new)
        assert v.verdict == "unknown_document"
        assert v.document == which
        assert why in v.reason


def test_limits() -> None:
    many = _doc(*[{"Effect": "Allow", "Action": f"s3:Get{i}", "Resource": "*"} for i in range(600)])
    assert compare(_doc(ADMIN), many).verdict == "unknown_document"
    long_value = _doc({"Effect": "Allow", "Action": "s3:" + "a" * 5000, "Resource": "*"})
    assert "longer than" in compare(_doc(ADMIN), long_value).reason
    assert compare(_doc(ADMIN), "x" * 300_000).verdict == "unknown_document"
    assert compare(_doc(ADMIN), b"\xff\xfe").verdict == "unknown_document"
    assert compare(_doc(ADMIN), 42).verdict == "unknown_document"  # type: ignore[arg-type]


def test_work_budget_gives_possibly_weakened() -> None:
    patterns = [f"arn:aws:s3:::b{i}*x*y*z/*" for i in range(40)]
    prev = _doc({"Effect": "Allow", "Action": "s3:*", "Resource": patterns})
    new = _doc({"Effect": "Allow", "Action": "s3:*", "Resource": [*patterns, "arn:aws:s3:::c/*"]})
    v = compare(prev, new, limits=Limits(max_steps=200))
    assert v.verdict == "possibly_weakened"
    assert "limits" in v.reason
    assert compare(prev, new).verdict == "weakened"


def test_hostile_patterns_stay_cheap() -> None:
    star = "*a" * 500
    prev = _doc({"Effect": "Allow", "Action": "s3:*", "Resource": star})
    new = _doc({"Effect": "Allow", "Action": "s3:*", "Resource": star + "b"})
    assert compare(prev, new).verdict == "weakened"  # "...ab" does not end in "a"
    wider = _doc({"Effect": "Allow", "Action": "s3:*", "Resource": star + "*"})
    assert compare(wider, prev).verdict == "not_weakened"
    big = _doc(
        {
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": "*",
            "Condition": {"NumericLessThan": {"k": "1e99999"}},
        }
    )
    assert compare(prev, big).verdict in ("weakened", "possibly_weakened")


def test_verdict_is_json() -> None:
    v = compare(_doc(ADMIN, GUARD), _doc(ADMIN))
    data = json.loads(msgspec.json.encode(v))
    assert data["verdict"] == "weakened"
    assert data["witness"]["confirmed"] is True
    assert set(data) >= {"verdict", "kind", "reason", "witness", "document", "unmodelled", "steps"}


def test_statements_that_match_nothing() -> None:
    nothing = _doc(
        {"Effect": "Allow", "NotAction": "*", "Resource": "*"},
        {"Effect": "Allow", "Action": [], "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:*", "NotResource": "*"},
    )
    assert compare(_doc(GUARD), nothing).verdict == "not_weakened"
    assert compare(nothing, _doc(ADMIN)).verdict == "weakened"
