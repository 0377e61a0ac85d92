"""The policy mutation suite: realistic base documents and pairs labelled by construction.

Each base document is shaped like what accounts run (managed-policy-like Allows, guardrail Deny
statements with conditions, a permissions boundary).  Every Deny statement carries a *probe*:
a request that statement denies and the document's Allows allow, so dropping or narrowing that
Deny is weakening and the probe shows it.  Hand-written weakening mutations carry their own
probe.  :func:`pairs` yields ``(name, previous, new, label, probe)`` with label ``"weakening"``
or ``"safe"``; a weakening pair's probe is the construction's proof (tests check it with the
concrete evaluator: allowed by ``new``, not by ``previous``).

Safe transformations: reorder statements and list elements, re-case actions, reformat (indent,
key order, URL-encoding), Sid change/removal, statement split and merge, ``"*"`` <-> ``"*:*"``,
scalar <-> one-element list, redundant list elements, duplicate statements, and narrowing
(remove an Allow action or statement, add a condition to an Allow, widen a Deny, add a Deny,
remove a Deny's condition).  Bases with policy variables or set operators test that the engine
answers ``possibly_weakened`` rather than guess where it cannot decide.
"""

from __future__ import annotations

import copy
import json
import random
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, Literal

from tests.policy_bases import Doc, bases, stmt_by_sid
from trailguard.policy import Request

Label = Literal["weakening", "safe"]
ACCOUNT = "123456789012"


# -- safe (non-weakening) transformations -------------------------------------------------------


def _recase(action: str, rnd: random.Random) -> str:
    return "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in action)


def _map_actions(doc: Doc, f: Callable[[str], str]) -> None:
    for s in doc["Statement"]:
        for key in ("Action", "NotAction"):
            if key in s:
                s[key] = [f(a) for a in s[key]] if isinstance(s[key], list) else f(s[key])


def _listify(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def safe_transforms(doc: Doc, rnd: random.Random) -> Iterator[tuple[str, Doc]]:
    stmts = doc["Statement"]

    def variant(name: str, f: Callable[..., object]) -> tuple[str, Doc]:
        d = copy.deepcopy(doc)
        f(d)
        return name, d

    yield variant("reorder-statements", lambda d: rnd.shuffle(d["Statement"]))
    yield variant(
        "reverse-lists",
        lambda d: [
            s.__setitem__(k, list(reversed(s[k])))
            for s in d["Statement"]
            for k in list(s)
            if isinstance(s[k], list)
        ],
    )
    yield variant("recase-actions", lambda d: _map_actions(d, lambda a: _recase(a, rnd)))
    yield variant(
        "sid-renamed",
        lambda d: [s.__setitem__("Sid", f"S{i}x") for i, s in enumerate(d["Statement"])],
    )
    yield variant("sid-removed", lambda d: [s.pop("Sid", None) for s in d["Statement"]])
    yield variant(
        "scalars-to-lists",
        lambda d: [
            s.__setitem__(k, _listify(s[k]))
            for s in d["Statement"]
            for k in ("Action", "NotAction", "Resource", "NotResource")
            if k in s
        ],
    )
    yield variant(
        "star-to-star-colon-star", lambda d: _map_actions(d, lambda a: "*:*" if a == "*" else a)
    )
    yield variant(
        "duplicate-statement", lambda d: d["Statement"].append(copy.deepcopy(d["Statement"][0]))
    )
    for i, s in enumerate(stmts):
        key = "Action" if "Action" in s else None
        if key and isinstance(s[key], list) and len(s[key]) > 1:

            def split(d: Doc, i: int = i) -> None:
                st = d["Statement"][i]
                first, second = copy.deepcopy(st), copy.deepcopy(st)
                first["Action"], second["Action"] = st["Action"][:1], st["Action"][1:]
                second.pop("Sid", None)
                d["Statement"][i : i + 1] = [first, second]

            yield variant(f"split-actions-{i}", split)
            yield variant(
                f"redundant-action-{i}",
                lambda d, i=i: d["Statement"][i]["Action"].append(d["Statement"][i]["Action"][0]),
            )
        if s["Effect"] == "Allow" and key and isinstance(s[key], list) and len(s[key]) > 1:
            yield variant(
                f"narrow-allow-action-{i}", lambda d, i=i: d["Statement"][i]["Action"].pop()
            )
        if s["Effect"] == "Allow":
            yield variant(
                f"allow-gets-condition-{i}",
                lambda d, i=i: (
                    d["Statement"][i]
                    .setdefault("Condition", {})
                    .setdefault("StringEquals", {})
                    .__setitem__("aws:PrincipalTag/cleared", "yes")
                ),
            )
            yield variant(f"drop-allow-{i}", lambda d, i=i: d["Statement"].pop(i))
        if s["Effect"] == "Deny":
            if "Condition" in s:
                yield variant(
                    f"deny-loses-condition-{i}", lambda d, i=i: d["Statement"][i].pop("Condition")
                )
            if "Resource" in s:
                yield variant(
                    f"deny-resource-to-star-{i}",
                    lambda d, i=i: d["Statement"][i].__setitem__("Resource", "*"),
                )
            if "Action" in s:
                yield variant(
                    f"deny-gets-action-{i}",
                    lambda d, i=i: d["Statement"][i].__setitem__(
                        "Action", [*_listify(d["Statement"][i]["Action"]), "iam:CreateAccessKey"]
                    ),
                )
    # merge two statements that differ only in their actions: the inverse of a split
    for i in range(len(stmts) - 1):
        a, b = stmts[i], stmts[i + 1]
        if (
            "Action" in a
            and "Action" in b
            and all(
                a.get(k) == b.get(k) for k in ("Effect", "Resource", "NotResource", "Condition")
            )
        ):

            def merge(d: Doc, i: int = i) -> None:
                x, y = d["Statement"][i], d["Statement"].pop(i + 1)
                x["Action"] = _listify(x["Action"]) + _listify(y["Action"])

            yield variant(f"merge-{i}", merge)
    yield variant(
        "add-deny",
        lambda d: d["Statement"].append(
            {
                "Sid": "NewGuardrail",
                "Effect": "Deny",
                "Action": ["iam:DeleteAccountPasswordPolicy", "ec2:DeleteVpc"],
                "Resource": "*",
                "Condition": {
                    "StringNotLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/admin-*"}
                },
            }
        ),
    )


