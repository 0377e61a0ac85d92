"""The operations files, checked with the tools operators use on them.

* ``systemd/trailguard.service``: ``systemd-analyze verify`` and ``security --offline``;
* ``config/prometheus/alerts.yml``: ``promtool check rules`` and ``promtool test rules``;
* ``Dockerfile``: hadolint;
* every metric the Grafana dashboard and the alert rules name is served at ``/metrics``;
* a real Prometheus server scrapes a running HealthServer, finds trailguard's series, loads
  and evaluates the alert rules, and runs every dashboard query without error;
* CPython and trailguard's extensions run under MemoryDenyWriteExecute (the unit sets it).

Missing tools skip these tests locally and fail them in CI (``tests/integration/tools.py``).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with moto[server]; no stubs
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.support import require_root
from tests.docs import (
    code_blocks,
    commands,
    docker_run_options,
    dockerfile_docker_run,
    readme_docker_run,
    readme_install_steps,
    readme_section,
    unit_header_install_steps,
)
from tests.integration.tools import require_tool
from trailguard.config import Config, parse_config
from trailguard.telemetry.http import HealthServer
from trailguard.telemetry.metrics import Metrics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "trailguard.service"
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "config" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "config" / "grafana" / "trailguard.json"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
EXAMPLE = ROOT / "config" / "trailguard.example.toml"
UNIT_EXEC = "/opt/trailguard/venv/bin/trailguard"

REQUIRED_ALERTS = {
    "TrailguardPolicyRemovalDetected",
    "TrailguardPolicyWeakeningDetected",
    "TrailguardHighSeverityDetection",
    "TrailguardForgerySuspected",
    "TrailguardRemediationJobsDead",
    "TrailguardRemediationFailing",
    "TrailguardRemediationBacklog",
    "TrailguardDown",
    "TrailguardIngestionStalled",
    "TrailguardDeliveryLagHigh",
    "TrailguardErrorsRising",
    "TrailguardMessagesLeftForRedrive",
    "TrailguardConfigReloadFailed",
}


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# --------------------------------------------------------------------------------------------
# require_tool: skip locally, fail in CI
# --------------------------------------------------------------------------------------------


def test_require_tool_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.integration.tools.find_tool", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="promtool not found"):
        require_tool("promtool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_tool("promtool")
    monkeypatch.undo()
    assert require_tool("sh").endswith("/sh")


def test_deploy_tests_need_root_skip_locally_and_fail_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        require_root("booting systemd")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_root("booting systemd")


# --------------------------------------------------------------------------------------------
# systemd
# --------------------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's real entry point.

    ``systemd-analyze verify`` insists that ExecStart's binary exists; the unit names where an
    installation puts it (/opt/trailguard/venv).  Only that path changes in the copy.
    """
    entry = Path(sys.executable).parent / "trailguard"
    assert entry.is_file(), f"{entry}: the trailguard entry point is not installed"
    text = UNIT.read_text()
    line = f"ExecStart={UNIT_EXEC} "
    assert text.count(line) == 1
    copy = tmp_path / "trailguard.service"
    copy.write_text(text.replace(line, f"ExecStart={entry} "))
    return copy


