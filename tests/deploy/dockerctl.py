"""Docker for the image tests: the client, the daemon, the stand-in base image, builds.

Which client: ``$TRAILGUARD_DOCKER`` when set, else the first ``docker`` on PATH (or Debian's
/usr/bin/docker) that can build with BuildKit.  A client from Docker 23 on hands BuildKit builds
to the buildx plugin and refuses them without it; an older one (Debian 12's docker.io, 20.10)
drives the daemon's built-in BuildKit itself.  This machine, for one, has a newer client without
buildx first on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ROOT
from tests.deploy import rootfs
from tests.deploy.support import CACHE, LOGS, file_lock, run, timed, tool
from tests.integration.tools import skip_or_fail

BASE_REPOSITORY = "trailguard-test/python"
IMAGE_REPOSITORY = "trailguard-test/trailguard"
# What python:3.11-slim-bookworm's own configuration says, so that the Dockerfile sees the same.
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)


def _client_version(cli: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [cli, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return None
    match = re.search(r"version (\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else None


def _builds_with_buildkit(cli: str) -> bool:
    version = _client_version(cli)
    if version is None:
        return False
    if version < (23, 0):
        return True
    buildx = subprocess.run(
        [cli, "buildx", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    return buildx.returncode == 0


def find_client() -> str:
    explicit = os.environ.get("TRAILGUARD_DOCKER")
    if explicit:
        return explicit
    candidates: list[str] = []
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        path = shutil.which("docker", path=directory) if directory else None
        if path and os.path.realpath(path) not in map(os.path.realpath, candidates):
            candidates.append(path)
    for cli in candidates:
        if _builds_with_buildkit(cli):
            return cli
    return skip_or_fail(
        "no docker client that builds with BuildKit"
        f" (found: {', '.join(candidates) or 'none'}); Debian's docker.io has one"
        " (scripts/ci-deps.sh), or set TRAILGUARD_DOCKER"
    )


@dataclass(frozen=True)
class Docker:
    cli: str

    @classmethod
    def start(cls) -> Docker:
        """The client, with a daemon answering (started by scripts/dockerd.sh if need be)."""
        tool("dockerd")
        cli = find_client()
        up = run(
            ["bash", ROOT / "scripts" / "dockerd.sh"],
            env={"DOCKER": cli},
            check=False,
            timeout=120,
        )
        if up.returncode != 0:
            skip_or_fail(f"no Docker daemon here: {up.stderr.strip()}")
        return cls(cli)

    def __call__(
        self,
        *args: str | Path,
        check: bool = True,
        timeout: float = 600,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run([self.cli, *args], check=check, timeout=timeout, env=env, log=log)

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = json.loads(self(kind, "inspect", name).stdout)
        assert isinstance(found, dict)
        return found

    def exists(self, kind: str, name: str) -> bool:
        return self(kind, "inspect", name, check=False).returncode == 0

    def base_image(self) -> str:
        """The stand-in for ``PYTHON_IMAGE``: the cached debootstrap tree, imported (cached by
        tag: the tree's key)."""
        tree = rootfs.tree(rootfs.DOCKER_BASE)
        tag = f"{BASE_REPOSITORY}:3.11-bookworm-{tree.name.rsplit('-', 1)[-1]}"
        with file_lock(CACHE / "docker-base.lock"):
            if self.exists("image", tag):
                return tag
            with timed("docker import of the stand-in base"):
                archive = CACHE / "python-bookworm.tar"
                run(
                    ["tar", "-C", tree, "--exclude", f"./{rootfs.COMPLETE}", "-cf", archive, "."],
                    timeout=600,
                )
                try:
                    changes = [arg for c in BASE_CHANGES for arg in ("--change", c)]
                    self("import", *changes, archive, tag, timeout=600)
                finally:
                    archive.unlink(missing_ok=True)
            for line in self("image", "ls", BASE_REPOSITORY, "--format", "{{.Tag}}").stdout.split():
                if line != tag.split(":", 1)[1]:  # earlier keys
                    self("image", "rm", f"{BASE_REPOSITORY}:{line}", check=False)
        return tag

    def build(self, tag: str, base: str, *, buildkit: bool) -> str:
        """Build the repository's Dockerfile on ``base``; the image id."""
        kind = "BuildKit" if buildkit else "the classic builder"
        with timed(f"docker build with {kind}"):
            self(
                "build",
                "--network",
                "host",  # the build's apt and pip reach the network as this machine does
                "--build-arg",
                f"PYTHON_IMAGE={base}",
                "--tag",
                tag,
                ROOT,
                env={"DOCKER_BUILDKIT": "1" if buildkit else "0"},
                timeout=1800,
                log=LOGS / f"docker-build-{'buildkit' if buildkit else 'classic'}.log",
            )
        # Images this tag named before are left dangling: remove them (ours only, by label).
        self(
            "image",
            "prune",
            "--force",
            "--filter",
            "label=org.opencontainers.image.title=trailguard",
            check=False,
        )
        return str(self.inspect("image", tag)["Id"])
