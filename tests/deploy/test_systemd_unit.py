"""systemd/trailguard.service under a real systemd (252, Debian 12's), as shipped.

A minimal Debian bookworm (debootstrap; no procps, so no /bin/kill) is booted by systemd-nspawn
(tests/deploy/nspawn.py).  In it, trailguard is installed by README's own steps, run verbatim in
a copy of this checkout; "then edit it" is done by the test: a config for the moto server on
127.0.0.1 (the machine shares this machine's network) and AWS settings in
/etc/trailguard/environment, as README says.  Then the unit runs with nothing of it changed.

The tests of this module run in order on one booted machine and one service:

1. it is active as Type=notify (active only after READY=1; its status text comes by sd_notify);
2. the sandbox holds for the running process, and ``systemd-analyze security`` rates it low;
3. a detection goes through S3 and SQS into the logs directory;
4. ``systemctl reload`` applies a change, and a bad file leaves the running config in place;
5. WATCHDOG=1 keeps it running past twice WatchdogSec (30 s: the unit's own value);
6. a frozen event loop stops the pings, and the watchdog kills and restarts it;
7. ``systemctl stop`` is clean (exit 0, within TimeoutStopSec, nothing killed).

Freezing the loop is test-only and lives only in the test machine: a ``.pth`` file in the venv
makes SIGUSR2 run a handler that sleeps in the main thread -- the event loop's -- for an hour.
Nothing in trailguard itself changes.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import rootfs
from tests.deploy.nspawn import Machine
from tests.deploy.support import CACHE, FIGURES, copy_source, require_root, timed, tool
from tests.docs import readme_install_steps
from tests.factories import delivery_key, make_record, noise_record
from tests.integration.conftest import Boto3Clients, MotoServer
from tests.integration.daemon_harness import (
    DaemonConfig,
    free_port,
    http_get,
    scrape,
    wait_until,
)

pytestmark = pytest.mark.deploy

UNIT = "trailguard.service"
CONFIG = "/etc/trailguard/trailguard.toml"
DETECTIONS = "/var/log/trailguard/detections.jsonl"  # LogsDirectory=trailguard
EXPOSURE_THRESHOLD = 2.0  # systemd-analyze security: up to 2.0 is "OK" (README says 1.2)
DYNAMIC_UIDS = range(61184, 65520)  # systemd's range for DynamicUser=
FREEZE_PTH = (
    # site.py runs the line in its own function: the lambda gets time.sleep by argument.
    "import signal, time; signal.signal(signal.SIGUSR2, lambda *_, sleep=time.sleep: sleep(3600))"
    "  # test only: SIGUSR2 freezes the main thread (the event loop)\n"
)


@dataclass
class Service:
    machine: Machine
    aws: Boto3Clients
    queue_url: str
    bucket: str
    port: int
    good_config: str
    main_pid: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def show(self, *properties: str) -> dict[str, str]:
        return self.machine.systemctl_show(UNIT, *properties)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.machine.journal(UNIT) if e.get("event") == name]

    def describe(self) -> str:
        status = self.machine.sh(f"systemctl status {UNIT} --no-pager", check=False).stdout
        journal = self.machine.journal_text(UNIT)
        return f"--- systemctl status\n{status}\n--- journal (end)\n{journal[-5000:]}"


def host_monotonic_usec() -> int:
    """The machine shares the kernel's CLOCK_MONOTONIC: systemd's *Monotonic values use it."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@pytest.fixture(scope="module")
