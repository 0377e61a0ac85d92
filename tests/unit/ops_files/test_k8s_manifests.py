"""deploy/k8s/: every object valid offline, and the objects consistent with each other and with
trailguard itself.

* Core objects against Kubernetes' OpenAPI schemas (``kubernetes-validate``, strict: an unknown
  field is an error, as ``kubectl apply`` makes it), for :data:`K8S_VERSION`.
* The KEDA and prometheus-operator objects against the CRD schemas vendored in
  tests/data/crds/ (where they come from: that folder's README).
* Cross-references: selectors, ports, probe paths the daemon serves, the ScaledObject's target
  and queue, the ConfigMap's toml through trailguard's own loader, the memory bound, the
  generated PrometheusRule and config checksum.

The ConfigMap's trailguard.toml is loaded whole, ``[state] backend = "dynamodb"`` and
``[state.dynamodb]`` included.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import jsonschema
import kubernetes_validate
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information
from scripts import gen_k8s

from tests.conftest import DATA, ROOT
from tests.deploy_support import (
    K8S,
    NAMESPACE,
    config_text,
    container,
    cpus,
    k8s_config,
    kustomization,
    manifests,
    mib,
    the,
)
from trailguard import __version__
from trailguard.config import parse_listen
from trailguard.telemetry.http import HealthServer
from trailguard.telemetry.metrics import Metrics

#: The Kubernetes release whose OpenAPI schemas validate the core objects (kubernetes-validate
#: ships one set per minor release; EKS supports it).
K8S_VERSION: Final = "1.33.0"

CORE_KINDS: Final = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
}
CRDS: Final = DATA / "crds"
CRD_SCHEMAS: Final = {
    ("keda.sh/v1alpha1", "ScaledObject"): CRDS / "keda.sh" / "scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): CRDS
    / "keda.sh"
    / "triggerauthentication_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): CRDS
    / "monitoring.coreos.com"
    / "servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): CRDS
    / "monitoring.coreos.com"
    / "prometheusrule_v1.json",
}
SELECTOR: Final = {"app.kubernetes.io/name": "trailguard", "app.kubernetes.io/component": "daemon"}
MEMORY_PROMISE_MIB: Final = 512  # README: under 512 MiB with the defaults and 2 decode workers


def objects_of(kinds: set[str]) -> list[dict[str, Any]]:
    return [doc for _name, doc in manifests() if doc["kind"] in kinds]


def ids(docs: list[dict[str, Any]]) -> list[str]:
    return [f"{doc['kind']}/{doc['metadata']['name']}" for doc in docs]


CORE = objects_of(CORE_KINDS)
CUSTOM = objects_of({kind for _api, kind in CRD_SCHEMAS})


def crd_validator(doc: dict[str, Any]) -> jsonschema.Draft202012Validator:
    schema = json.loads(CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])].read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --------------------------------------------------------------------------------------------
# The files
# --------------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk
    kinds = sorted(doc["kind"] for _name, doc in manifests())
    assert kinds == sorted(
        [*CORE_KINDS, "ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"]
    )
    # No namespace transformer or generator: the files are applied as they are written.
    assert set(kustomization()) == {"apiVersion", "kind", "resources"}


def test_every_object_is_in_the_namespace_and_labelled() -> None:
    for _name, doc in manifests():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "trailguard", doc["kind"]
        assert labels["app.kubernetes.io/part-of"] == "trailguard", doc["kind"]
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", CORE, ids=ids(CORE))
def test_core_object_is_valid_for_kubernetes(doc: dict[str, Any]) -> None:
    version = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert version == K8S_VERSION.rsplit(".", 1)[0]


def test_kubernetes_validation_refuses_a_misspelt_field() -> None:
    """Strict schemas: an unknown field fails, as kubectl's strict field validation makes it."""
    deployment = copy.deepcopy(the("Deployment"))
    probe = deployment["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = probe
    with pytest.raises(kubernetes_validate.ValidationError, match="readynessProbe"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("doc", CUSTOM, ids=ids(CUSTOM))
def test_custom_resource_is_valid_for_its_crd(doc: dict[str, Any]) -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in crd_validator(doc).iter_errors(doc)
    ]
    assert errors == []


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = doc
    for part in parents:
        node = node[part]
    node[last] = value
    return doc


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        # KEDA's trigger metadata is a map of strings: a bare number is a classic mistake.
        ("ScaledObject", "spec.triggers.0.metadata.queueLength", 100),
        ("ScaledObject", "spec.scaleTargetRef.nam", "trailguard"),
        ("ScaledObject", "spec.minReplicaCount", "2"),
        ("TriggerAuthentication", "spec.podIdentity.identityOwner", "operator"),
        ("TriggerAuthentication", "spec.podIdentity.provider", "aws-iam"),
        ("ServiceMonitor", "spec.endpoints.0.interval", "30 seconds"),
        ("ServiceMonitor", "spec.endpoints.0.scheme", "tcp"),
        ("PrometheusRule", "spec.groups.0.rules.0.for", "five minutes"),
        ("PrometheusRule", "spec.groups.0.interval_", "1m"),
    ],
)
def test_crd_schemas_refuse_what_the_crds_refuse(kind: str, path: str, value: Any) -> None:
    """The vendored schemas are not vacuous: a wrong type, an unknown field, a value outside an
    enum or a pattern each fails."""
    broken = _set(the(kind), path, value)
    assert not crd_validator(broken).is_valid(broken)


