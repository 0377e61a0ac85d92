"""``python -m bench.policy``: the policy-weakening engine's speed and its mutation-suite matrix.

    python -m bench.policy                 # a few seconds; prints a table
    python -m bench.policy --json out.json # the same figures as JSON

Measured in one run, in this process (not part of ``make bench``):

* time per ``compare()`` on every pair of the mutation suite (tests/policy_corpus.py: realistic
  managed-policy-like documents with guardrail Denies; text parsing included), repeated
  ``--repeat`` times round-robin: median, p90, p99 and max, split by verdict;
* the same on a document at IAM's inline-policy size limit (10,240 characters without
  whitespace: 60 statements) against itself with one Deny removed, and against itself reordered;
* engine steps per check (automaton states and box operations, the unit of the work budget);
* the suite's confusion matrix: label (weakening / safe) x verdict.

Timings are never asserted: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import statistics
import sys
import time
from typing import Any

from tests.policy_corpus import pairs

from trailguard.policy import compare


def _big_document(seed: int = 16) -> dict[str, Any]:
    rnd = random.Random(seed)
    services = ["s3", "ec2", "dynamodb", "lambda", "logs", "sqs", "sns", "kms", "rds", "ecr"]
    verbs = ["Get", "List", "Describe", "Put", "Create", "Delete", "Update", "Tag"]
    stmts: list[dict[str, Any]] = []
    for i in range(48):
        svc = rnd.choice(services)
        acts = [
            f"{svc}:{rnd.choice(verbs)}{rnd.choice(['*', 'Item', 'Object', 'Queue'])}"
            for _ in range(rnd.randint(1, 5))
        ]
        stmt: dict[str, Any] = {
            "Sid": f"App{i}",
            "Effect": "Allow",
            "Action": acts,
            "Resource": f"arn:aws:{svc}:eu-west-1:123456789012:app-{i}/*",
        }
        if i % 3 == 0:
            stmt["Condition"] = {"StringEquals": {"aws:ResourceTag/team": f"team-{i % 5}"}}
        stmts.append(stmt)
    for i in range(12):
        svc = services[i % len(services)]
        stmts.append(
            {
                "Sid": f"Guard{i}",
                "Effect": "Deny",
                "Action": f"{svc}:Delete*",
                "Resource": "*",
                "Condition": {
                    "StringNotEquals": {"aws:PrincipalTag/role": "admin"},
                    "Bool": {"aws:MultiFactorAuthPresent": "true"},
                },
            }
        )
    return {"Version": "2012-10-17", "Statement": stmts}


def _stats(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))]

    return {
        "n": len(s),
        "median_ms": round(statistics.median(s) * 1000, 3),
        "p90_ms": round(q(0.90) * 1000, 3),
        "p99_ms": round(q(0.99) * 1000, 3),
        "max_ms": round(s[-1] * 1000, 3),
    }


def run(repeat: int) -> dict[str, Any]:
    suite = list(pairs())
    times: dict[str, list[float]] = collections.defaultdict(list)
    steps: list[int] = []
    matrix: collections.Counter[str] = collections.Counter()
    for r in range(repeat):
        for _name, prev, new, label, _probe, _opaque in suite:
            t = time.perf_counter()
            v = compare(prev, new)
            dt = time.perf_counter() - t
            times["all"].append(dt)
            times[v.verdict].append(dt)
            if r == 0:
                matrix[f"{label} -> {v.verdict}"] += 1
                steps.append(v.steps)
    big = _big_document()
    big_text = json.dumps(big, separators=(",", ":"))
    dropped = dict(big, Statement=[s for s in big["Statement"] if s["Sid"] != "Guard3"])
    shuffled = dict(big, Statement=list(reversed(big["Statement"])))
    big_times: dict[str, list[float]] = collections.defaultdict(list)
    big_verdicts: dict[str, str] = {}
    big_steps: dict[str, int] = {}
    for _ in range(max(3, repeat)):
        for name, other in (("drop one Deny", dropped), ("reordered", shuffled)):
            t = time.perf_counter()
            v = compare(big_text, json.dumps(other))
            big_times[name].append(time.perf_counter() - t)
            big_verdicts[name], big_steps[name] = v.verdict, v.steps
    ordered = sorted(steps)
    return {
        "pairs": len(suite),
        "repeat": repeat,
        "per_check": {k: _stats(v) for k, v in sorted(times.items())},
        "steps": {"median": ordered[len(ordered) // 2], "max": ordered[-1]},
        "confusion_matrix": dict(sorted(matrix.items())),
        "big_document": {
            "chars_without_whitespace": len(big_text),
            "statements": len(big["Statement"]),
            **{
                name: {**_stats(ts), "verdict": big_verdicts[name], "steps": big_steps[name]}
                for name, ts in big_times.items()
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policy", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    result = run(args.repeat)
    print(f"mutation suite: {result['pairs']} pairs x {result['repeat']} runs")
    for verdict, st in result["per_check"].items():
        print(
            f"  {verdict:<18} n={st['n']:<5} median {st['median_ms']:7.2f} ms   "
            f"p90 {st['p90_ms']:7.2f} ms   p99 {st['p99_ms']:7.2f} ms   max {st['max_ms']:7.2f} ms"
        )
    print(
        f"  engine steps per check: median {result['steps']['median']}, "
        f"max {result['steps']['max']}"
    )
    print("confusion matrix (label -> verdict):")
    for k, n in result["confusion_matrix"].items():
        print(f"  {k:<34} {n}")
    big = result["big_document"]
    print(
        f"document at the inline-policy limit ({big['chars_without_whitespace']} chars, "
        f"{big['statements']} statements):"
    )
    for name in ("drop one Deny", "reordered"):
        st = big[name]
        print(
            f"  {name:<14} -> {st['verdict']:<13} median {st['median_ms']:7.2f} ms   "
            f"max {st['max_ms']:7.2f} ms   steps {st['steps']}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
