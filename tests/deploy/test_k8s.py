"""deploy/k8s: kustomize renders base and overlays; objects pass kubernetes-validate --strict;
cross-references (selectors, ports, probes, env, ConfigMaps, PVCs, HPA, PDB) hold.

kubernetes-validate has no schema for the Prometheus Operator CRDs (ServiceMonitor,
PrometheusRule): those are checked structurally here and their rules with promtool.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, validate

from tests.deploy.conftest import DEPLOY, K8S, THIRD_PARTY_ENV, exported_metric_names

# Oldest Kubernetes minor these manifests target (native gRPC probes GA in 1.27, preStop
# sleep in 1.30) and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")
BUILDS = ("base", "overlays/dev", "overlays/production")
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
SERVICES = ("selection", "teacher", "trainer", "experiment")

Build = Callable[[str], list[dict[str, Any]]]


def _by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def _container_env(
    container: dict[str, Any], configmaps: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """The container's environment: envFrom ConfigMaps first, then env (which wins)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom references missing ConfigMap {name}"
        env.update(configmaps[name].get("data", {}))
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "")
    return env


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_renders_and_validates_strictly(kustomize_build: Build, build: str, version: str) -> None:
    objs = kustomize_build(build)
    assert objs
    errors, crds = [], []
    for obj in objs:
        try:
            validate(obj, version, strict=True)
        except SchemaNotFoundError:
            crds.append((obj["apiVersion"], obj["kind"]))
        except ValidationError as exc:
            errors.append(
                f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )
    assert not errors, "\n".join(errors)
    assert set(crds) <= CRD_KINDS, f"unvalidated kinds: {set(crds) - CRD_KINDS}"


