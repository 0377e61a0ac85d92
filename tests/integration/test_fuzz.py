"""A short fuzzing campaign of the C scanner under ASan and UBSan, with the differential check.

The long campaign is ``make fuzz`` (run before a release); this one is bounded (60 s, a fixed
seed) so that every ``make test`` shows the scanner still has no memory error or undefined
behaviour on the seed corpus, its block-edge truncations and a few thousand mutations, and that
every decode path still agrees on them.  See tests/fuzz/campaign.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _sanitizers_available() -> bool:
    compiler = shutil.which(os.environ.get("CC", "gcc"))
    if compiler is None:
        return False
    found = subprocess.run(
        [compiler, "-print-file-name=libasan.so"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return os.path.isabs(found) and Path(found).exists()


@pytest.mark.integration
def test_a_short_fuzz_campaign_finds_nothing() -> None:
    if not _sanitizers_available():
        if os.environ.get("CI") == "true":
            pytest.fail("gcc with libasan is required under CI=true (scripts/ci-deps.sh)")
        pytest.skip("gcc or its libasan is not installed here (scripts/ci-deps.sh installs them)")
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.campaign", "--seconds", "60", "--seed", "20261205"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "no sanitizer report, every path agreed" in result.stdout, output[-4000:]
    found = re.search(r"fuzz: (\d+) inputs", result.stdout)
    assert found is not None, output[-2000:]
    assert int(found.group(1)) >= 300, output[-2000:]
