"""deploy/k8s: kustomize renders base and overlays; objects pass kubernetes-validate --strict;
cross-references (selectors, ports, probes, env, ConfigMaps, Secrets, PVCs, HPA, PDB) hold; the
security settings (auth, TLS, Redis password, health-only probe port, NetworkPolicies, metrics
off the public Services) are on in every build.

kubernetes-validate has no schema for the Prometheus Operator and cert-manager CRDs
(ServiceMonitor, PrometheusRule, Issuer, Certificate): those are checked structurally here and the
rules with promtool.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, validate

from tests.deploy.conftest import (
    DEPLOY,
    K8S,
    LIVENESS_SERVICE,
    THIRD_PARTY_ENV,
    exported_metric_names,
    run_redis_script,
)

# Oldest Kubernetes minor these manifests target (native gRPC probes GA in 1.27, preStop
# sleep in 1.30) and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")
BUILDS = ("base", "overlays/dev", "overlays/production")
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
}
SERVICES = ("selection", "teacher", "trainer", "experiment")

Build = Callable[[str], list[dict[str, Any]]]


def _by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def _container_env(
    container: dict[str, Any],
    configmaps: dict[str, dict[str, Any]],
    secrets: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """The container's environment: envFrom ConfigMaps/Secrets first, then env (which wins).
    Values that come from a Secret (``secretRef``, ``valueFrom.secretKeyRef``) are shown as
    ``<secret NAME/KEY>``; when ``secrets`` is given, the Secret must exist in the render."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in configmaps, f"envFrom references missing ConfigMap {name}"
            env.update(configmaps[name].get("data", {}))
        elif "secretRef" in source:
            name = source["secretRef"]["name"]
            if secrets is not None:
                assert name in secrets, f"envFrom references missing Secret {name}"
                env.update({k: f"<secret {name}/{k}>" for k in secrets[name].get("data", {})})
        else:
            raise AssertionError(f"unexpected envFrom source {source}")
    for item in container.get("env", []):
        ref = item.get("valueFrom", {})
        if "secretKeyRef" in ref:
            name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
            if secrets is not None:
                assert key in secrets.get(name, {}).get("data", {}), f"no Secret {name}/{key}"
            env[item["name"]] = f"<secret {name}/{key}>"
        elif "configMapKeyRef" in ref:
            name, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
            env[item["name"]] = configmaps[name]["data"][key]
        else:
            env[item["name"]] = item.get("value", "")
    return env


def _secret_file(pod_spec: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret name, key) behind a file path in the container. The Secret must be mounted as a
    whole folder, read-only: a ``subPath`` mount never sees a rotated Secret."""
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    for mount in container.get("volumeMounts", []):
        folder = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(folder):
            source = volumes[mount["name"]]
            assert "secret" in source, f"{path} is on volume {mount['name']}, not a Secret"
            assert "subPath" not in mount, f"{path}: a subPath mount never sees a rotated Secret"
            assert mount.get("readOnly") is True, f"{mount['name']} must be mounted read-only"
            assert source["secret"].get("defaultMode", 0o644) & 0o007 == 0, "not world-readable"
            key = path[len(folder) :]
            for item in source["secret"].get("items", []):
                if item["path"] == key:
                    key = item["key"]
            return source["secret"]["secretName"], key
    raise AssertionError(f"{path} is on no mounted volume")


def _logical(name: str, rendered: dict[str, Any]) -> str:
    """A generated object's name without kustomize's hash suffix (other names unchanged)."""
    return re.sub(r"-[a-z0-9]{10}$", "", name) if name in rendered else name


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if not _matches(selector.get("matchLabels", {}), labels):
        return False
    for expr in selector.get("matchExpressions", []):
        key, values = expr["key"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[expr["operator"]]
        if not ok:
            return False
    return True


def _admits(policy: dict[str, Any], port: int, source: Source) -> bool:
    """Whether one NetworkPolicy's ingress rules admit ``source`` to ``port``."""
    for rule in policy["spec"].get("ingress", []):
        if "ports" in rule and not any(p.get("port") == port for p in rule["ports"]):
            continue
        if "from" not in rule:
            return True
        for peer in rule["from"]:
            if "ipBlock" in peer:
                continue
            if "namespaceSelector" in peer:
                if not _selector_matches(peer["namespaceSelector"], source.namespace_labels):
                    continue
            elif not source.same_namespace:
                continue
            if "podSelector" in peer and not _selector_matches(peer["podSelector"], source.labels):
                continue
            return True
    return False


