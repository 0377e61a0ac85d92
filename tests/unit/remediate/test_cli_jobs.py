"""``trailguard jobs ...`` over a real job store: list (table and JSON), show, approve, retry,
cancel, and the exit codes (1: no such job / wrong state / no state file; 2: usage)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from tests.factories import iam_user_identity
from tests.remediation_support import T0, config_toml, detection, remediation_config
from trailguard.cli import main
from trailguard.remediate.job_store import SqliteJobStore
from trailguard.remediate.jobs import (
    Finding,
    Job,
    WritePlan,
    audit,
    planned_write,
)
from trailguard.remediate.planner import plan_jobs


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "trailguard.toml"
    path.write_text(f'[state]\npath = "{tmp_path / "state.sqlite3"}"\n')
    return path


@pytest.fixture
async def jobs(tmp_path: Path, config_file: Path) -> dict[str, Job]:
    approve = remediation_config(config_toml(mode="approve", actions='"quarantine_actor"'))
    enforce = remediation_config(config_toml(actions='"restore_inline_policy", "audit_actor"'))
    [waiting] = plan_jobs(detection("DetachUserPolicy", event_id="evt-q"), approve, now=T0)
    restore, audit_job = plan_jobs(detection("DeleteUserPolicy", event_id="evt-r"), enforce, now=T0)
    async with await SqliteJobStore.open(tmp_path / "state.sqlite3") as store:
        await store.enqueue_many([waiting, restore, audit_job])
        claimed = {j.id: j for j in await store.claim_due(T0 + 1, 10, lease_secs=60)}
        done = msgspec.structs.replace(
            claimed[restore.id],
            state="succeeded",
            changed=True,
            audit=(*restore.audit, audit("did", "put inline policy s3-read on user alice")),
        )
        await store.complete(done)
        dead = msgspec.structs.replace(
            claimed[audit_job.id],
            state="dead",
            error="AccessDenied: ListMFADevices",
            findings=(Finding(code="no_mfa", severity="high", subject="user/mallory", detail="x"),),
        )
        await store.complete(dead)
    return {"waiting": waiting, "restore": done, "dead": dead}


ALLOW_ALL = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*"}]}'


@pytest.fixture
async def planned(tmp_path: Path, config_file: Path) -> Job:
    """A restore that waits for approval with a plan (as the runner stores it)."""
    enforce = remediation_config(config_toml(actions='"restore_inline_policy"'))
    [job] = plan_jobs(detection("DeleteUserPolicy", event_id="evt-p"), enforce, now=T0)
    plan = WritePlan(
        action=job.action,
        account_id=job.account_id or "",
        writes=(
            planned_write("PutUserPolicy", "user/alice", document=ALLOW_ALL, policyName="s3-read"),
        ),
        events=("evt-p", "put-x"),
        conflicts=("put-x",),
    )
    async with await SqliteJobStore.open(tmp_path / "state.sqlite3") as store:
        await store.enqueue_many([job])
        [claimed] = await store.claim_due(T0 + 1, 1, lease_secs=60)
        waiting = msgspec.structs.replace(
            claimed,
            state="awaiting_approval",
            reason="conflict: eventID put-x seen with 2 different contents",
            plan=plan,
            plan_sha256=plan.sha256,
        )
        await store.complete(waiting)
    return waiting


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_table(
    jobs: dict[str, Job], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "jobs", "list", "--config", str(config_file))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "STATE",
        "ACTION",
        "MODE",
        "ACCOUNT",
        "EVENT",
        "UPDATED",
        "NOTE",
    ]
    assert len(lines) == 4
    assert any(
        line.startswith(jobs["waiting"].id) and "awaiting_approval" in line for line in lines
    )


def test_list_json_with_state_filter(
    jobs: dict[str, Job], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "jobs", "list", "--config", str(config_file), "--json", "--state", "succeeded"
    )
    assert code == 0
    [record] = json.loads(out)
    assert record["id"] == jobs["restore"].id
    assert record["state"] == "succeeded"
    assert record["changed"] is True
    assert record["audit"][-1]["step"] == "did"
    assert record["detection"]["event_id"] == "evt-r"
    assert record["created_at"].endswith("Z")


def test_show(jobs: dict[str, Job], config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = jobs["dead"]
    code, out, _ = run(capsys, "jobs", "show", "--config", str(config_file), job.id)
    assert code == 0
    assert f"job        {job.id}" in out
    assert "error      AccessDenied: ListMFADevices" in out
    assert "[high] no_mfa user/mallory" in out
    code, out, _ = run(capsys, "jobs", "show", "--config", str(config_file), job.id, "--json")
    assert json.loads(out)["findings"][0]["code"] == "no_mfa"


HOSTILE_ARN = "arn:aws:iam::123456789012:user/x\x1b]0;pwned\x07\nstate      succeeded"


@pytest.fixture
async def hostile_job(tmp_path: Path, config_file: Path) -> Job:
    """A job planned from a forged record whose ARN, names and eventID hold escape sequences."""
    enforce = remediation_config(config_toml(actions='"restore_inline_policy"'))
    [job] = plan_jobs(
        detection(
            "DeleteUserPolicy",
            {"userName": "bob\r\x1b[2J", "policyName": "p"},
            event_id="evt-\x1b[31m",
            user_identity=iam_user_identity(HOSTILE_ARN),
        ),
        enforce,
        now=T0,
    )
    async with await SqliteJobStore.open(tmp_path / "state.sqlite3") as store:
        await store.enqueue_many([job])
    return job


def test_values_from_the_record_cannot_write_to_the_terminal(
    hostile_job: Job, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["list"], ["show", hostile_job.id]):
        code, out, _ = run(capsys, "jobs", *argv, "--config", str(config_file))
        assert code == 0
        assert "\x1b" not in out
        assert "\r" not in out
        assert all(line.isprintable() for line in out.splitlines())
        assert "evt-\\x1b[31m" in out
    assert "actor      arn:aws:iam::123456789012:user/x\\x1b]0;pwned\\x07\\nstate" in out
    assert [line for line in out.splitlines() if line.startswith("state")] == ["state      pending"]


def test_approve_then_approve_again(
    jobs: dict[str, Job], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = jobs["waiting"].id
    code, out, _ = run(
        capsys, "jobs", "approve", "--config", str(config_file), job_id, "--by", "kim"
    )
    assert code == 0
    assert out.strip() == f"{job_id} quarantine_actor: approve -> pending"
    code, out, err = run(capsys, "jobs", "approve", "--config", str(config_file), job_id)
    assert code == 1
    assert "is pending: approve applies only to awaiting_approval jobs" in err


def test_show_prints_the_plan_to_approve(
    planned: Job, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "jobs", "show", "--config", str(config_file), planned.id)
    assert code == 0
    sha = planned.plan_sha256
    assert sha is not None
    assert f"plan       {sha}" in out
    assert f"trailguard jobs approve {planned.id} --plan {sha}" in out
    assert "PutUserPolicy user/alice policyName=s3-read" in out
    assert planned.plan is not None
    assert f"document {planned.plan.writes[0].document_sha256}:" in out
    assert ALLOW_ALL in out  # the exact text that would be written
    assert "CONFLICT: seen with two contents (one of them forged): put-x" in out
    code, out, _ = run(capsys, "jobs", "show", "--config", str(config_file), planned.id, "--json")
    record = json.loads(out)
    assert record["plan_sha256"] == sha
    assert record["plan"]["writes"][0]["document"] == ALLOW_ALL


def test_approve_with_the_wrong_plan_is_refused(
    planned: Job, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "sha256:" + "ab" * 32
    code, out, err = run(
        capsys, "jobs", "approve", "--config", str(config_file), planned.id, "--plan", wrong
    )
    assert code == 1
    assert out == ""
    assert f"--plan {wrong} is not the job's plan" in err
    assert f"it now waits with plan {planned.plan_sha256}" in err
    code, out, _ = run(capsys, "jobs", "show", "--config", str(config_file), planned.id, "--json")
    assert json.loads(out)["state"] == "awaiting_approval"


def test_approve_with_the_plan_binds_it(
    planned: Job, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha = planned.plan_sha256
    assert sha is not None
    code, out, _ = run(
        capsys, "jobs", "approve", "--config", str(config_file), planned.id, "--plan", sha
    )
    assert code == 0
    assert out.strip() == f"{planned.id} restore_inline_policy: approve -> pending"
    code, out, _ = run(capsys, "jobs", "show", "--config", str(config_file), planned.id)
    assert f"approved   plan {sha}" in out


def test_a_plan_for_a_job_that_has_none_is_refused(
    jobs: dict[str, Job], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = jobs["waiting"].id  # mode approve: it has not run
    code, _, err = run(
        capsys, "jobs", "approve", "--config", str(config_file), job_id, "--plan", "0" * 64
    )
    assert code == 1
    assert "it has no plan yet" in err


def test_retry_and_cancel(
    jobs: dict[str, Job], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = jobs["dead"].id
    code, out, _ = run(capsys, "jobs", "retry", "--config", str(config_file), dead)
    assert (code, out.split()[-1]) == (0, "pending")
    code, out, _ = run(capsys, "jobs", "cancel", "--config", str(config_file), dead)
    assert (code, out.split()[-1]) == (0, "skipped")
    code, _, err = run(capsys, "jobs", "cancel", "--config", str(config_file), jobs["restore"].id)
    assert code == 1
    assert "succeeded" in err


@pytest.mark.parametrize("command", ["show", "approve", "retry", "cancel"])
def test_unknown_id_exits_1(
    jobs: dict[str, Job], config_file: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, _, err = run(capsys, "jobs", command, "--config", str(config_file), "nope")
    assert code == 1
    assert "no job 'nope'" in err


def test_missing_state_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "typo.sqlite3"}"\n')
    code, _, err = run(capsys, "jobs", "list", "--config", str(config))
    assert code == 1
    assert "no such file" in err
    assert not (tmp_path / "typo.sqlite3").exists()


def test_usage_errors_exit_2(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "jobs")[0] == 2
    assert run(capsys, "jobs", "list")[0] == 2  # --config is required
    assert run(capsys, "jobs", "list", "--config", str(config_file), "--state", "done")[0] == 2
    assert run(capsys, "jobs", "approve", "--config", str(config_file))[0] == 2  # no ID


def test_empty_store(tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    async def create() -> None:
        async with await SqliteJobStore.open(tmp_path / "state.sqlite3"):
            pass

    asyncio.run(create())
    code, out, _ = run(capsys, "jobs", "list", "--config", str(config_file))
    assert (code, out.strip()) == (0, "no jobs")
