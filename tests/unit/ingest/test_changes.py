"""Policy changes judged against the history (issue 16): which records are changes, what each is
compared with, the verdicts that make detections, the change object, the rules' suppressions and
severities, and the bounds on hostile documents.

The history is the real SQLite store, fed with the facts of raw CloudTrail records exactly as
the daemon feeds it; changes go through the Detector, the history and the ChangeJudge as in
ingestion (tests/change_support.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.change_support import (
    GUARDED,
    GUARDED_RELAID,
    NARROW_BOUNDARY,
    UNGUARDED,
    WIDE_BOUNDARY,
    at,
    create_policy,
    create_version,
    decoded,
    detector,
    document,
    feed,
    only,
    policy_arn,
    put_boundary,
    put_role_policy,
    set_default,
)
from tests.factories import ACCOUNT, assumed_role_identity, make_record
from trailguard.config import parse_config
from trailguard.detect.changes import (
    Baseline,
    ChangeCandidate,
    change_kind,
    document_sha256,
    judge,
    not_compared,
)
from trailguard.detect.detection import FileSource, encode_detection
from trailguard.detect.policy_facts import facts_from_record
from trailguard.errors import ConfigError
from trailguard.ingest.changes import ChangeJudge
from trailguard.observe import PolicyChangeJudged, Recorder
from trailguard.policy import Limits
from trailguard.state.policy_history_sqlite import SqliteHistoryStore

TERRAFORM_UA = "APN/1.0 HashiCorp/1.0 Terraform/1.9.8 (+https://www.terraform.io)"


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[SqliteHistoryStore]:
    async with await SqliteHistoryStore.open(tmp_path / "history.sqlite3") as store:
        yield store


def verdicts(recorder: Recorder) -> list[tuple[str, str, str]]:
    return [(e.event_id, e.kind, e.verdict) for e in recorder.of(PolicyChangeJudged)]


# ---------------------------------------------------------------------------------------------
# Which records are changes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (put_role_policy(GUARDED, 0, "e"), "inline"),
        (
            make_record(
                "PutUserPolicy",
                {"userName": "u", "policyName": "p", "policyDocument": GUARDED},
            ),
            "inline",
        ),
        (
            make_record(
                "PutGroupPolicy",
                {"groupName": "g", "policyName": "p", "policyDocument": GUARDED},
            ),
            "inline",
        ),
        (create_version("Guard", GUARDED, "v2", 0, "e"), "managed"),
        (create_version("Guard", GUARDED, "v2", 0, "e", default=False), None),
        (set_default("Guard", "v1", 0, "e"), "managed"),
        (put_boundary("app", "Boundary", 0, "e"), "boundary"),
        (create_policy("Guard", GUARDED, 0, "e"), None),  # new: nothing replaced
        (
            make_record(
                "CreateRole",
                {"roleName": "r", "permissionsBoundary": policy_arn("B"), "path": "/"},
            ),
            None,  # a boundary set at creation replaces none
        ),
        (make_record("DeleteRolePolicy", {"roleName": "app", "policyName": "guard"}), None),
    ],
)
def test_which_facts_are_changes(raw: dict[str, object], kind: str | None) -> None:
    (fact,) = facts_from_record(decoded(raw))
    assert change_kind(fact) == kind
    record = decoded(raw)
    facts = facts_from_record(record)
    candidate = detector().change(record, FileSource("f"), facts, None)
    assert (candidate.kind if candidate is not None else None) == kind


def test_a_failed_change_is_no_change() -> None:
    raw = put_role_policy(UNGUARDED, 0, "e", error_code="AccessDenied")
    record = decoded(raw)
    assert detector().change(record, FileSource("f"), facts_from_record(record), None) is None


def test_without_history_nothing_is_judged() -> None:
    raw = put_role_policy(UNGUARDED, 0, "e")
    record = decoded(raw)
    plain = detector()
    plain_no_history = type(plain)(plain.rules, history=False)
    assert plain_no_history.change_names == frozenset()
    outcome = plain_no_history.process_file(
        json.dumps({"Records": [raw]}).encode(), source=FileSource("f"), name="f", key=None
    )
    assert outcome.changes == []
    assert plain.change(record, FileSource("f"), facts_from_record(record), None) is not None


def test_the_change_rules_are_never_record_rules() -> None:
    """A Put*Policy alone is no detection: only its comparison makes one."""
    record = decoded(put_role_policy(UNGUARDED, 0, "e"))
    assert detector().rules.evaluate(record) is None
    match = detector().rules.evaluate_change(record, "weakened")
    assert match is not None
    assert (match.rule, match.severity) == ("iam-policy-weakened", "high")
    possibly = detector().rules.evaluate_change(record, "possibly_weakened")
    assert possibly is not None
    assert (possibly.rule, possibly.severity) == ("iam-policy-possibly-weakened", "medium")
    assert detector().rules.evaluate_change(record, "not_weakened") is None


# ---------------------------------------------------------------------------------------------
# Inline policies
# ---------------------------------------------------------------------------------------------


async def test_a_put_then_a_weakening_put_in_one_file(history: SqliteHistoryStore) -> None:
    recorder = Recorder()
    judged = await feed(
        history,
        put_role_policy(UNGUARDED, 1, "put-2"),  # file order is not time order
        put_role_policy(GUARDED, 0, "put-1"),
        recorder=recorder,
    )
    detection = only(judged.detections)
    assert detection.event_id == "put-2"
    assert (detection.rule, detection.severity, detection.disposition) == (
        "iam-policy-weakened",
        "high",
        "alert",
    )
    change = detection.change
    assert change is not None
    assert change.kind == "inline"
    assert change.verdict == "weakened"
    assert change.previous_event_id == "put-1"
    assert change.previous_event_time == at(0)
    assert change.previous_source == "trail"
    assert change.previous_document_sha256 == document_sha256(GUARDED)
    assert change.new_document_sha256 == document_sha256(UNGUARDED)
    assert change.witness is not None
    assert change.witness.confirmed
    assert change.witness.action == "s3:GetObject"
    assert change.witness.resource.startswith("arn:aws:s3:::data/secret/")
    assert change.witness.previously_denied_by == ("NoSecrets",)
    # the first put had nothing before it: counted, not reported
    assert verdicts(recorder) == [
        ("put-1", "inline", "baseline_unknown"),
        ("put-2", "inline", "weakened"),
    ]
    assert judged.counts == {"baseline_unknown": 1, "weakened": 1}


async def test_the_record_carries_the_change_object(history: SqliteHistoryStore) -> None:
    judged = await feed(
        history, put_role_policy(GUARDED, 0, "put-1"), put_role_policy(UNGUARDED, 1, "put-2")
    )
    line = json.loads(encode_detection(only(judged.detections)))
    assert list(line["change"]) == [
        "kind",
        "verdict",
        "reason",
        "witness",
        "previous_event_id",
        "previous_event_time",
        "previous_source",
        "previous_document_sha256",
        "new_document_sha256",
        "previous_version_id",
        "new_version_id",
        "previous_policy_arn",
        "previous_document_event_id",
        "new_document_event_id",
        "unmodelled",
    ]
    assert list(line["change"]["witness"]) == [
        "action",
        "resource",
        "context",
        "confirmed",
        "allowed_by",
        "previously_denied_by",
    ]


async def test_a_later_file_compares_with_the_history(history: SqliteHistoryStore) -> None:
    await feed(history, put_role_policy(GUARDED, 0, "put-1"))
    recorder = Recorder()
    judged = await feed(history, put_role_policy(UNGUARDED, 5, "put-2"), recorder=recorder)
    assert only(judged.detections).event_id == "put-2"
    # and a redelivery of the same file judges the same way (the history holds the fact once)
    again = await feed(history, put_role_policy(UNGUARDED, 5, "put-2"))
    assert only(again.detections).event_id == "put-2"


@pytest.mark.parametrize(
    "harmless",
    [
        GUARDED,
        GUARDED_RELAID,
        document(  # narrowing the Allow
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::data/public/*",
            },
            {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::data/secret/*"},
        ),
    ],
    ids=["same", "relaid", "narrowed"],
)
async def test_harmless_rewrites_are_counted_not_reported(
    history: SqliteHistoryStore, harmless: str
) -> None:
    recorder = Recorder()
    judged = await feed(
        history,
        put_role_policy(GUARDED, 0, "put-1"),
        put_role_policy(harmless, 1, "put-2"),
        recorder=recorder,
    )
    assert judged.detections == []
    assert verdicts(recorder)[-1] == ("put-2", "inline", "not_weakened")


async def test_other_names_and_principals_are_other_policies(history: SqliteHistoryStore) -> None:
    recorder = Recorder()
    judged = await feed(
        history,
        put_role_policy(GUARDED, 0, "put-1"),
        put_role_policy(UNGUARDED, 1, "put-2", name="other"),
        put_role_policy(UNGUARDED, 2, "put-3", role="other-role"),
        recorder=recorder,
    )
    assert judged.detections == []
    assert [v for _, _, v in verdicts(recorder)] == ["baseline_unknown"] * 3


async def test_delete_then_a_weaker_put_is_one_rewrite(history: SqliteHistoryStore) -> None:
    """The removal is detected on its own; the put that follows it is compared with the
    document the removal took away (a weaker policy under the old name is still a weakening)."""
    delete = make_record(
        "DeleteRolePolicy",
        {"roleName": "app", "policyName": "guard"},
        event_id="del-1",
        event_time=at(1),
    )
    judged = await feed(
        history,
        put_role_policy(GUARDED, 0, "put-1"),
        delete,
        put_role_policy(UNGUARDED, 2, "put-2"),
    )
    change = only(judged.detections).change
    assert change is not None
    assert change.previous_event_id == "put-1"


async def test_two_puts_in_one_second_compare_in_the_historys_order(
    history: SqliteHistoryStore,
) -> None:
    """CloudTrail's eventTime has whole seconds: within one, the history orders by eventID,
    and each change is compared with the fact just before it in that order."""
    second = at(1)
    recorder = Recorder()
    judged = await feed(
        history,
        put_role_policy(GUARDED, 0, "a-put"),
        put_role_policy(UNGUARDED, 0, "c-put", event_time=second),
        put_role_policy(GUARDED, 0, "b-put", event_time=second),
        recorder=recorder,
    )
    # b-put (the guard again) is compared with a-put; c-put (unguarded) with b-put
    detection = only(judged.detections)
    assert detection.event_id == "c-put"
    assert detection.change is not None
    assert detection.change.previous_event_id == "b-put"
    assert verdicts(recorder) == [
        ("a-put", "inline", "baseline_unknown"),
        ("b-put", "inline", "not_weakened"),
        ("c-put", "inline", "weakened"),
    ]


async def test_a_snapshot_is_a_baseline(history: SqliteHistoryStore) -> None:
    (snap,) = facts_from_record(decoded(put_role_policy(GUARDED, 0, "x")))
    snap = msgspec.structs.replace(
        snap, event_id=f"snapshot:2026-11-01T11:00:00Z:{ACCOUNT}:00000001", event_name=None
    )
    await history.record([snap])
    judged = await feed(history, put_role_policy(UNGUARDED, 3, "put-2"))
    change = only(judged.detections).change
    assert change is not None
    assert change.previous_source == "snapshot"
    assert change.previous_event_id == snap.event_id


async def test_a_change_without_a_readable_document_is_possibly_weakened(
    history: SqliteHistoryStore,
) -> None:
    """IAM accepted a document CloudTrail's record does not show as JSON: never a pass."""
    judged = await feed(
        history, put_role_policy(GUARDED, 0, "put-1"), put_role_policy("not json", 1, "put-2")
    )
    detection = only(judged.detections)
    assert detection.rule == "iam-policy-possibly-weakened"
    assert detection.severity == "medium"
    assert detection.change is not None
    assert detection.change.verdict == "possibly_weakened"
    assert detection.change.new_document_sha256 is None
    assert "no readable policy document" in detection.change.reason


