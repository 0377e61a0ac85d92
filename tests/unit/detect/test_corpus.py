"""The shipped corpus of real, published CloudTrail records (tests/data/corpus/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CORPUS
from trailguard.detect.detection import FileSource
from trailguard.detect.process import Detector
from trailguard.vocabulary import REMOVAL_EVENT_NAMES

#: restated on purpose, not imported: the ten APIs trailguard promises to watch, an oracle
#: independent of trailguard.vocabulary (the first test checks the two agree)
REMOVAL_APIS = {
    "DeleteUserPolicy",
    "DeleteRolePolicy",
    "DeleteGroupPolicy",
    "DeletePolicy",
    "DeletePolicyVersion",
    "DetachUserPolicy",
    "DetachRolePolicy",
    "DetachGroupPolicy",
    "DeleteUserPermissionsBoundary",
    "DeleteRolePermissionsBoundary",
}


def _samples() -> list[tuple[int, dict[str, Any]]]:
    lines = (CORPUS / "samples.jsonl").read_text().splitlines()
    return [(n, json.loads(line)) for n, line in enumerate(lines, 1) if line.strip()]


SAMPLES = _samples()


def test_the_watched_apis_are_the_promised_ten() -> None:
    assert len(REMOVAL_EVENT_NAMES) == len(set(REMOVAL_EVENT_NAMES)) == 10
    assert set(REMOVAL_EVENT_NAMES) == REMOVAL_APIS


def test_corpus_is_what_its_readme_says() -> None:
    assert len(SAMPLES) == 85
    assert sum(1 for _, s in SAMPLES if s["expected_policy_removal"]) == 1


@pytest.mark.parametrize(("line", "sample"), SAMPLES, ids=[f"line{n}" for n, _ in SAMPLES])
def test_labelled_sample(default_detector: Detector, line: int, sample: dict[str, Any]) -> None:
    """Each line on its own: successes detected as success, failed attempts as failure."""
    record = sample["record"]
    data = json.dumps(record).encode()
    outcome = default_detector.process_file(
        data, source=FileSource(file=f"samples.jsonl:{line}"), name=f"line {line}", key=None
    )
    assert outcome.decoded.records == 1
    is_removal_api = (
        record.get("eventName") in REMOVAL_APIS and record.get("eventSource") == "iam.amazonaws.com"
    )
    failed = bool(record.get("errorCode") or record.get("errorMessage"))
    if sample["expected_policy_removal"]:
        assert [d.outcome for d in outcome.detections] == ["success"]
        assert outcome.detections[0].disposition == "alert"
        assert outcome.detections[0].event_id == record.get("eventID")
    elif is_removal_api and failed:
        assert [d.outcome for d in outcome.detections] == ["failure"]
        assert outcome.detections[0].error_code == record.get("errorCode")
    else:
        assert outcome.detections == []


def test_failed_attempts_are_in_the_corpus() -> None:
    """Guards the test above: the corpus does hold failed removal attempts to check."""
    failed = [
        s
        for _, s in SAMPLES
        if s["record"].get("eventName") in REMOVAL_APIS and s["record"].get("errorCode")
    ]
    assert len(failed) >= 2


def test_the_successful_removal_has_its_target(default_detector: Detector) -> None:
    (sample,) = [s for _, s in SAMPLES if s["expected_policy_removal"]]
    record = sample["record"]
    outcome = default_detector.process_file(
        json.dumps(record).encode(), source=FileSource(file="x"), name="x", key=None
    )
    (detection,) = outcome.detections
    params = record["requestParameters"]
    assert detection.target.kind == "group"
    assert detection.target.name == params["groupName"]
    assert detection.target.policy_name == params["policyName"]


STRATUS = sorted((CORPUS / "stratus-red-team").glob("*.json"))


def test_stratus_red_team_has_no_policy_removal(default_detector: Detector) -> None:
    assert len(STRATUS) == 35
    records = 0
    for path in STRATUS:
        outcome = default_detector.process_file(
            path.read_bytes(), source=FileSource(file=str(path)), name=str(path), key=str(path)
        )
        assert outcome.decoded.shape == "array"
        assert outcome.detections == [], path.name
        records += outcome.decoded.records
    assert records == 310


def test_stratus_gzip_in_every_shape_still_detects_nothing(
    default_detector: Detector, tmp_path: Path
) -> None:
    import gzip

    path = STRATUS[0]
    records = json.loads(path.read_bytes())
    for shape, data in {
        "records": json.dumps({"Records": records}).encode(),
        "jsonl": "".join(json.dumps(r) + "\n" for r in records).encode(),
    }.items():
        outcome = default_detector.process_file(
            gzip.compress(data), source=FileSource(file=shape), name=shape, key=None
        )
        assert outcome.decoded.shape == shape
        assert outcome.decoded.records == len(records)
        assert outcome.detections == []