# --------------------------------------------------------------------------------------------
# The ConfigMap: trailguard's own loader
# --------------------------------------------------------------------------------------------


def test_configmap_toml_loads_with_trailguards_config_loader() -> None:
    config = k8s_config()
    assert config.http.enabled
    assert config.limits.decode_workers == 2
    assert config.sources.sqs, "no queue"
    assert config.remediation.mode == "dry-run"
    assert config.state.backend == "dynamodb"
    assert config.state.dynamodb.table == "trailguard"


def test_configmap_is_the_intended_final_dynamodb_config() -> None:
    raw = tomllib.loads(config_text())
    assert raw["state"]["backend"] == "dynamodb"
    assert raw["state"]["dynamodb"] == {"table": "trailguard"}
    assert "path" not in raw["state"]  # nothing durable on the pod's disk


def test_config_checksum_rolls_the_pods() -> None:
    annotations = the("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations[gen_k8s.CHECKSUM_ANNOTATION] == gen_k8s.config_sha256(), (
        "deploy/k8s/configmap.yaml changed: run python -m scripts.gen_k8s"
    )
    text = gen_k8s.DEPLOYMENT.read_text()
    assert gen_k8s.deployment_text(text) == text
    # The checksum really is the toml's: another text gives another line.
    assert gen_k8s.deployment_text(text.replace(gen_k8s.config_sha256(), "0" * 64)) == text


def test_prometheusrule_is_generated_from_alerts_yml() -> None:
    assert gen_k8s.PROMETHEUS_RULE.read_text() == gen_k8s.prometheus_rule_text(), (
        "config/prometheus/alerts.yml changed: run python -m scripts.gen_k8s"
    )
    alerts = yaml.safe_load((ROOT / "config" / "prometheus" / "alerts.yml").read_text())
    rule = the("PrometheusRule")
    assert rule["spec"]["groups"] == alerts["groups"]
    names = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(names) == 13
    assert gen_k8s.main(["--check"]) == 0


# --------------------------------------------------------------------------------------------
# The Deployment
# --------------------------------------------------------------------------------------------