async def test_what_the_engine_cannot_decide_is_possibly_weakened(
    history: SqliteHistoryStore,
) -> None:
    variable = document(
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::home/${aws:username}/*",
        }
    )
    narrower = document(
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::home/${aws:username}/docs/*",
        }
    )
    recorder = Recorder()
    judged = await feed(
        history,
        put_role_policy(variable, 0, "put-1"),
        put_role_policy(narrower, 1, "put-2"),
        recorder=recorder,
    )
    # The engine says it cannot decide a narrowed variable pattern rather than guess
    # (docs/POLICY_ENGINE.md); that is reported, one severity lower, with the candidate.
    detection = only(judged.detections)
    assert (detection.rule, detection.severity) == ("iam-policy-possibly-weakened", "medium")
    change = detection.change
    assert change is not None
    assert change.verdict == "possibly_weakened"
    assert change.witness is not None
    assert not change.witness.confirmed
    assert any("policy variable" in construct for construct in change.unmodelled)
    assert verdicts(recorder)[-1] == ("put-2", "inline", "possibly_weakened")


async def test_a_hostile_previous_document_does_not_blind_the_comparison(
    history: SqliteHistoryStore,
) -> None:
    """A previous document over the engine's limits (planted to make every later change pass)
    makes each later change possibly_weakened, not a silent pass."""
    statements = [{"Effect": "Deny", "Action": f"s3:Get{i}", "Resource": "*"} for i in range(600)]
    planted = document(*statements)
    judged = await feed(
        history, put_role_policy(planted, 0, "put-1"), put_role_policy(UNGUARDED, 1, "put-2")
    )
    change = only(judged.detections).change
    assert change is not None
    assert change.verdict == "possibly_weakened"
    assert "previous document cannot be read" in change.reason


async def test_what_a_detection_carries_of_a_verdict_is_bounded(
    history: SqliteHistoryStore,
) -> None:
    """The engine's reason and its opaque constructs grow with the documents; the record, the
    log line and the alert carry a bounded part of them."""

    def patterns(letter: str) -> str:
        return document(
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [
                    f"arn:aws:s3:::b/${{aws:username}}/{letter * 400}{i}/*" for i in range(40)
                ],
            }
        )

    recorder = Recorder()
    judged = await feed(
        history,
        put_role_policy(patterns("x"), 0, "put-1"),
        put_role_policy(patterns("y"), 1, "put-2"),
        recorder=recorder,
    )
    change = only(judged.detections).change
    assert change is not None
    assert change.verdict == "possibly_weakened"
    assert len(change.reason) <= 1024
    assert len(change.unmodelled) == 17
    assert change.unmodelled[-1] == "... and 24 more"  # of the 40 the engine listed
    assert all(len(item) <= 256 for item in change.unmodelled)
    (event,) = [e for e in recorder.of(PolicyChangeJudged) if e.event_id == "put-2"]
    assert event.reason == change.reason
    assert len(encode_detection(only(judged.detections))) < 16_000


async def test_the_engines_work_limit_is_possibly_weakened(history: SqliteHistoryStore) -> None:
    judge_ = ChangeJudge(history, Recorder(), limits=Limits(max_steps=10))
    judged = await feed(
        history,
        put_role_policy(GUARDED, 0, "put-1"),
        put_role_policy(UNGUARDED, 1, "put-2"),
        judge=judge_,
    )
    change = only(judged.detections).change
    assert change is not None
    assert change.verdict == "possibly_weakened"


async def test_a_batch_past_its_budget_is_reported_not_compared(
    history: SqliteHistoryStore,
) -> None:
    """Once a batch has spent its judging budget, the rest are reported possibly_weakened
    without comparison (and changes with nothing to compare stay exact)."""
    ticks = iter(range(0, 1000, 10))  # every judgement "takes" 10 s on this clock
    judge_ = ChangeJudge(history, Recorder(), budget_secs=25, clock=lambda: float(next(ticks)))
    judged = await feed(
        history,
        put_role_policy(GUARDED, 0, "put-1"),  # nothing before it (10 s)
        put_role_policy(GUARDED, 0, "put-9", role="other"),  # nothing before it (20 s)
        put_role_policy(GUARDED_RELAID, 1, "put-2"),  # compared: not weakened (30 s)
        put_role_policy(GUARDED, 2, "put-3"),  # budget spent: not compared
        put_role_policy(UNGUARDED, 3, "put-8", role="third"),  # nothing to compare: exact
        judge=judge_,
    )
    detection = only(judged.detections)
    assert detection.event_id == "put-3"
    assert detection.change is not None
    assert detection.change.verdict == "possibly_weakened"
    assert detection.change.reason.startswith("not compared: this batch's comparisons took over")
    assert judged.counts == {"baseline_unknown": 3, "not_weakened": 1, "possibly_weakened": 1}


# ---------------------------------------------------------------------------------------------
# Managed policies
# ---------------------------------------------------------------------------------------------


async def test_a_new_default_version_that_drops_a_deny(history: SqliteHistoryStore) -> None:
    judged = await feed(
        history,
        create_policy("Guard", GUARDED, 0, "create"),
        create_version("Guard", GUARDED_RELAID, "v2", 1, "v2-harmless"),
        create_version("Guard", UNGUARDED, "v3", 2, "v3-weak"),
    )
    detection = only(judged.detections)
    assert detection.event_id == "v3-weak"
    assert detection.target.policy_arn == policy_arn("Guard")
    assert detection.target.version_id == "v3"  # the version IAM created
    change = detection.change
    assert change is not None
    assert (change.kind, change.previous_version_id, change.new_version_id) == (
        "managed",
        "v2",
        "v3",
    )
    assert change.previous_event_id == "v2-harmless"  # the fact that recorded v2's document


async def test_a_version_not_made_default_changes_nothing(history: SqliteHistoryStore) -> None:
    recorder = Recorder()
    judged = await feed(
        history,
        create_policy("Guard", GUARDED, 0, "create"),
        create_version("Guard", UNGUARDED, "v2", 1, "v2", default=False),
        recorder=recorder,
    )
    assert judged.detections == []
    assert verdicts(recorder) == []


async def test_a_rollback_to_an_older_more_permissive_version(
    history: SqliteHistoryStore,
) -> None:
    """The escalation that needs only iam:SetDefaultPolicyVersion: v1 allowed more, v2 fixed
    it, and the default goes back to v1."""
    judged = await feed(
        history,
        create_policy("Guard", UNGUARDED, 0, "create-v1"),
        create_version("Guard", GUARDED, "v2", 1, "create-v2"),
        set_default("Guard", "v1", 2, "rollback"),
    )
    detection = only(judged.detections)
    assert detection.event_id == "rollback"
    assert detection.target.version_id == "v1"
    change = detection.change
    assert change is not None
    assert change.verdict == "weakened"
    assert (change.previous_version_id, change.new_version_id) == ("v2", "v1")
    assert change.previous_event_id == "create-v2"
    assert change.new_document_event_id == "create-v1"  # the rollback carries no document


async def test_set_default_to_what_history_does_not_know(history: SqliteHistoryStore) -> None:
    recorder = Recorder()
    judged = await feed(
        history,
        create_policy("Guard", GUARDED, 0, "create"),
        set_default("Guard", "v7", 1, "to-unknown"),
        set_default("Guard", "v7", 2, "same-again"),
        recorder=recorder,
    )
    assert judged.detections == []
    assert verdicts(recorder) == [
        ("to-unknown", "managed", "baseline_unknown"),
        ("same-again", "managed", "not_weakened"),  # v7 was already the default
    ]


# ---------------------------------------------------------------------------------------------
# Permissions boundaries
# ---------------------------------------------------------------------------------------------


async def test_a_wider_boundary(history: SqliteHistoryStore) -> None:
    recorder = Recorder()
    judged = await feed(
        history,
        create_policy("Narrow", NARROW_BOUNDARY, 0, "narrow"),
        create_policy("Wide", WIDE_BOUNDARY, 0, "wide"),
        make_record(
            "CreateRole",
            {"roleName": "app", "permissionsBoundary": policy_arn("Narrow")},
            event_id="create-role",
            event_time=at(1),
        ),
        put_boundary("app", "Narrow", 2, "same"),
        put_boundary("app", "Wide", 3, "widen"),
        put_boundary("app", "Narrow", 4, "narrow-again"),
        recorder=recorder,
    )
    detection = only(judged.detections)
    assert detection.event_id == "widen"
    assert (detection.target.kind, detection.target.name) == ("role", "app")
    assert detection.target.policy_arn == policy_arn("Wide")
    change = detection.change
    assert change is not None
    assert change.kind == "boundary"
    assert change.previous_policy_arn == policy_arn("Narrow")
    assert change.previous_event_id == "same"  # the event that set the previous boundary
    assert change.previous_document_event_id == "narrow"
    assert change.new_document_event_id == "wide"
    assert change.witness is not None
    assert verdicts(recorder) == [
        ("same", "boundary", "not_weakened"),
        ("widen", "boundary", "weakened"),
        ("narrow-again", "boundary", "not_weakened"),
    ]


async def test_a_boundary_whose_documents_are_unknown(history: SqliteHistoryStore) -> None:
    recorder = Recorder()
    judged = await feed(
        history,
        put_boundary("app", "Narrow", 0, "first"),
        put_boundary("app", "Wide", 1, "second"),
        recorder=recorder,
    )
    assert judged.detections == []
    assert [v for _, _, v in verdicts(recorder)] == ["baseline_unknown", "baseline_unknown"]


# ---------------------------------------------------------------------------------------------
# Rules: suppressions, severities, turning a verdict off
# ---------------------------------------------------------------------------------------------

PIPELINE_SUPPRESSED = """
[[rules]]
id = "iam-policy-weakened"
[[rules.suppress]]
name = "terraform-pipeline"
actor_arn = ["arn:aws:sts::*:assumed-role/ci-deployer/*"]
user_agent_preset = ["terraform"]
"""


async def test_the_terraform_pipeline_is_suppressed(history: SqliteHistoryStore) -> None:
    pipeline: dict[str, Any] = {
        "user_identity": assumed_role_identity("ci-deployer", "tf-apply-1"),
        "user_agent": TERRAFORM_UA,
    }
    found = detector(PIPELINE_SUPPRESSED)
    judged = await feed(
        history,
        put_role_policy(GUARDED, 0, "put-1"),
        put_role_policy(UNGUARDED, 1, "by-pipeline", **pipeline),
        found=found,
    )
    detection = only(judged.detections)
    assert detection.disposition == "suppressed"
    assert detection.suppressed_by == "rules[iam-policy-weakened].suppress[0] (terraform-pipeline)"
    # The same user agent from anyone else is no pipeline.
    spoofed = await feed(
        history,
        put_role_policy(UNGUARDED, 2, "spoofed", user_agent=TERRAFORM_UA),
        put_role_policy(GUARDED, 1, "put-back"),
        found=found,
    )
    assert only(spoofed.detections).disposition == "alert"


async def test_a_verdict_no_rule_wants_is_counted_not_reported(
    history: SqliteHistoryStore,
) -> None:
    found = detector('[[rules]]\nid = "iam-policy-possibly-weakened"\nenabled = false\n')
    recorder = Recorder()
    judged = await feed(
        history,
        put_role_policy(GUARDED, 0, "put-1"),
        put_role_policy("not json", 1, "put-2"),
        found=found,
        recorder=recorder,
    )
    assert judged.detections == []
    assert verdicts(recorder)[-1] == ("put-2", "inline", "possibly_weakened")
    (event,) = [e for e in recorder.of(PolicyChangeJudged) if e.event_id == "put-2"]
    assert not event.reported


async def test_both_change_rules_off_means_no_comparison_at_all(
    history: SqliteHistoryStore,
) -> None:
    found = detector(
        '[[rules]]\nid = "iam-policy-possibly-weakened"\nenabled = false\n'
        '[[rules]]\nid = "iam-policy-weakened"\nenabled = false\n'
    )
    recorder = Recorder()
    judged = await feed(
        history,
        put_role_policy(GUARDED, 0, "put-1"),
        put_role_policy(UNGUARDED, 1, "put-2"),
        found=found,
        recorder=recorder,
    )
    assert judged.detections == []
    assert recorder.events == []


async def test_an_added_change_rule_can_raise_the_severity(history: SqliteHistoryStore) -> None:
    found = detector(
        '[[rules]]\nid = "prod-weakened"\nevent_names = ["PutRolePolicy"]\n'
        'verdicts = ["weakened", "possibly_weakened"]\noutcomes = ["success"]\n'
        'severity_success = "critical"\n'
    )
    judged = await feed(
        history,
        put_role_policy(GUARDED, 0, "put-1"),
        put_role_policy(UNGUARDED, 1, "put-2"),
        found=found,
    )
    detection = only(judged.detections)
    assert (detection.rule, detection.severity) == ("prod-weakened", "critical")


async def test_a_guardrail_policy_name_escalates(history: SqliteHistoryStore) -> None:
    judged = await feed(
        history,
        put_role_policy(GUARDED, 0, "put-1", name="AWSCompromisedKeyQuarantineV3"),
        put_role_policy(UNGUARDED, 1, "put-2", name="AWSCompromisedKeyQuarantineV3"),
    )
    assert only(judged.detections).severity == "critical"


@pytest.mark.parametrize(
    ("toml", "key", "fragment"),
    [
        (
            '[[rules]]\nid = "x"\nevent_names = ["DeleteRolePolicy"]\nverdicts = ["weakened"]\n',
            "rules[0].event_names",
            "only PutUserPolicy",
        ),
        (
            '[[rules]]\nid = "iam-policy-weakened"\nverdicts = []\n',
            "rules[0].verdicts",
            "must list",
        ),
        (
            '[[rules]]\nid = "iam-policy-weakened"\nverdicts = ["weakened", "weakened"]\n',
            "rules[0].verdicts[1]",
            "duplicate",
        ),
        (
            '[[rules]]\nid = "iam-policy-weakened"\nverdicts = ["not_weakened"]\n',
            "rules[0].verdicts[0]",
            "",
        ),
        (
            '[[rules]]\nid = "iam-policy-weakened"\noutcomes = ["failure"]\n',
            "rules[0].outcomes",
            "success",
        ),
        (
            '[[rules]]\nid = "x"\nevent_names = ["PutRolePolicy"]\nverdicts = ["weakened"]\n'
            'event_source = "s3.amazonaws.com"\n',
            "rules[0].event_source",
            "iam.amazonaws.com",
        ),
    ],
)
def test_change_rule_config_errors(toml: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(toml, file="t.toml")
    assert raised.value.key_path == key
    assert fragment in str(raised.value)


# ---------------------------------------------------------------------------------------------
# judge() on its own
# ---------------------------------------------------------------------------------------------


def candidate(raw: dict[str, object]) -> ChangeCandidate:
    record = decoded(raw)
    found = detector().change(record, FileSource("f"), facts_from_record(record), None)
    assert found is not None
    return found


def test_judge_without_a_previous_document() -> None:
    c = candidate(put_role_policy(UNGUARDED, 1, "e"))
    judgement = judge(c, Baseline(missing="nothing recorded"))
    assert (judgement.count, judgement.reason, judgement.detection) == (
        "baseline_unknown",
        "nothing recorded",
        None,
    )


def test_not_compared_with_nothing_to_compare_is_exact() -> None:
    c = candidate(put_role_policy(UNGUARDED, 1, "e"))
    assert not_compared(c, Baseline(), "budget").count == "baseline_unknown"
    assert not_compared(c, Baseline(unchanged=True), "budget").count == "not_weakened"


# ---------------------------------------------------------------------------------------------
# README "Policy weakening": the examples, as the table states them
# ---------------------------------------------------------------------------------------------

_PAYMENTS = ["arn:aws:s3:::payments-data", "arn:aws:s3:::payments-data/*"]
_READ = {"Sid": "ReadPayments", "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"]}
_DENY = {
    "Sid": "NeverCardholderData",
    "Effect": "Deny",
    "Action": "s3:*",
    "Resource": "arn:aws:s3:::payments-data/cardholder/*",
}
README_PREVIOUS = document({**_READ, "Resource": _PAYMENTS}, _DENY)
README_EXAMPLES: list[tuple[str, str, tuple[str, str] | None]] = [
    (
        json.dumps(
            {
                "Statement": [
                    {**_DENY, "Sid": "X", "Action": "S3:*"},
                    {
                        "Effect": "Allow",
                        "Action": ["S3:getobject", "s3:listbucket"],
                        "Resource": list(reversed(_PAYMENTS)),
                    },
                ],
                "Version": "2012-10-17",
            },
            indent=2,
        ),
        "not_weakened",
        None,
    ),
    (
        document(
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": _PAYMENTS},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": _PAYMENTS},
            _DENY,
        ),
        "not_weakened",
        None,
    ),
    (
        document(
            {
                **_READ,
                "Resource": ["arn:aws:s3:::payments-data", "arn:aws:s3:::payments-data/reports/*"],
            },
            _DENY,
        ),
        "not_weakened",
        None,
    ),
    (
        document({**_READ, "Resource": _PAYMENTS}),
        "weakened",
        ("s3:GetObject", "arn:aws:s3:::payments-data/cardholder/example"),
    ),
    (
        document(
            {**_READ, "Resource": _PAYMENTS},
            {**_DENY, "Resource": "arn:aws:s3:::payments-data/cardholder/2026/*"},
        ),
        "weakened",
        ("s3:GetObject", "arn:aws:s3:::payments-data/cardholder/example"),
    ),
    (
        document({**_READ, "Action": "s3:*", "Resource": _PAYMENTS}, _DENY),
        "weakened",
        ("s3:example", "arn:aws:s3:::payments-data"),
    ),
    (
        document(
            {**_READ, "Resource": ["arn:aws:s3:::payments-data", "arn:aws:s3:::Payments-data/*"]},
            _DENY,
        ),
        "weakened",
        ("s3:GetObject", "arn:aws:s3:::Payments-data/example"),
    ),
    (
        document(
            {**_READ, "Resource": _PAYMENTS},
            _DENY,
            {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"},
        ),
        "weakened",
        ("iam:PassRole", "arn:aws:s3:::payments-data"),
    ),
]


@pytest.mark.parametrize(("new", "verdict", "witness"), README_EXAMPLES)
async def test_the_readme_examples(
    history: SqliteHistoryStore, new: str, verdict: str, witness: tuple[str, str] | None
) -> None:
    recorder = Recorder()
    judged = await feed(
        history,
        put_role_policy(README_PREVIOUS, 0, "put-1"),
        put_role_policy(new, 1, "put-2"),
        recorder=recorder,
    )
    assert verdicts(recorder)[-1] == ("put-2", "inline", verdict)
    if witness is None:
        assert judged.detections == []
        return
    change = only(judged.detections).change
    assert change is not None
    assert change.witness is not None
    assert (change.witness.action, change.witness.resource) == witness
