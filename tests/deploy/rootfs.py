"""Debian bookworm trees made by debootstrap, cached across runs.

A tree is kept in ``CACHE/rootfs/NAME-KEY``; KEY is a digest of everything it is made from (the
suite, the mirror, the packages, the recipe version below and this machine's CA certificates), so
changing any of them makes a new tree and the old one is removed.  A file lock serialises test
runs that want the same tree; a half-made tree (an interrupted run) is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.support import CACHE, LOGS, file_lock, run, timed, tool

SUITE = "bookworm"
MIRROR = os.environ.get("TRAILGUARD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get(
    "TRAILGUARD_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
# Bump when _finish() changes what goes into a tree.
RECIPE = 1
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_LOCAL_CAS = Path("/usr/local/share/ca-certificates")
COMPLETE = ".trailguard-tree"


@dataclass(frozen=True)
class TreeSpec:
    name: str
    packages: tuple[str, ...]
    why: str

    def key(self) -> str:
        cas = sorted(HOST_LOCAL_CAS.glob("*.crt")) if HOST_LOCAL_CAS.is_dir() else []
        made_of = {
            "suite": SUITE,
            "mirror": MIRROR,
            "security": SECURITY_MIRROR,
            "packages": sorted(self.packages),
            "recipe": RECIPE,
            "cas": [hashlib.sha256(p.read_bytes()).hexdigest() for p in cas],
            "bundle": hashlib.sha256(HOST_CA_BUNDLE.read_bytes()).hexdigest()
            if HOST_CA_BUNDLE.exists()
            else None,
        }
        return hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()[:12]


# The stand-in for python:3.11-slim-bookworm: Debian's Python 3.11 with venv and the headers.
DOCKER_BASE = TreeSpec(
    name="python-bookworm",
    packages=("python3", "python3-venv", "python3-distutils", "python3-dev", "ca-certificates"),
    why="the Dockerfile's PYTHON_IMAGE stand-in",
)
# A minimal Debian that boots: systemd as init, Python with venv (README's prerequisites), and
# deliberately not procps (no /bin/kill, as on a minimal Debian).
SYSTEMD_HOST = TreeSpec(
    name="systemd-bookworm",
    packages=(
        "systemd",
        "systemd-sysv",
        "dbus",
        "python3",
        "python3-venv",
        "python3-distutils",
        "ca-certificates",
    ),
    why="the machine systemd-nspawn boots",
)


def tree(spec: TreeSpec) -> Path:
    """The cached tree for ``spec``, made now when missing (about a minute)."""
    root = CACHE / "rootfs"
    key = spec.key()
    final = root / f"{spec.name}-{key}"
    with file_lock(root / f"{spec.name}.lock"):
        if (final / COMPLETE).is_file():
            return final
        partial = root / f"{spec.name}-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        with timed(f"debootstrap {spec.name} ({spec.why})"):
            run(
                [
                    tool("debootstrap"),
                    "--variant=minbase",
                    f"--include={','.join(spec.packages)}",
                    SUITE,
                    partial,
                    MIRROR,
                ],
                timeout=1200,
                log=LOGS / f"debootstrap-{spec.name}.log",
            )
            _finish(partial)
        (partial / COMPLETE).write_text(json.dumps({"name": spec.name, "key": key}) + "\n")
        partial.rename(final)
        for old in root.glob(f"{spec.name}-*"):  # earlier keys: superseded
            if old.is_dir() and old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def _finish(path: Path) -> None:
    """Sources as Debian's images have them, this machine's CA certificates, no .deb left."""
    (path / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {SUITE} main\n"
        f"deb {MIRROR} {SUITE}-updates main\n"
        f"deb {SECURITY_MIRROR} {SUITE}-security main\n"
    )
    # HTTPS leaves this machine through whatever CA it trusts (a TLS-inspecting proxy's, here):
    # the tree trusts the same, kept where update-ca-certificates keeps it.
    if HOST_LOCAL_CAS.is_dir():
        local = path / "usr/local/share/ca-certificates"
        local.mkdir(parents=True, exist_ok=True)
        for cert in HOST_LOCAL_CAS.glob("*.crt"):
            shutil.copy2(cert, local / cert.name)
    if HOST_CA_BUNDLE.exists():
        shutil.copy2(HOST_CA_BUNDLE, path / "etc/ssl/certs/ca-certificates.crt")
    for deb in (path / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