def test_pods_run_as_the_images_user_under_pod_security_restricted() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
    namespace = the("Namespace")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"

    pod = the("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsGroup"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    security = container()["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    # Restricted allows these volume types only; none is a hostPath.
    volumes = {v["name"]: v for v in pod["volumes"]}
    for volume in volumes.values():
        kinds = set(volume) - {"name"}
        assert kinds <= {"configMap", "emptyDir", "secret", "projected", "ephemeral"}, volume
    # Every writable path is scratch (emptyDir); the config is mounted read-only.
    for mount in container()["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            assert mount["readOnly"] is True
            assert mount["mountPath"] == "/etc/trailguard"
        else:
            assert "emptyDir" in volume, mount
    mounted = {m["mountPath"] for m in container()["volumeMounts"]}
    assert {"/var/lib/trailguard", "/tmp", "/etc/trailguard"} <= mounted
    assert container()["args"] == ["run", "--config", "/etc/trailguard/trailguard.toml"]


def test_resources_cover_the_memory_bound() -> None:
    """README: the daemon holds about 60 MiB + max_bytes_in_flight + decode_workers x
    (stream_over_bytes + 2 x max_candidate_bytes + 16 MiB).  The limit must be above that bound
    for this config, and above the README's 512 MiB promise."""
    limits = k8s_config().limits
    per_worker = limits.stream_over_bytes + 2 * limits.max_candidate_bytes + (16 << 20)
    bound_mib = (60 * 2**20 + limits.max_bytes_in_flight + limits.decode_workers * per_worker) / (
        2**20
    )
    assert limits.decode_workers == 2
    assert 470 < bound_mib < MEMORY_PROMISE_MIB  # ~476 MiB, as README says
    resources = container()["resources"]
    assert mib(resources["limits"]["memory"]) >= MEMORY_PROMISE_MIB > bound_mib
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert cpus(resources["limits"]["cpu"]) >= limits.decode_workers
    assert cpus(resources["requests"]["cpu"]) <= cpus(resources["limits"]["cpu"])
    # The scratch volumes fit in the container's ephemeral storage, with room for its log.
    scratch = [
        mib(v["emptyDir"]["sizeLimit"])
        for v in the("Deployment")["spec"]["template"]["spec"]["volumes"]
        if "emptyDir" in v
    ]
    assert sum(scratch) + 100 <= mib(resources["limits"]["ephemeral-storage"])


def test_grace_period_outlasts_the_shutdown_deadline() -> None:
    grace = the("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= k8s_config().shutdown.deadline_secs + 15


def test_image_is_this_version() -> None:
    assert container()["image"] == f"trailguard:{__version__}"


def test_listen_port_container_port_and_service_agree() -> None:
    host, port = parse_listen(k8s_config().http.listen)
    assert host == "0.0.0.0"  # reachable from the kubelet and Prometheus
    (container_port,) = container()["ports"]
    assert container_port == {"name": "metrics", "containerPort": port, "protocol": "TCP"}
    service = the("Service")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (container_port["name"], port)
    assert service_port["port"] == port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container()[probe]["httpGet"]["port"] in (container_port["name"], port)


def test_probes_use_the_health_paths() -> None:
    assert container()["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container()["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container()["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[HealthServer, list[str]]]:
    reasons: list[str] = []
    async with HealthServer("127.0.0.1:0", Metrics(), lambda: list(reasons)) as server:
        yield server, reasons


async def test_the_daemon_serves_the_probed_paths(
    health_server: tuple[HealthServer, list[str]],
) -> None:
    """The probe paths answer on trailguard's real HTTP server: liveness 200; readiness 200
    when ready and 503 when not (a path it did not serve would be a 404)."""
    server, reasons = health_server
    probes = {p: container()[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
    endpoint = the("ServiceMonitor")["spec"]["endpoints"][0]["path"]
    async with aiohttp.ClientSession() as client:

        async def status(path: str) -> int:
            async with client.get(f"{server.url}{path}") as response:
                return response.status

        assert await status(probes["livenessProbe"]) == 200
        assert await status(probes["readinessProbe"]) == 200
        assert await status(endpoint) == 200
        reasons.append("sqs: not polled yet")
        assert await status(probes["readinessProbe"]) == 503
        assert await status(probes["livenessProbe"]) == 200
        assert await status("/no-such-path") == 404


# --------------------------------------------------------------------------------------------
# Selectors and references
# --------------------------------------------------------------------------------------------


def test_deployment_selects_its_own_pods() -> None:
    spec = the("Deployment")["spec"]
    assert spec["selector"]["matchLabels"] == SELECTOR
    assert selects(SELECTOR, spec["template"]["metadata"]["labels"])
    assert (
        spec["template"]["spec"]["serviceAccountName"] == the("ServiceAccount")["metadata"]["name"]
    )


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("Service", ("spec", "selector")),
        ("PodDisruptionBudget", ("spec", "selector", "matchLabels")),
        ("NetworkPolicy", ("spec", "podSelector", "matchLabels")),
    ],
)
def test_selector_selects_the_deployments_pods(kind: str, path: tuple[str, ...]) -> None:
    node: Any = the(kind)
    for part in path:
        node = node[part]
    assert node, f"{kind}: an empty selector selects every pod"
    assert selects(node, the("Deployment")["spec"]["template"]["metadata"]["labels"])


def test_service_monitor_selects_the_service_and_its_port() -> None:
    monitor = the("ServiceMonitor")["spec"]
    service = the("Service")
    assert selects(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_prometheus_job_label_is_what_the_alerts_expect() -> None:
    """prometheus-operator names the job after the Service (no jobLabel set): TrailguardDown
    watches up{job="trailguard"}."""
    assert "jobLabel" not in the("ServiceMonitor")["spec"]
    alerts = (ROOT / "config" / "prometheus" / "alerts.yml").read_text()
    assert 'up{job="trailguard"}' in alerts
    assert the("Service")["metadata"]["name"] == "trailguard"


def test_network_policy_admits_only_the_metrics_port() -> None:
    spec = the("NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = spec["ingress"]
    assert "from" not in rule or rule["from"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    egress_ports = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP")}


def test_disruption_budget_never_blocks_a_drain_forever() -> None:
    pdb = the("PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["minAvailable"] < the("ScaledObject")["spec"]["minReplicaCount"]


# --------------------------------------------------------------------------------------------
# KEDA
# --------------------------------------------------------------------------------------------


def test_scaled_object_scales_the_deployment() -> None:
    spec = the("ScaledObject")["spec"]
    deployment = the("Deployment")
    assert spec["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert spec["minReplicaCount"] == deployment["spec"]["replicas"] == 2
    assert spec["minReplicaCount"] < spec["maxReplicaCount"] == 10


def test_scaled_object_watches_the_configured_queue_with_the_operators_identity() -> None:
    (trigger,) = the("ScaledObject")["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    config = k8s_config()
    (queue,) = config.sources.sqs
    metadata = trigger["metadata"]
    assert metadata["queueURL"] == queue.queue_url
    region = re.fullmatch(
        r"https://sqs\.([a-z0-9-]+)\.amazonaws\.com/\d{12}/[\w-]+", queue.queue_url
    )
    assert region is not None
    assert metadata["awsRegion"] == region.group(1) == config.aws.region
    auth = the("TriggerAuthentication")
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    # The KEDA operator's own IRSA role (formerly identityOwner: operator), never static keys.
    assert auth["spec"] == {"podIdentity": {"provider": "aws", "identityOwner": "keda"}}


def test_queue_length_target_is_well_above_what_a_busy_pod_holds_in_flight() -> None:
    """KEDA counts in-flight messages (scaleOnInFlight); a busy pod holds up to
    max(10, 2 x max_objects_in_flight) of them (app.py).  A target near that would scale out
    pods that are merely keeping up."""
    (trigger,) = the("ScaledObject")["spec"]["triggers"]
    target = int(trigger["metadata"]["queueLength"])
    assert trigger["metadata"]["scaleOnInFlight"] == "true"
    limits = k8s_config().limits
    in_flight = max(10, 2 * limits.max_objects_in_flight)
    assert target >= 4 * in_flight


def test_service_account_carries_an_irsa_role() -> None:
    annotations = the("ServiceAccount")["metadata"]["annotations"]
    assert re.fullmatch(
        r"arn:aws:iam::\d{12}:role/trailguard", annotations["eks.amazonaws.com/role-arn"]
    )


def test_vendored_crd_schemas_say_where_they_come_from() -> None:
    readme = (CRDS / "README.md").read_text()
    assert "Apache" in (CRDS / "LICENSE").read_text()
    for path in CRD_SCHEMAS.values():
        assert path.relative_to(CRDS).as_posix() in readme
        comment = json.loads(path.read_text())["$comment"]
        assert "scripts/vendor_crd_schemas.py" in comment
        assert re.search(r"v\d+\.\d+\.\d+", comment), comment


def test_deploy_readme_names_every_file() -> None:
    readme = (K8S / "README.md").read_text()
    for name in kustomization()["resources"]:
        assert f"`{name}`" in readme, name
