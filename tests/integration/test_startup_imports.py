"""Commands that never talk to AWS import neither the AWS SDK nor the daemon's machinery.

Start-up pays only for what a command uses (issue 14): ``--version``, ``check-config`` and a
local ``replay`` of a few files load no botocore/aiobotocore/boto3, no SQLite (a replay without
a config keeps its scratch history in memory), no multiprocessing (no decode pool for a few
files) and none of the daemon's parts.  Each command runs in a fresh interpreter, which then
lists what it imported.  Their times are measured by ``make bench`` (bench/startup.py), not here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPUS, ROOT

#: run trailguard's main() with the given arguments, then print every module imported
LISTING = """
import sys
from trailguard.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("exit", code)
print("\\n".join(sorted(sys.modules)))
"""

FORBIDDEN = (
    "botocore",
    "aiobotocore",
    "boto3",
    "sqlite3",
    "multiprocessing",
    "trailguard.app",
    "trailguard.aws",
    "trailguard.ingest.messages",
    "trailguard.ingest.backfill",
    "trailguard.remediate.actions",
    "trailguard.remediate.executor",
    "trailguard.state.backends",
    "trailguard.state.dynamo",
    "trailguard.state.sqlite",
    "trailguard.state.policy_history_sqlite",
    "trailguard.decode_pool.processes",
)

SMALL_FILE = CORPUS / "stratus-red-team" / "aws.credential-access.ec2-get-password-data.json"


def imported(*args: str) -> tuple[int, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", LISTING, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.splitlines()
    exits = [line for line in lines if line.startswith("exit ")]
    assert exits, done.stdout[-2000:] + done.stderr[-2000:]
    return int(exits[0].split()[1]), set(lines[lines.index(exits[0]) + 1 :])


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("check-config", str(ROOT / "config" / "trailguard.example.toml")),
        ("replay", "--no-progress", "--output", "/dev/null", str(SMALL_FILE)),
    ],
    ids=["version", "check-config", "replay"],
)
def test_commands_without_aws_import_no_sdk_and_no_daemon(args: tuple[str, ...]) -> None:
    code, modules = imported(*args)
    assert code == 0
    loaded = sorted(m for m in modules if m.startswith(FORBIDDEN))
    assert loaded == [], f"trailguard {' '.join(args[:1])} imported {loaded}"


def test_control_a_command_using_the_state_imports_it(tmp_path: Path) -> None:
    """The listing sees what a command imports: ``jobs list`` opens the job store, so SQLite
    and the state backends show up (whatever it then finds)."""
    config = tmp_path / "trailguard.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state"}"\n')
    _, modules = imported("jobs", "list", "--config", str(config))
    assert {"sqlite3", "trailguard.state.backends"} <= modules
