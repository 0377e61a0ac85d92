"""Rebuild tests/data/crds/: JSON schemas of the custom resources deploy/k8s/ uses.

The tests validate the KEDA ScaledObject and TriggerAuthentication and the prometheus-operator
ServiceMonitor and PrometheusRule offline.  No package on PyPI or npm ships those projects' CRD
files, so the schemas come from the next best thing a registry offers: cloudcoil's pydantic
models, which cloudcoil generates from each project's published CRD ``openAPIV3Schema``
(``cloudcoil-models-keda`` 2.16.1.0: KEDA v2.16.1; ``cloudcoil-models-prometheus-operator``
0.80.1.0: prometheus-operator v0.80.1; both Apache-2.0, like the upstream CRDs).

This script installs exactly those versions into a throw-away virtual environment (the
project never imports cloudcoil), asks pydantic for each model's JSON schema and normalises it
back to what the CRD says -- see :func:`normalise` -- then writes one file per kind.  It needs
the package index, so it is run by hand, never by the tests::

    .venv/bin/python -m scripts.vendor_crd_schemas

tests/data/crds/README.md says where the schemas came from, what was checked and how they
differ from the upstream CRDs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
OUT: Final = ROOT / "tests" / "data" / "crds"

#: Exactly what is installed; pydantic is pinned too, since it writes the schemas.
PINS: Final = (
    "cloudcoil==0.6.0",
    "cloudcoil-models-keda==2.16.1.0",
    "cloudcoil-models-prometheus-operator==0.80.1.0",
    "pydantic==2.14.4",
)

#: file under tests/data/crds -> (module, class, upstream CRD the model was generated from)
KINDS: Final = {
    "keda.sh/scaledobject_v1alpha1.json": (
        "cloudcoil.models.keda.v1alpha1",
        "ScaledObject",
        "kedacore/keda v2.16.1 config/crd/bases/keda.sh_scaledobjects.yaml",
    ),
    "keda.sh/triggerauthentication_v1alpha1.json": (
        "cloudcoil.models.keda.v1alpha1",
        "TriggerAuthentication",
        "kedacore/keda v2.16.1 config/crd/bases/keda.sh_triggerauthentications.yaml",
    ),
    "monitoring.coreos.com/servicemonitor_v1.json": (
        "cloudcoil.models.prometheus_operator.v1",
        "ServiceMonitor",
        "prometheus-operator/prometheus-operator v0.80.1 "
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
    ),
    "monitoring.coreos.com/prometheusrule_v1.json": (
        "cloudcoil.models.prometheus_operator.v1",
        "PrometheusRule",
        "prometheus-operator/prometheus-operator v0.80.1 "
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    ),
}

# Runs inside the throw-away environment: prints {file: pydantic's schema} as JSON.
_DUMP: Final = """
import importlib, json, sys
kinds = json.loads(sys.argv[1])
out = {}
for name, (module, cls, _source) in kinds.items():
    model = getattr(importlib.import_module(module), cls)
    out[name] = model.model_json_schema(by_alias=True, mode="validation")
print(json.dumps(out))
"""

_NOISE: Final = frozenset({"title", "default", "description"})


def normalise(node: Any) -> Any:
    """Pydantic's schema of a generated model, back in the CRD's terms.

    * ``title``, ``default`` and ``description`` go: they validate nothing.
    * ``anyOf: [X, {"type": "null"}]`` becomes X: pydantic spells an optional field as
      nullable; the CRD spells it as "not required".
    * An object with ``properties`` and no ``additionalProperties`` gets
      ``additionalProperties: false``: the API server prunes unknown fields of a structural
      schema, and ``kubectl apply`` (field validation ``Strict``) refuses them -- a misspelt
      field must fail here as it would there.  Maps (``additionalProperties`` given) and
      objects the CRD leaves open (``x-kubernetes-preserve-unknown-fields``, or metadata's
      free-form ``FieldsV1``: no properties in the model) stay open.
    * A pattern in Go's syntax with its flags after the ``^`` gets them moved to the front,
      where Python's ``re`` (jsonschema's) accepts them; the language is the same.
    """
    if isinstance(node, list):
        return [normalise(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: normalise(value) for key, value in node.items() if key not in _NOISE}
    if "anyOf" in node:
        alternatives = [alt for alt in node["anyOf"] if alt != {"type": "null"}]
        rest = {key: value for key, value in node.items() if key != "anyOf"}
        node = (
            {**alternatives[0], **rest}
            if len(alternatives) == 1
            else {**rest, "anyOf": alternatives}
        )
    if node.get("type") == "object" and node.get("properties"):
        node.setdefault("additionalProperties", False)
    if isinstance(node.get("pattern"), str):
        node["pattern"] = _python_regex(node["pattern"])
    return node


_GO_FLAGS: Final = re.compile(r"\^\(\?([ims]+)\)")


def _python_regex(pattern: str) -> str:
    """A CRD pattern (Go's RE2 syntax) as Python's ``re`` reads it: Go allows flags after the
    ``^`` (prometheus-operator's ``^(?i)(abort|warn)?$``), Python only at the very start."""
    match = _GO_FLAGS.match(pattern)
    if match is None:
        return pattern
    return f"(?{match.group(1)})^{pattern[match.end() :]}"


def dump_schemas() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="trailguard-crds-") as tmp:
        env = Path(tmp) / "venv"
        venv.EnvBuilder(with_pip=True).create(env)
        python = str(env / "bin" / "python")
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS],
            check=True,
        )
        done = subprocess.run(
            [python, "-c", _DUMP, json.dumps(KINDS)], check=True, capture_output=True, text=True
        )
    schemas: dict[str, Any] = json.loads(done.stdout)
    return schemas


def main() -> int:
    for name, schema in sorted(dump_schemas().items()):
        _module, cls, source = KINDS[name]
        document = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": (
                f"{cls}: derived by scripts/vendor_crd_schemas.py from {', '.join(PINS)}, "
                f"whose model is generated from {source}; see README.md"
            ),
            **normalise(schema),
        }
        path = OUT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