def test_systemd_unit_verifies(verifiable_unit: Path) -> None:
    tool = require_tool("systemd-analyze")
    result = run(tool, "verify", str(verifiable_unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # not even a warning


def test_systemd_unit_exposure_is_low(verifiable_unit: Path) -> None:
    tool = require_tool("systemd-analyze")
    # --threshold is exposure x 10: at most 2.0 ("OK") on systemd's 0-10 scale.
    result = run(tool, "security", "--offline=yes", "--threshold=20", str(verifiable_unit))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_unit_header_and_readme_give_the_same_install_steps() -> None:
    steps = readme_install_steps()
    assert unit_header_install_steps() == steps
    assert any("--require-hashes -r requirements/runtime.txt" in step for step in steps)
    for step in steps:
        if step.startswith("install "):
            assert " -D " in step, step  # creates /etc/trailguard and the like
            source = step.split()[-2]
            assert (ROOT / source).is_file(), step


def test_unit_header_names_readme_sections_that_exist() -> None:
    (reference,) = re.findall(r"README\.md, (.+?), as root", UNIT.read_text().replace("\n# ", " "))
    headings = re.findall(r'"([^"]+)"', reference)
    assert headings == ["Operating it", "systemd"]
    for heading in headings:
        readme_section(heading)
    assert "Documentation=file:" not in UNIT.read_text()  # nothing installs such a file


def test_systemd_unit_settings() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["30"]
    assert s["ExecStart"] == [f"{UNIT_EXEC} run --config /etc/trailguard/trailguard.toml"]
    # The shell's kill: /bin/kill is procps's, absent on a minimal Debian (203/EXEC).
    assert s["ExecReload"] == ["/bin/sh -c 'kill -HUP \"$MAINPID\"'"]
    assert s["KillSignal"] == ["SIGTERM"]
    assert s["KillMode"] == ["mixed"]  # SIGTERM to the daemon, which stops its own workers
    assert s["DynamicUser"] == ["yes"]
    assert s["StateDirectory"] == ["trailguard"]
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "MemoryDenyWriteExecute",
        "LockPersonality",
        "RestrictRealtime",
        "RestrictNamespaces",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
    ):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    assert s["CapabilityBoundingSet"] == [""]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "@system-service" in s["SystemCallFilter"]
    assert s["UMask"] == ["0077"]
    assert int(s["LimitNOFILE"][0]) >= 4096
    # The stop timeout outlasts the drain deadline (default config) with room for releases.
    stop = int(s["TimeoutStopSec"][0].removesuffix("s"))
    assert stop >= Config().shutdown.deadline_secs + 15


# --------------------------------------------------------------------------------------------
# Prometheus rules
# --------------------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    promtool = require_tool("promtool")
    result = run(promtool, "test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names == REQUIRED_ALERTS
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown not firing"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


def test_hadolint() -> None:
    hadolint = require_tool("hadolint")
    result = run(hadolint, str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    assert text.count("\nFROM ") == 2  # builder and runtime
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)  # not root
    assert 'VOLUME ["/var/lib/trailguard"]' in text
    assert "EXPOSE 9108" in text
    assert re.search(
        r"^HEALTHCHECK .*\n\s+CMD \[\"python\", \"-c\".*healthz", text, re.MULTILINE
    ) or ("TRAILGUARD_HEALTHCHECK_URL=http://127.0.0.1:9108/healthz" in text)
    assert 'ENTRYPOINT ["trailguard"]' in text
    assert 'CMD ["run", "--config", "/etc/trailguard/trailguard.toml"]' in text
    # The locked runtime set, hash-checked, in a venv the runtime stage copies whole.
    assert "--require-hashes -r requirements/runtime.txt" in text
    assert "--require-hashes -r requirements/build.txt" in text
    assert "COPY --from=builder /opt/trailguard/venv /opt/trailguard/venv" in text
    assert "wheel --no-deps --no-build-isolation" in text
    assert ".[dev]" not in text
    assert "dev.txt" not in text


def test_dockerfile_builds_without_buildkit_and_without_a_registry_frontend() -> None:
    """Debian 12's Docker builds with its classic builder by default; and a `# syntax=` line
    makes BuildKit fetch its frontend from a registry (fails offline).  Neither may be needed."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    instructions = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    for line in instructions:
        assert "--mount" not in line, line
        assert "--chmod" not in line, line
        assert "--link" not in line, line
        assert "<<" not in line, line  # heredocs


def test_documented_docker_run_commands_agree_and_outlast_the_drain() -> None:
    readme = docker_run_options(readme_docker_run())
    header = docker_run_options(dockerfile_docker_run())
    assert readme == header
    assert "--init" in readme
    assert "--read-only" in readme
    stop_timeout = readme["--stop-timeout"]
    assert stop_timeout is not None
    assert int(stop_timeout) >= Config().shutdown.deadline_secs + 15
    assert "docker build -t trailguard ." in commands(code_blocks(readme_section("Container"))[0])


def test_healthcheck_url_is_documented_and_matches_the_image_config() -> None:
    text = DOCKERFILE.read_text()
    (default,) = re.findall(r"^\s+TRAILGUARD_HEALTHCHECK_URL=(\S+)$", text, re.MULTILINE)
    assert default == "http://127.0.0.1:9108/healthz"
    assert "TRAILGUARD_HEALTHCHECK_URL" in readme_section("Container")
    assert "TRAILGUARD_HEALTHCHECK_URL" in text.split("\nARG ", 1)[0]  # the header explains it


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = [p for p in DOCKERIGNORE.read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*"
    kept = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE):
        for path in source.split():
            assert path.rstrip("/") in kept, f"{path} is excluded by .dockerignore"
            assert (ROOT / path).exists() or path == "README.md", path


def test_container_config_listens_on_all_interfaces() -> None:
    """The image's config is the example with listen 0.0.0.0:9108 (Dockerfile's sed)."""
    (expression,) = re.findall(r"sed -i '([^']+)' /out/trailguard.toml", DOCKERFILE.read_text())
    match = re.fullmatch(r"s/(.+)/(.+)/", expression)
    assert match is not None
    pattern, replacement = match.group(1), match.group(2)
    text, count = re.subn(pattern, replacement, EXAMPLE.read_text(), flags=re.MULTILINE)
    assert count == 1
    assert parse_config(text, file="image.toml").http.listen == "0.0.0.0:9108"


# --------------------------------------------------------------------------------------------
# Metric names in the dashboard and the rules exist
# --------------------------------------------------------------------------------------------

_NAME = re.compile(r"\b(?:trailguard|process)_[a-z0-9_]+\b")


def dashboard_exprs() -> list[str]:
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    exprs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return exprs


@pytest.fixture
async def served() -> AsyncIterator[tuple[HealthServer, Metrics]]:
    metrics = Metrics.from_config(
        parse_config(
            '[[sources.sqs]]\nqueue_url = "https://sqs.us-east-1.amazonaws.com/1/trail"\n',
            file="t.toml",
        )
    )
    async with HealthServer("127.0.0.1:0", metrics) as server:
        yield server, metrics


async def fetch_exposition(server: HealthServer) -> dict[str, str]:
    """family name -> type, from the server's real /metrics."""
    async with aiohttp.ClientSession() as client, client.get(f"{server.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def resolve(name: str, families: dict[str, str]) -> bool:
    """Does ``name`` (as written in PromQL) name a series of one of ``families``?"""
    if families.get(name) in {"gauge", "untyped", "info", "unknown"}:
        return True
    for suffix, kinds in (
        ("_total", {"counter"}),
        ("_bucket", {"histogram"}),
        ("_sum", {"histogram", "summary"}),
        ("_count", {"histogram", "summary"}),
    ):
        if name.endswith(suffix) and families.get(name.removesuffix(suffix)) in kinds:
            return True
    return False


def test_dashboard_is_sound() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "trailguard"
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("messages", "lag", "detections", "remediation", "errors", "in flight", "poll"):
        assert topic in titles, topic
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["gridPos"]["x"] >= 0
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], panel["title"]


async def test_every_metric_in_dashboard_and_rules_is_served(
    served: tuple[HealthServer, Metrics],
) -> None:
    server, _ = served
    families = await fetch_exposition(server)
    sources = {
        "dashboard": "\n".join(dashboard_exprs()),
        "alerts.yml": ALERTS.read_text(),
    }
    for where, text in sources.items():
        names = set(_NAME.findall(text))
        assert names, where
        unknown = sorted(n for n in names if not resolve(n, families))
        assert unknown == [], f"{where} names metrics that /metrics does not serve"
    # And the dashboard shows most of what is served.
    shown = set(_NAME.findall(sources["dashboard"]))
    trailguard = {n for n in families if n.startswith("trailguard_")}
    unshown = {n for n in trailguard if not any(s.startswith(n) for s in shown)}
    assert unshown == set(), "metrics missing from the dashboard"


# --------------------------------------------------------------------------------------------
# A real Prometheus server
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """A function starting Prometheus (loopback only, temp storage) scraping a target."""
    binary = require_tool("prometheus")
    processes: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            textwrap.dedent(
                f"""\
                global:
                  scrape_interval: 1s
                  scrape_timeout: 1s
                  evaluation_interval: 1s
                rule_files:
                  - {ALERTS}
                scrape_configs:
                  - job_name: trailguard
                    static_configs:
                      - targets: ["{target}"]
                """
            )
        )
        log = (tmp_path / "prometheus.log").open("wb")
        processes.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def query(client: aiohttp.ClientSession, base: str, promql: str) -> dict[str, Any]:
    async with client.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        body: dict[str, Any] = await response.json()
        return body


