"""Offline tests of the dwf Helm chart (deploy/helm/dwf).

The chart is linted and rendered by the real Helm v4 SDK (helm-python-sdk embeds it), every
rendered object is validated with kubernetes-validate's strict schemas for the oldest and the
newest Kubernetes the chart supports, and the rendered objects are checked for the properties
the deployment relies on. No cluster, helm binary or network is used.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helm.servicemonitor_schema import SERVICEMONITOR_SCHEMA

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "deploy" / "helm" / "dwf"
CI_FILES = sorted((CHART_DIR / "ci").glob("*.yaml"))
CI_IDS = [p.stem for p in CI_FILES]

# Chart.yaml says kubeVersion >=1.27 (native gRPC probes GA); 1.37 is the newest schema set.
KUBE_VERSIONS = ("1.27.0", "1.37.0")
RELEASE = "dwf"
NAMESPACE = "shop"
SERVICES = {
    "order_gateway": "order-gateway",
    "inventory": "inventory",
    "fulfillment": "fulfillment",
    "notifications": "notifications",
}
HOOK_PRE = {"pre-install", "pre-upgrade"}
# The systems fulfillment calls (DWF_FULFILLMENT_<SYSTEM>_URL/_TOKEN), each with a sandbox.
SYSTEMS = ("erp", "wms", "carrier")
# Sandbox ports of values.yaml; "channel" is notifications' webhook receiver.
SANDBOX_PORTS = {"erp": 8080, "wms": 8081, "carrier": 8083, "channel": 8082}
CONNECTOR_VARS = {f"DWF_FULFILLMENT_{s.upper()}_{v}" for s in SYSTEMS for v in ("URL", "TOKEN")}

Obj = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def load_values(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def ci_values(stem: str) -> dict[str, Any]:
    return load_values(CHART_DIR / "ci" / f"{stem}.yaml")


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render_manifests(values: dict[str, Any] | None, *, upgrade: bool = False) -> dict[str, str]:
    # A fresh load per render keeps renders independent of each other and of the session
    # fixture (Helm processes a loaded chart in place while rendering).
    with helm.Chart.load(CHART_DIR) as fresh:
        return fresh.render(
            values,
            name=RELEASE,
            namespace=NAMESPACE,
            is_install=not upgrade,
            is_upgrade=upgrade,
        )


def render(values: dict[str, Any] | None, *, upgrade: bool = False) -> list[Obj]:
    manifests = render_manifests(values, upgrade=upgrade)
    objects: list[Obj] = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["_template"] = template
                objects.append(doc)
    return objects


_RENDERED: dict[str, list[Obj]] = {}


def rendered_ci(stem: str) -> list[Obj]:
    if stem not in _RENDERED:
        _RENDERED[stem] = render(ci_values(stem))
    return copy.deepcopy(_RENDERED[stem])


def strip(obj: Obj) -> Obj:
    """The object as it would be sent to the API server (without test bookkeeping)."""
    clean = {k: v for k, v in obj.items() if k != "_template"}
    clean["metadata"] = dict(clean["metadata"])
    if not clean["metadata"].get("annotations"):
        clean["metadata"].pop("annotations", None)
    return clean


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def obj_name(component: str) -> str:
    return f"{RELEASE}-{component}"


def is_dwf(obj: Obj) -> bool:
    return bool(obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "dwf")


def hooks(obj: Obj) -> set[str]:
    raw = obj["metadata"]["annotations"].get("helm.sh/hook", "")
    return {h.strip() for h in raw.split(",") if h.strip()}


def selector_matches(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in match_labels.items())


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def pod_spec_labels(obj: Obj) -> dict[str, str]:
    labels: dict[str, str] = obj["spec"]["template"]["metadata"]["labels"]
    return labels


def container_env(container: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def effective_env(objects: list[Obj], container: Obj) -> dict[str, Any]:
    """A container's environment: its envFrom ConfigMaps, then its own env."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update(container_env(container))
    return env


def sandbox_args(name: str, port: int) -> list[str]:
    # `dwf sandbox <name>`; the sandboxes listen on 127.0.0.1 unless told otherwise.
    return ["sandbox", name, "--host", "0.0.0.0", "--port", str(port)]


def b64(secret: Obj, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


@cache
def servicemonitor_validator() -> jsonschema.protocols.Validator:
    """Strict validator of our own ServiceMonitor schema (servicemonitor_schema.py).

    The Prometheus Operator CRDs are not part of kubernetes-validate's schemas; the API server
    rejects unknown fields with strict field validation, and the schema is closed to match.
    """
    jsonschema.Draft7Validator.check_schema(SERVICEMONITOR_SCHEMA)
    return jsonschema.Draft7Validator(SERVICEMONITOR_SCHEMA)


def validate_strict(obj: Obj, kube_version: str) -> None:
    if obj["kind"] == "ServiceMonitor":  # a CRD: not in kubernetes-validate's schemas
        servicemonitor_validator().validate(obj)
        return
    kubernetes_validate.validate(obj, kube_version, strict=True)


def with_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)

    def deep(dst: dict[str, Any], src: dict[str, Any]) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                deep(dst[k], v)
            else:
                dst[k] = v

    deep(merged, overrides)
    return merged


# --------------------------------------------------------------------------- lint


