"""deploy/kubernetes: every manifest validated offline against the Kubernetes schemas
(`kubernetes-validate`, strict: an unknown field is an error), on the oldest and newest
versions it knows, and checked against what it refers to (labels, ports, the Secret's
keys, paygate's commands and settings, the image's user). ServiceMonitor is a Prometheus
Operator resource the schemas do not cover: it is checked against the Services here."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from gateway import config

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
TEMPLATES = {"secret.template.yaml"}  # shown, not applied by the base
OPERATOR_KINDS = {"ServiceMonitor"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@cache
def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return loaded


@cache
def resources() -> list[dict[str, Any]]:
    return [d for name in kustomization()["resources"] for d in documents(BASE / name)]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources() if r["kind"] == kind}


def pod_specs() -> dict[str, dict[str, Any]]:
    specs = {n: d["spec"]["template"]["spec"] for n, d in of_kind("Deployment").items()}
    specs.update({n: j["spec"]["template"]["spec"] for n, j in of_kind("Job").items()})
    return specs


def secret_template() -> dict[str, Any]:
    [secret] = documents(BASE / "secret.template.yaml")
    return secret


def test_the_base_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"} - TEMPLATES
    assert listed == present
    kinds = {r["kind"] for r in resources()}
    assert kinds >= {
        "Deployment", "Job", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
        "ServiceMonitor", "ConfigMap", "ServiceAccount",
    }  # fmt: skip
    assert "Secret" not in kinds  # the template shows the keys; real values never live here


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    checked = 0
    for doc in [*resources(), secret_template()]:
        if doc["kind"] in OPERATOR_KINDS:
            with pytest.raises(SchemaNotFoundError):
                kubernetes_validate.validate(doc, version, strict=True)
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 10


def test_a_wrong_field_is_caught() -> None:
    """The control: the validator does refuse what a typo makes."""
    deployment = yaml.safe_load(yaml.safe_dump(of_kind("Deployment")["paygate-serve"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_pods_run_as_the_images_non_root_user_on_a_read_only_root() -> None:
    user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    for name, spec in pod_specs().items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == int(user.group(1)), name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: a writable /tmp on a read-only root"


def test_every_container_has_requests_and_a_memory_limit() -> None:
    for name, spec in pod_specs().items():
        for container in spec["containers"]:
            resources_ = container["resources"]
            assert {"cpu", "memory"} <= set(resources_["requests"]), name
            assert "memory" in resources_["limits"], name


def test_server_processes_match_the_cpu_limit() -> None:
    [serve] = of_kind("Deployment")["paygate-serve"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in serve["env"]}
    assert int(env["WEB_CONCURRENCY"]) == int(serve["resources"]["limits"]["cpu"])


def test_the_server_is_probed_on_its_health_endpoints() -> None:
    spec = of_kind("Deployment")["paygate-serve"]["spec"]["template"]["spec"]
    [serve] = spec["containers"]
    ports = {p["name"] for p in serve["ports"]}
    assert serve["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert serve["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert serve["startupProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert serve[probe]["httpGet"]["port"] in ports
    pause = int(serve["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert (
        spec["terminationGracePeriodSeconds"] > config.Settings().shutdown_timeout_seconds + pause
    )


def test_commands_are_paygate_commands() -> None:
    from workers.cli.main import build_parser
    from workers.registry import resolve

    for name, spec in pod_specs().items():
        for container in spec["containers"]:
            program, *argv = container["args"]
            assert program == "paygate", name
            args = build_parser().parse_args(argv)
            if args.command == "worker":
                assert resolve(args.names) == args.names
            assert container["image"] == kustomization()["images"][0]["name"], name


def test_environment_names_real_settings_and_the_secret_holds_the_secrets() -> None:
    known = {name: secret for name, _, secret in config.describe()}
    [configmap] = of_kind("ConfigMap").values()
    secret = secret_template()
    for key in configmap["data"]:
        assert key in known or key.startswith("OTEL_"), f"ConfigMap sets unknown {key}"
        assert not known.get(key), f"{key} is a secret: it belongs in the Secret"
    for key in secret["stringData"]:
        assert key in known, f"the Secret holds unknown {key}"
        assert "CHANGE-ME" in secret["stringData"][key], f"{key} must be a placeholder"
    for name, spec in pod_specs().items():
        for container in spec["containers"]:
            sources = container["envFrom"]
            assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in sources, name
            assert {"secretRef": {"name": secret["metadata"]["name"]}} in sources, name
            for entry in container.get("env", []):
                assert entry["name"] in known, f"{name} sets unknown {entry['name']}"


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_and_ports_line_up() -> None:
    deployments = of_kind("Deployment")
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    for name, d in deployments.items():
        assert matches(d["spec"]["selector"]["matchLabels"], pods[name])
    services = of_kind("Service")
    for name, service in services.items():
        chosen = [n for n, labels in pods.items() if matches(service["spec"]["selector"], labels)]
        assert len(chosen) == 1, f"service {name} selects {chosen}"
        [container] = deployments[chosen[0]]["spec"]["template"]["spec"]["containers"]
        names = {p["name"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"{name}: no container port {port['targetPort']}"
    for name, pdb in of_kind("PodDisruptionBudget").items():
        assert any(matches(pdb["spec"]["selector"]["matchLabels"], p) for p in pods.values()), name
    [hpa] = of_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert hpa["spec"]["minReplicas"] >= 2  # the PDB's minAvailable 1 leaves one to drain


def test_the_servicemonitor_scrapes_every_metrics_port() -> None:
    [monitor] = of_kind("ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = [
        s for s in of_kind("Service").values()
        if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]  # fmt: skip
    ports = {p["name"] for s in selected for p in s["spec"]["ports"]}
    endpoints = {e["port"] for e in monitor["spec"]["endpoints"]}
    assert endpoints == ports
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
