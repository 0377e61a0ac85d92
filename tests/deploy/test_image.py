"""The container image, built from the real Dockerfile and run as README says.

The base is a stand-in for ``python:3.11-slim-bookworm`` (no registry here): Debian bookworm from
debootstrap with python3.11, its headers and this machine's CA certificates, imported into Docker
(tests/deploy/dockerctl.py).  The Dockerfile is built on it with BuildKit (DOCKER_BUILDKIT=1) and
with the classic builder, the one Debian 12's Docker uses by default.

The container runs with README's options (``--init --stop-timeout 45 --read-only``) on the host
network, against the moto server through the fault-injecting proxy, both on 127.0.0.1; the
daemon listens on a free loopback port, which TRAILGUARD_HEALTHCHECK_URL follows.  Never the
bridge network: nothing leaves loopback.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from packaging.utils import canonicalize_name

from tests.deploy.dockerctl import IMAGE_REPOSITORY, Docker
from tests.deploy.support import FIGURES, require_root, timed
from tests.docs import docker_run_options, readme_docker_run
from tests.factories import delivery_key, make_record, noise_record
from tests.integration.conftest import Boto3Clients
from tests.integration.daemon_harness import DaemonConfig, free_port, http_get, wait_until
from tests.integration.proxy import FaultProxy
from tests.lockfile import locked_versions
from trailguard import __version__

if TYPE_CHECKING:
    from tests.integration.conftest import MotoServer

pytestmark = pytest.mark.deploy

BUCKET = "image-trail"
IMAGE = f"{IMAGE_REPOSITORY}:buildkit"
CLASSIC = f"{IMAGE_REPOSITORY}:classic"
STATE = Path("/var/lib/trailguard")
VISIBILITY = 60  # long enough that a message left hidden would still be hidden when checked
DEADLINE = 30.0  # [shutdown] deadline_secs: the default, the case --stop-timeout is for


@pytest.fixture(scope="module")
def docker() -> Docker:
    require_root("building and running the image")
    return Docker.start()


@pytest.fixture(scope="module")
def base(docker: Docker) -> str:
    return docker.base_image()


@pytest.fixture(scope="module")
def image(docker: Docker, base: str) -> str:
    docker.build(IMAGE, base, buildkit=True)
    return IMAGE


def in_image(docker: Docker, image: str, *argv: str) -> str:
    """Run a command in a throwaway container of ``image`` (no network); its stdout."""
    entry, *args = argv
    return docker("run", "--rm", "--network", "none", "--entrypoint", entry, image, *args).stdout


# --------------------------------------------------------------------------- the build


LIST_DISTRIBUTIONS = """
import json
from importlib.metadata import distributions
print(json.dumps({d.metadata["Name"]: d.version for d in distributions()}))
"""


def test_image_holds_exactly_the_locked_runtime_set(docker: Docker, image: str) -> None:
    """BuildKit, no registry frontend: the runtime venv has trailguard and requirements/
    runtime.txt's pins, nothing else -- no pip, no setuptools, no dev tool."""
    installed = json.loads(in_image(docker, image, "python", "-c", LIST_DISTRIBUTIONS))
    size = int(docker.inspect("image", image)["Size"])
    FIGURES.append(("image size (MB, on the Debian stand-in base)", f"{size / 1e6:.0f}"))
    installed = {canonicalize_name(name): version for name, version in installed.items()}
    assert installed.pop("trailguard") == __version__
    assert installed == locked_versions("runtime.txt", "3.11")

    version = in_image(docker, image, "trailguard", "--version")
    assert version.startswith(f"trailguard {__version__} "), version
    assert "not built" not in version, version  # the builder requires the C scanner

    config = docker.inspect("image", image)["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["trailguard"]
    assert config["Cmd"] == ["run", "--config", "/etc/trailguard/trailguard.toml"]
    assert "/var/lib/trailguard" in config["Volumes"]
    assert "TRAILGUARD_HEALTHCHECK_URL=http://127.0.0.1:9108/healthz" in config["Env"]
    assert config["Healthcheck"]["Test"][:3] == ["CMD", "python", "-c"]


def test_the_classic_builder_builds_it_too(docker: Docker, base: str) -> None:
    """`docker build -t trailguard .` as README says, on Debian 12's Docker: no BuildKit."""
    docker.build(CLASSIC, base, buildkit=False)
    version = in_image(docker, CLASSIC, "trailguard", "--version")
    assert version.startswith(f"trailguard {__version__} "), version


# --------------------------------------------------------------------------- the container


@dataclass
class Container:
    docker: Docker
    name: str
    volume: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inspect(self) -> dict[str, Any]:
        return self.docker.inspect("container", self.name)

    def logs(self) -> list[dict[str, Any]]:
        result = self.docker("logs", self.name, check=False)
        entries = []
        for line in (result.stdout + result.stderr).splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return entries

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]

    def describe(self) -> str:
        result = self.docker("logs", "--tail", "40", self.name, check=False)
        state = self.inspect()["State"] if self.docker.exists("container", self.name) else {}
        return f"--- state {json.dumps(state)[:1500]}\n--- logs\n{result.stdout}{result.stderr}"

    def volume_path(self) -> Path:
        return Path(self.docker.inspect("volume", self.volume)["Mountpoint"])

    def detections(self) -> list[dict[str, Any]]:
        path = self.volume_path() / "detections.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def processes(self) -> list[int]:
        """Host pids of the container's processes: its init (docker-init) and descendants."""
        init = int(self.inspect()["State"]["Pid"])
        found, todo = [], [init]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                children = (task / "children").read_text().split()
                todo += [int(c) for c in children]
        return found


