"""Loading deploy/k8s/ and its trailguard.toml for the deployment tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

from tests.conftest import ROOT
from trailguard.config import Config, parse_config

K8S: Final = ROOT / "deploy" / "k8s"
NAMESPACE: Final = "trailguard"
CONFIG_FILE: Final = "deploy/k8s/configmap.yaml:trailguard.toml"


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for every object of every file the kustomization lists."""
    found: list[tuple[str, dict[str, Any]]] = []
    for name in kustomization()["resources"]:
        for document in yaml.safe_load_all((K8S / name).read_text()):
            if document is not None:
                found.append((name, document))
    return found


def the(kind: str) -> dict[str, Any]:
    """The one object of ``kind``."""
    (found,) = [doc for _name, doc in manifests() if doc["kind"] == kind]
    return found


def container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = the("Deployment")["spec"]["template"]["spec"]["containers"]
    (found,) = containers
    return found


def config_text() -> str:
    text: str = the("ConfigMap")["data"]["trailguard.toml"]
    return text


def k8s_config() -> Config:
    """The ConfigMap's trailguard.toml through trailguard's own loader."""
    return parse_config(config_text(), file=CONFIG_FILE)


def mib(quantity: str) -> float:
    """A Kubernetes memory quantity in MiB (the binary suffixes this repository uses)."""
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor
    return float(quantity) / 2**20


def cpus(quantity: str) -> float:
    return float(quantity.removesuffix("m")) / 1000 if quantity.endswith("m") else float(quantity)


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))