@pytest.mark.parametrize("values_file", CI_FILES, ids=CI_IDS)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_lint_strict_passes_for_every_ci_values_file(values_file: Path, kube_version: str) -> None:
    report = helm.lint(
        CHART_DIR,
        load_values(values_file),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{kube_version}",
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # strict: warnings count as failures; only informational notes may remain.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_refuses_chart_defaults_without_credentials_and_endpoints() -> None:
    report = helm.lint(CHART_DIR, strict=True, namespace=NAMESPACE)
    text = "\n".join(report["errors"])
    assert "/services/inventory/credentials/database/password" in text
    assert "/services/order_gateway/credentials/nats/password" in text
    assert "/externalNats/url" in text


def test_chart_has_no_dependencies_and_vendors_nothing(chart: helm.Chart) -> None:
    """NATS is an external endpoint; no third-party chart is declared or packaged with ours."""
    assert not chart.metadata.get("dependencies")
    assert chart.dependencies == []
    assert helm.dependency_list(CHART_DIR) == []
    assert not (CHART_DIR / "charts").exists()
    assert not (CHART_DIR / "requirements.yaml").exists()
    assert [p for p in CHART_DIR.rglob("*") if p.suffix in {".tgz", ".tar", ".gz"}] == []
    # The old in-cluster NATS switch is gone (the schema refuses it, see SCHEMA_REJECTS).
    assert "nats" not in chart.values


def test_values_schema_is_valid_draft7_and_matches_helm_on_ci_files() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = load_values(CHART_DIR / "values.yaml")
    for path in CI_FILES:
        merged = with_overrides(defaults, load_values(path))
        errors = [e.message for e in validator.iter_errors(merged)]
        assert errors == [], f"{path.name}: {errors}"


# --------------------------------------------------------------------------- kubernetes schemas


@pytest.mark.parametrize("stem", CI_IDS)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_object_validates_strictly(
    chart: helm.Chart, stem: str, kube_version: str
) -> None:
    objects = rendered_ci(stem)
    assert objects
    for obj in objects:
        try:
            validate_strict(strip(obj), kube_version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']} ({obj['_template']}): "
                f"{path}: {exc.message}"
            )


def test_strict_validation_rejects_unknown_fields(chart: helm.Chart) -> None:
    """The validators used above do reject what a strict API server would."""
    objects = rendered_ci("defaults-values")
    deployment = strip(named(objects, "Deployment", obj_name("inventory")))
    pod_spec(deployment)["containers"][0]["readinessProbe"]["grpc"]["portName"] = "grpc"
    for version in KUBE_VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError):
            validate_strict(deployment, version)

    monitor = strip(named(rendered_ci("staging-values"), "ServiceMonitor", "dwf"))
    validate_strict(monitor, KUBE_VERSIONS[0])
    broken: list[tuple[str, Any]] = [
        ("spec.endpoints.0.scrapeEvery", "30s"),  # unknown field
        ("spec.endpoints.0.interval", "30 seconds"),
        ("spec.endpoints.0.scheme", "grpc"),
        ("spec.selector.matchExpressions", []),  # not emitted, hence not allowed
        ("spec.namespaceSelector.matchNames", "shop"),
        ("spec.sampleLimit", 100),
        ("metadata.labels.release", "kube prometheus"),
        ("apiVersion", "monitoring.coreos.com/v1alpha1"),
    ]
    for dotted, value in broken:
        candidate = copy.deepcopy(monitor)
        *parents, leaf = dotted.split(".")
        node: Any = candidate
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[leaf] = value
        with pytest.raises(jsonschema.ValidationError):
            validate_strict(candidate, KUBE_VERSIONS[0])
    for required in ("endpoints", "selector"):
        candidate = copy.deepcopy(monitor)
        del candidate["spec"][required]
        with pytest.raises(jsonschema.ValidationError):
            validate_strict(candidate, KUBE_VERSIONS[0])


# --------------------------------------------------------------------------- rendered objects


@pytest.mark.parametrize("stem", CI_IDS)
def test_every_service_has_its_objects(chart: helm.Chart, stem: str) -> None:
    values = with_overrides(chart.values, ci_values(stem))
    objects = rendered_ci(stem)
    for key, component in SERVICES.items():
        svc_values = values["services"][key]
        name = obj_name(component)
        deployment = named(objects, "Deployment", name)
        container = pod_spec(deployment)["containers"][0]
        assert container["args"] == ["serve", key]
        assert container["envFrom"] == [{"configMapRef": {"name": name}}]
        assert named(objects, "ConfigMap", name)["data"]["DWF_SERVICE"] == key

        service = named(objects, "Service", name)
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["grpc"]["targetPort"] == "grpc"
        assert ports["grpc"]["appProtocol"] == "grpc"
        assert ports["metrics"]["targetPort"] == "metrics"
        container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container_ports["grpc"] == values["grpc"]["port"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector_matches(service["spec"]["selector"], pod_labels)
        assert selector_matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
        # No other Deployment's pods are selected by this Service.
        others = [d for d in of_kind(objects, "Deployment") if d is not deployment]
        assert not any(
            selector_matches(
                service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]
            )
            for d in others
        )

        if values["serviceAccount"]["create"]:
            account = named(objects, "ServiceAccount", name)
            assert account["automountServiceAccountToken"] is False
            assert pod_spec(deployment)["serviceAccountName"] == name

        if svc_values["autoscaling"]["enabled"]:
            hpa = named(objects, "HorizontalPodAutoscaler", name)
            assert hpa["apiVersion"] == "autoscaling/v2"
            assert hpa["spec"]["scaleTargetRef"] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
            }
            assert hpa["spec"]["minReplicas"] == svc_values["autoscaling"]["minReplicas"]
            assert "replicas" not in deployment["spec"]  # the HPA owns the replica count
        else:
            assert deployment["spec"]["replicas"] == svc_values["replicaCount"]
            assert not [
                o
                for o in of_kind(objects, "HorizontalPodAutoscaler")
                if o["metadata"]["name"] == name
            ]

        if svc_values["podDisruptionBudget"]["enabled"]:
            pdb = named(objects, "PodDisruptionBudget", name)
            assert selector_matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
        else:
            assert not [
                o for o in of_kind(objects, "PodDisruptionBudget") if o["metadata"]["name"] == name
            ]

        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"]
        assert resources["limits"]["memory"]


def test_probe_defaults_match_the_health_contract(chart: helm.Chart) -> None:
    """Liveness asks for "liveness" (SERVING while the process runs, independent of Postgres
    and NATS); readiness asks for the overall health (NOT_SERVING until Postgres and NATS are
    connected and while draining)."""
    probes = chart.values["probes"]
    assert probes["liveness"]["service"] == "liveness"
    assert probes["liveness"]["failureThreshold"] == 3
    assert probes["readiness"]["service"] == ""
    assert probes["startup"]["service"] == "liveness"
    container = pod_spec(
        named(rendered_ci("defaults-values"), "Deployment", obj_name("inventory"))
    )["containers"][0]
    assert container["livenessProbe"] == {
        "grpc": {"port": 50051, "service": "liveness"},
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }
    assert container["readinessProbe"] == {
        "grpc": {"port": 50051},  # no service: the overall server health
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": 2,
    }
    assert container["startupProbe"] == {
        "grpc": {"port": 50051, "service": "liveness"},
        "periodSeconds": 2,
        "failureThreshold": 30,
    }


