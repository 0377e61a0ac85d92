"""Reading the lock files in requirements/ (written by ``make lock``, scripts/lock.sh).

Used by tests/unit/test_lock.py (the lock agrees with pyproject.toml) and tests/deploy (the image
holds exactly the locked runtime set).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

REQUIREMENTS = ROOT / "requirements"
# The Pythons trailguard supports (requires-python >= 3.11), as marker environments.
PYTHONS = ["3.11", "3.12", "3.13"]


@dataclass
class Pin:
    name: str  # canonical (PEP 503)
    version: str
    marker: Marker | None
    hashes: set[str] = field(default_factory=set)


def read_lock(path: Path) -> list[Pin]:
    """The pins of a requirements file written by uv (one logical line per pin)."""
    text = path.read_text().replace("\\\n", " ")
    pins = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"{path.name}: an option in the lock: {line}"
        hashes = set(re.findall(r"--hash=(sha256:[0-9a-f]{64})", line))
        requirement = Requirement(re.sub(r"\s--hash=\S+", "", line).strip())
        (spec,) = requirement.specifier  # exactly one: ==
        assert spec.operator == "==", f"{path.name}: {line} is not pinned"
        name = canonicalize_name(requirement.name)
        pins.append(Pin(name, spec.version, requirement.marker, hashes))
    return pins


def pins_for(pins: list[Pin], python: str) -> dict[str, Pin]:
    """name -> pin of the packages installed on Linux (CPython) with that Python."""
    env = {"python_version": python, "python_full_version": f"{python}.0"}
    env |= {"sys_platform": "linux", "platform_system": "Linux"}
    env |= {"implementation_name": "cpython", "platform_python_implementation": "CPython"}
    chosen: dict[str, Pin] = {}
    for pin in pins:
        if pin.marker is None or pin.marker.evaluate(env):
            assert pin.name not in chosen, f"{pin.name}: two pins apply on Python {python}"
            chosen[pin.name] = pin
    return chosen


def locked_versions(lock: str, python: str) -> dict[str, str]:
    """name -> version that ``requirements/<lock>`` installs with that Python on Linux."""
    return {
        name: pin.version for name, pin in pins_for(read_lock(REQUIREMENTS / lock), python).items()
    }
