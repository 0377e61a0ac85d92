"""The concrete evaluator: IAM's evaluation rules for one identity policy, case by case."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trailguard.policy import Request, evaluate, parse_document
from trailguard.policy.document import Document


def _allowed(
    condition: dict[str, Any] | None,
    context: dict[str, str | list[str]],
    *,
    action: str = "s3:GetObject",
    resource: str = "arn:aws:s3:::b/k",
    version: str = "2012-10-17",
) -> bool | None:
    stmt: dict[str, Any] = {
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::b/*",
    }
    if condition is not None:
        stmt["Condition"] = condition
    doc = parse_document(json.dumps({"Version": version, "Statement": stmt}))
    assert isinstance(doc, Document)
    return evaluate(doc, Request(action=action, resource=resource, context=context)).allowed


def test_actions_ignore_case_resources_do_not() -> None:
    assert _allowed(None, {}, action="S3:GETOBJECT") is True
    assert _allowed(None, {}, resource="arn:aws:s3:::B/k") is False
    assert _allowed(None, {}, resource="arn:aws:s3:::b/a:b/c") is True  # * crosses : and /


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        ({"StringEquals": {"k": "v"}}, {}, False),
        ({"StringEquals": {"k": "v"}}, {"K": "v"}, True),  # keys ignore case
        ({"StringEquals": {"k": "v"}}, {"k": "V"}, False),
        ({"StringEqualsIgnoreCase": {"k": "v"}}, {"k": "V"}, True),
        ({"StringNotEquals": {"k": ["a", "b"]}}, {}, True),  # negated: true when absent
        ({"StringNotEquals": {"k": ["a", "b"]}}, {"k": "b"}, False),
        ({"StringNotEquals": {"k": ["a", "b"]}}, {"k": "c"}, True),
        ({"StringLike": {"k": "a*"}}, {"k": "abc"}, True),
        ({"StringLike": {"k": "a?"}}, {"k": "abc"}, False),
        ({"StringEquals": {"k": "a*"}}, {"k": "abc"}, False),  # no wildcards in Equals
        ({"StringEqualsIfExists": {"k": "v"}}, {}, True),
        ({"StringEqualsIfExists": {"k": "v"}}, {"k": "w"}, False),
        ({"Null": {"k": "true"}}, {}, True),
        ({"Null": {"k": "true"}}, {"k": "x"}, False),
        ({"Null": {"k": "false"}}, {"k": "x"}, True),
        ({"Bool": {"k": "true"}}, {"k": "true"}, True),
        ({"Bool": {"k": True}}, {"k": "false"}, False),
        ({"NumericLessThan": {"k": "10"}}, {"k": "9.5"}, True),
        ({"NumericLessThan": {"k": 10}}, {"k": "10"}, False),
        ({"NumericLessThan": {"k": "10"}}, {"k": "ten"}, False),
        ({"NumericNotEquals": {"k": "10"}}, {"k": "ten"}, True),
        ({"DateGreaterThan": {"k": "2020-01-01T00:00:00Z"}}, {"k": "2021-01-01"}, True),
        ({"DateGreaterThan": {"k": "2020-01-01T00:00:00Z"}}, {"k": "1500000000"}, False),
        ({"IpAddress": {"k": "10.0.0.0/8"}}, {"k": "10.1.2.3"}, True),
        ({"NotIpAddress": {"k": ["10.0.0.0/8", "2001:db8::/32"]}}, {"k": "2001:db8::5"}, False),
        ({"NotIpAddress": {"k": "10.0.0.0/8"}}, {"k": "192.0.2.1"}, True),
        ({"ArnLike": {"k": "arn:aws:iam::*:role/a*"}}, {"k": "arn:aws:iam::1:role/ab"}, True),
        # ARN components: a * in the account does not reach across ':'
        ({"ArnLike": {"k": "arn:aws:iam::*:role/a*"}}, {"k": "arn:aws:iam::1:2:role/ab"}, False),
        ({"ArnNotLike": {"k": "arn:aws:iam::*:role/a*"}}, {}, True),
        ({"ForAllValues:StringEquals": {"k": ["a", "b"]}}, {}, True),
        ({"ForAllValues:StringEquals": {"k": ["a", "b"]}}, {"k": ["a", "c"]}, False),
        ({"ForAnyValue:StringEquals": {"k": ["a", "b"]}}, {}, False),
        ({"ForAnyValue:StringEquals": {"k": ["a", "b"]}}, {"k": ["c", "b"]}, True),
        ({"ForAnyValue:StringNotEquals": {"k": ["a"]}}, {"k": ["a"]}, False),
        (
            {"StringLike": {"k": "home/${aws:username}/*"}},
            {"k": "home/al/x", "aws:username": "al"},
            True,
        ),
        (
            {"StringLike": {"k": "home/${aws:username}/*"}},
            {"k": "home/al/x", "aws:username": "bo"},
            False,
        ),
        ({"StringEquals": {"k": "${*}"}}, {"k": "*"}, True),
    ],
)
def test_conditions(condition: dict[str, Any], context: dict[str, Any], expected: bool) -> None:
    assert _allowed(condition, context) is expected


@pytest.mark.parametrize(
    ("condition", "context"),
    [
        ({"StringFancy": {"k": "v"}}, {"k": "v"}),  # an operator the evaluator does not know
        ({"StringLike": {"k": "${aws:username}"}}, {"k": "x"}),  # variable without a value
        ({"StringEquals": {"k": "v"}}, {"k": ["v"]}),  # multi-valued value, single-valued op
        ({"NumericLessThan": {"k": "not a number"}}, {"k": "1"}),
    ],
)
def test_unknown_is_none(condition: dict[str, Any], context: dict[str, Any]) -> None:
    assert _allowed(condition, context) is None


def test_variables_are_text_before_2012() -> None:
    cond = {"StringEquals": {"k": "${aws:username}"}}
    assert _allowed(cond, {"k": "${aws:username}"}, version="2008-10-17") is True


def test_deny_wins_and_unknown_propagates() -> None:
    doc = parse_document(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Sid": "All", "Effect": "Allow", "Action": "*", "Resource": "*"},
                    {"Sid": "NoIam", "Effect": "Deny", "NotAction": "s3:*", "Resource": "*"},
                    {
                        "Effect": "Deny",
                        "Action": "s3:Delete*",
                        "Resource": "*",
                        "Condition": {"Whatever": {"k": "v"}},
                    },
                ],
            }
        )
    )
    assert isinstance(doc, Document)
    ev = evaluate(doc, Request(action="iam:CreateUser", resource="*"))
    assert ev.allowed is False
    assert ev.denies == ("NoIam",)
    assert evaluate(doc, Request(action="s3:GetObject", resource="*")).allowed is True
    assert evaluate(doc, Request(action="s3:DeleteObject", resource="*")).allowed is None
