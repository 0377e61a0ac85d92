"""`trailguard replay` and `trailguard check-config` as a user runs them: a real subprocess."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPUS, ROOT
from tests.factories import REMOVALS, delivery_key, encode_file, make_record, noise_record


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trailguard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or ROOT,
        check=False,
    )


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_replay_folder_every_shape_dedup_and_failures(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    expected: dict[str, str] = {}
    apis = sorted(REMOVALS)
    shapes = ["records", "array", "jsonl", "lookup-events"]
    for i, api in enumerate(apis):
        rec = make_record(api, error_code="AccessDenied" if i % 3 == 0 else None)
        expected[rec["eventID"]] = "failure" if i % 3 == 0 else "success"
        shape = shapes[i % 4]
        data = encode_file([noise_record(i), rec], shape, compress=i % 2 == 0)  # type: ignore[arg-type]
        _write(logs / delivery_key(suffix=f"file{i:04d}"), data)
        if i == 0:  # CloudTrail sometimes delivers an event twice, in another file
            _write(logs / "dup" / "again.json", encode_file([rec]))
    # misleading name: gzip content in a .json file is detected by its magic bytes
    plain_name = make_record("DetachRolePolicy")
    expected[plain_name["eventID"]] = "success"
    _write(logs / "renamed.json", gzip.compress(json.dumps({"Records": [plain_name]}).encode()))
    # recognised and skipped
    _write(
        logs / "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2026/11/01/d.json.gz",
        gzip.compress(
            json.dumps({"digestStartTime": "2026-11-01T00:00:00Z", "logFiles": []}).encode()
        ),
    )
    # broken: truncated gzip, not JSON, not CloudTrail
    good = encode_file([noise_record(99)], compress=True)
    _write(logs / "broken" / "truncated.json.gz", good[: len(good) // 2])
    _write(logs / "broken" / "notes.json", b"hello, not json")
    _write(logs / "README.txt", b"not a log: skipped by its name, not failed")
    _write(logs / "broken" / "other.json", b'{"foo": 1}')

    out = tmp_path / "detections.jsonl"
    result = run("replay", str(logs), "--output", str(out))
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {d["event_id"]: d["outcome"] for d in lines} == expected
    assert len(lines) == len(expected)  # one per eventID
    err = result.stderr
    assert "skipped (digest): 1" in err
    assert "3 failed" in err
    assert "truncated.json.gz" in err
    assert "notes.json" in err
    assert "skipped (not a log file name): 1" in err
    assert "other.json" in err
    assert "duplicate" in err

    # the same folder without the broken files exits 0, and stdout is the default output
    for p in (logs / "broken").iterdir():
        p.unlink()
    result = run("replay", str(logs))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(expected)


def test_replay_stratus_red_team_reports_nothing() -> None:
    result = run("replay", str(CORPUS / "stratus-red-team"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "records: 310" in result.stderr
    assert "detections: 0" in result.stderr


def test_replay_missing_path_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    result = run("replay", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "no such file or directory" in result.stderr


def test_replay_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "bad.toml", b"[logging]\nlevel = 3\n")
    result = run("replay", "--config", str(cfg), str(CORPUS / "stratus-red-team"))
    assert result.returncode == 2
    assert "logging.level" in result.stderr
    assert str(cfg) in result.stderr


def test_usage_error_exits_2() -> None:
    result = run("replay")
    assert result.returncode == 2
    assert "PATH" in result.stderr or "required" in result.stderr


def test_check_config(tmp_path: Path) -> None:
    ok = run("check-config", str(ROOT / "config" / "trailguard.example.toml"))
    assert ok.returncode == 0, ok.stderr
    bad = _write(
        tmp_path / "bad.toml",
        b'[[rules]]\nid = "iam-delete-role-policy"\n[[rules.suppress]]\nuser_agent = ["("]\n',
    )
    result = run("check-config", str(bad))
    assert result.returncode == 2
    assert "rules[0].suppress[0].user_agent" in result.stderr
    assert str(bad) in result.stderr
    unknown = _write(tmp_path / "unknown.toml", b"[aws]\nregion = 'us-east-1'\nsecret = 'x'\n")
    result = run("check-config", str(unknown))
    assert result.returncode == 2
    assert "aws" in result.stderr
    missing = run("check-config", str(tmp_path / "missing.toml"))
    assert missing.returncode == 2
    assert "confirm_events" not in ok.stderr


def test_check_config_warns_when_writes_are_unconfirmed(tmp_path: Path) -> None:
    toml = (
        '[remediation]\nmode = "enforce"\nconfirm_events = false\n'
        '[[remediation.policies]]\nrules = ["*"]\n'
        'actions = ["restore_inline_policy", "notify"]\n'
        '[remediation.notify]\nsns_topic_arn = "arn:aws:sns:us-east-1:123456789012:t"\n'
    )
    result = run("check-config", str(_write(tmp_path / "c.toml", toml.encode())))
    assert result.returncode == 0, result.stderr  # valid, but said out loud
    assert "warning: [remediation] confirm_events = false: restore_inline_policy will write" in (
        result.stderr
    )
    dry = _write(tmp_path / "dry.toml", toml.replace("enforce", "dry-run").encode())
    result = run("check-config", str(dry))
    assert (result.returncode, "confirm_events" in result.stderr) == (0, False)


DEEP = 100_000
HOSTILE_CONFIGS = {
    # tomllib would recurse 100,000 levels: RecursionError
    "deep-arrays": ("x = " + "[" * DEEP + "]" * DEEP + "\n").encode(),
    "deep-inline-tables": ("x = " + "{a=" * DEEP + "1" + "}" * DEEP + "\n").encode(),
    # tomllib's cost grows with the square of a dotted key's parts: memory exhausted
    "dotted-key": (".".join(["a"] * DEEP) + " = 1\n").encode(),
    "table-header": ("[" + ".".join(["a"] * DEEP) + "]\n").encode(),
    # each piece allowed, the document deep: refused before msgspec converts it
    "deep-rules": ('[[rules]]\nid = "x"\nevent_names = ' + "[" * 15 + "]" * 15 + "\n").encode(),
    "huge": b"# padding\n" * (300 << 10),
    "invalid-utf8": b'[logging]\nlevel = "\xff\xfe"\n',
    "nul-byte": b'[logging]\nlevel = "info\x00"\n',
}
HOSTILE_REASONS = {
    "deep-arrays": "line 1: nested more than 16 levels deep",
    "deep-inline-tables": "line 1: nested more than 16 levels deep",
    "dotted-key": "line 1: a dotted key of more than 16 parts",
    "table-header": "line 1: a dotted key of more than 16 parts",
    "deep-rules": "rules[0].event_names" + "[0]" * 13 + ": nested more than 16 levels deep",
    "huge": "larger than 1048576 bytes",
    "invalid-utf8": "not UTF-8 text (invalid byte at offset 19)",
    "nul-byte": "not valid TOML",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONFIGS))
def test_check_config_refuses_hostile_files_with_one_line(tmp_path: Path, case: str) -> None:
    """A config error (exit 2, one line naming the file and what is wrong), never a traceback."""
    path = _write(tmp_path / f"{case}.toml", HOSTILE_CONFIGS[case])
    result = run("check-config", str(path))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.endswith("\n")
    assert result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert result.stderr.startswith(f"trailguard: config error: {path}: "), result.stderr
    assert HOSTILE_REASONS[case] in result.stderr


@pytest.mark.parametrize("command", ["run", "replay"])
def test_run_and_replay_refuse_a_deep_config_the_same_way(tmp_path: Path, command: str) -> None:
    path = _write(tmp_path / "deep.toml", HOSTILE_CONFIGS["deep-arrays"])
    args = ["--config", str(path)] + (
        [str(CORPUS / "stratus-red-team")] if command == "replay" else []
    )
    result = run(command, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        f"trailguard: config error: {path}: line 1: nested more than 16 levels deep: "
        "not a trailguard config\n"
    )


def test_replay_with_config_records_policy_history(tmp_path: Path) -> None:
    import asyncio

    from trailguard.state.policy_history_sqlite import SqliteHistoryStore

    document = (
        '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*"}]}'
    )
    put = make_record(
        "PutRolePolicy",
        {"roleName": "app", "policyName": "deny-s3", "policyDocument": document},
        event_time="2026-11-01T11:00:00Z",
    )
    removal = make_record(
        "DeleteRolePolicy",
        {"roleName": "app", "policyName": "deny-s3"},
        event_time="2026-11-01T12:00:00Z",
    )
    # the removal arrives in an earlier file than the put: history orders by eventTime
    _write(tmp_path / "logs" / "a.json", encode_file([removal]))
    _write(tmp_path / "logs" / "b.json.gz", encode_file([put], "jsonl", compress=True))
    state = tmp_path / "state" / "state.sqlite3"
    cfg = _write(tmp_path / "tg.toml", f'[state]\npath = "{state}"\n'.encode())
    result = run("replay", "--config", str(cfg), str(tmp_path / "logs"))
    assert result.returncode == 0, result.stderr
    assert "policy history: " in result.stderr
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["event_id"] == removal["eventID"]

    async def last_document() -> str | None:
        store = await SqliteHistoryStore.open(state.parent / "state.history.sqlite3")
        try:
            fact = await store.inline_policy(
                "123456789012", "role", "app", "deny-s3", before="2026-11-01T12:00:00Z"
            )
            return fact.document if fact else None
        finally:
            await store.close()

    assert asyncio.run(last_document()) == document


def _guard_documents() -> tuple[str, str]:
    guarded = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::payroll/*"},
            ],
        }
    )
    unguarded = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
        }
    )
    return guarded, unguarded


def _put(document: str, minute: int, **kw: object) -> dict[str, object]:
    return make_record(
        "PutRolePolicy",
        {"roleName": "app", "policyName": "guard", "policyDocument": document},
        event_time=f"2026-11-01T12:{minute:02d}:00Z",
        **kw,
    )


def test_replay_reports_a_weakening_put_without_any_config(tmp_path: Path) -> None:
    """No config, no state: the replay keeps a temporary history of the files it reads and
    judges each Put against the one before it (issue 16)."""
    guarded, unguarded = _guard_documents()
    first, weak, again = _put(guarded, 0), _put(unguarded, 1), _put(guarded, 2)
    other = make_record(
        "PutUserPolicy",
        {"userName": "bob", "policyName": "p", "policyDocument": unguarded},
        event_time="2026-11-01T12:03:00Z",
    )
    # a Put and the weakening Put in one file, written out of time order, and a later file
    _write(tmp_path / "logs" / "a.json", encode_file([weak, first]))
    _write(tmp_path / "logs" / "b.json.gz", encode_file([again, other], compress=True))
    result = run("replay", str(tmp_path / "logs"))
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    detection = json.loads(line)
    assert detection["event_id"] == weak["eventID"]
    assert detection["rule"] == "iam-policy-weakened"
    assert detection["change"]["verdict"] == "weakened"
    assert detection["change"]["previous_event_id"] == first["eventID"]
    assert detection["change"]["witness"]["resource"].startswith("arn:aws:s3:::payroll/")
    # two with nothing before them, the guard put back: counted, not reported
    assert (
        "policy changes: 4 judged (2 baseline unknown, 1 not weakened, 1 weakened)" in result.stderr
    )
    assert not list(tmp_path.glob("**/*.sqlite3"))


def test_replay_with_history_off_judges_nothing(tmp_path: Path) -> None:
    guarded, unguarded = _guard_documents()
    _write(tmp_path / "a.json", encode_file([_put(guarded, 0), _put(unguarded, 1)]))
    cfg = _write(tmp_path / "tg.toml", b"[history]\nenabled = false\n")
    result = run("replay", "--config", str(cfg), str(tmp_path / "a.json"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "policy changes" not in result.stderr


def test_run_without_a_region_says_how_to_set_one(tmp_path: Path) -> None:
    import os

    cfg = _write(
        tmp_path / "tg.toml",
        f'[[sources.sqs]]\nqueue_url = "http://127.0.0.1:9/123456789012/q"\n'
        f'[state]\npath = "{tmp_path}/state.sqlite3"\n'.encode(),
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE")
    }
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-such-aws-config")
    result = subprocess.run(
        [sys.executable, "-m", "trailguard", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "no AWS region" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_names_the_decoder_and_the_switch_turns_the_scanner_off(tmp_path: Path) -> None:
    import os

    from trailguard.detect.decode import SCANNER

    shown = run("--version")
    assert shown.returncode == 0
    assert shown.stdout.startswith("trailguard ")
    assert ("decoder: c-avx2" in shown.stdout) == SCANNER.available, shown.stdout

    off = subprocess.run(
        [sys.executable, "-m", "trailguard", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "TRAILGUARD_SCANNER": "0"},
        timeout=60,
        check=False,
    )
    assert "decoder: msgspec" in off.stdout, off.stdout
    # and the same detections either way
    folder = tmp_path / "logs"
    folder.mkdir()
    records = [noise_record(i) for i in range(30)]
    records.append(make_record("DeleteRolePolicy", eventID="hit"))
    _write(folder / "a.json.gz", gzip.compress(encode_file(records, "records"), mtime=0))
    on_run = run("replay", str(folder), "--no-progress")
    off_run = subprocess.run(
        [sys.executable, "-m", "trailguard", "replay", str(folder), "--no-progress"],
        capture_output=True,
        text=True,
        env={**os.environ, "TRAILGUARD_SCANNER": "0"},
        timeout=60,
        check=False,
    )
    assert on_run.returncode == off_run.returncode == 0
    assert on_run.stdout == off_run.stdout
    assert on_run.stdout.count("\n") == 1


def test_replay_workers_must_not_be_negative(tmp_path: Path) -> None:
    result = run("replay", str(tmp_path), "--workers", "-2")
    assert result.returncode == 2
    assert "--workers" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_replay_obeys_the_configs_decode_limits(tmp_path: Path, workers: str) -> None:
    """[limits] reaches the replay's decoder, in one process or in its workers."""
    big = make_record("DeleteRolePolicy", {"roleName": "app", "policyName": "x" * (80 << 10)})
    small = make_record("DeleteUserPolicy")
    _write(tmp_path / "logs" / "a.json", encode_file([big, small]))
    cfg = _write(
        tmp_path / "tg.toml",
        f'[state]\npath = "{tmp_path}/state.sqlite3"\n'
        "[limits]\nmax_record_bytes = 65536\nstream_over_bytes = 1048576\n".encode(),
    )
    result = run("replay", "--workers", workers, "--config", str(cfg), str(tmp_path / "logs"))
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["event_id"] for line in result.stdout.splitlines()] == [
        small["eventID"]
    ]
    assert "1 malformed records ignored" in result.stderr
    # the same file with the default limits: both removals
    default = run("replay", "--workers", workers, str(tmp_path / "logs"))
    assert len(default.stdout.splitlines()) == 2