def test_strict_validation_catches_errors(kustomize_build: Build) -> None:
    deployment = json.loads(
        json.dumps(_by_kind(kustomize_build("base"), "Deployment")["activekd-teacher"])
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["grpc"]["port"] = "grpc"  # gRPC probes take numbers only
    with pytest.raises(ValidationError):
        validate(deployment, K8S_VERSIONS[-1], strict=True)
    container["readinessProbe"]["grpc"]["port"] = 50052
    container["securityContext"]["readOnlyRootFs"] = True  # misspelt field
    with pytest.raises(ValidationError):
        validate(deployment, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("name", SERVICES)
def test_service_deployments(
    kustomize_build: Build,
    build: str,
    name: str,
    architecture_services: dict[str, dict[str, str]],
) -> None:
    objs = kustomize_build(build)
    spec = architecture_services[name]
    grpc_port, metrics_port = int(spec["grpc_port"]), int(spec["metrics_port"])
    deployment = _by_kind(objs, "Deployment")[f"activekd-{name}"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert " ".join(container["command"]) == spec["entry"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": grpc_port, "metrics": metrics_port}

    # native gRPC probes on the numeric port and the full service name
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": grpc_port, "service": spec["grpc_service"]}
    startup = container["startupProbe"]
    startup_budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert startup_budget >= (600 if name == "teacher" else 120), "model loading takes minutes"

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics_port)

    # security: restricted Pod Security Standard
    pod_sc = pod["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "read-only root needs a writable /tmp"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]

    # env: ports as documented; grace period longer than the app's drain
    env = _container_env(container, _by_kind(objs, "ConfigMap"))
    assert env["ACTIVEKD_GRPC_PORT"] == str(grpc_port)
    assert env["ACTIVEKD_METRICS_PORT"] == str(metrics_port)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert (
        pod["spec"]["terminationGracePeriodSeconds"]
        > float(env["ACTIVEKD_GRACE_SECONDS"]) + pre_stop
    )
    if "ACTIVEKD_STORE_URI" in env and "store" in volumes:
        assert mounts[env["ACTIVEKD_STORE_URI"]] == "store"

    # identity, claims and Service wiring
    accounts = _by_kind(objs, "ServiceAccount")
    assert pod["spec"]["serviceAccountName"] in accounts
    assert pod["spec"]["automountServiceAccountToken"] is False
    claims = _by_kind(objs, "PersistentVolumeClaim")
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims
    service = _by_kind(objs, "Service")[f"activekd-{name}"]
    assert _matches(service["spec"]["selector"], pod["metadata"]["labels"])
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "grpc": (grpc_port, "grpc"),
        "metrics": (metrics_port, "metrics"),
    }


@pytest.mark.parametrize("name", SERVICES)
def test_env_names_are_read_by_the_code(
    kustomize_build: Build,
    name: str,
    architecture_services: dict[str, dict[str, str]],
    service_env_names: Callable[[str], set[str]],
) -> None:
    known = service_env_names(architecture_services[name]["entry"].split()[-1])
    for build in BUILDS:
        objs = kustomize_build(build)
        deployment = _by_kind(objs, "Deployment")[f"activekd-{name}"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = _container_env(container, _by_kind(objs, "ConfigMap"))
        unknown = {k for k in env if k.startswith("ACTIVEKD_")} - known
        assert not unknown, f"{build}: {name} sets {sorted(unknown)}, which the code never reads"
        assert {k for k in env if not k.startswith("ACTIVEKD_")} <= THIRD_PARTY_ENV


def test_redis_and_experiment_targets_resolve(kustomize_build: Build) -> None:
    for build in BUILDS:
        objs = kustomize_build(build)
        configmaps, services = _by_kind(objs, "ConfigMap"), _by_kind(objs, "Service")
        deployments = _by_kind(objs, "Deployment")
        (container,) = deployments["activekd-experiment"]["spec"]["template"]["spec"]["containers"]
        env = _container_env(container, configmaps)
        host_port = env["ACTIVEKD_REDIS_URL"].removeprefix("redis://").split("/")[0]
        host, port = host_port.split(":")
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]
        for other in ("SELECTION", "TEACHER", "TRAINER"):
            target = env[f"ACTIVEKD_{other}_TARGET"].removeprefix("dns:///")
            host, port = target.split(":")
            assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]], target
        redis = deployments["activekd-redis"]["spec"]["template"]["spec"]
        args = redis["containers"][0]["args"]
        assert args[args.index("--appendonly") + 1] == "yes"
        assert redis["securityContext"]["runAsNonRoot"] is True


def test_teacher_headless_service_for_client_side_balancing(kustomize_build: Build) -> None:
    services = _by_kind(kustomize_build("base"), "Service")
    headless = services["activekd-teacher-headless"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == services["activekd-teacher"]["spec"]["selector"]
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"], (
        "scraped once, via the main Service"
    )


def test_persistent_redis_component(kustomize_build: Build) -> None:
    base = _by_kind(kustomize_build("base"), "Deployment")["activekd-redis"]
    prod_objs = kustomize_build("overlays/production")
    prod = _by_kind(prod_objs, "Deployment")["activekd-redis"]
    base_data = next(v for v in base["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
    prod_data = next(v for v in prod["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
    assert "emptyDir" in base_data
    assert set(prod_data) == {"name", "persistentVolumeClaim"}, prod_data
    assert prod_data["persistentVolumeClaim"]["claimName"] in _by_kind(
        prod_objs, "PersistentVolumeClaim"
    )


def test_gpu_component_only_in_production(kustomize_build: Build) -> None:
    for build, gpu in (("overlays/dev", False), ("overlays/production", True)):
        objs = kustomize_build(build)
        configmaps = _by_kind(objs, "ConfigMap")
        for name, deployment in _by_kind(objs, "Deployment").items():
            pod = deployment["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            limits = container["resources"].get("limits", {})
            wants_gpu = gpu and name in ("activekd-teacher", "activekd-trainer")
            assert (limits.get("nvidia.com/gpu", 0) >= 1) is wants_gpu, name
            if wants_gpu:
                assert container["image"].endswith("cuda"), container["image"]
                assert _container_env(container, configmaps)["ACTIVEKD_DEVICE"] == "cuda"
                assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
            elif name != "activekd-redis":
                assert container["image"].endswith("cpu"), container["image"]
    trainer = _by_kind(kustomize_build("overlays/production"), "Deployment")["activekd-trainer"]
    assert trainer["spec"]["strategy"] == {"type": "Recreate"}, "no surge onto a second GPU"


@pytest.mark.parametrize("build", BUILDS)
def test_hpa_and_pdbs(kustomize_build: Build, build: str) -> None:
    objs = kustomize_build(build)
    deployments = _by_kind(objs, "Deployment")
    (hpa,) = _by_kind(objs, "HorizontalPodAutoscaler").values()
    target = hpa["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] == "activekd-teacher"
    assert "replicas" not in deployments["activekd-teacher"]["spec"], "the HPA owns replicas"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    kinds = {m["type"] for m in hpa["spec"]["metrics"]}
    assert "Resource" in kinds
    for pdb in _by_kind(objs, "PodDisruptionBudget").values():
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [
            d for d in deployments.values()
            if _matches(selector, d["spec"]["template"]["metadata"]["labels"])
        ]  # fmt: skip
        assert len(matched) == 1, pdb["metadata"]["name"]
        replicas = matched[0]["spec"].get("replicas", hpa["spec"]["minReplicas"])
        if "minAvailable" in pdb["spec"]:
            assert pdb["spec"]["minAvailable"] < replicas, "this budget would block every drain"


def test_monitoring_component(kustomize_build: Build, promtool: str, tmp_path: Path) -> None:
    objs = kustomize_build("overlays/production")
    services = _by_kind(objs, "Service")
    (monitor,) = _by_kind(objs, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = {
        n: s for n, s in services.items()
        if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
    }  # fmt: skip
    for name in SERVICES:
        assert f"activekd-{name}" in selected, f"ServiceMonitor misses activekd-{name}"
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        scraped = [
            s
            for s in selected.values()
            if endpoint["port"] in [p["name"] for p in s["spec"]["ports"]]
        ]
        assert {s["metadata"]["name"] for s in scraped} == {f"activekd-{n}" for n in SERVICES}

    (rule,) = _by_kind(objs, "PrometheusRule").values()
    canonical = yaml.safe_load((DEPLOY / "prometheus/rules/activekd.rules.yml").read_text())
    assert rule["spec"] == canonical, "prometheusrule.yaml drifted from the rules file"
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    dashboard = _by_kind(objs, "ConfigMap")["activekd-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = dashboard["data"].values()
    canonical_dashboard = (DEPLOY / "grafana/dashboards/activekd.json").read_text()
    assert content == canonical_dashboard, (
        "copy deploy/grafana/dashboards/activekd.json to "
        "deploy/k8s/components/monitoring/grafana-dashboard-activekd.json"
    )

    # the custom-metric HPA and the prometheus-adapter rule that serves its metric agree
    (hpa,) = _by_kind(objs, "HorizontalPodAutoscaler").values()
    (pods_metric,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    adapter = yaml.safe_load(
        (K8S / "components/monitoring/prometheus-adapter-values.yaml").read_text()
    )
    (adapter_rule,) = adapter["rules"]["custom"]
    assert adapter_rule["name"]["as"] == pods_metric["metric"]["name"]
    exported = exported_metric_names()
    series = adapter_rule["seriesQuery"].split("{")[0]
    assert series in exported
    for word in adapter_rule["metricsQuery"].replace("(", " ").replace("{", " ").split():
        if word.startswith("activekd_"):
            assert word in exported, word


def test_namespaces_enforce_restricted_pod_security(kustomize_build: Build) -> None:
    for build in ("overlays/dev", "overlays/production"):
        objs = kustomize_build(build)
        (namespace,) = _by_kind(objs, "Namespace").values()
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for obj in objs:
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") == namespace["metadata"]["name"], obj[
                    "metadata"
                ]["name"]


def test_kubernetes_prometheus_config(
    kustomize_build: Build, promtool: str, tmp_path: Path
) -> None:
    """prometheus.k8s.yml: Debian's promtool has no kubernetes_sd, so the discovery block is
    swapped for a static target before `promtool check config`; the relabelling still runs
    through the real parser, and the annotations it keys on are the ones the pods carry."""
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.k8s.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keys = {tuple(r.get("source_labels", [])) for r in job["relabel_configs"]}
    assert ("__meta_kubernetes_pod_annotation_prometheus_io_scrape",) in keys
    assert ("__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port") in keys
    for deployment in _by_kind(kustomize_build("base"), "Deployment").values():
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if deployment["metadata"]["name"] != "activekd-redis":
            assert {"prometheus.io/scrape", "prometheus.io/port"} <= set(annotations)
    del job["kubernetes_sd_configs"]
    job["static_configs"] = [{"targets": ["127.0.0.1:9101"]}]
    config["rule_files"] = [str(DEPLOY / "prometheus/rules/*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 12 rules found" in proc.stdout