def service(
    moto_server: MotoServer,
    boto3_session_clients: Boto3Clients,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    require_root("booting systemd under systemd-nspawn")
    for name in ("systemd-nspawn", "nsenter", "debootstrap"):
        tool(name)
    aws = boto3_session_clients
    run_id = uuid.uuid4().hex[:8]
    bucket, queue = f"unit-trail-{run_id}", f"unit-trail-{run_id}"
    queue_url = make_queue(aws, bucket, queue)
    tree = rootfs.tree(rootfs.SYSTEMD_HOST)
    work = tmp_path_factory.mktemp("unit")
    source = copy_source(work / "src")
    pip_cache = CACHE / "pip-nspawn"  # warm runs download nothing (pip still checks hashes)
    pip_cache.mkdir(parents=True, exist_ok=True)
    machine = Machine(
        tree=tree,
        name=f"tg-unit-{run_id}",
        console=work / "console.log",
        binds=[(source, "/src"), (pip_cache, "/root/.cache/pip")],
    )
    try:
        with timed("nspawn: boot to is-system-running"):
            machine.boot()
        port = free_port()
        config = DaemonConfig(
            endpoint_url=moto_server.endpoint_url,
            queue_urls=[queue_url],
            visibility_timeout_secs=30,
            deadline_secs=5.0,
            http_listen=f"127.0.0.1:{port}",
            decode_workers=1,
        ).render(detections=Path(DETECTIONS), state=Path("/var/lib/trailguard/state.sqlite3"))
        service = Service(machine, aws, queue_url, bucket, port, config)
        install(service)
        yield service
    finally:
        machine.poweroff()


def make_queue(aws: Boto3Clients, bucket: str, queue: str) -> str:
    url = aws.sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    aws.s3.create_bucket(Bucket=bucket)
    aws.s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn["Attributes"]["QueueArn"], "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    return url


def install(service: Service) -> None:
    """README's install steps, verbatim, in /src; the config edited before the unit starts."""
    machine = service.machine
    # The minimal Debian the unit must work on: no procps, so no /bin/kill.
    assert machine.sh("test -e /bin/kill || test -e /usr/bin/kill", check=False).returncode != 0
    steps = readme_install_steps()
    first_systemctl = next(i for i, s in enumerate(steps) if s.startswith("systemctl"))
    with timed("nspawn: README's install steps up to systemctl (venv, pip, install)"):
        for step in steps[:first_systemctl]:
            machine.sh(step, cwd="/src")
    # "then edit it"
    machine.write(CONFIG, service.good_config)
    machine.write(
        "/etc/trailguard/environment",
        "AWS_REGION=us-east-1\nAWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n"
        "AWS_EC2_METADATA_DISABLED=true\n",
        mode="0600",
    )
    (site,) = machine.sh("ls -d /opt/trailguard/venv/lib/python3*/site-packages").stdout.split()
    machine.write(f"{site}/trailguard_test_freeze.pth", FREEZE_PTH)
    with timed("nspawn: systemctl enable --now to active"):
        for step in steps[first_systemctl:]:
            machine.sh(step, cwd="/src")
        wait_until(
            lambda: service.show("ActiveState")["ActiveState"] in {"active", "failed"},
            timeout=90,
            what="the unit to leave activating",
            context=service.describe,
        )


# --------------------------------------------------------------------------- 1. Type=notify


def test_active_as_type_notify(service: Service) -> None:
    shown = service.show(
        "Type", "NotifyAccess", "ActiveState", "SubState", "StatusText", "MainPID", "WatchdogUSec"
    )
    assert shown["ActiveState"] == "active", service.describe()
    assert shown["SubState"] == "running"
    assert shown["Type"] == "notify"
    assert shown["NotifyAccess"] == "main"
    assert shown["WatchdogUSec"] == "30s"
    # Only sd_notify sets this (READY=1 came with it: a notify unit is active only after it).
    assert shown["StatusText"] == "watching 1 queue(s)"
    service.main_pid = int(shown["MainPID"])
    assert service.main_pid > 1
    assert http_get(f"{service.url}/readyz")[0] == 200  # the machine shares the loopback
    assert service.events("daemon.started")


# --------------------------------------------------------------------------- 2. the sandbox


def proc_status(service: Service, pid: int) -> dict[str, str]:
    text = service.machine.read(f"/proc/{pid}/status")
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}


def test_the_sandbox_holds_and_systemd_analyze_security_rates_it_low(service: Service) -> None:
    status = proc_status(service, service.main_pid)
    uids = [int(u) for u in status["Uid"].split()]
    assert len(set(uids)) == 1, uids
    assert uids[0] in DYNAMIC_UIDS, uids  # DynamicUser=yes
    assert status["NoNewPrivs"] == "1"  # NoNewPrivileges=yes
    assert status["Seccomp"] == "2"  # SystemCallFilter= (filter mode)
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == 0  # CapabilityBoundingSet=
    mounts = service.machine.sh(f"cat /proc/{service.main_pid}/mounts").stdout
    read_only = {
        fields[1]
        for fields in (line.split() for line in mounts.splitlines())
        if "ro" in fields[3].split(",")
    }
    assert {"/", "/home"} <= read_only  # ProtectSystem=strict: all of it; ProtectHome=yes
    assert service.machine.sh("test -d /var/log/trailguard/").returncode == 0  # LogsDirectory=

    with timed("nspawn: systemd-analyze security"):
        report = service.machine.sh(f"systemd-analyze security {UNIT} --no-pager").stdout
    match = re.search(r"Overall exposure level for trailguard\.service: ([0-9.]+)", report)
    assert match is not None, report[-2000:]
    exposure = float(match.group(1))
    FIGURES.append(
        ("systemd-analyze security: overall exposure (0-10, lower is better)", f"{exposure}")
    )
    assert exposure <= EXPOSURE_THRESHOLD, report[-3000:]


