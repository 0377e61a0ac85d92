"""Properties of compare() on random documents, checked against brute force.

Random documents are drawn over a small vocabulary of actions, resources and condition clauses
that the engine models exactly, and every request of a fixed pool is run through the concrete
evaluator on both documents.  The engine must agree with brute force wherever brute force sees a
difference (no false ``not_weakened``), never answer ``possibly_weakened`` on such documents,
and every ``weakened`` witness must hold.  Safe transformations of a document are never
weakening, and neither is any change to a document that only removes permissions.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.policy_corpus import safe_transforms
from trailguard.policy import Request, compare, evaluate, parse_document
from trailguard.policy.document import Document

ACTIONS = [
    "s3:GetObject",
    "s3:Get*",
    "s3:*",
    "*",
    "iam:*",
    "iam:PassRole",
    "s3:?etObject",
    "ec2:*Instances",
    "S3:PUTOBJECT",
]
RESOURCES = [
    "*",
    "arn:aws:s3:::b/*",
    "arn:aws:s3:::b/x",
    "arn:aws:s3:::*",
    "arn:aws:iam::1:role/a*",
    "arn:aws:iam::1:role/admin",
]
CLAUSES: list[tuple[str, str, Any]] = [
    ("StringEquals", "aws:RequestedRegion", "eu-west-1"),
    ("StringNotEquals", "aws:RequestedRegion", ["eu-west-1", "us-east-1"]),
    ("StringLike", "s3:prefix", "home/*"),
    ("Bool", "aws:SecureTransport", "false"),
    ("BoolIfExists", "aws:MultiFactorAuthPresent", "false"),
    ("NumericLessThan", "aws:MultiFactorAuthAge", "3600"),
    ("NumericGreaterThanEquals", "aws:MultiFactorAuthAge", 3600),
    ("IpAddress", "aws:SourceIp", "10.0.0.0/8"),
    ("NotIpAddress", "aws:SourceIp", "10.1.0.0/16"),
    ("Null", "aws:TokenIssueTime", "true"),
    ("DateLessThan", "aws:CurrentTime", "2030-01-01T00:00:00Z"),
    ("StringEqualsIgnoreCase", "aws:PrincipalTag/team", "Ops"),
    ("ArnLike", "aws:SourceArn", "arn:aws:lambda:*:1:function:app-*"),
    ("StringNotLikeIfExists", "aws:PrincipalArn", "arn:aws:iam::1:role/admin*"),
]
POOL_ACTIONS = [
    "s3:GetObject",
    "s3:PutObject",
    "s3:GetBucket",
    "iam:PassRole",
    "iam:CreateUser",
    "ec2:StartInstances",
    "kms:Decrypt",
    "s3:xetObject",
]
POOL_RESOURCES = [
    "arn:aws:s3:::b/x",
    "arn:aws:s3:::b/y",
    "arn:aws:s3:::c/x",
    "arn:aws:iam::1:role/admin",
    "arn:aws:iam::1:role/app",
    "*",
]
_FULL = {
    "aws:RequestedRegion": "eu-west-1",
    "s3:prefix": "home/a",
    "aws:SecureTransport": "true",
    "aws:MultiFactorAuthPresent": "true",
    "aws:MultiFactorAuthAge": "100",
    "aws:SourceIp": "10.0.0.1",
    "aws:CurrentTime": "2025-01-01T00:00:00Z",
    "aws:PrincipalTag/team": "OPS",
    "aws:SourceArn": "arn:aws:lambda:eu-west-1:1:function:app-x",
    "aws:PrincipalArn": "arn:aws:iam::1:role/dev",
}
_OTHER = {
    "aws:RequestedRegion": "ap-south-1",
    "s3:prefix": "etc/",
    "aws:SecureTransport": "false",
    "aws:MultiFactorAuthPresent": "false",
    "aws:MultiFactorAuthAge": "4000",
    "aws:SourceIp": "10.1.2.3",
    "aws:CurrentTime": "2031-01-01T00:00:00Z",
    "aws:PrincipalTag/team": "dev",
    "aws:SourceArn": "arn:aws:lambda:eu-west-1:1:function:x",
    "aws:PrincipalArn": "arn:aws:iam::1:role/admin-1",
    "aws:TokenIssueTime": "2025-01-01T00:00:00Z",
}


def _contexts() -> list[dict[str, str | list[str]]]:
    out: list[dict[str, str | list[str]]] = [{}, dict(_FULL), dict(_OTHER)]
    rnd = random.Random(7)
    for _ in range(9):
        out.append(
            {k: rnd.choice([_FULL, _OTHER])[k] for k in _OTHER if k in _FULL and rnd.random() < 0.8}
        )
    return out


POOL = [
    Request(action=a, resource=r, context=c)
    for a, r, c in itertools.product(POOL_ACTIONS, POOL_RESOURCES, _contexts())
]

statement = st.fixed_dictionaries(
    {
        "Effect": st.sampled_from(["Allow", "Allow", "Deny"]),
        "acts": st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=3),
        "not_action": st.booleans(),
        "res": st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=2),
        "not_resource": st.booleans(),
        "conds": st.lists(st.sampled_from(CLAUSES), max_size=2),
    }
)


def _render(stmts: list[dict[str, Any]]) -> dict[str, Any]:
    out = []
    for s in stmts:
        d: dict[str, Any] = {"Effect": s["Effect"]}
        d["NotAction" if s["not_action"] and s["Effect"] == "Deny" else "Action"] = s["acts"]
        d["NotResource" if s["not_resource"] and s["Effect"] == "Deny" else "Resource"] = s["res"]
        if s["conds"]:
            cond: dict[str, dict[str, Any]] = {}
            for op, key, value in s["conds"]:
                cond.setdefault(op, {})[key] = value
            d["Condition"] = cond
        out.append(d)
    return {"Version": "2012-10-17", "Statement": out}


documents = st.lists(statement, min_size=1, max_size=4).map(_render)


def _parse(doc: dict[str, Any]) -> Document:
    parsed = parse_document(json.dumps(doc))
    assert isinstance(parsed, Document)
    return parsed


def _brute_force_difference(prev: Document, new: Document) -> Request | None:
    for req in POOL:
        if evaluate(new, req).allowed is True and evaluate(prev, req).allowed is False:
            return req
    return None


@settings(max_examples=120, deadline=None)
@given(documents, documents)
def test_agrees_with_brute_force(prev_doc: dict[str, Any], new_doc: dict[str, Any]) -> None:
    v = compare(json.dumps(prev_doc), json.dumps(new_doc))
    prev, new = _parse(prev_doc), _parse(new_doc)
    assert v.verdict in ("weakened", "not_weakened"), v.reason
    if v.verdict == "weakened":
        assert v.witness is not None
        w = v.witness
        req = Request(action=w.action, resource=w.resource, context=w.context)
        assert evaluate(new, req).allowed is True
        assert evaluate(prev, req).allowed is False
    else:
        assert _brute_force_difference(prev, new) is None


@settings(max_examples=60, deadline=None)
@given(documents, st.randoms(use_true_random=False))
def test_safe_transformations_are_not_weakening(doc: dict[str, Any], rnd: random.Random) -> None:
    for name, changed in safe_transforms(doc, rnd):
        v = compare(json.dumps(doc), json.dumps(changed))
        assert v.verdict == "not_weakened", (name, v.reason)


@settings(max_examples=60, deadline=None)
@given(documents, documents)
def test_taking_permissions_away_is_not_weakening(a: dict[str, Any], b: dict[str, Any]) -> None:
    """If A is B with more Deny statements and fewer Allow statements, B -> A is not weakening."""
    smaller = copy.deepcopy(b)
    smaller["Statement"] = (
        [s for s in b["Statement"] if s["Effect"] == "Deny"]
        + [s for s in a["Statement"] if s["Effect"] == "Deny"]
        + [s for s in b["Statement"] if s["Effect"] == "Allow"][1:]
    )
    if not smaller["Statement"]:
        return
    assert compare(json.dumps(b), json.dumps(smaller)).verdict == "not_weakened"
    assert compare(json.dumps(a), json.dumps(a)).verdict == "not_weakened"


@settings(max_examples=60, deadline=None)
@given(documents)
def test_union_with_anything_is_never_narrower(doc: dict[str, Any]) -> None:
    """Adding Allow statements never narrows: prev -> prev+allows is not_weakened the other way."""
    wider = copy.deepcopy(doc)
    wider["Statement"].append({"Effect": "Allow", "Action": "kms:*", "Resource": "*"})
    assert compare(json.dumps(wider), json.dumps(doc)).verdict == "not_weakened"