@pytest.mark.parametrize("stem", CI_IDS)
def test_probes_are_native_grpc_health_checks(chart: helm.Chart, stem: str) -> None:
    values = with_overrides(chart.values, ci_values(stem))
    tls = values["tls"]["enabled"]
    expected_port = values["tls"]["healthPort"] if tls else values["grpc"]["port"]
    objects = rendered_ci(stem)
    for key, component in SERVICES.items():
        deployment = named(objects, "Deployment", obj_name(component))
        container = pod_spec(deployment)["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe_name, values_key in (
            ("startupProbe", "startup"),
            ("readinessProbe", "readiness"),
            ("livenessProbe", "liveness"),
        ):
            probe = container[probe_name]
            assert set(probe) & {"httpGet", "tcpSocket", "exec"} == set(), (key, probe_name)
            assert probe["grpc"]["port"] == expected_port, (key, probe_name)
            assert probe["grpc"]["port"] in ports.values()
            expected_service = values["probes"][values_key]["service"]
            assert probe["grpc"].get("service", "") == expected_service, (key, probe_name)
            assert probe["failureThreshold"] == values["probes"][values_key]["failureThreshold"]
        env = named(objects, "ConfigMap", obj_name(component))["data"]
        service_ports = {
            p["name"] for p in named(objects, "Service", obj_name(component))["spec"]["ports"]
        }
        assert service_ports == {"grpc", "metrics"}  # the kubelet probes pod IPs, not Services
        if tls:
            # The plaintext, health-only port the chassis opens from DWF_HEALTH_PORT.
            assert ports["health"] == values["tls"]["healthPort"]
            assert env["DWF_HEALTH_PORT"] == str(values["tls"]["healthPort"])
        else:
            assert "health" not in ports
            assert "DWF_HEALTH_PORT" not in env  # unset: the chassis opens no extra port


