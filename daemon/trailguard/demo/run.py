"""``trailguard demo``: the real daemon against an embedded AWS emulator, zero credentials.

Starts a moto server on loopback, provisions a trail bucket -> SQS (+ dead-letter queue) and IAM
principals, writes a real config file, runs the real :class:`~trailguard.app.Daemon` on it, and
plays a trail into the bucket.  Detections and remediation outcomes are printed as they happen;
the daemon's own JSON logs go to a file in the demo's work folder; metrics are served on
``--http-port`` (9108 by default, or a free port).  Ctrl-C or ``--duration`` ends it with a
summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import msgspec

from trailguard.app import Daemon
from trailguard.config import load_config
from trailguard.demo.emulator import Emulator, free_port
from trailguard.demo.player import Player
from trailguard.telemetry.logging import configure_logging

CONFIG_TEMPLATE = """\
# Written by `trailguard demo`: the daemon's real config, pointed at the embedded emulator.
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"

[logging]
level = "info"
format = "json"

[[sources.sqs]]
name = "demo-trail"
queue_url = "{queue_url}"
wait_time_secs = 1
visibility_timeout_secs = 30

[outputs.jsonl]
path = "{workdir}/detections.jsonl"

[state]
path = "{workdir}/state.sqlite3"

[limits]
decode_workers = 1

[http]
listen = "127.0.0.1:{http_port}"

# The Terraform pipeline's churn is expected: reported as suppressed, never remediated.  Both the
# pipeline's role and Terraform's user agent must match (a user agent alone is spoofable).
[[suppress]]
name = "terraform-ci"
actor_arn = ["arn:aws:sts::*:assumed-role/ci-deployer/*"]
user_agent_preset = ["terraform"]

[remediation]
mode = "enforce"
poll_interval_secs = 0.5
backoff_base_secs = 1.0
backoff_cap_secs = 5.0
# The emulator has no CloudTrail LookupEvents, so trailguard cannot confirm events with AWS here.
# Never turn this off in an account: see config/trailguard.example.toml.
confirm_events = false

[remediation.circuit_breaker]
max_restores = 20
window_secs = 600.0

