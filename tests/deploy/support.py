"""What both deployment suites use: the cache, commands, timings, a copy of the source."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tests.conftest import ROOT
from tests.integration.tools import require_tool, skip_or_fail

CACHE = Path(
    os.environ.get("TRAILGUARD_TEST_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trailguard-tests"
)
LOGS = CACHE / "logs"

# (what, seconds), in the order measured; printed by conftest.py at the end of the run.
TIMINGS: list[tuple[str, float]] = []
# Other figures worth a look in the run's output (what, value): printed after the timings.
FIGURES: list[tuple[str, str]] = []


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        TIMINGS.append((what, time.monotonic() - started))


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        skip_or_fail(f"{what} needs root (debootstrap, systemd-nspawn, dockerd)")


def tool(name: str) -> str:
    """The tool's path, also where root's sbin directories are not on PATH."""
    path = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    return path or require_tool(name)


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float = 600,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check``, a failure raises AssertionError with its output's end.
    ``log``: the output also goes to that file (for long builds)."""
    args = [str(a) for a in argv]
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
        input=input,
        cwd=cwd,
    )
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(args)}\n{result.stdout}\n--- stderr\n{result.stderr}")
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}: {' '.join(args)}\n"
            f"--- stdout (end)\n{result.stdout[-4000:]}\n--- stderr (end)\n{result.stderr[-4000:]}"
        )
    return result


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between test runs on this machine (two clones building one cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def copy_source(dest: Path) -> Path:
    """The files a clone of this checkout has (tracked and untracked-but-not-ignored, as they are
    in the work tree now), copied to ``dest``: what README's install steps run in."""
    listed = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the work tree, not yet in the index
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return dest
