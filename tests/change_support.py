"""Helpers for the policy-change tests: documents, CloudTrail records of policy changes, and the
daemon's own path from records to weakening detections (Detector -> history -> ChangeJudge).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from tests.factories import ACCOUNT, make_record
from trailguard.config import Config, parse_config
from trailguard.detect.detection import Detection, FileSource
from trailguard.detect.digest import digest_of
from trailguard.detect.process import Detector
from trailguard.detect.record import Record
from trailguard.detect.rules import RuleSet
from trailguard.ingest.changes import ChangeJudge, Judged
from trailguard.observe import Recorder
from trailguard.state.policy_history import PolicyHistoryStore


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


#: read data/, never data/secret/
GUARDED = document(
    {"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::data/*"},
    {
        "Sid": "NoSecrets",
        "Effect": "Deny",
        "Action": "s3:*",
        "Resource": "arn:aws:s3:::data/secret/*",
    },
)
#: the guard statement dropped
UNGUARDED = document(
    {"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::data/*"}
)
#: GUARDED reformatted and reordered, the Sids renamed: the same policy
GUARDED_RELAID = json.dumps(
    {
        "Statement": [
            {
                "Resource": ["arn:aws:s3:::data/secret/*"],
                "Action": ["S3:*"],
                "Effect": "Deny",
                "Sid": "B",
            },
            {"Effect": "Allow", "Action": ["s3:getobject"], "Resource": "arn:aws:s3:::data/*"},
        ],
        "Version": "2012-10-17",
    },
    indent=4,
)
NARROW_BOUNDARY = document({"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
WIDE_BOUNDARY = document({"Effect": "Allow", "Action": "*", "Resource": "*"})


def policy_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:policy/{name}"


def at(minute: int, second: int = 0) -> str:
    return f"2026-11-01T12:{minute:02d}:{second:02d}Z"


def put_role_policy(
    doc: str, minute: int, event_id: str, *, role: str = "app", name: str = "guard", **kw: Any
) -> dict[str, Any]:
    params = {"roleName": role, "policyName": name, "policyDocument": doc}
    return make_record(
        "PutRolePolicy",
        params,
        event_id=event_id,
        event_time=kw.pop("event_time", at(minute)),
        **kw,
    )


def create_policy(name: str, doc: str, minute: int, event_id: str, **kw: Any) -> dict[str, Any]:
    params = {"policyName": name, "path": "/", "policyDocument": doc}
    response = {"policy": {"arn": policy_arn(name), "defaultVersionId": "v1", "path": "/"}}
    return make_record(
        "CreatePolicy",
        params,
        event_id=event_id,
        event_time=at(minute),
        responseElements=response,
        **kw,
    )


def create_version(
    name: str,
    doc: str,
    version: str,
    minute: int,
    event_id: str,
    *,
    default: bool = True,
    **kw: Any,
) -> dict[str, Any]:
    params = {"policyArn": policy_arn(name), "policyDocument": doc, "setAsDefault": default}
    response = {"policyVersion": {"versionId": version, "isDefaultVersion": default}}
    return make_record(
        "CreatePolicyVersion",
        params,
        event_id=event_id,
        event_time=at(minute),
        responseElements=response,
        **kw,
    )


def set_default(name: str, version: str, minute: int, event_id: str, **kw: Any) -> dict[str, Any]:
    params = {"policyArn": policy_arn(name), "versionId": version}
    return make_record(
        "SetDefaultPolicyVersion", params, event_id=event_id, event_time=at(minute), **kw
    )


def put_boundary(role: str, name: str, minute: int, event_id: str, **kw: Any) -> dict[str, Any]:
    params = {"roleName": role, "permissionsBoundary": policy_arn(name)}
    return make_record(
        "PutRolePermissionsBoundary", params, event_id=event_id, event_time=at(minute), **kw
    )


def decoded(raw: dict[str, Any]) -> Record:
    return msgspec.json.decode(json.dumps(raw).encode(), type=Record)


def detector(toml: str = "") -> Detector:
    config = parse_config(toml, file="t.toml") if toml else Config()
    return Detector(RuleSet.from_config(config), history=True)


async def feed(
    history: PolicyHistoryStore,
    *raws: dict[str, Any],
    found: Detector | None = None,
    recorder: Recorder | None = None,
    judge: ChangeJudge | None = None,
) -> Judged:
    """What ingestion does with one batch of records: facts into the history first, then the
    batch's changes judged against it."""
    found = found or detector()
    changes = []
    facts = []
    for raw in raws:
        record = decoded(raw)
        source = FileSource("test.json")
        _, record_facts, digest = found.examine(record, source)
        facts.extend(record_facts)
        change = found.change(record, source, record_facts, digest or digest_of(record))
        if change is not None:
            changes.append(change)
    await history.record(facts)
    judge = judge or ChangeJudge(history, recorder if recorder is not None else Recorder())
    return await judge.judge(changes)


def only(detections: Sequence[Detection]) -> Detection:
    assert len(detections) == 1, [d.event_id for d in detections]
    return detections[0]
