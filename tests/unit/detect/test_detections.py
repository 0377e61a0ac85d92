"""Positives for all ten removal APIs, in every file shape, and the detection record's form."""

from __future__ import annotations

import json

import pytest

from tests.factories import (
    ACCOUNT,
    ATTACKER_ARN,
    REMOVALS,
    SHAPES,
    Shape,
    assumed_role_identity,
    encode_file,
    make_record,
    noise_record,
)
from trailguard.detect.detection import FileSource, S3Source, encode_detection
from trailguard.detect.process import Detector

TOP_FIELDS = [
    "event_id",
    "event_time",
    "event_name",
    "event_source",
    "aws_region",
    "account_id",
    "actor",
    "target",
    "outcome",
    "error_code",
    "severity",
    "rule",
    "disposition",
    "suppressed_by",
    "source",
    "event_digest",
    "forgery_suspected",
    "change",
]
ACTOR_FIELDS = [
    "type",
    "arn",
    "principal_id",
    "access_key_id",
    "mfa_authenticated",
    "session_issuer_arn",
    "invoked_by",
    "source_ip",
    "user_agent",
    "console_session",
]
TARGET_FIELDS = ["kind", "name", "policy_name", "policy_arn", "version_id"]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("api", sorted(REMOVALS))
def test_every_api_in_every_shape(
    default_detector: Detector, api: str, shape: Shape, compress: bool
) -> None:
    ok = make_record(api)
    failed = make_record(api, error_code="AccessDenied")
    records = [noise_record(0), ok, noise_record(1), failed, noise_record(2)]
    outcome = default_detector.process_file(
        encode_file(records, shape, compress=compress),
        source=FileSource(file="f"),
        name="f",
        key=None,
    )
    assert outcome.decoded.records == 5
    assert [(d.event_id, d.outcome) for d in outcome.detections] == [
        (ok["eventID"], "success"),
        (failed["eventID"], "failure"),
    ]
    kind, name, policy_name, policy_arn, version_id = REMOVALS[api][1]
    for detection in outcome.detections:
        assert detection.event_name == api
        assert detection.account_id == ACCOUNT
        assert detection.target.kind == kind
        assert detection.target.name == name
        assert detection.target.policy_name == policy_name
        assert detection.target.policy_arn == policy_arn
        assert detection.target.version_id == version_id
        assert detection.actor.arn == ATTACKER_ARN
        assert detection.disposition == "alert"
    assert outcome.detections[1].error_code == "AccessDenied"


@pytest.mark.parametrize(
    ("event_name", "event_source"),
    [
        ("DeletePolicy", "organizations.amazonaws.com"),
        ("DetachPolicy", "organizations.amazonaws.com"),
        ("DeleteBucketPolicy", "s3.amazonaws.com"),
        ("DeleteAccountPasswordPolicy", "iam.amazonaws.com"),
        ("DeleteKeyPolicy", "kms.amazonaws.com"),
        ("DeleteRolePolicy", "sso.amazonaws.com"),
        ("PutRolePolicy", "iam.amazonaws.com"),
        ("AttachUserPolicy", "iam.amazonaws.com"),
        ("DeleteUser", "iam.amazonaws.com"),
    ],
)
def test_look_alikes_are_not_detected(
    default_detector: Detector, event_name: str, event_source: str
) -> None:
    record = make_record(event_name, {"policyId": "p-123"}, event_source=event_source)
    outcome = default_detector.process_file(
        encode_file([record]), source=FileSource(file="f"), name="f", key=None
    )
    assert outcome.detections == []


def test_detection_record_has_every_field_null_not_absent(default_detector: Detector) -> None:
    record = make_record(
        "DeleteRolePermissionsBoundary",
        user_identity=assumed_role_identity("admin", "sess", mfa=True),
    )
    outcome = default_detector.process_file(
        encode_file([record], compress=True),
        source=S3Source(bucket="trail", key="AWSLogs/x.json.gz"),
        name="s3://trail/AWSLogs/x.json.gz",
        key="AWSLogs/x.json.gz",
    )
    (detection,) = outcome.detections
    line = encode_detection(detection)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    doc = json.loads(line)
    assert list(doc) == TOP_FIELDS
    assert list(doc["actor"]) == ACTOR_FIELDS
    assert list(doc["target"]) == TARGET_FIELDS
    assert doc["source"] == {"bucket": "trail", "key": "AWSLogs/x.json.gz"}
    assert doc["error_code"] is None
    assert doc["suppressed_by"] is None
    assert doc["change"] is None
    assert doc["target"]["policy_arn"] is None
    assert doc["actor"]["mfa_authenticated"] is True
    assert doc["actor"]["session_issuer_arn"] == f"arn:aws:iam::{ACCOUNT}:role/admin"
    assert doc["actor"]["access_key_id"] == "ASIAEXAMPLESESSION01"
    assert doc["event_digest"].startswith("sha256:")
    assert doc["forgery_suspected"] is False
    assert doc["target"] == {
        "kind": "role",
        "name": "lambda-exec",
        "policy_name": None,
        "policy_arn": None,
        "version_id": None,
    }


def test_record_without_event_id_is_still_detected(default_detector: Detector) -> None:
    record = make_record("DeleteUserPolicy")
    del record["eventID"]
    outcome = default_detector.process_file(
        encode_file([record]), source=FileSource(file="f"), name="f", key=None
    )
    (detection,) = outcome.detections
    assert detection.event_id is None
    assert json.loads(encode_detection(detection))["event_id"] is None


def test_crafted_request_parameters_do_not_crash(default_detector: Detector) -> None:
    """A forged record may put any JSON type where a string belongs."""
    record = make_record("DeleteUserPolicy", {"userName": ["x"], "policyName": {"a": 1}})
    outcome = default_detector.process_file(
        encode_file([record]), source=FileSource(file="f"), name="f", key=None
    )
    (detection,) = outcome.detections
    assert detection.target.name is None
    assert detection.target.policy_name is None
