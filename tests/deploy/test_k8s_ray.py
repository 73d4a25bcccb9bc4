"""deploy/k8s/components/ray (issue #15): the opt-in KubeRay RayCluster, its NetworkPolicies and
the example RayJob render on top of base; the Kubernetes objects pass kubernetes-validate --strict
and the KubeRay CRDs (no schema available offline) are checked structurally: token auth in every
Ray container, the Ray version of constraints.txt, restricted pod security, the pool store
mounted read-only where the services have it, who may reach which Ray port, and an example job
entrypoint that calls a function the package has with the arguments it passes.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, validate

from tests.deploy.conftest import K8S
from tests.deploy.test_k8s import (
    K8S_VERSIONS,
    OUTSIDERS,
    Source,
    _admits,
    _by_kind,
    _selector_matches,
)

RAY = K8S / "components/ray"
TOKEN_SECRET = ("activekd-ray-token", "auth_token")
STORE_PATH = "/var/lib/activekd/store"


def _build(kubectl: str, tmp: Path, components: list[str]) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay holding base plus ``components`` (paths under
    deploy/k8s), written next to a copy of the tree so every path stays relative."""
    tree = tmp / "k8s"
    subprocess.run(["cp", "-r", str(K8S), str(tree)], check=True)
    overlay = tree / "overlays/ray-test"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../../base"],
                "components": [f"../../{c}" for c in components],
            }
        )
    )
    proc = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"kubectl kustomize failed:\n{proc.stderr}"
    return [o for o in yaml.safe_load_all(proc.stdout) if o]