@pytest.mark.parametrize("stem", CI_IDS)
def test_every_dwf_pod_is_hardened(chart: helm.Chart, stem: str) -> None:
    workloads = [o for o in rendered_ci(stem) if o["kind"] in {"Deployment", "Job"} and is_dwf(o)]
    assert len(workloads) >= 4
    for workload in workloads:
        spec = pod_spec(workload)
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 0, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"], where
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["privileged"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp", where


@pytest.mark.parametrize("stem", CI_IDS)
def test_grace_period_covers_prestop_and_drain(chart: helm.Chart, stem: str) -> None:
    for component in SERVICES.values():
        objects = rendered_ci(stem)
        deployment = named(objects, "Deployment", obj_name(component))
        spec = pod_spec(deployment)
        data = named(objects, "ConfigMap", obj_name(component))["data"]
        drain = float(data["DWF_DRAIN_SECONDS"]) + float(data["DWF_SHUTDOWN_GRACE_SECONDS"])
        container = spec["containers"][0]
        pre_stop = 0
        if "lifecycle" in container:
            command = container["lifecycle"]["preStop"]["exec"]["command"]
            assert command[0] == "sleep"
            pre_stop = int(command[1])
        assert spec["terminationGracePeriodSeconds"] > drain + pre_stop


def test_config_map_carries_the_service_contract(chart: helm.Chart) -> None:
    objects = rendered_ci("defaults-values")
    for key, component in SERVICES.items():
        data = named(objects, "ConfigMap", obj_name(component))["data"]
        assert all(isinstance(v, str) for v in data.values())
        assert data["DWF_SERVICE"] == key
        assert data["DWF_DB_SCHEMA"] == key
        assert data["DWF_GRPC_HOST"] == "0.0.0.0"
        assert data["DWF_GRPC_PORT"] == "50051"
        assert data["DWF_METRICS_PORT"] == "9464"
        assert data["DWF_NATS_URL"] == "nats://nats.messaging.svc:4222"
        assert data["DWF_LOG_FORMAT"] == "json"
        assert data["DWF_SHUTDOWN_GRACE_SECONDS"] == "10"
        assert data["DWF_DRAIN_SECONDS"] == "3"
        assert data["OTEL_SERVICE_NAME"] == f"dwf-{component}"
        assert data["OTEL_TRACES_EXPORTER"] == "none"
        assert f"k8s.namespace.name={NAMESPACE}" in data["OTEL_RESOURCE_ATTRIBUTES"]
        for other_key, other_component in SERVICES.items():
            assert data[f"DWF_{other_key.upper()}_ADDR"] == (
                f"{obj_name(other_component)}.{NAMESPACE}.svc:50051"
            )
        assert not any(k.startswith("DWF_TLS_") for k in data)
        # Credentials never land in the ConfigMap.
        assert {"DWF_DATABASE_URL", "DWF_NATS_PASSWORD", "DWF_NATS_USER"}.isdisjoint(data)


def test_each_service_gets_only_its_own_database_role_and_nats_user(chart: helm.Chart) -> None:
    values = ci_values("defaults-values")
    objects = rendered_ci("defaults-values")
    for key, component in SERVICES.items():
        secret_name = f"{obj_name(component)}-credentials"
        secret = named(objects, "Secret", secret_name)
        password = values["services"][key]["credentials"]["database"]["password"]
        assert b64(secret, "DWF_DATABASE_URL") == (
            f"postgresql+asyncpg://dwf_{key}:{quote(password, safe='')}"
            "@postgres.db.internal:5432/dwf"
        )
        assert b64(secret, "DWF_NATS_USER") == key
        deployment = named(objects, "Deployment", obj_name(component))
        env = container_env(pod_spec(deployment)["containers"][0])
        for var in ("DWF_DATABASE_URL", "DWF_NATS_USER", "DWF_NATS_PASSWORD"):
            assert env[var]["secretKeyRef"] == {"name": secret_name, "key": var}
    # The special characters of a password are URL-encoded.
    notifications = named(objects, "Secret", f"{obj_name('notifications')}-credentials")
    assert ":not-db-p%40ss%2Fword@" in b64(notifications, "DWF_DATABASE_URL")


def test_existing_secrets_and_tls(chart: helm.Chart) -> None:
    values = ci_values("tls-existing-secret-values")
    objects = rendered_ci("tls-existing-secret-values")
    assert of_kind(objects, "Secret") == []  # nothing chart-managed, hooks included
    for key, component in SERVICES.items():
        existing = values["services"][key]["credentials"]["existingSecret"]
        deployment = named(objects, "Deployment", obj_name(component))
        spec = pod_spec(deployment)
        container = spec["containers"][0]
        env = container_env(container)
        assert env["DWF_DATABASE_URL"]["secretKeyRef"]["name"] == existing
        assert env["DWF_NATS_PASSWORD"]["secretKeyRef"]["name"] == existing
        assert (
            "checksum/credentials" not in deployment["spec"]["template"]["metadata"]["annotations"]
        )
        job = named(objects, "Job", obj_name(f"migrate-{component}"))
        job_env = container_env(pod_spec(job)["containers"][0])
        assert job_env["DWF_DATABASE_URL"]["secretKeyRef"]["name"] == existing
        assert "DWF_NATS_PASSWORD" not in job_env

        data = named(objects, "ConfigMap", obj_name(component))["data"]
        assert data["DWF_TLS_CERT_FILE"] == "/etc/dwf/tls/tls.crt"
        assert data["DWF_TLS_KEY_FILE"] == "/etc/dwf/tls/tls.key"
        assert data["DWF_TLS_CA_FILE"] == "/etc/dwf/tls/ca.crt"  # mutual TLS
        assert data["OTEL_TRACES_EXPORTER"] == "otlp"
        assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert "deployment.environment=production" in data["OTEL_RESOURCE_ATTRIBUTES"]
        # Only fulfillment calls the ERP/WMS/carrier; no service gets the old shared names.
        assert not {"DWF_ERP_URL", "DWF_WMS_URL", "DWF_CHANNEL_WEBHOOK_URL"} & set(data)
        if key == "fulfillment":
            for system in SYSTEMS:
                url = values["integrations"][f"{system}Url"]
                assert data[f"DWF_FULFILLMENT_{system.upper()}_URL"] == url
                assert env[f"DWF_FULFILLMENT_{system.upper()}_TOKEN"]["secretKeyRef"] == {
                    "name": "dwf-integrations",
                    "key": f"DWF_{system.upper()}_TOKEN",
                }
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert "checksum/integrations" not in annotations
        else:
            assert not CONNECTOR_VARS & set(data)
            assert not CONNECTOR_VARS & set(env)
        tls_volume = {v["name"]: v for v in spec["volumes"]}["tls"]
        expected_secret = "dwf-order-gateway-tls" if key == "order_gateway" else "dwf-internal-tls"
        assert tls_volume["secret"]["secretName"] == expected_secret
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["tls"]["mountPath"] == "/etc/dwf/tls"
        assert mounts["tls"]["readOnly"] is True
        assert container["image"].startswith("registry.example.com/dwf/dwf@sha256:")
    pdb = named(objects, "PodDisruptionBudget", obj_name("fulfillment"))
    assert pdb["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in pdb["spec"]


# --------------------------------------------------------------------------- migrations / hooks


@pytest.mark.parametrize("upgrade", [False, True], ids=["install", "upgrade"])
def test_migrations_are_pre_install_pre_upgrade_hooks(chart: helm.Chart, upgrade: bool) -> None:
    objects = render(ci_values("defaults-values"), upgrade=upgrade)
    jobs = of_kind(objects, "Job")
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(
        obj_name(f"migrate-{c}") for c in SERVICES.values()
    )
    hook_objects = [o for o in objects if hooks(o)]
    for job in jobs:
        annotations = job["metadata"]["annotations"]
        assert hooks(job) == HOOK_PRE
        assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
            "before-hook-creation",
            "hook-succeeded",
        }
        job_weight = int(annotations["helm.sh/hook-weight"])
        spec = pod_spec(job)
        container = spec["containers"][0]
        assert container["args"][0] == "migrate"
        key = container["args"][1]
        assert key in SERVICES
        assert spec["restartPolicy"] == "Never"
        # Hooks run before the release's regular objects exist: whatever the Job uses must be a
        # hook of a lower weight (created first) or external.
        account = named(hook_objects, "ServiceAccount", spec["serviceAccountName"])
        secret = named(
            hook_objects,
            "Secret",
            container_env(container)["DWF_DATABASE_URL"]["secretKeyRef"]["name"],
        )
        for prerequisite in (account, secret):
            assert hooks(prerequisite) == HOOK_PRE
            assert int(prerequisite["metadata"]["annotations"]["helm.sh/hook-weight"]) < job_weight
        assert "envFrom" not in container  # the ConfigMap does not exist yet on first install
        env = container_env(container)
        config = named(objects, "ConfigMap", obj_name(SERVICES[key]))["data"]
        assert {k: env[k] for k in config} == config
        # The migration credentials hold only the database URL of this service's own role.
        assert set(secret["data"]) == {"DWF_DATABASE_URL"}
        assert b64(secret, "DWF_DATABASE_URL").startswith(f"postgresql+asyncpg://dwf_{key}:")
    # The Deployments themselves are regular objects, rolled after the pre-* hooks finished.
    for deployment in of_kind(objects, "Deployment"):
        assert hooks(deployment) == set()
    # Hook network policy lets migration pods reach Postgres (and DNS) only.
    policy = named(hook_objects, "NetworkPolicy", obj_name("migrations"))
    assert policy["spec"]["ingress"] == []
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 5432}
    job_labels = pod_spec_labels(jobs[0])
    assert selector_matches(policy["spec"]["podSelector"]["matchLabels"], job_labels)


# --------------------------------------------------------------------------- network policies


def policy_for(objects: list[Obj], component: str) -> Obj:
    return named(objects, "NetworkPolicy", obj_name(component))


def egress_by_port(policy: Obj) -> dict[int, list[Obj]]:
    out: dict[int, list[Obj]] = {}
    for rule in policy["spec"]["egress"]:
        assert rule.get("to"), "an egress rule without `to` would allow every destination"
        for port in rule["ports"]:
            out.setdefault(port["port"], []).extend(rule["to"])
    return out