async def wait_for(what: str, check: Any, limit_secs: float = 30.0) -> Any:
    """Poll ``await check()`` until it returns something truthy, for at most ``limit_secs``."""
    deadline = time.monotonic() + limit_secs
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except aiohttp.ClientError as exc:  # not listening yet
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(0.5)
    pytest.fail(f"timed out after {limit_secs:g}s waiting for {what}; last: {last!r}")


async def test_real_prometheus_scrapes_the_daemon(
    served: tuple[HealthServer, Metrics], prometheus_for: Any, tmp_path: Path
) -> None:
    server, metrics = served
    metrics.records(42)
    base: str = prometheus_for(f"127.0.0.1:{server.port}")

    async with aiohttp.ClientSession() as client:

        async def build_info() -> list[dict[str, Any]]:
            body = await query(client, base, "trailguard_build_info")
            result: list[dict[str, Any]] = body["data"]["result"]
            return result

        try:
            (series,) = await wait_for("trailguard_build_info in Prometheus", build_info)
        except BaseException:
            print((tmp_path / "prometheus.log").read_text()[-3000:])
            raise
        assert series["metric"]["job"] == "trailguard"
        assert series["metric"]["version"]
        assert series["value"][1] == "1"

        body = await query(client, base, 'up{job="trailguard"}')
        assert body["data"]["result"][0]["value"][1] == "1"
        body = await query(client, base, "trailguard_records_scanned_total")
        assert body["data"]["result"][0]["value"][1] == "42"
        # Zero-initialised label sets arrive as series.
        body = await query(client, base, "count(trailguard_detections_total)")
        expected = sum(
            1
            for family in text_string_to_metric_families(metrics.render()[0].decode())
            for sample in family.samples
            if sample.name == "trailguard_detections_total"
        )
        assert int(body["data"]["result"][0]["value"][1]) == expected > 0

        # The alert rules load and evaluate without error against real series.
        async def rules_evaluated() -> list[dict[str, Any]] | None:
            async with client.get(f"{base}/api/v1/rules") as response:
                groups = (await response.json())["data"]["groups"]
            rules: list[dict[str, Any]] = [r for g in groups for r in g["rules"]]
            if len(rules) != len(REQUIRED_ALERTS) or any(r["health"] == "unknown" for r in rules):
                return None
            return rules

        rules = await wait_for("the alert rules to be evaluated", rules_evaluated)
        assert {r["name"] for r in rules} == REQUIRED_ALERTS
        assert [r for r in rules if r["health"] != "ok"] == []
        # Nothing happened, so nothing fires (TrailguardIngestionStalled waits 2 minutes).
        assert [r["name"] for r in rules if r["state"] == "firing"] == []

        # Every dashboard query is valid PromQL to a real Prometheus.
        for expr in dashboard_exprs():
            promql = (
                expr.replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$instance", ".*")
            )
            body = await query(client, base, promql)
            assert body["status"] == "success", (expr, body)