def make_queue(aws: Boto3Clients) -> tuple[str, str]:
    dlq = aws.sqs.create_queue(QueueName="image-trail-dlq")["QueueUrl"]
    dlq_arn = aws.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    url = aws.sqs.create_queue(
        QueueName="image-trail",
        Attributes={
            "VisibilityTimeout": str(VISIBILITY),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": "5"}
            ),
        },
    )["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn["Attributes"]["QueueArn"], "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    return url, dlq


def depth(aws: Boto3Clients, url: str) -> tuple[int, int]:
    attrs = aws.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def put_removal(aws: Boto3Clients, key: str, api: str = "DetachRolePolicy") -> str:
    """A CloudTrail file with one policy removal among noise, at ``key``; its eventID."""
    record = make_record(api)
    body = gzip.compress(json.dumps({"Records": [noise_record(1), record]}).encode())
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=body, ContentEncoding="gzip")
    return str(record["eventID"])


@pytest.fixture
def container(
    docker: Docker,
    image: str,
    clean_moto: MotoServer,
    boto3_session_clients: Boto3Clients,
    proxy: FaultProxy,
    tmp_path: Path,
) -> Iterator[tuple[Container, str]]:
    """The image running with README's options; yields it and the queue URL."""
    aws = boto3_session_clients
    url, _ = make_queue(aws)
    port = free_port()
    config = DaemonConfig(
        endpoint_url=proxy.endpoint_url,
        queue_urls=[url],
        visibility_timeout_secs=VISIBILITY,
        deadline_secs=DEADLINE,
        http_listen=f"127.0.0.1:{port}",
        decode_workers=1,
    )
    config_path = tmp_path / "trailguard.toml"
    config_path.write_text(
        config.render(detections=STATE / "detections.jsonl", state=STATE / "state.sqlite3")
    )
    config_path.chmod(0o644)  # the container's user (10001) reads it
    run_id = uuid.uuid4().hex[:8]
    box = Container(docker, f"trailguard-test-{run_id}", f"trailguard-test-state-{run_id}", port)
    docker("volume", "create", box.volume)
    options = []
    for name, value in docker_run_options(readme_docker_run()).items():
        if name != "--rm":  # the test removes it itself, after reading its state and logs
            options += [name] if value is None else [name, value]
    try:
        with timed("container start to /readyz 200"):
            docker(
                "run",
                "--detach",
                "--name",
                box.name,
                *options,
                "--network",
                "host",  # loopback only: README's -p has no use on the host network
                "-v",
                f"{config_path}:/etc/trailguard/trailguard.toml:ro",
                "-v",
                f"{box.volume}:{STATE}",
                "-e",
                "AWS_REGION=us-east-1",
                "-e",
                "AWS_ACCESS_KEY_ID=testing",
                "-e",
                "AWS_SECRET_ACCESS_KEY=testing",
                "-e",
                f"TRAILGUARD_HEALTHCHECK_URL={box.url}/healthz",
                image,
            )
            wait_until(
                lambda: _ready(box),
                timeout=60,
                what="/readyz to answer 200",
                context=box.describe,
            )
        yield box, url
    finally:
        docker("rm", "--force", box.name, check=False)
        docker("volume", "rm", "--force", box.volume, check=False)