@dataclass(frozen=True)
class Source:
    """A pod that opens a connection: its labels and where it runs."""

    labels: dict[str, str]
    same_namespace: bool = True
    namespace_labels: dict[str, str] = field(default_factory=dict)


CLIENT = {"activekd.io/client": "true"}
OUTSIDERS = {
    "client": Source(CLIENT),
    "client-in-client-namespace": Source(CLIENT, False, CLIENT),
    "client-in-other-namespace": Source(CLIENT, False, {}),
    "stranger": Source({"app": "something-else"}),
    "prometheus": Source({"app.kubernetes.io/name": "prometheus"}, False,
                         {"activekd.io/monitoring": "true"}),
}  # fmt: skip


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
    health_port = int(spec["health_port"])
    deployment = _by_kind(objs, "Deployment")[f"activekd-{name}"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert " ".join(container["command"]) == spec["entry"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": grpc_port, "health": health_port, "metrics": metrics_port}

    # native gRPC probes on the plaintext health-only port (the main port is TLS): startup and
    # readiness ask for the service (NOT_SERVING while Redis is gone), liveness for the
    # liveness service (so a Redis outage restarts no pod)
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["grpc"] == {"port": health_port, "service": spec["grpc_service"]}
    assert container["livenessProbe"]["grpc"] == {"port": health_port, "service": LIVENESS_SERVICE}
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
    assert env["ACTIVEKD_HEALTH_PORT"] == str(health_port)
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
    # the public Service carries gRPC only; metrics go through an internal, headless Service
    services = _by_kind(objs, "Service")
    service = services[f"activekd-{name}"]
    assert _matches(service["spec"]["selector"], pod["metadata"]["labels"])
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "grpc": (grpc_port, "grpc"),
    }
    internal = services[f"activekd-{name}-metrics"]
    assert internal["spec"]["clusterIP"] == "None"
    assert internal["metadata"]["labels"]["activekd.io/metrics"] == "true"
    assert _matches(internal["spec"]["selector"], pod["metadata"]["labels"])
    assert {p["name"]: (p["port"], p["targetPort"]) for p in internal["spec"]["ports"]} == {
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
        url = urllib.parse.urlsplit(env["ACTIVEKD_REDIS_URL"])
        assert url.scheme in ("redis", "rediss") and not url.password, "password from a Secret"
        assert url.port in [p["port"] for p in services[str(url.hostname)]["spec"]["ports"]]
        for other in ("SELECTION", "TEACHER", "TRAINER"):
            target = env[f"ACTIVEKD_{other}_TARGET"].removeprefix("dns:///")
            host, port = target.split(":")
            assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]], target
        redis_pod = deployments["activekd-redis"]["spec"]["template"]["spec"]
        assert redis_pod["securityContext"]["runAsNonRoot"] is True


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
    # the internal metrics Services, never the public ones; job = app.kubernetes.io/name, the
    # job names of compose and of the dashboard's queries
    assert set(selected) == {f"activekd-{n}-metrics" for n in SERVICES}
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    jobs = {s["metadata"]["labels"][monitor["spec"]["jobLabel"]] for s in selected.values()}
    assert jobs == {f"activekd-{n}" for n in SERVICES}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        scraped = [
            s
            for s in selected.values()
            if endpoint["port"] in [p["name"] for p in s["spec"]["ports"]]
        ]
        assert {s["metadata"]["name"] for s in scraped} == set(selected)

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


# --- security: auth, TLS, Redis password, NetworkPolicies (docs/security.md) ---------------------

#: env var -> the Secret (and key) its file must come from; {name} = the service
SECRET_FILES = {
    "ACTIVEKD_AUTH_TOKENS_FILE": ("activekd-tokens", "tokens"),
    "ACTIVEKD_TLS_CERT_FILE": ("activekd-{name}-tls", "tls.crt"),
    "ACTIVEKD_TLS_KEY_FILE": ("activekd-{name}-tls", "tls.key"),
    "ACTIVEKD_REDIS_PASSWORD_FILE": ("activekd-redis", "password"),
}
EXPERIMENT_SECRET_FILES = {
    "ACTIVEKD_CLIENT_TOKEN_FILE": ("activekd-experiment-token", "token"),
    "ACTIVEKD_CLIENT_CA_FILE": ("activekd-experiment-tls", "ca.crt"),
}
#: Secrets the production overlay does not create: the operator does (docs/security.md)
EXTERNAL_SECRETS = ("activekd-tokens", "activekd-experiment-token", "activekd-redis")