[[remediation.policies]]
name = "put-it-back"
rules = ["*"]
outcomes = ["success"]
min_severity = "medium"
actions = [
  "restore_inline_policy",
  "reattach_managed_policy",
  "restore_policy_version",
  "recreate_managed_policy",
  "restore_permissions_boundary",
  "revert_policy_change",
]
"""

_COLOURS = {"critical": "\033[1;31m", "high": "\033[31m", "medium": "\033[33m"}
_DIM, _GREEN, _RESET = "\033[2m", "\033[32m", "\033[0m"


class _Printer:
    def __init__(self, out: TextIO, detections: Path) -> None:
        self.out = out
        self.colour = out.isatty()
        self.path = detections
        self.offset = 0
        self.counts: dict[str, int] = {}
        self.jobs: dict[str, str] = {}

    def _c(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.colour else text

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def detections(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            try:
                d: dict[str, Any] = msgspec.json.decode(line)
            except msgspec.DecodeError:
                continue
            if "event_id" not in d:  # e.g. the circuit breaker's own record
                self.say(self._c(_COLOURS["high"], f"  ! {d.get('message', d)}"))
                continue
            key = f"{d['disposition']}/{d['outcome']}"
            self.counts[key] = self.counts.get(key, 0) + 1
            actor = (d["actor"]["arn"] or "?").split(":", 5)[-1]
            target = d["target"]
            what = f"{target['kind']}/{target['name']}"
            if target["policy_name"] and target["kind"] != "policy":
                what += f" {target['policy_name']}"
            mfa = " (no MFA)" if d["actor"]["mfa_authenticated"] is False else ""
            head = f"{d['disposition'].upper():<10} {d['severity']:<8}"
            if d["disposition"] == "alert":
                head = self._c(_COLOURS.get(d["severity"], ""), head)
            else:
                head = self._c(_DIM, head)
            tail = f" [{d['error_code']}]" if d["error_code"] else ""
            why = f"  ({d['suppressed_by']})" if d["suppressed_by"] else ""
            self.say(f"{head} {d['event_name']:<26} {what:<36} by {actor}{mfa}{tail}{why}")
            change = d.get("change")
            if change:  # a weakening change: what the new document allows that the old did not
                witness = change.get("witness") or {}
                allows = (
                    f": now allows {witness['action']} on {witness['resource']}"
                    if witness.get("action")
                    else ""
                )
                self.say(
                    f"           {change['verdict'].replace('_', ' ')}{allows} (previous "
                    f"document: event {change['previous_event_id']})"
                )

    async def jobs_from(self, daemon: Daemon) -> None:
        remediation = daemon.remediation
        if remediation is None:
            return
        for job in await remediation.store.list_jobs(limit=200):
            if self.jobs.get(job.id) == job.state:
                continue
            self.jobs[job.id] = job.state
            if job.state in ("succeeded", "skipped", "failed", "dead", "awaiting_approval"):
                mark = self._c(_GREEN, "put back") if job.state == "succeeded" else job.state
                reason = f" ({job.reason})" if getattr(job, "reason", None) else ""
                self.say(f"           -> {job.action} {job.target_key}: {mark}{reason}")


async def run_demo(duration: float | None, http_port: int, out: TextIO = sys.stdout) -> int:
    emulator = await asyncio.to_thread(Emulator.start)
    try:
        workdir = Path(tempfile.mkdtemp(prefix="trailguard-demo-"))
        port = free_port(http_port)
        config_path = workdir / "trailguard.toml"
        config_path.write_text(
            CONFIG_TEMPLATE.format(
                endpoint=emulator.endpoint_url,
                queue_url=emulator.queue_url,
                workdir=workdir,
                http_port=port,
            )
        )
        config = load_config(config_path)
        log_file = (workdir / "daemon.log").open("a", encoding="utf-8")
        configure_logging("info", "json", stream=log_file)
        printer = _Printer(out, workdir / "detections.jsonl")
        printer.say(
            f"trailguard demo: AWS emulator on {emulator.endpoint_url}, trail bucket -> SQS\n"
            f"  config   {config_path}\n"
            f"  logs     {workdir / 'daemon.log'}\n"
            f"  metrics  http://127.0.0.1:{port}/metrics   health: /healthz /readyz\n"
            "Playing a trail: ordinary log files every second, a policy removal or rewrite every "
            "few seconds.\nCtrl-C to stop.\n"
        )
        daemon = Daemon(config, config_path=str(config_path))
        player = Player(emulator)
        started = time.monotonic()
        daemon_task = asyncio.create_task(daemon.run())
        ready = asyncio.create_task(daemon.started.wait())
        await asyncio.wait([daemon_task, ready], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        tasks = [asyncio.create_task(player.run())]

        async def show() -> None:
            while True:
                printer.detections()
                await printer.jobs_from(daemon)
                await asyncio.sleep(0.3)

        tasks.append(asyncio.create_task(show()))
        if duration is not None:
            asyncio.get_running_loop().call_later(duration, daemon.request_stop)
        try:
            code = await daemon_task
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        printer.detections()
        printer.say(
            f"\nSummary after {time.monotonic() - started:.0f}s: {player.files} log files, "
            f"{player.records} records played; detections "
            + ", ".join(f"{k} {v}" for k, v in sorted(printer.counts.items()))
            + f"; remediation jobs {sum(1 for s in printer.jobs.values() if s == 'succeeded')}"
            f" succeeded of {len(printer.jobs)}.\nEverything is in {workdir}"
        )
        log_file.close()
        return code
    finally:
        await asyncio.to_thread(emulator.stop)