def test_network_policies_isolate_services(chart: helm.Chart) -> None:
    objects = rendered_ci("defaults-values")
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    service_pod = {
        "app.kubernetes.io/name": "dwf",
        "app.kubernetes.io/instance": RELEASE,
        "dwf.io/role": "service",
    }
    for key, component in SERVICES.items():
        policy = policy_for(objects, component)
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        # The policy selects exactly this service's pods.
        selected = [
            n
            for n, d in deployments.items()
            if selector_matches(spec["podSelector"]["matchLabels"], pod_spec_labels(d))
        ]
        assert selected == [obj_name(component)]
        assert all(selector_matches(service_pod, pod_spec_labels(d)) for d in deployments.values())

        ingress_grpc = [r for r in spec["ingress"] if r["ports"][0]["port"] == 50051]
        peers = [p for r in ingress_grpc for p in r["from"]]
        assert {"podSelector": {"matchLabels": service_pod}} in peers
        storefront = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storefront"}}
        }
        if key == "order_gateway":
            assert storefront in peers
        else:
            # Internal services: only the dwf services of this release, nothing else.
            assert peers == [{"podSelector": {"matchLabels": service_pod}}]
        assert not any("ipBlock" in p for p in peers)
        metrics = [r for r in spec["ingress"] if r["ports"][0]["port"] == 9464]
        assert metrics[0]["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]

        egress = egress_by_port(policy)
        assert {p["protocol"] for r in spec["egress"] for p in r["ports"] if p["port"] == 53} == {
            "UDP",
            "TCP",
        }
        assert egress[53][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "kube-system"
        }
        assert egress[5432] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
        assert egress[4222][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "messaging"
        }
        assert {"podSelector": {"matchLabels": service_pod}} in egress[50051]
        # ERP/WMS/channel destinations are unset in this file: no egress to the outside.
        assert set(egress) == {53, 5432, 4222, 50051}


def test_network_policies_erp_wms_egress_per_service(chart: helm.Chart) -> None:
    objects = rendered_ci("tls-existing-secret-values")

    def cidrs(component: str, port: int) -> set[str]:
        peers = egress_by_port(policy_for(objects, component)).get(port, [])
        return {p["ipBlock"]["cidr"] for p in peers if "ipBlock" in p}

    assert cidrs("fulfillment", 443) == {"203.0.113.10/32", "198.51.100.0/28", "192.0.2.64/27"}
    assert cidrs("fulfillment", 8443) == {"203.0.113.10/32"}
    # Only fulfillment's connectors call the ERP, WMS and carrier.
    assert cidrs("order-gateway", 443) == set()
    assert cidrs("inventory", 443) == set()
    assert cidrs("notifications", 443) == {"0.0.0.0/0"}
    assert cidrs("notifications", 8443) == set()
    assert cidrs("inventory", 5432) == {"10.20.0.10/32", "10.20.0.11/32"}
    assert cidrs("inventory", 4222) == {"10.30.0.0/28"}
    gateway = policy_for(objects, "order-gateway")["spec"]["ingress"]
    storefront_peers = [
        p
        for r in gateway
        for p in r["from"]
        if "namespaceSelector" in p and r["ports"][0]["port"] == 50051
    ]
    assert storefront_peers == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "storefront"}},
        }
        for ns in ("storefront", "storefront-b2b")
    ]


def ingress_ports(policy: Obj) -> set[int]:
    return {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}


@pytest.mark.parametrize("stem", ["defaults-values", "tls-existing-secret-values"])
def test_probe_port_is_reachable_by_the_kubelet_only(chart: helm.Chart, stem: str) -> None:
    """The plaintext health port (TLS) is opened to no pod; node CIDRs are opt-in."""
    values = with_overrides(chart.values, ci_values(stem))
    probe_port = values["tls"]["healthPort"] if values["tls"]["enabled"] else 50051
    for component in SERVICES.values():
        assert ingress_ports(policy_for(rendered_ci(stem), component)) == {50051, 9464}

    nodes = ["10.0.0.0/16", "fd00:10::/64"]
    overrides = {"networkPolicy": {"probeSourceCidrs": nodes}}
    objects = render(with_overrides(ci_values(stem), overrides))
    for component in SERVICES.values():
        policy = policy_for(objects, component)
        for version in KUBE_VERSIONS:
            validate_strict(strip(policy), version)
        node_rules = [r for r in policy["spec"]["ingress"] if "ipBlock" in r["from"][0]]
        assert node_rules == [
            {
                "from": [{"ipBlock": {"cidr": c}} for c in nodes],
                "ports": [{"protocol": "TCP", "port": probe_port}],
            }
        ]


# --------------------------------------------------------------------------- staging / minimal


