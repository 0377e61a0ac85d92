"""A Debian machine booted by systemd-nspawn: a real systemd as its PID 1.

``systemd-nspawn --boot --register=no --keep-unit`` boots a tree even where this machine's own
PID 1 is not systemd (no machined to register with, no scope unit to make).  The tree's root is
an overlay (``--volatile=overlay``): the cached tree stays as it is, every write goes to a tmpfs
dropped at power-off.  The machine shares this machine's network (no --private-network), so it
reaches the moto server on 127.0.0.1 and nothing else.

Commands run inside through ``nsenter`` into the machine's namespaces (mount, UTS, IPC, PID,
cgroup), with a clean environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.deploy.support import run, tool
from tests.integration.daemon_harness import wait_until

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Machine:
    tree: Path
    name: str
    console: Path  # the machine's console output (systemd's boot messages)
    binds: list[tuple[Path, str]] = field(default_factory=list)  # (host path, machine path)
    proc: subprocess.Popen[bytes] | None = None
    leader: int = 0  # the machine's PID 1, as this machine's pid

    def boot(self, timeout: float = 120) -> None:
        argv = [
            tool("systemd-nspawn"),
            "--boot",
            "--register=no",
            "--keep-unit",
            f"--machine={self.name}",
            f"--directory={self.tree}",
            "--volatile=overlay",
            "--console=passive",
            "--resolv-conf=copy-host",
            "--timezone=off",
        ]
        argv += [f"--bind={host}:{inside}" for host, inside in self.binds]
        with self.console.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.leader = wait_until(
            self._find_leader, timeout=60, what="the machine's init", context=self.describe
        )

        def booted() -> str | None:
            # Fails at once until systemd listens on its socket; then waits for the boot's end.
            state = self.sh("systemctl is-system-running --wait", check=False, timeout=timeout)
            return state.stdout.strip() if state.stdout.strip() in {"running", "degraded"} else None

        wait_until(booted, timeout=timeout, what="the machine to boot", context=self.describe)

    def _find_leader(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.proc.returncode}\n{self.describe()}")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid and "(systemd)" in stat:
                    return int(entry.name)
        return None

    def sh(
        self,
        script: str,
        *,
        check: bool = True,
        timeout: float = 600,
        cwd: str = "/",
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``/bin/sh -c script`` inside the booted machine, as its root."""
        variables = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "SYSTEMD_PAGER": ""}
        variables |= env or {}
        argv = [tool("nsenter"), f"--target={self.leader}", "-m", "-u", "-i", "-p", "-C", "--"]
        argv += ["env", "-i", *(f"{k}={v}" for k, v in variables.items())]
        argv += ["/bin/sh", "-c", f"cd {cwd} && {script}"]
        return run(argv, check=check, timeout=timeout, input=input)

    def systemctl_show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} --property={','.join(properties)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> list[dict[str, Any]]:
        """The unit's JSON log lines (the daemon's stdout, through journald)."""
        out = self.sh(f"journalctl --unit={unit} --output=cat --no-pager", check=False).stdout
        entries = []
        for line in out.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    entries.append(json.loads(line))
        return entries

    def journal_text(self, unit: str) -> str:
        """systemd's own messages about the unit and the unit's output."""
        return self.sh(f"journalctl --unit={unit} --no-pager", check=False).stdout

    def read(self, path: str) -> str:
        return self.sh(f"cat {path}").stdout

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.sh(f"cat > {path} && chmod {mode} {path}", input=text)

    def describe(self) -> str:
        console = self.console.read_text(errors="replace") if self.console.exists() else ""
        return f"--- console (end)\n{console[-3000:]}"

    def poweroff(self, timeout: float = 60) -> None:
        """A clean shutdown (SIGTERM to nspawn: it asks the machine's systemd to power off);
        SIGKILL when that takes too long."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while self.leader and Path(f"/proc/{self.leader}").exists():
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.leader, signal.SIGKILL)
                break
            time.sleep(0.1)
