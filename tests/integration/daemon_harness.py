"""`trailguard run` as an operator runs it: a real subprocess, real signals, JSON logs read back.

:class:`DaemonHarness` owns one test's daemon directory (config, state, detections) and starts the
daemon as ``python -m trailguard run --config FILE``, as often as a test restarts it; each run
logs (JSON lines, stdout) to its own file, which :class:`DaemonRun` parses.  Every wait is a
bounded poll of a condition (:func:`wait_until`); a run still alive at teardown is killed with its
whole process group (the daemon and its decode workers), so no test leaks processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import ROOT

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    what: str,
    interval: float = 0.1,
    context: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy (returned), or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


@dataclass
class DaemonConfig:
    """The knobs the daemon tests turn; rendered into a trailguard.toml with the documented keys."""

    endpoint_url: str
    queue_urls: list[str]
    region: str = "us-east-1"
    wait_time_secs: int = 1
    max_messages: int = 10
    visibility_timeout_secs: int = 4
    heartbeat_fraction: float = 0.5
    deadline_secs: float = 2.0
    max_objects_in_flight: int = 4
    max_object_bytes: int = 52428800
    decode_workers: int = 1
    extra: str = ""

    def render(self, *, detections: Path, state: Path) -> str:
        lines = [
            "[aws]",
            f'region = "{self.region}"',
            f'endpoint_url = "{self.endpoint_url}"',
            "",
            "[logging]",
            'level = "info"',
            'format = "json"',
            "",
        ]
        for url in self.queue_urls:
            lines += [
                "[[sources.sqs]]",
                f'queue_url = "{url}"',
                f"wait_time_secs = {self.wait_time_secs}",
                f"max_messages = {self.max_messages}",
                f"visibility_timeout_secs = {self.visibility_timeout_secs}",
                f"heartbeat_fraction = {self.heartbeat_fraction}",
                "",
            ]
        lines += [
            "[outputs.jsonl]",
            f'path = "{detections}"',
            "",
            "[state]",
            f'path = "{state}"',
            "",
            "[limits]",
            f"max_objects_in_flight = {self.max_objects_in_flight}",
            f"max_object_bytes = {self.max_object_bytes}",
            f"decode_workers = {self.decode_workers}",
            "",
            "[shutdown]",
            f"deadline_secs = {self.deadline_secs}",
            "",
        ]
        if _config_has_section("http"):
            # The daemon's own /metrics endpoint: off, so that test daemons never compete for
            # the default port with each other or with a daemon running on this machine.
            lines += ["[http]", "enabled = false", ""]
        return "\n".join(lines) + self.extra


def _config_has_section(name: str) -> bool:
    from trailguard.config import Config

    return name in Config.__struct_fields__


@dataclass
class DaemonRun:
    """One start of the daemon: its process and its log file."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    err_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (a line being written is skipped until complete)."""
        entries: list[dict[str, Any]] = []
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return entries
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def events(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        """Log entries with event name ``name`` whose fields include ``fields``."""
        return [
            e
            for e in self.logs()
            if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
        ]

    def stderr(self) -> str:
        try:
            return self.err_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        """The tail of the logs, for failure messages."""
        lines = (
            self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        )
        tail = "\n".join(lines[-40:])
        return (
            f"--- daemon log ({self.log_path.name}, last 40 lines)\n{tail}\n"
            f"--- stderr\n{self.stderr()[-3000:]}"
        )

    def wait_for(
        self, name: str, *, timeout: float = DEFAULT_TIMEOUT, **fields: Any
    ) -> dict[str, Any]:
        """The first log entry ``name`` (with ``fields``); fails early if the daemon exits."""

        def found() -> dict[str, Any] | None:
            hits = self.events(name, **fields)
            if hits:
                return hits[0]
            if self.proc.poll() is not None:
                hits = self.events(name, **fields)
                if hits:
                    return hits[0]
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) before logging {name} {fields}\n"
                    + self.describe()
                )
            return None

        return wait_until(
            found, timeout=timeout, what=f"log event {name} {fields}", context=self.describe
        )

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """The exit code, within ``timeout`` seconds (AssertionError otherwise)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon did not exit within {timeout:.0f}s\n{self.describe()}"
            ) from None

    def kill_group(self) -> None:
        """SIGKILL the daemon and every process of its group (its decode workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (from /proc; empty where there is none)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class DaemonHarness:
    """One test's daemon: config + state + detections in ``directory``; start, restart, read."""

    def __init__(self, directory: Path, config: DaemonConfig) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.detections_path = self.dir / "detections.jsonl"
        self.state_path = self.dir / "state" / "dedup.sqlite3"
        self.config_path = self.dir / "trailguard.toml"
        self.runs: list[DaemonRun] = []
        self.configure(config)

    def configure(self, config: DaemonConfig) -> None:
        self.config = config
        self.config_path.write_text(
            config.render(detections=self.detections_path, state=self.state_path)
        )

    def start(self, *, wait_started: bool = True) -> DaemonRun:
        n = len(self.runs) + 1
        log_path = self.dir / f"daemon-{n}.log"
        err_path = self.dir / f"daemon-{n}.stderr"
        with log_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "trailguard", "run", "--config", str(self.config_path)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=os.environ.copy(),
                start_new_session=True,  # its own process group: teardown kills workers too
            )
        run = DaemonRun(proc=proc, log_path=log_path, err_path=err_path)
        self.runs.append(run)
        if wait_started:
            run.wait_for("daemon.started")
        return run

    def stop(self, run: DaemonRun, *, timeout: float = 15.0, signum: int = signal.SIGTERM) -> int:
        """SIGTERM (or ``signum``) and the exit code (bounded)."""
        run.send(signum)
        return run.wait_exit(timeout)

    def close(self) -> None:
        for run in self.runs:
            if run.proc.poll() is None:
                run.kill_group()
            # The daemon is gone; its decode workers exit on their own when their pipe closes,
            # but make sure nothing this test started outlives it (by pid, never by name).
            for pid in group_members(run.proc.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    # -- what the daemon produced --------------------------------------------------------------

    def _lines(self) -> list[str]:
        try:
            text = self.detections_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def detections(self) -> list[dict[str, Any]]:
        """The complete detection lines (a line torn by a crash is left out: see torn_lines)."""
        out = []
        for line in self._lines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def torn_lines(self) -> list[str]:
        torn = []
        for line in self._lines():
            try:
                json.loads(line)
            except json.JSONDecodeError:
                torn.append(line)
        return torn

    def event_id_counts(self) -> Counter[str]:
        return Counter(str(d["event_id"]) for d in self.detections())

    def has_detections(self, event_ids: Iterable[str]) -> bool:
        counts = self.event_id_counts()
        return all(counts[e] >= 1 for e in event_ids)

    def describe(self) -> str:
        parts = [run.describe() for run in self.runs[-2:]]
        parts.append(f"--- detections: {dict(self.event_id_counts())}")
        return "\n".join(parts)