def test_staging_sandboxes_servicemonitor_and_external_nats(chart: helm.Chart) -> None:
    objects = rendered_ci("staging-values")
    for name, port in SANDBOX_PORTS.items():
        deployment = named(objects, "Deployment", obj_name(f"sandbox-{name}"))
        container = pod_spec(deployment)["containers"][0]
        assert container["args"] == sandbox_args(name, port)
        service = named(objects, "Service", obj_name(f"sandbox-{name}"))
        assert selector_matches(service["spec"]["selector"], pod_spec_labels(deployment))
        policy = named(objects, "NetworkPolicy", obj_name(f"sandbox-{name}"))
        assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": port}]
    data = named(objects, "ConfigMap", obj_name("fulfillment"))["data"]
    for system in SYSTEMS:
        assert data[f"DWF_FULFILLMENT_{system.upper()}_URL"] == (
            f"http://{obj_name(f'sandbox-{system}')}.{NAMESPACE}.svc:{SANDBOX_PORTS[system]}"
        )
    # The WMS start-up settings of the staging file.
    wms = container_env(
        pod_spec(named(objects, "Deployment", obj_name("sandbox-wms")))["containers"][0]
    )
    assert (wms["DWF_WMS_ACK_DELAY_MS"], wms["DWF_WMS_STEP_DELAY_MS"]) == ("200", "250")
    sandbox_erp = pod_spec_labels(named(objects, "Deployment", obj_name("sandbox-erp")))
    fulfillment_egress = egress_by_port(policy_for(objects, "fulfillment"))
    assert any(
        selector_matches(p["podSelector"]["matchLabels"], sandbox_erp)
        for p in fulfillment_egress[8080]
    )

    monitor = named(objects, "ServiceMonitor", "dwf")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    scraped = [
        s["metadata"]["name"]
        for s in of_kind(objects, "Service")
        if selector_matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert sorted(scraped) == sorted(obj_name(c) for c in SERVICES.values())

    # NATS runs next to dwf (upstream chart, release "nats" in "messaging"): the services get
    # its URL and may connect to its pods, nothing NATS is rendered by this chart.
    staging = ci_values("staging-values")
    assert data["DWF_NATS_URL"] == staging["externalNats"]["url"]
    nats_peers = egress_by_port(policy_for(objects, "inventory"))[4222]
    assert nats_peers == staging["networkPolicy"]["egress"]["nats"]["peers"]


# --------------------------------------------------------------------------- integrations

ALL_SANDBOXES = {"sandboxes": {name: {"enabled": True} for name in SANDBOX_PORTS}}


def sandbox_url(objects: list[Obj], name: str) -> str:
    """The in-cluster URL of a sandbox, from its rendered Service."""
    service = named(objects, "Service", obj_name(f"sandbox-{name}"))
    (port,) = service["spec"]["ports"]
    meta = service["metadata"]
    return f"http://{meta['name']}.{meta['namespace']}.svc:{port['port']}"


def validate_all(objects: list[Obj]) -> None:
    for obj in objects:
        for version in KUBE_VERSIONS:
            validate_strict(strip(obj), version)


def test_sandboxes_and_fulfillment_share_urls_and_tokens(chart: helm.Chart) -> None:
    objects = render(with_overrides(ci_values("defaults-values"), ALL_SANDBOXES))
    validate_all(objects)
    secret = named(objects, "Secret", obj_name("integrations"))
    fulfillment = named(objects, "Deployment", obj_name("fulfillment"))
    fulfillment_env = effective_env(objects, pod_spec(fulfillment)["containers"][0])
    checksum = fulfillment["spec"]["template"]["metadata"]["annotations"]["checksum/integrations"]
    for system in SYSTEMS:
        deployment = named(objects, "Deployment", obj_name(f"sandbox-{system}"))
        container = pod_spec(deployment)["containers"][0]
        assert container["args"] == sandbox_args(system, SANDBOX_PORTS[system])
        ref = container_env(container)[f"DWF_{system.upper()}_TOKEN"]["secretKeyRef"]
        assert ref == {"name": obj_name("integrations"), "key": f"DWF_{system.upper()}_TOKEN"}
        # A generated token, the same one fulfillment sends.
        assert len(b64(secret, ref["key"])) >= 32
        assert fulfillment_env[f"DWF_FULFILLMENT_{system.upper()}_TOKEN"]["secretKeyRef"] == ref
        assert fulfillment_env[f"DWF_FULFILLMENT_{system.upper()}_URL"] == sandbox_url(
            objects, system
        )
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["checksum/integrations"] == checksum  # restarted together
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/_admin/health", "port": "http"}
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
            "http": SANDBOX_PORTS[system]
        }
    assert set(secret["data"]) == {f"DWF_{s.upper()}_TOKEN" for s in SYSTEMS}
    # The channel sandbox needs no token; notifications may then deliver over plain HTTP.
    channel = pod_spec(named(objects, "Deployment", obj_name("sandbox-channel")))["containers"][0]
    assert channel["args"] == sandbox_args("channel", SANDBOX_PORTS["channel"])
    assert not [n for n in container_env(channel) if n.endswith("_TOKEN")]
    notify = named(objects, "ConfigMap", obj_name("notifications"))["data"]
    assert notify["DWF_NOTIFY_ALLOW_HTTP"] == "true"
    for key, component in SERVICES.items():
        if key != "fulfillment":
            deployment = named(objects, "Deployment", obj_name(component))
            env = effective_env(objects, pod_spec(deployment)["containers"][0])
            assert not CONNECTOR_VARS & set(env), key


def test_sandbox_network_policies_admit_their_one_client(chart: helm.Chart) -> None:
    objects = render(with_overrides(ci_values("defaults-values"), ALL_SANDBOXES))
    pods = {d["metadata"]["name"]: pod_spec_labels(d) for d in of_kind(objects, "Deployment")}
    for name, port in SANDBOX_PORTS.items():
        client = "notifications" if name == "channel" else "fulfillment"
        sandbox = pods[obj_name(f"sandbox-{name}")]
        policy = policy_for(objects, f"sandbox-{name}")
        (rule,) = policy["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        admitted = [
            n
            for n, labels in pods.items()
            if any(selector_matches(p["podSelector"]["matchLabels"], labels) for p in rule["from"])
        ]
        assert admitted == [obj_name(client)]
        # The sandboxes call nothing but DNS.
        assert set(egress_by_port(policy)) == {53}
        for component in SERVICES.values():
            egress = egress_by_port(policy_for(objects, component)).get(port, [])
            reaches = any(
                selector_matches(p["podSelector"]["matchLabels"], sandbox)
                for p in egress
                if "podSelector" in p
            )
            assert reaches == (component == client), (name, component)