# --------------------------------------------------------------------------- 3. detection


def deliver_removal(service: Service, suffix: str) -> dict[str, Any]:
    """A removal by user/mallory through S3 and SQS; its detection, once written."""
    record = make_record("DeleteRolePolicy")
    key = delivery_key(suffix=suffix)
    body = json.dumps({"Records": [noise_record(3), record]}).encode()
    service.aws.s3.put_object(Bucket=service.bucket, Key=key, Body=body)

    def detected() -> list[dict[str, Any]]:
        out = service.machine.sh(f"cat {DETECTIONS}", check=False).stdout
        return [d for d in map(json.loads, out.splitlines()) if d["event_id"] == record["eventID"]]

    (found,) = wait_until(detected, timeout=60, what="the detection", context=service.describe)
    assert found["source"] == {"bucket": service.bucket, "key": key}
    return found


def test_a_detection_through_s3_and_sqs_reaches_the_logs_directory(service: Service) -> None:
    with timed("nspawn: S3 object to detection in /var/log/trailguard"):
        found = deliver_removal(service, "UnitEndToEnd0001")
    assert found["disposition"] == "alert"
    owner = service.machine.sh(f"stat -c %u {DETECTIONS}").stdout.strip()
    assert int(owner) in DYNAMIC_UIDS


# --------------------------------------------------------------------------- 4. reload

SUPPRESS_MALLORY = """
[[suppress]]
name = "reload-test"
actor_arn = ["arn:aws:iam::123456789012:user/mallory"]
"""


def reload(service: Service) -> None:
    result = service.machine.sh(f"systemctl reload {UNIT}", check=False)
    assert result.returncode == 0, result.stderr + service.describe()  # 203/EXEC with /bin/kill


def test_reload_applies_a_change_and_survives_a_bad_file(service: Service) -> None:
    suppressing = service.good_config + SUPPRESS_MALLORY
    service.machine.write(CONFIG, suppressing)
    reload(service)
    (reloaded,) = wait_until(
        lambda: service.events("config.reloaded"),
        timeout=30,
        what="config.reloaded in the journal",
        context=service.describe,
    )
    assert reloaded["applied"] == ["suppress"], reloaded
    found = deliver_removal(service, "UnitAfterReload1")
    assert found["disposition"] == "suppressed", found  # the new suppression applies
    assert "reload-test" in found["suppressed_by"]

    service.machine.write(CONFIG, suppressing.replace('level = "info"', 'level = "loud"'))
    reload(service)
    (rejected,) = wait_until(
        lambda: service.events("config.reload_rejected"),
        timeout=30,
        what="config.reload_rejected in the journal",
        context=service.describe,
    )
    assert "logging" in rejected["key"], rejected
    _, samples = scrape(service.url)
    assert samples[("trailguard_config_last_reload_successful", ())] == 0
    assert samples[("trailguard_config_reloads_total", (("outcome", "failure"),))] == 1
    shown = service.show("ActiveState", "MainPID", "NRestarts", "StatusText")
    assert shown["ActiveState"] == "active", service.describe()
    assert int(shown["MainPID"]) == service.main_pid  # the same process, still running
    assert shown["NRestarts"] == "0"
    assert shown["StatusText"] == "reload rejected; running config kept"
    found = deliver_removal(service, "UnitAfterBadFile")
    assert found["disposition"] == "suppressed", found  # the running config stayed
    service.good_config = suppressing
    service.machine.write(CONFIG, suppressing)  # for the restart to come


# --------------------------------------------------------------------------- 5-6. the watchdog