def render(doc: Doc, rnd: random.Random) -> str:
    """One of several equivalent texts for ``doc``."""
    style = rnd.randrange(4)
    if style == 0:
        return json.dumps(doc)
    if style == 1:
        return json.dumps(doc, indent=4, sort_keys=True)
    if style == 2:
        return json.dumps(doc, separators=(",", ":"))
    return urllib.parse.quote(json.dumps(doc, indent=2), safe="")


def pairs(seed: int = 16) -> Iterator[tuple[str, str, str, Label, Request | None, bool]]:
    """``(name, previous, new, label, probe, opaque_base)`` for the whole suite."""
    rnd = random.Random(seed)
    for base in bases():
        prev_text = json.dumps(base.doc)
        weak: list[tuple[str, Doc, Request]] = []
        for sid, probe in base.deny_probes.items():
            d = copy.deepcopy(base.doc)
            d["Statement"] = [s for s in d["Statement"] if s.get("Sid") != sid]
            weak.append((f"drop-deny-{sid}", d, probe))
            d = copy.deepcopy(base.doc)
            s = stmt_by_sid(d, sid)
            s["Effect"] = "Allow"
            weak.append((f"deny-flipped-to-allow-{sid}", d, probe))
            if s.get("Resource") == "*" or s.get("Resource") == ["*"]:
                d = copy.deepcopy(base.doc)
                stmt_by_sid(d, sid)["Resource"] = "arn:aws:trailguard:::nothing"
                weak.append((f"narrow-deny-resource-{sid}", d, probe))
        for name, mutate, probe in base.weakenings:
            d = copy.deepcopy(base.doc)
            mutate(d)
            weak.append((name, d, probe))
        if base.outside is not None:
            d = copy.deepcopy(base.doc)
            o = base.outside
            d["Statement"].append({"Effect": "Allow", "Action": o.action, "Resource": o.resource})
            weak.append(("add-allow", d, o))
            d = copy.deepcopy(base.doc)
            d["Statement"].append({"Effect": "Allow", "Action": "*", "Resource": "*"})
            weak.append(("add-allow-everything", d, o))
        for name, d, probe in weak:
            for k in range(3):  # each weakening, also behind cosmetic changes
                shown = d
                if k:
                    cosmetic = list(safe_transforms(d, rnd))
                    pick = [
                        c
                        for c in cosmetic
                        if c[0]
                        in (
                            "reorder-statements",
                            "recase-actions",
                            "sid-renamed",
                            "scalars-to-lists",
                            "reverse-lists",
                        )
                    ]
                    shown = rnd.choice(pick)[1]
                yield (
                    f"{base.name}/{name}/{k}",
                    prev_text,
                    render(shown, rnd),
                    "weakening",
                    probe,
                    base.opaque,
                )
        extra = []
        for name, mutate in base.safe_extra:
            d = copy.deepcopy(base.doc)
            mutate(d)
            extra.append((name, d))
        for name, d in [*safe_transforms(base.doc, rnd), *extra]:
            yield (f"{base.name}/{name}", prev_text, render(d, rnd), "safe", None, base.opaque)
            yield (
                f"{base.name}/{name}/reformatted",
                render(base.doc, rnd),
                render(d, rnd),
                "safe",
                None,
                base.opaque,
            )