def test_integrations_urls_are_used_without_sandboxes(chart: helm.Chart) -> None:
    urls = {s: f"https://{s}.example.com/api" for s in SYSTEMS}
    tokens = {s: f"{s}-token-given" for s in SYSTEMS}
    integrations = {
        "integrations": {
            **{f"{s}Url": urls[s] for s in SYSTEMS},
            "credentials": {f"{s}Token": tokens[s] for s in SYSTEMS},
        }
    }
    objects = render(with_overrides(ci_values("defaults-values"), integrations))
    validate_all(objects)
    assert not [o for o in objects if "sandbox" in o["metadata"]["name"]]
    secret = named(objects, "Secret", obj_name("integrations"))
    container = pod_spec(named(objects, "Deployment", obj_name("fulfillment")))["containers"][0]
    env = effective_env(objects, container)
    for system in SYSTEMS:
        assert env[f"DWF_FULFILLMENT_{system.upper()}_URL"] == urls[system]
        ref = env[f"DWF_FULFILLMENT_{system.upper()}_TOKEN"]["secretKeyRef"]
        assert ref["name"] == obj_name("integrations")
        assert b64(secret, ref["key"]) == tokens[system]

    # An enabled sandbox wins over its URL; the others keep theirs.
    mixed = with_overrides(integrations, {"sandboxes": {"wms": {"enabled": True}}})
    objects = render(with_overrides(ci_values("defaults-values"), mixed))
    data = named(objects, "ConfigMap", obj_name("fulfillment"))["data"]
    assert data["DWF_FULFILLMENT_WMS_URL"] == sandbox_url(objects, "wms")
    assert data["DWF_FULFILLMENT_ERP_URL"] == urls["erp"]
    assert (
        b64(named(objects, "Secret", obj_name("integrations")), "DWF_WMS_TOKEN")
        == "wms-token-given"
    )


def test_no_integration_configured_renders_no_tokens(chart: helm.Chart) -> None:
    objects = rendered_ci("defaults-values")
    assert obj_name("integrations") not in {
        s["metadata"]["name"] for s in of_kind(objects, "Secret")
    }
    container = pod_spec(named(objects, "Deployment", obj_name("fulfillment")))["containers"][0]
    assert not CONNECTOR_VARS & set(effective_env(objects, container))


def test_integrations_existing_secret(chart: helm.Chart) -> None:
    overrides = with_overrides(
        ALL_SANDBOXES, {"integrations": {"credentials": {"existingSecret": "erp-wms-tokens"}}}
    )
    objects = render(with_overrides(ci_values("defaults-values"), overrides))
    assert obj_name("integrations") not in {
        s["metadata"]["name"] for s in of_kind(objects, "Secret")
    }
    fulfillment = named(objects, "Deployment", obj_name("fulfillment"))
    env = container_env(pod_spec(fulfillment)["containers"][0])
    for system in SYSTEMS:
        sandbox = named(objects, "Deployment", obj_name(f"sandbox-{system}"))
        ref = container_env(pod_spec(sandbox)["containers"][0])[f"DWF_{system.upper()}_TOKEN"]
        assert ref["secretKeyRef"] == {
            "name": "erp-wms-tokens",
            "key": f"DWF_{system.upper()}_TOKEN",
        }
        assert env[f"DWF_FULFILLMENT_{system.upper()}_TOKEN"] == ref
        assert "annotations" not in sandbox["spec"]["template"]["metadata"]
    assert "checksum/integrations" not in fulfillment["spec"]["template"]["metadata"]["annotations"]


def test_sandbox_settings_become_their_env(chart: helm.Chart) -> None:
    settings = {
        "erp": {"rate_429": 0.2, "latency_ms": [10, 200], "unknown_items": ["SKU-1", "SKU-2"]},
        "wms": {"auto_ship": False, "reject_warehouses": "WH-2"},
        "carrier": {"tracking_step_ms": 500},
    }
    overrides = {"sandboxes": {n: {"enabled": True, "settings": v} for n, v in settings.items()}}
    objects = render(with_overrides(ci_values("defaults-values"), overrides))
    env = {
        name: container_env(
            pod_spec(named(objects, "Deployment", obj_name(f"sandbox-{name}")))["containers"][0]
        )
        for name in settings
    }
    assert env["erp"]["DWF_ERP_RATE_429"] == "0.2"
    assert json.loads(env["erp"]["DWF_ERP_LATENCY_MS"]) == [10, 200]
    assert json.loads(env["erp"]["DWF_ERP_UNKNOWN_ITEMS"]) == ["SKU-1", "SKU-2"]
    assert env["wms"]["DWF_WMS_AUTO_SHIP"] == "false"
    assert env["wms"]["DWF_WMS_REJECT_WAREHOUSES"] == "WH-2"  # text stays text
    assert env["carrier"]["DWF_CARRIER_TRACKING_STEP_MS"] == "500"


def test_chart_matches_the_sandbox_code() -> None:
    """The schema's sandbox settings are the fields the sandboxes read from DWF_<NAME>_*, and
    the token variable the chart sets is the one each sandbox requires."""
    from stack.sandboxes import carrier, erp, wms
    from stack.sandboxes.common import setting_names

    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    sandboxes = schema["properties"]["sandboxes"]["properties"]
    assert set(sandboxes) == {*SANDBOX_PORTS, "resources"}
    code = {
        "erp": [*setting_names(erp.ErpFaults), *setting_names(erp.MasterData)],
        "wms": setting_names(wms.WmsSettings),
        "carrier": setting_names(carrier.CarrierFaults),
    }
    for name, fields in code.items():
        assert sorted(sandboxes[name]["properties"]["settings"]["properties"]) == sorted(fields)
    assert "settings" not in sandboxes["channel"]["properties"]  # it reads no environment
    defaults = load_values(CHART_DIR / "values.yaml")
    assert {n: defaults["sandboxes"][n]["port"] for n in SANDBOX_PORTS} == SANDBOX_PORTS