def test_watchdog_pings_keep_it_running_past_twice_watchdog_sec(service: Service) -> None:
    shown = service.show("ActiveEnterTimestampMonotonic", "WatchdogUSec")
    active_since = int(shown["ActiveEnterTimestampMonotonic"])
    period = 30_000_000
    assert shown["WatchdogUSec"] == "30s"
    with timed("nspawn: waiting out 2 x WatchdogSec since active"):
        wait_until(
            lambda: host_monotonic_usec() > active_since + 2 * period + 1_000_000,
            timeout=90,
            interval=1.0,
            what="2 x WatchdogSec to pass",
        )
    shown = service.show("ActiveState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
    assert shown["ActiveState"] == "active", service.describe()
    assert int(shown["MainPID"]) == service.main_pid
    assert shown["NRestarts"] == "0"
    # The last ping came after the first period ended: pings keep coming, not just one.
    assert int(shown["WatchdogTimestampMonotonic"]) > active_since + period


def test_a_frozen_event_loop_is_killed_and_restarted_by_the_watchdog(service: Service) -> None:
    frozen_at = host_monotonic_usec()
    service.machine.sh(f"systemctl kill --kill-who=main --signal=SIGUSR2 {UNIT}")
    # The loop no longer answers (its HTTP server runs on it) ...
    wait_until(
        lambda: not _answers(f"{service.url}/healthz"),
        timeout=15,
        what="/healthz to stop answering",
    )
    # ... so WATCHDOG=1 stops, and within WatchdogSec systemd kills it and starts a new one.
    with timed("nspawn: frozen loop to watchdog restart to active"):
        wait_until(
            lambda: _restarted(service),
            timeout=120,
            interval=1.0,
            what="the watchdog to kill and restart the service",
            context=service.describe,
        )
    journal = service.machine.journal_text(UNIT)
    assert "Watchdog timeout" in journal, journal[-3000:]
    shown = service.show("MainPID", "StatusText", "ActiveEnterTimestampMonotonic")
    assert int(shown["ActiveEnterTimestampMonotonic"]) > frozen_at
    assert shown["StatusText"] == "watching 1 queue(s)"
    service.main_pid = int(shown["MainPID"])
    wait_until(
        lambda: _answers(f"{service.url}/readyz"), timeout=30, what="/readyz 200 after the restart"
    )


def _answers(url: str) -> bool:
    try:
        return http_get(url, timeout=2)[0] == 200
    except OSError:
        return False


def _restarted(service: Service) -> bool:
    shown = service.show("ActiveState", "MainPID", "NRestarts")
    return (
        shown["NRestarts"] == "1"
        and shown["ActiveState"] == "active"
        and int(shown["MainPID"]) not in {0, service.main_pid}
    )


# --------------------------------------------------------------------------- 7. stop


def multiprocessing_helpers(service: Service) -> set[int]:
    """Children of the daemon that are multiprocessing's forkserver or resource tracker."""
    listing = service.machine.sh(
        "for p in /proc/[0-9]*; do "
        'echo "$(cut -d" " -f4 $p/stat) ${p#/proc/} $(tr "\\0" " " < $p/cmdline)"; '
        "done",
        check=False,
    ).stdout
    helpers = set()
    for line in listing.splitlines():
        ppid, pid, *command = line.split()
        if int(ppid) == service.main_pid and any(
            word in " ".join(command) for word in ("forkserver", "resource_tracker")
        ):
            helpers.add(int(pid))
    return helpers


def test_stop_is_clean(service: Service) -> None:
    """The daemon drains and exits 0 by itself.  What systemd then SIGKILLs (KillMode=mixed:
    the rest of the unit's processes, once the main one is gone) is at most multiprocessing's
    forkserver and resource tracker (decode_in = "processes", as here without the C scanner):
    idle, they would exit a moment later on their own."""
    pid = service.main_pid
    helpers = multiprocessing_helpers(service)
    with timed("nspawn: systemctl stop"):
        result = service.machine.sh(f"systemctl stop {UNIT}", check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    shown = service.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert shown["ActiveState"] == "inactive", service.describe()
    assert shown["Result"] == "success", shown
    assert shown["ExecMainCode"] == "1"  # CLD_EXITED: it exited, no signal killed it
    assert shown["ExecMainStatus"] == "0"
    assert service.events("daemon.stopped"), service.describe()
    journal = service.machine.journal_text(UNIT)
    tail = journal[journal.rfind("Stopping trailguard") :]
    killed = {int(n) for n in re.findall(r"Killing process (\d+) ", tail)}
    assert pid not in killed, tail
    assert killed <= helpers, (killed, helpers, tail)
    assert service.machine.sh(f"test -d /proc/{pid}", check=False).returncode != 0
