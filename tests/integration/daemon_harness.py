"""`trailguard run` as an operator runs it: a real subprocess, real signals, JSON logs read back.

:class:`DaemonHarness` owns one test's daemon directory (config, state, detections) and starts the
daemon as ``python -m trailguard run --config FILE``, as often as a test restarts it; each run
logs (JSON lines, stdout) to its own file, which :class:`DaemonRun` parses.  Every wait is a
bounded poll of a condition (:func:`wait_until`); a run still alive at teardown is killed with its
whole process group (the daemon and its decode workers), so no test leaks processes.

For the operations tests: ``DaemonConfig(http_listen=...)`` turns the daemon's ``/metrics``,
``/healthz`` and ``/readyz`` on (at :func:`free_port`), :func:`http_get` and :func:`scrape` read
them, and :class:`NotifySocket` is the Unix datagram socket systemd would listen on for
sd_notify messages, with each sender's pid (``SCM_CREDENTIALS``, as systemd checks
``NotifyAccess=main``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    # [[sources.sqs]] release_backoff_secs: short, so a released message comes back within a
    # test (the default, 15 s, is checked by the config tests)
    release_backoff_secs: int = 2
    deadline_secs: float = 2.0
    max_objects_in_flight: int = 4
    max_object_bytes: int = 52428800
    decode_workers: int = 1
    decode_in: str = "auto"
    log_level: str = "info"
    # "127.0.0.1:PORT": serve /metrics, /healthz, /readyz there; None: [http] enabled = false.
    http_listen: str | None = None
    ready_max_poll_age_secs: float = 120.0
    # [[sources.sqs]] buckets (every queue) and [limits] max_objects_per_message; unset: left
    # out of the file (the defaults: any bucket, 100 objects)
    buckets: tuple[str, ...] | None = None
    max_objects_per_message: int | None = None
    # [state] backend; "dynamodb" shares [state.dynamodb] table (on the endpoint above)
    state_backend: str = "sqlite"
    state_table: str = "trailguard"
    extra: str = ""

    def render(self, *, detections: Path, state: Path) -> str:
        lines = [
            "[aws]",
            f'region = "{self.region}"',
            f'endpoint_url = "{self.endpoint_url}"',
            "",
            "[logging]",
            f'level = "{self.log_level}"',
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
                f"release_backoff_secs = {self.release_backoff_secs}",
                *([] if self.buckets is None else [f"buckets = {json.dumps(list(self.buckets))}"]),
                "",
            ]
        lines += [
            "[outputs.jsonl]",
            f'path = "{detections}"',
            "",
            "[state]",
            f'path = "{state}"',
            *([] if self.state_backend == "sqlite" else [f'backend = "{self.state_backend}"']),
            "",
            *(
                ["[state.dynamodb]", f'table = "{self.state_table}"', ""]
                if self.state_backend == "dynamodb"
                else []
            ),
            "[limits]",
            f"max_objects_in_flight = {self.max_objects_in_flight}",
            f"max_object_bytes = {self.max_object_bytes}",
            f"decode_workers = {self.decode_workers}",
            f'decode_in = "{self.decode_in}"',
            *(
                []
                if self.max_objects_per_message is None
                else [f"max_objects_per_message = {self.max_objects_per_message}"]
            ),
            "",
            "[shutdown]",
            f"deadline_secs = {self.deadline_secs}",
            "",
        ]
        if self.http_listen is not None:
            lines += [
                "[http]",
                f'listen = "{self.http_listen}"',
                f"ready_max_poll_age_secs = {self.ready_max_poll_age_secs}",
                "",
            ]
        elif _config_has_section("http"):
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

    def start(
        self,
        *,
        wait_started: bool = True,
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> DaemonRun:
        """Start a run.  ``env``: variables added to the environment; ``wrapper``: a command the
        daemon's command line is appended to, which must ``exec`` it (so the pid stays the
        daemon's), e.g. :data:`WATCHDOG_PID_WRAPPER`."""
        n = len(self.runs) + 1
        log_path = self.dir / f"daemon-{n}.log"
        err_path = self.dir / f"daemon-{n}.stderr"
        command = [sys.executable, "-m", "trailguard", "run", "--config", str(self.config_path)]
        with log_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                [*wrapper, *command],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
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


# --------------------------------------------------------------------------- HTTP endpoints


def free_port() -> int:
    """A loopback TCP port nobody listens on now (for ``[http] listen``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, *, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


Sample = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


def scrape(base_url: str) -> tuple[str, dict[Sample, float]]:
    """The daemon's ``/metrics``: the exposition text and every sample by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = http_get(f"{base_url}/metrics")
    assert status == 200, (status, text[:500])
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


def sample(samples: Mapping[Sample, float], name: str, **labels: str) -> float | None:
    """The value of one sample (None when the series does not exist)."""
    return samples.get((name, tuple(sorted(labels.items()))))


# --------------------------------------------------------------------------- sd_notify

# What systemd does for a Type=notify service: it sets WATCHDOG_PID to the main process's pid,
# in the forked child, before exec.  A shell does the same: $$ is its pid, and exec keeps it.
WATCHDOG_PID_WRAPPER: tuple[str, ...] = ("/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh")


@dataclass(frozen=True)
class Notification:
    """One sd_notify datagram: when it arrived, who sent it, its KEY=VALUE fields in order."""

    at: float  # time.monotonic()
    pid: int | None  # the sender's pid from SCM_CREDENTIALS
    fields: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        for name, value in self.fields:
            if name == key:
                return value
        return None

    def __contains__(self, field_: str) -> bool:
        """``"READY=1" in notification``."""
        key, _, value = field_.partition("=")
        return self.get(key) == value


class NotifySocket:
    """The socket systemd binds for ``$NOTIFY_SOCKET``: a Unix datagram socket with
    ``SO_PASSCRED``, read by a thread into :attr:`messages`.  Use as a context manager."""

    def __init__(self) -> None:
        # sun_path holds 108 bytes: a short directory of its own rather than pytest's tmp_path.
        self._dir = tempfile.mkdtemp(prefix="tg-notify-", dir="/tmp")
        self.path = os.path.join(self._dir, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._messages: list[Notification] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.path}

    def _read(self) -> None:
        creds_size = struct.calcsize("iII")  # struct ucred: pid, uid, gid
        while not self._closed.is_set():
            try:
                data, ancillary, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(creds_size))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:creds_size])[0]
            fields = tuple(
                (key, value)
                for key, _, value in (
                    line.partition("=") for line in data.decode().split("\n") if line
                )
            )
            with self._lock:
                self._messages.append(Notification(time.monotonic(), pid, fields))

    @property
    def messages(self) -> list[Notification]:
        with self._lock:
            return list(self._messages)

    def with_field(self, field_: str, *, since: float = 0.0) -> list[Notification]:
        """Messages holding ``KEY=VALUE`` that arrived at or after ``since`` (monotonic)."""
        return [m for m in self.messages if m.at >= since and field_ in m]

    def wait_for(
        self, field_: str, *, since: float = 0.0, count: int = 1, timeout: float = 15.0
    ) -> list[Notification]:
        """The first ``count`` messages holding ``field_`` (since ``since``), within timeout."""

        def found() -> list[Notification] | None:
            hits = self.with_field(field_, since=since)
            return hits[:count] if len(hits) >= count else None

        return wait_until(
            found,
            timeout=timeout,
            what=f"{count} x {field_} on the notify socket",
            context=lambda: "\n".join(repr(m) for m in self.messages[-20:]),
        )

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