@pytest.mark.parametrize("system", SYSTEMS)
def test_each_system_sandbox_requires_the_token_variable(
    system: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stack.sandboxes import carrier, erp, wms

    main = {"erp": erp.main, "wms": wms.main, "carrier": carrier.main}[system]
    monkeypatch.delenv(f"DWF_{system.upper()}_TOKEN", raising=False)
    with pytest.raises(SystemExit):
        main(["--host", "0.0.0.0", "--port", "0"])
    assert f"DWF_{system.upper()}_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize("stem", CI_IDS)
def test_chart_renders_only_its_own_objects(chart: helm.Chart, stem: str) -> None:
    objects = rendered_ci(stem)
    assert all(o["_template"].startswith("dwf/templates/") for o in objects)
    assert all(is_dwf(o) for o in objects)
    assert not [o for o in objects if o["kind"] == "StatefulSet" or "nats" in o["metadata"]["name"]]


def test_minimal_install(chart: helm.Chart) -> None:
    objects = rendered_ci("minimal-values")
    kinds = {o["kind"] for o in objects}
    assert kinds == {"ConfigMap", "Deployment", "Secret", "Service"}
    for deployment in of_kind(objects, "Deployment"):
        assert deployment["spec"]["replicas"] == 1
        assert pod_spec(deployment)["serviceAccountName"] == "default"
        assert "lifecycle" not in pod_spec(deployment)["containers"][0]


# --------------------------------------------------------------------------- refused values

SCHEMA_REJECTS: dict[str, tuple[dict[str, Any], str]] = {
    "missing-db-password": (
        {"services": {"inventory": {"credentials": {"database": {"password": ""}}}}},
        "/services/inventory/credentials/database/password",
    ),
    "unknown-service": ({"services": {"payments": {"replicaCount": 1}}}, "payments"),
    "zero-replicas": ({"services": {"fulfillment": {"replicaCount": 0}}}, "replicaCount"),
    "grpc-port-out-of-range": ({"grpc": {"port": 70000}}, "/grpc/port"),
    "writable-root-filesystem": (
        {"containerSecurityContext": {"readOnlyRootFilesystem": False}},
        "readOnlyRootFilesystem",
    ),
    "root-pod": ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
    "added-capability": (
        {"containerSecurityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}},
        "capabilities",
    ),
    "tls-without-secret": ({"tls": {"enabled": True}}, "/tls/existingSecret"),
    "bad-cidr": ({"networkPolicy": {"egress": {"erp": {"cidrs": ["10.0.0.0/33"]}}}}, "cidrs"),
    "credential-in-configmap": (
        {"config": {"extraEnv": {"DWF_DATABASE_URL": "x"}}},
        "DWF_DATABASE_URL",
    ),
    "bad-pull-policy": ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    "typo-top-level-key": ({"replicas": 3}, "replicas"),
    "http-nats-url": ({"externalNats": {"url": "http://nats:4222"}}, "/externalNats/url"),
    "no-nats-at-all": ({"externalNats": {"url": ""}}, "/externalNats/url"),
    "bad-log-level": ({"config": {"logLevel": "verbose"}}, "logLevel"),
    # The chart no longer carries an in-cluster NATS; the old switch must not pass silently.
    "in-cluster-nats-switch": ({"nats": {"enabled": True}}, "nats"),
    "bad-probe-source-cidr": (
        {"networkPolicy": {"probeSourceCidrs": ["10.0.0.0"]}},
        "probeSourceCidrs",
    ),
    "unknown-sandbox-setting": (
        {"sandboxes": {"erp": {"settings": {"rate_492": 0.1}}}},
        "rate_492",
    ),
    "token-in-configmap": (
        {"services": {"fulfillment": {"env": {"DWF_FULFILLMENT_ERP_TOKEN": "x"}}}},
        "DWF_FULFILLMENT_ERP_TOKEN",
    ),
    # Nothing reads a shared webhook URL: notifications' endpoints are its master data.
    "channel-webhook-url": (
        {"integrations": {"channelWebhookUrl": "https://hooks.example.com"}},
        "channelWebhookUrl",
    ),
    "egress-to-unknown-service": (
        {"networkPolicy": {"egress": {"wms": {"services": ["billing"]}}}},
        "services",
    ),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_REJECTS))
def test_schema_refuses_invalid_values(chart: helm.Chart, case: str) -> None:
    overrides, where = SCHEMA_REJECTS[case]
    values = with_overrides(ci_values("defaults-values"), overrides)
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.validate_schema(chart.merge_values(values))
    assert where in str(refused.value)
    with pytest.raises(helm.HelmValuesError):
        render_manifests(values)
    report = helm.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE)
    assert report["errors"]


TEMPLATE_REJECTS: dict[str, tuple[dict[str, Any], str]] = {
    "grace-shorter-than-drain": (
        {"terminationGracePeriodSeconds": 17, "config": {"shutdownGraceSeconds": 9.5}},
        "terminationGracePeriodSeconds (17) must exceed lifecycle.preStopSleepSeconds + "
        "config.drainSeconds + config.shutdownGraceSeconds (17.5)",
    ),
    "no-postgres-egress": (
        {"networkPolicy": {"egress": {"postgres": {"cidrs": [], "peers": []}}}},
        "networkPolicy.egress.postgres needs cidrs or peers",
    ),
    "no-nats-egress": (
        {"networkPolicy": {"egress": {"nats": {"cidrs": [], "peers": []}}}},
        "networkPolicy.egress.nats needs cidrs or peers",
    ),
    "min-above-max-replicas": (
        {"services": {"inventory": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}}},
        "services.inventory.autoscaling.minReplicas (5) exceeds maxReplicas (3)",
    ),
    "no-postgres-host": ({"externalPostgres": {"host": ""}}, "externalPostgres.host is required"),
    "integration-url-without-token": (
        {"integrations": {"carrierUrl": "https://carrier.example.com"}},
        "integrations.carrierUrl is set: give integrations.credentials.carrierToken or "
        "integrations.credentials.existingSecret",
    ),
}


@pytest.mark.parametrize("case", sorted(TEMPLATE_REJECTS))
def test_render_refuses_inconsistent_values(chart: helm.Chart, case: str) -> None:
    overrides, message = TEMPLATE_REJECTS[case]
    values = with_overrides(ci_values("defaults-values"), overrides)
    chart.validate_schema(chart.merge_values(values))  # schema-valid, yet inconsistent
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render_manifests(values)


# --------------------------------------------------------------------------- image


def test_dockerfile_matches_the_chart() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert stages and all(s.startswith("python:3.11-slim") for s in stages)
    assert re.search(r'^ENTRYPOINT \["dwf"\]$', dockerfile, re.MULTILINE)
    user = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)[-1]
    defaults = load_values(CHART_DIR / "values.yaml")
    # The chart's runAsUser/runAsGroup is the image's non-root user.
    assert user == "{runAsUser}:{runAsGroup}".format(**defaults["podSecurityContext"])
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", "deploy", "tests"} <= set(ignored)
    # The chart runs the sandboxes from this image: it installs what they import.
    assert re.search(r'pip install "\.\[sandboxes\]"', dockerfile)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(p.startswith("aiosmtpd==") for p in project["optional-dependencies"]["sandboxes"])