def _ready(box: Container) -> bool:
    if not box.inspect()["State"]["Running"]:
        raise AssertionError(f"the container stopped\n{box.describe()}")
    try:
        return http_get(f"{box.url}/readyz", timeout=2)[0] == 200
    except OSError:
        return False


def test_container_runs_detects_stays_healthy_and_stops_cleanly(
    container: tuple[Container, str], boto3_session_clients: Boto3Clients, proxy: FaultProxy
) -> None:
    box, url = container
    aws = boto3_session_clients
    inspected = box.inspect()
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["HostConfig"]["Init"] is True
    documented = docker_run_options(readme_docker_run())["--stop-timeout"]
    assert documented is not None
    assert inspected["Config"]["StopTimeout"] == int(documented)
    assert http_get(f"{box.url}/healthz")[0] == 200

    # A detection through S3 and SQS, written to the state volume.
    key = delivery_key(suffix="ImageEndToEnd01")
    event_id = put_removal(aws, key)
    with timed("container: S3 object to detection in the state volume"):
        wait_until(
            lambda: [d for d in box.detections() if d["event_id"] == event_id],
            timeout=60,
            what="the detection in the state volume",
            context=box.describe,
        )
    (found,) = box.detections()
    assert found["source"] == {"bucket": BUCKET, "key": key}
    assert found["event_name"] == "DetachRolePolicy"
    wait_until(lambda: depth(aws, url) == (0, 0), timeout=30, what="the message deleted")

    # Not root: every process, and what it wrote.
    pids = box.processes()
    assert len(pids) >= 2, pids  # docker-init and trailguard
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == ["10001"] * 4, (pid, uids)
    for path in box.volume_path().iterdir():
        assert path.stat().st_uid == 10001, path

    # --read-only holds: nothing but the volume is writable.
    denied = box.docker("exec", box.name, "sh", "-c", "echo x > /opt/trailguard/x", check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr

    # The image's own HEALTHCHECK (its first probe comes one interval, 30 s, after start).
    with timed("container: start to HEALTHCHECK healthy (interval 30 s)"):
        wait_until(
            lambda: box.inspect()["State"].get("Health", {}).get("Status") == "healthy",
            timeout=120,
            interval=1.0,
            what="the HEALTHCHECK to report healthy",
            context=box.describe,
        )
    health = box.inspect()["State"]["Health"]
    assert health["Log"][-1]["ExitCode"] == 0, health

    # docker stop while an object is in flight: the drain deadline (30 s) passes, the message is
    # released, trailguard exits 0 within --stop-timeout (45 s), not SIGKILLed at Docker's 10 s.
    slow_key = delivery_key(suffix="ImageSlowObject1")
    hold = proxy.add_rule("hold", method="GET", path_contains=slow_key)
    slow_id = put_removal(aws, slow_key, "DeleteRolePolicy")
    wait_until(
        lambda: proxy.count(method="GET", path_contains=slow_key) == 1,
        timeout=60,
        what="the slow object's download in progress",
        context=box.describe,
    )
    started = time.monotonic()
    with timed("container: docker stop with an object in flight (drain 30 s)"):
        box.docker("stop", box.name, timeout=120)  # no -t: the container's --stop-timeout
    stopped_after = time.monotonic() - started
    hold.release()
    state = box.inspect()["State"]
    assert state["Status"] == "exited", state
    assert state["ExitCode"] == 0, f"stopped after {stopped_after:.1f} s\n{box.describe()}"
    assert state["OOMKilled"] is False
    assert [e for e in box.events("sqs.message_released") if e.get("reason") == "shutdown"]
    assert box.events("daemon.stopped"), box.describe()
    assert depth(aws, url) == (1, 0)  # visible again at once, not in VISIBILITY seconds
    assert slow_id not in {d["event_id"] for d in box.detections()}