# --------------------------------------------------------------------------------------------
# MemoryDenyWriteExecute
# --------------------------------------------------------------------------------------------

MDWE_SCRIPT = r"""
import asyncio, ctypes, gzip, json, mmap, multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor

PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


def restrict():
    # Like systemd's MemoryDenyWriteExecute=yes, for this process and its children.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(77)
    try:  # the restriction is in force: no writable and executable memory
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        return
    sys.exit("a W+X mapping was allowed")


def mdwe_flags():
    return ctypes.CDLL(None).prctl(PR_GET_MDWE, 0, 0, 0, 0)


import aiohttp
from aiobotocore.session import get_session
from trailguard.config import Config
from trailguard.decode_pool import DecodePool
from trailguard.detect.detection import S3Source
from trailguard.telemetry.http import HealthServer
from trailguard.telemetry.metrics import Metrics

RECORD = {
    "eventVersion": "1.09", "eventTime": "2026-11-01T12:00:00Z",
    "eventSource": "iam.amazonaws.com", "eventName": "DeleteRolePolicy",
    "awsRegion": "us-east-1", "eventID": "6b1f1e9e-0000-4000-8000-000000000001",
    "recipientAccountId": "123456789012",
    "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/x"},
    "requestParameters": {"roleName": "app", "policyName": "inline"},
}

async def main():
    async with HealthServer("127.0.0.1:0", Metrics()) as server:
        async with aiohttp.ClientSession() as client:
            async with client.get(server.url + "/metrics") as response:
                assert response.status == 200
                assert "trailguard_build_info" in await response.text()
    # Decode workers are forkserver processes: they inherit the restriction.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        assert executor.submit(mdwe_flags).result() == PR_MDWE_REFUSE_EXEC_GAIN
    pool = DecodePool(Config(), workers=1)
    try:
        data = gzip.compress(json.dumps({"Records": [RECORD]}).encode())
        outcome = await pool.process(
            data, source=S3Source(bucket="b", key="k"), name="s3://b/k", key=None
        )
        assert len(outcome.detections) == 1, outcome
    finally:
        pool.shutdown()
    async with get_session().create_client(
        "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    ):
        pass

if __name__ == "__main__":  # the decode pool's forkserver imports this module again
    restrict()
    asyncio.run(main())
    print("ok")
"""


def test_python_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """The unit sets MemoryDenyWriteExecute=yes.  Linux's PR_SET_MDWE (6.3+) refuses the same
    thing (writable+executable memory, making memory executable later) to this process and its
    children: trailguard's HTTP server, decode workers and AWS clients run under it."""
    script = tmp_path / "mdwe.py"
    script.write_text(MDWE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