@pytest.fixture(scope="module")
def ray_objs(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _build(
        kubectl,
        tmp_path_factory.mktemp("ray-k8s"),
        ["components/ray", "components/ray/example-job"],
    )


def _ray_pod_specs(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = cluster["spec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    for group in spec["workerGroupSpecs"]:
        pods[f"worker/{group['groupName']}"] = group["template"]["spec"]
    return pods


def _ray_pin() -> str:
    for line in (K8S.parents[1] / "constraints.txt").read_text().splitlines():
        if line.lower().startswith("ray=="):
            return line.partition("==")[2].strip()
    raise AssertionError("constraints.txt pins no ray version")


def _token_env(env: list[dict[str, Any]], where: str) -> None:
    by_name = {e["name"]: e for e in env}
    assert by_name.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{where}: token auth off"
    token = by_name.get("RAY_AUTH_TOKEN", {})
    assert "value" not in token, f"{where}: the Ray token is a literal, not from a Secret"
    ref = token.get("valueFrom", {}).get("secretKeyRef", {})
    assert (ref.get("name"), ref.get("key")) == TOKEN_SECRET, f"{where}: token not from Secret"


def test_kubernetes_objects_validate_strictly(ray_objs: list[dict[str, Any]]) -> None:
    crds = [o for o in ray_objs if o["apiVersion"].startswith("ray.io/")]
    assert sorted(o["kind"] for o in crds) == ["RayCluster", "RayJob"]
    policies = _by_kind(ray_objs, "NetworkPolicy")
    assert {"activekd-ray-head", "activekd-ray-worker"} <= set(policies)
    for version in K8S_VERSIONS:
        for obj in ray_objs:
            if obj in crds:
                continue
            try:
                validate(obj, version, strict=True)
            except SchemaNotFoundError:
                # the Prometheus/cert-manager CRDs are not in these builds: base and ray only
                pytest.fail(f"no schema for {obj['apiVersion']} {obj['kind']}")
    # the component adds no Secret: the token Secret is the operator's to create
    assert TOKEN_SECRET[0] not in _by_kind(ray_objs, "Secret")


def test_ray_cluster_token_auth_version_and_security(ray_objs: list[dict[str, Any]]) -> None:
    cluster = _by_kind(ray_objs, "RayCluster")["activekd-ray"]
    spec = cluster["spec"]
    assert spec["rayVersion"] == _ray_pin(), "rayVersion must match constraints.txt's ray pin"
    if spec.get("enableInTreeAutoscaling"):
        _token_env(spec["autoscalerOptions"].get("env", []), "autoscaler")
    pvcs = _by_kind(ray_objs, "PersistentVolumeClaim")
    configmaps = _by_kind(ray_objs, "ConfigMap")
    store_uris = {
        v
        for cm in configmaps.values()
        for k, v in cm.get("data", {}).items()
        if k == "ACTIVEKD_STORE_URI"
    }
    assert store_uris == {STORE_PATH}, store_uris
    for where, pod in _ray_pod_specs(cluster).items():
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault"
        if where != "head":  # the head's autoscaler needs the API token; workers none
            assert pod.get("automountServiceAccountToken") is False, where
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            name = f"{where}/{c['name']}"
            _token_env(c.get("env", []), name)
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert "memory" in c["resources"]["limits"], f"{name}: no memory limit"
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert "/tmp" in mounts, f"{name}: Ray's session dir needs a writable /tmp"
            store = mounts.get(STORE_PATH)
            assert store and store.get("readOnly") is True, f"{name}: store not read-only"
            claim = volumes[store["name"]]["persistentVolumeClaim"]["claimName"]
            assert claim in pvcs, f"{name}: PVC {claim} is not in the build"
            shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
            assert shm.get("medium") == "Memory", f"{name}: the object store is not in memory"
    images = {
        where: c["image"]
        for where, pod in _ray_pod_specs(cluster).items()
        for c in pod["containers"]
    }
    assert images["head"] == "activekd:cpu"
    assert all(img == "activekd-cuda:cuda" for w, img in images.items() if w != "head")
    gpu_groups = [g for g in spec["workerGroupSpecs"] if "num-gpus" in g["rayStartParams"]]
    for g in gpu_groups:
        (c,) = g["template"]["spec"]["containers"]
        assert str(c["resources"]["limits"]["nvidia.com/gpu"]) == g["rayStartParams"]["num-gpus"]
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


def _writable_at(pod: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """The volume a ``path`` lies on in ``container`` if it is writable there, else ''."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    if not mounts:
        return ""
    mount = max(mounts, key=lambda m: len(m["mountPath"]))  # the innermost mount wins
    volume = volumes[mount["name"]]
    if mount.get("readOnly") or volume.get("persistentVolumeClaim", {}).get("readOnly"):
        return ""
    return str(mount["name"]) if "emptyDir" in volume or "persistentVolumeClaim" in volume else ""


def test_every_reader_of_a_remote_pool_can_write_the_store_cache(
    ray_objs: list[dict[str, Any]],
) -> None:
    """With a pool store in object storage, each Ray actor or task downloads its shard file into
    the cache path the selection service sends (ACTIVEKD_STORE_CACHE_DIR): the component sets
    one path for the services and it is writable in the Ray head and workers, the selection,
    teacher and trainer pods, while the shared store volume stays read-only for Ray."""
    (config,) = [
        cm for name, cm in _by_kind(ray_objs, "ConfigMap").items()
        if name.startswith("activekd-config")
    ]  # fmt: skip
    cache = config["data"]["ACTIVEKD_STORE_CACHE_DIR"]
    assert cache.startswith("/") and not cache.startswith(STORE_PATH)
    pods = dict(_ray_pod_specs(_by_kind(ray_objs, "RayCluster")["activekd-ray"]))
    for name in ("selection", "teacher", "trainer"):
        pods[name] = _by_kind(ray_objs, "Deployment")[f"activekd-{name}"]["spec"]["template"][
            "spec"
        ]
    for where, pod in pods.items():
        for c in pod["containers"]:
            assert _writable_at(pod, c, cache), f"{where}/{c['name']}: {cache} is not writable"
            if where.startswith(("head", "worker")):
                assert not _writable_at(pod, c, STORE_PATH + "/x"), f"{where}: store writable"


def _pod_labels(objs: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    labels = _by_kind(objs, "Deployment")[deployment]["spec"]["template"]["metadata"]["labels"]
    return dict(labels)


def test_network_policies_admit_only_declared_clients(ray_objs: list[dict[str, Any]]) -> None:
    policies = _by_kind(ray_objs, "NetworkPolicy")
    cluster = _by_kind(ray_objs, "RayCluster")["activekd-ray"]
    head_labels = cluster["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    worker_labels = cluster["spec"]["workerGroupSpecs"][0]["template"]["metadata"]["labels"]
    job = _by_kind(ray_objs, "RayJob")["activekd-ray-kcenter-example"]
    submitter = Source(job["spec"]["submitterPodTemplate"]["metadata"]["labels"])

    def admitted(labels: dict[str, str], port: int, source: Source) -> bool:
        selecting = [
            p for p in policies.values() if _selector_matches(p["spec"]["podSelector"], labels)
        ]
        assert selecting, f"no NetworkPolicy selects the pod {labels}"
        return any(_admits(p, port, source) for p in selecting)

    ray_peer = Source(dict(worker_labels))
    drivers = {
        d: Source(_pod_labels(ray_objs, f"activekd-{d}")) for d in ("selection", "experiment")
    }
    for port in (6379, 10001, 8265, 20000):
        assert admitted(head_labels, port, ray_peer), f"Ray pods must reach the head on {port}"
        assert admitted(worker_labels, port, Source(dict(head_labels)))
    for port in (10001, 8265):  # Ray client and the Jobs API/dashboard
        for name, src in drivers.items():
            assert admitted(head_labels, port, src), f"{name} cannot reach the head on {port}"
    assert admitted(head_labels, 8265, submitter), "the RayJob submitter cannot reach the Jobs API"
    assert admitted(head_labels, 8265, Source({}, False, {"activekd.io/ray-operator": "true"})), (
        "the KubeRay operator's namespace cannot ask the dashboard for job status"
    )
    # the teacher hands large ScorePool jobs to the Jobs API, and needs nothing else of Ray
    teacher = Source(_pod_labels(ray_objs, "activekd-teacher"))
    assert admitted(head_labels, 8265, teacher), "the teacher cannot reach the Jobs API"
    assert not admitted(head_labels, 10001, teacher), "the teacher reaches the Ray client port"
    others = {**OUTSIDERS, "redis": Source(_pod_labels(ray_objs, "activekd-redis"))}
    for name, src in {**others, **drivers, "teacher": teacher}.items():
        assert not admitted(head_labels, 6379, src), f"{name} reaches the Ray GCS"
        assert not admitted(worker_labels, 10001, src), f"{name} reaches a Ray worker"
    for name, src in others.items():
        for port in (10001, 8265):
            assert not admitted(head_labels, port, src), f"{name} reaches the head on {port}"


def test_the_services_are_pointed_at_the_cluster_with_its_token(
    ray_objs: list[dict[str, Any]],
) -> None:
    """The component wires the services to the cluster it adds: the addresses in the shared
    config and, in the two pods that call Ray, token auth with the token from the Secret."""
    (config,) = [
        cm for name, cm in _by_kind(ray_objs, "ConfigMap").items()
        if name.startswith("activekd-config")
    ]  # fmt: skip
    head = _by_kind(ray_objs, "RayCluster")["activekd-ray"]["metadata"]["name"] + "-head-svc"
    assert config["data"]["ACTIVEKD_RAY_ADDRESS"] == f"ray://{head}:10001"
    # the ScorePool hand-off writes the store and Redis from the Ray pods, which this component
    # does not give them (read-only store volume, no Redis password or ingress): opt-in only
    assert "ACTIVEKD_RAY_JOBS_ADDRESS" not in config["data"]
    for name in ("selection", "teacher"):
        pod = _by_kind(ray_objs, "Deployment")[f"activekd-{name}"]["spec"]["template"]["spec"]
        _token_env(pod["containers"][0]["env"], name)


def test_example_job_runs_the_packages_ray_engine(ray_objs: list[dict[str, Any]]) -> None:
    job = _by_kind(ray_objs, "RayJob")["activekd-ray-kcenter-example"]
    cluster = _by_kind(ray_objs, "RayCluster")["activekd-ray"]
    assert job["apiVersion"] == "ray.io/v1"
    selector = job["spec"]["clusterSelector"]
    assert selector and all(cluster["metadata"]["labels"].get(k) == v for k, v in selector.items())
    assert "rayClusterSpec" not in job["spec"], "the example uses the component's cluster"
    (submitter,) = job["spec"]["submitterPodTemplate"]["spec"]["containers"]
    _token_env(submitter["env"], "submitter")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-c"], argv
    tree = ast.parse(argv[2])
    calls = {
        node.func.id: node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    imported = {
        (node.module, a.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for a in node.names
    }
    for module, name in imported:
        assert module is not None
        fn = getattr(importlib.import_module(module), name)  # the name exists in the package
        if name in calls:
            call = calls[name]
            args = [ast.literal_eval(a) for a in call.args]
            inspect.signature(fn).bind(
                *args, **{k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
            )
            paths = [a for a in args if isinstance(a, str)]
            assert all(p.startswith(STORE_PATH + "/") for p in paths), paths
    assert ("activekd.distributed.ray_kcenter", "kcenter_on_ray") in imported
    assert re.search(r"\bray\.init\(\)", argv[2]), "the driver joins the cluster it runs on"
