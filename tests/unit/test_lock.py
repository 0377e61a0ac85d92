"""The lock files in requirements/ agree with pyproject.toml and with each other.

``make lock`` writes them (scripts/lock.sh); ``make demo``, ``make test``, CI, the Dockerfile and
the systemd install steps install them with ``pip install --require-hashes``.  These tests catch
a lock that went stale (pyproject.toml asks for a package or a version the lock lacks: run
``make lock``), a pin without a hash, a runtime set that drifted from the set the tests ran on,
and a lock that names anything but PyPI's files.
"""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.lockfile import PYTHONS, REQUIREMENTS, Pin, pins_for, read_lock

PYPROJECT = tomllib.loads((REQUIREMENTS.parent / "pyproject.toml").read_text())


RUNTIME = read_lock(REQUIREMENTS / "runtime.txt")
DEV = read_lock(REQUIREMENTS / "dev.txt")
BUILD = read_lock(REQUIREMENTS / "build.txt")
STALE = "the lock is stale: run `make lock` and commit requirements/"


@pytest.mark.parametrize("lock", [RUNTIME, DEV, BUILD], ids=["runtime", "dev", "build"])
def test_every_pin_has_sha256_hashes(lock: list[Pin]) -> None:
    assert lock
    for pin in lock:
        assert pin.hashes, f"{pin.name}=={pin.version} has no --hash"


@pytest.mark.parametrize("lock", ["runtime.txt", "dev.txt", "build.txt"])
def test_the_lock_names_no_index_and_no_local_file(lock: str) -> None:
    """Only names, versions and hashes: pip finds the files on whatever index it is given
    (PyPI, or a mirror of it), and the hashes prove they are PyPI's."""
    text = (REQUIREMENTS / lock).read_text()
    for word in ("--index-url", "--extra-index-url", "--find-links", "file:", "http:", "https:"):
        assert word not in text, f"{lock} names {word}"
    assert "make lock" in text.splitlines()[1], "not written by `make lock`"


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize(
    ("lock", "extras"), [(RUNTIME, ()), (DEV, ("dev", "demo"))], ids=["runtime", "dev"]
)
def test_lock_satisfies_pyproject(lock: list[Pin], extras: tuple[str, ...], python: str) -> None:
    """Every requirement of pyproject.toml (and of its extras) has a pin within its bounds."""
    pins = pins_for(lock, python)
    wanted = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is missing on Python {python}; {STALE}"
        version = pins[name].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}=={version} is outside pyproject's {requirement.specifier}; {STALE}"
        )


@pytest.mark.parametrize("python", PYTHONS)
def test_runtime_lock_is_the_dev_lock_less_the_dev_tools(python: str) -> None:
    """The image and the systemd install get exactly the versions (and files) the tests ran on."""
    runtime, dev = pins_for(RUNTIME, python), pins_for(DEV, python)
    for name, pin in runtime.items():
        assert name in dev, f"{name} is in runtime.txt only; {STALE}"
        assert (pin.version, pin.hashes) == (dev[name].version, dev[name].hashes), name


def test_build_lock_covers_the_build_system() -> None:
    pins = pins_for(BUILD, "3.11")
    assert "pip" in pins
    for spec in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"build.txt lacks {name}; {STALE}"
        assert requirement.specifier.contains(pins[name].version), STALE


def test_msgspec_is_locked_at_0_23_or_later() -> None:
    """msgspec 0.23.0 is what a fresh install resolved when the lock was introduced, and the
    release the code is made correct on: the lock never goes back below it."""
    for lock in (RUNTIME, DEV):
        for python in PYTHONS:
            assert Version(pins_for(lock, python)["msgspec"].version) >= Version("0.23.0")
