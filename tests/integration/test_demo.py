"""`trailguard demo` (the README's first command) as a user runs it: a real subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_demo_detects_suppresses_and_puts_policies_back() -> None:
    """Removals and a weakening rewrite detected, the pipeline suppressed, all put back."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trailguard", "demo", "--duration", "30", "--http-port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = ""
    lines: list[str] = []
    deadline = time.monotonic() + 60
    try:
        # /metrics is served while the demo runs, and soon counts detections.
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    metrics = r.read().decode()
            except OSError:
                metrics = ""
            if 'disposition="alert"' in metrics and "trailguard_detections_total" in metrics:
                lines = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith("trailguard_detections_total{")
                    and 'disposition="alert"' in line
                    and not line.endswith(" 0.0")
                ]
                if lines:
                    break
            time.sleep(0.5)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert lines, "no alert counted in /metrics while the demo ran"
    assert "ALERT" in out
    assert "by user/mallory (no MFA)" in out
    assert "[AccessDenied]" in out
    assert "SUPPRESSED" in out
    assert "(suppress[0] (terraform-ci))" in out
    assert ": put back" in out
    # a PutRolePolicy that removes nothing but drops a Deny: a weakening, and its revert
    assert "PutRolePolicy              role/payments data-guard" in out
    assert "weakened: now allows s3:" in out
    assert any(
        line.strip().startswith("-> revert_policy_change") and line.endswith(": put back")
        for line in out.splitlines()
    ), out
    assert "Summary after" in out