def _logical_secrets(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rendered = _by_kind(objs, "Secret")
    return {_logical(name, rendered): secret for name, secret in rendered.items()}


def _secret_data(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def _tokens(text: str) -> dict[str, tuple[str, str]]:
    """token -> (role, name) of a tokens file (``role:token[:name]`` lines, ``#`` comments)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            role, token, *name = line.split(":")
            out[token] = (role, name[0] if name else "")
    return out


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("name", SERVICES)
def test_auth_tls_and_redis_password_come_from_secrets(
    kustomize_build: Build, build: str, name: str
) -> None:
    objs = kustomize_build(build)
    secrets = _by_kind(objs, "Secret")
    pod = _by_kind(objs, "Deployment")[f"activekd-{name}"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _container_env(container, _by_kind(objs, "ConfigMap"))
    assert env["ACTIVEKD_AUTH"] == "required", "auth is on in every build"
    assert "ACTIVEKD_AUTH_TOKENS" not in env, "tokens come from the Secret file, not env"
    wanted = dict(SECRET_FILES)
    if name == "experiment":
        wanted |= EXPERIMENT_SECRET_FILES
    for var, (secret, key) in wanted.items():
        mounted, mounted_key = _secret_file(pod, container, env[var])
        assert (_logical(mounted, secrets), mounted_key) == (secret.format(name=name), key), var
        if build == "overlays/dev":  # the overlay's generated Secret exists and holds the key
            assert key in secrets[mounted]["data"], f"{mounted} has no {key}"


@pytest.mark.parametrize("build", BUILDS)
def test_heavy_methods_have_concurrency_caps(kustomize_build: Build, build: str) -> None:
    from activekd.server.limits import parse_per_method

    objs = kustomize_build(build)
    for name in SERVICES:
        pod = _by_kind(objs, "Deployment")[f"activekd-{name}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = _container_env(container, _by_kind(objs, "ConfigMap"))
        caps = parse_per_method(env["ACTIVEKD_MAX_CONCURRENT_PER_METHOD"])
        heavy = {"ScorePool", "TrainRound", "PredictPool", "SelectBatch", "UploadPool", "Predict"}
        assert heavy <= set(caps) and all(0 < v <= 32 for v in caps.values()), (name, caps)


def test_base_commits_no_secret_values(kustomize_build: Build) -> None:
    assert not _by_kind(kustomize_build("base"), "Secret"), "base names Secrets, never holds them"
    assert not _by_kind(kustomize_build("overlays/production"), "Secret")


def test_dev_secrets_are_consistent(kustomize_build: Build) -> None:
    """The dev overlay's (public, dev-only) values fit together: the experiment's token is in the
    tokens file with role writer (the least it needs), every role has a token, and the Redis
    password has no trailing newline."""
    from activekd.server.auth import parse_tokens

    secrets = _logical_secrets(kustomize_build("overlays/dev"))
    text = _secret_data(secrets["activekd-tokens"], "tokens")
    assert len(parse_tokens(text, "tokens")) == 4, "the services accept the file"
    tokens = _tokens(text)
    experiment = _secret_data(secrets["activekd-experiment-token"], "token")
    assert tokens[experiment.strip()][0] == "writer"
    assert {role for role, _ in tokens.values()} == {"reader", "writer", "admin"}
    assert all(len(t) >= 16 and "dev-only" in t for t in tokens), "dev tokens say what they are"
    password = _secret_data(secrets["activekd-redis"], "password")
    assert password == password.strip() and len(password) >= 16


def test_dev_certificate_covers_every_target(kustomize_build: Build) -> None:
    """The experiment service dials the others by Service name over TLS: the dev certificate
    (one for all four) names each of them and is signed by the CA it ships."""
    x509 = pytest.importorskip("cryptography.x509")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    objs = kustomize_build("overlays/dev")
    secrets = _logical_secrets(objs)
    (container,) = _by_kind(objs, "Deployment")["activekd-experiment"]["spec"]["template"]["spec"][
        "containers"
    ]
    env = _container_env(container, _by_kind(objs, "ConfigMap"))
    for other in ("selection", "teacher", "trainer", "experiment"):
        secret = secrets[f"activekd-{other}-tls"]
        cert = x509.load_pem_x509_certificate(_secret_data(secret, "tls.crt").encode())
        ca = x509.load_pem_x509_certificate(_secret_data(secret, "ca.crt").encode())
        cert.verify_directly_issued_by(ca)
        key = serialization.load_pem_private_key(_secret_data(secret, "tls.key").encode(), None)
        assert key.public_key() == cert.public_key(), "tls.key does not match tls.crt"
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = set(names.get_values_for_type(x509.DNSName))
        if other != "experiment":
            host = env[f"ACTIVEKD_{other.upper()}_TARGET"].removeprefix("dns:///").split(":")[0]
            assert host in dns, f"{other}'s certificate does not name {host}"
        assert {f"activekd-{other}", "localhost"} <= dns


def test_production_certificates_from_cert_manager(kustomize_build: Build, repo: Path) -> None:
    """production: each activekd-<service>-tls Secret is a cert-manager Certificate's, naming
    the Service (and the headless one for the teacher); the Secrets it does not create are the
    ones docs/security.md tells the operator to create."""
    objs = kustomize_build("overlays/production")
    certs = {c["spec"]["secretName"]: c for c in _by_kind(objs, "Certificate").values()}
    issuers = _by_kind(objs, "Issuer")
    namespace = next(iter(_by_kind(objs, "Namespace")))
    for name in SERVICES:
        cert = certs[f"activekd-{name}-tls"]
        assert cert["spec"]["issuerRef"]["name"] in issuers
        assert {"server auth", "client auth"} <= set(cert["spec"]["usages"])
        hosts = [f"activekd-{name}"] + (["activekd-teacher-headless"] if name == "teacher" else [])
        for host in hosts:
            assert {host, f"{host}.{namespace}.svc"} <= set(cert["spec"]["dnsNames"]), host
    docs = (repo / "docs" / "security.md").read_text()
    for secret in EXTERNAL_SECRETS:
        assert secret in docs, f"docs/security.md does not say how to create {secret}"


@pytest.mark.parametrize("build", BUILDS)
def test_redis_requires_the_password(kustomize_build: Build, build: str) -> None:
    objs = kustomize_build(build)
    pod = _by_kind(objs, "Deployment")["activekd-redis"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:2] == ["sh", "-c"]
    script = container["args"][2]
    assert "--appendonly yes" in script and "--appendfsync everysec" in script
    (path,) = re.findall(r"requirepass \$\(cat (\S+)\)", script)
    secret, key = _secret_file(pod, container, path)
    assert (_logical(secret, _by_kind(objs, "Secret")), key) == ("activekd-redis", "password")
    assert "--requirepass" not in script, "the password must not be in the process list"
    probe = " ".join(container["readinessProbe"]["exec"]["command"])
    assert f'REDISCLI_AUTH="$(cat {path})"' in probe and "PONG" in probe


def test_redis_script_really_sets_the_password(kustomize_build: Build, tmp_path: Path) -> None:
    """Run base's Redis start script and readiness probe with the local redis-server."""
    pod = _by_kind(kustomize_build("base"), "Deployment")["activekd-redis"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    script = container["args"][2]
    (path,) = re.findall(r"requirepass \$\(cat (\S+)\)", script)
    password = "a-test-password-0123456789"
    with run_redis_script(script, {path: password}, password, tmp_path) as client:
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        sock = client.connection_pool.connection_kwargs["path"]
        authed = redis.Redis(unix_socket_path=sock, password=password)
        assert authed.ping() and authed.config_get("appendonly") == {"appendonly": "yes"}
        probe = (
            container["readinessProbe"]["exec"]["command"][2]
            .replace(path, str(tmp_path / Path(path).name))
            .replace("redis-cli ", f"redis-cli -s {sock} ")
        )
        assert subprocess.run(["sh", "-c", probe], timeout=10).returncode == 0
        (tmp_path / Path(path).name).write_text("wrong-password-0123456789")
        assert subprocess.run(["sh", "-c", probe], timeout=10).returncode != 0


@pytest.mark.parametrize("build", BUILDS)
def test_network_policies(
    kustomize_build: Build, build: str, architecture_services: dict[str, dict[str, str]]
) -> None:
    """Only the activekd services reach Redis; only declared clients (and, for the three it
    drives, the experiment service) reach a gRPC port; only a monitoring namespace reaches the
    metrics ports; no pod reaches a health port (the kubelet probes from the node, which
    NetworkPolicy always admits); every activekd pod is selected, so the rest is refused."""
    objs = kustomize_build(build)
    policies = list(_by_kind(objs, "NetworkPolicy").values())
    pods = {
        n.removeprefix("activekd-"): d["spec"]["template"]["metadata"]["labels"]
        for n, d in _by_kind(objs, "Deployment").items()
    }
    sources = {**OUTSIDERS, **{n: Source(labels) for n, labels in pods.items()}}

    def admitted(target: str, port: int) -> set[str]:
        selecting = [
            p for p in policies if _selector_matches(p["spec"]["podSelector"], pods[target])
        ]
        assert selecting, f"no NetworkPolicy selects activekd-{target}: everything is admitted"
        assert all("Ingress" in p["spec"]["policyTypes"] for p in selecting)
        return {s for s, src in sources.items() if any(_admits(p, port, src) for p in selecting)}

    assert admitted("redis", 6379) == set(SERVICES)
    clients = {"client", "client-in-client-namespace"}
    for name in SERVICES:
        spec = architecture_services[name]
        drivers = set() if name == "experiment" else {"experiment"}
        assert admitted(name, int(spec["grpc_port"])) == clients | drivers, name
        assert admitted(name, int(spec["metrics_port"])) == {"prometheus"}, name
        assert admitted(name, int(spec["health_port"])) == set(), name
    for policy in policies:  # every rule names ports the selected pods really listen on
        for deployment in _by_kind(objs, "Deployment").values():
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            if _selector_matches(policy["spec"]["podSelector"], labels):
                (container,) = deployment["spec"]["template"]["spec"]["containers"]
                listening = {p["containerPort"] for p in container["ports"]}
                for rule in policy["spec"]["ingress"]:
                    assert {p["port"] for p in rule["ports"]} <= listening, policy["metadata"]


def test_network_policy_evaluator_is_not_vacuous() -> None:
    """The evaluator above refuses what it should (guards the NetworkPolicy test)."""
    policy = {"spec": {"ingress": [{"from": [{"podSelector": {"matchLabels": CLIENT}}],
                                    "ports": [{"protocol": "TCP", "port": 1}]}]}}  # fmt: skip
    assert _admits(policy, 1, OUTSIDERS["client"])
    assert not _admits(policy, 2, OUTSIDERS["client"])
    assert not _admits(policy, 1, OUTSIDERS["stranger"])
    assert not _admits(policy, 1, OUTSIDERS["client-in-client-namespace"])
    expr = {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]}
    assert _selector_matches(expr, {"a": "x"}) and not _selector_matches(expr, {"a": "y"})


@pytest.mark.parametrize("name", SERVICES)
def test_production_talks_to_redis_over_tls_only(kustomize_build: Build, name: str) -> None:
    """components/redis-tls in production: Redis has no plaintext port, each service connects
    with rediss:// and checks Redis' certificate against the CA of the Secret cert-manager
    issues for the Redis Service name; base and dev stay plaintext (password on)."""
    objs = kustomize_build("overlays/production")
    configmaps = _by_kind(objs, "ConfigMap")
    pod = _by_kind(objs, "Deployment")[f"activekd-{name}"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _container_env(container, configmaps)
    assert env["ACTIVEKD_REDIS_URL"] == "rediss://activekd-redis:6379/0"
    assert _secret_file(pod, container, env["ACTIVEKD_REDIS_CA_FILE"]) == (
        "activekd-redis-tls",
        "ca.crt",
    )
    mounted = [m["name"] for m in container["volumeMounts"]]
    assert mounted.count("redis-tls") == 1
    redis_pod = _by_kind(objs, "Deployment")["activekd-redis"]["spec"]["template"]["spec"]
    (redis,) = redis_pod["containers"]
    script = " ".join(redis["args"])
    for flag in ("--port 0", "--tls-port 6379", "--appendonly yes", "requirepass"):
        assert flag in script, flag
    files = dict(re.findall(r"--(tls-(?:cert|key|ca-cert)-file) (\S+)", script))
    assert set(files) == {"tls-cert-file", "tls-key-file", "tls-ca-cert-file"}
    keys = {_secret_file(redis_pod, redis, path) for path in files.values()}
    assert keys == {("activekd-redis-tls", k) for k in ("tls.crt", "tls.key", "ca.crt")}
    assert "--tls" in " ".join(redis["readinessProbe"]["exec"]["command"])
    cert = _by_kind(objs, "Certificate")["activekd-redis"]["spec"]
    assert cert["secretName"] == "activekd-redis-tls"
    service = urllib.parse.urlsplit(env["ACTIVEKD_REDIS_URL"]).hostname
    assert service in _by_kind(objs, "Service") and service in cert["dnsNames"]
    for build in ("base", "overlays/dev"):
        plain = _by_kind(kustomize_build(build), "ConfigMap")
        assert any(
            c.get("data", {}).get("ACTIVEKD_REDIS_URL", "").startswith("redis://")
            for c in plain.values()
        ), build
