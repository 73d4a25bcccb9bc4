"""The Kustomize dev overlay's pod settings, fed to the real local stack: what each Deployment's
container gets (ConfigMaps through ``envFrom``, its own ``env``, its Secret volumes as files) is
what the code reads, and together it gives TLS + tokens with roles + a Redis password, with the
experiment service calling the others with its own token.

``kubectl kustomize deploy/k8s/overlays/dev`` is rendered, every Secret volume a container
mounts is written (decoded) under a folder per service, and every setting naming a path under a
mount is mapped there. Ports, addresses, the store and the log level are the harness's
(``HARNESS``), the teacher model a small one (``SMALL``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from activekd.client import ClientCredentials
from activekd.orchestration.local_services import SERVICES, LocalServices
from tests.deploy.test_deploy_env_live import (
    HARNESS,
    SMALL,
    check_tls_tokens_and_roles,
    drive_one_round,
)

pytestmark = pytest.mark.slow
Build = Callable[[str], list[dict[str, Any]]]
OVERLAY = "overlays/dev"


def _named(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def _decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def pod_settings(
    deployment: dict[str, Any], objs: list[dict[str, Any]], root: Path
) -> dict[str, str]:
    """The environment the Deployment's container gets, with its Secret volumes written under
    ``root`` (same relative paths) and every value naming a path under a mount mapped there."""
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    maps, secrets = _named(objs, "ConfigMap"), _named(objs, "Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"envFrom {source}: not handled here"
        env.update(maps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[item["name"]] = maps[key["name"]]["data"][key["key"]]
        elif "secretKeyRef" in ref:
            key = ref["secretKeyRef"]
            env[item["name"]] = _decoded(secrets[key["name"]])[key["key"]].decode()
        else:
            raise AssertionError(f"env {item['name']}: valueFrom {sorted(ref)} not handled here")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        assert "subPath" not in mount, f"{mount}: a subPath mount never sees a rotated Secret"
        folder = root / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "secret" in volume:
            data = _decoded(secrets[volume["secret"]["secretName"]])
            items = volume["secret"].get("items") or [{"key": k, "path": k} for k in data]
            for it in items:
                (folder / it["path"]).write_bytes(data[it["key"]])
        mounts[mount["mountPath"]] = folder

    def mapped(value: str) -> str:
        for path, folder in mounts.items():
            if value == path or value.startswith(path + "/"):
                return str(folder) + value[len(path) :]
        return value

    return {k: mapped(v) for k, v in env.items()}


def _security_env(settings: dict[str, str]) -> dict[str, str]:
    """The settings the stack takes from the manifest (not the harness's, not the model)."""
    return {
        k: v
        for k, v in settings.items()
        if k.startswith("ACTIVEKD_")
        and k not in HARNESS
        and not k.endswith("_TARGET")
        and not k.startswith("ACTIVEKD_TEACHER_")
    }


@pytest.fixture(scope="module")
def rendered(kustomize_build: Build) -> list[dict[str, Any]]:
    return kustomize_build(OVERLAY)


@pytest.fixture(scope="module")
def pods(
    rendered: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("k8s-pods")
    deployments = _named(rendered, "Deployment")
    return {
        name: pod_settings(deployments[f"activekd-{name}"], rendered, root / name)
        for name in SERVICES
    }


def _token_roles(tokens_file: str) -> dict[str, str]:
    """token -> role of a tokens file (``role:token:name`` lines)."""
    out: dict[str, str] = {}
    for line in Path(tokens_file).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            role, token, _name = line.split(":")
            out[token] = role
    return out


def _tokens(pods: dict[str, dict[str, str]]) -> dict[str, str]:
    """A token of each role from the tokens file the pods mount."""
    roles = _token_roles(pods["selection"]["ACTIVEKD_AUTH_TOKENS_FILE"])
    return {role: token for token, role in reversed(list(roles.items()))}


def _secret_volume(rendered: list[dict[str, Any]], deployment: str, volume: str) -> str:
    """The Secret behind ``volume`` of ``deployment``."""
    spec = _named(rendered, "Deployment")[deployment]["spec"]["template"]["spec"]
    (vol,) = [v for v in spec["volumes"] if v["name"] == volume]
    return str(vol["secret"]["secretName"])


def test_every_file_a_pod_setting_names_is_mounted(pods: dict[str, dict[str, str]]) -> None:
    """Auth required, TLS and the Redis password on in all four pods, and every ``*_FILE``
    setting names a file one of the pod's Secret volumes provides; the experiment service's
    client token is a writer's (the least role that drives a round) and not an admin's."""
    for name, settings in pods.items():
        assert settings["ACTIVEKD_AUTH"] == "required", name
        for key in ("ACTIVEKD_AUTH_TOKENS_FILE", "ACTIVEKD_TLS_CERT_FILE",
                    "ACTIVEKD_TLS_KEY_FILE", "ACTIVEKD_REDIS_PASSWORD_FILE"):  # fmt: skip
            assert key in settings, f"{name}: {key} not set"
        for key, value in settings.items():
            if key.endswith("_FILE") and value:
                assert Path(value).is_file(), f"{name}: {key}={value} is not a mounted file"
    experiment = pods["experiment"]
    token = Path(experiment["ACTIVEKD_CLIENT_TOKEN_FILE"]).read_text().strip()
    assert _token_roles(experiment["ACTIVEKD_AUTH_TOKENS_FILE"]).get(token) == "writer"
    assert Path(experiment["ACTIVEKD_CLIENT_CA_FILE"]).is_file()


def test_redis_and_the_services_share_one_password_secret(rendered: list[dict[str, Any]]) -> None:
    want = _secret_volume(rendered, "activekd-redis", "redis-auth")
    for name in SERVICES:
        assert _secret_volume(rendered, f"activekd-{name}", "redis-auth") == want, name


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    rendered: list[dict[str, Any]],
    pods: dict[str, dict[str, str]],
) -> Iterator[LocalServices]:
    secret = _named(rendered, "Secret")[_secret_volume(rendered, "activekd-redis", "redis-auth")]
    password = _decoded(secret)["password"].decode()
    service_env = {name: _security_env(settings) for name, settings in pods.items()}
    # as in a pod, no ACTIVEKD_CLIENT_TOKEN is inherited from this test process
    env = {**SMALL, "ACTIVEKD_CLIENT_TOKEN": ""}
    s = LocalServices(
        tmp_path_factory.mktemp("k8s-stack"),
        env=env,
        service_env=service_env,
        redis_password=password,
    ).start()
    try:
        yield s
    finally:
        s.stop()


def test_tls_and_tokens_from_the_kustomize_settings(
    stack: LocalServices, pods: dict[str, dict[str, str]]
) -> None:
    ca = Path(pods["selection"]["ACTIVEKD_TLS_CERT_FILE"]).parent / "ca.crt"
    check_tls_tokens_and_roles(stack, ca, _tokens(pods))


def test_the_experiment_pod_drives_the_others_with_its_own_token(
    stack: LocalServices, pods: dict[str, dict[str, str]]
) -> None:
    ca = str(Path(pods["selection"]["ACTIVEKD_TLS_CERT_FILE"]).parent / "ca.crt")
    tokens = _tokens(pods)
    admin = ClientCredentials(token=tokens["admin"], ca_file=ca)
    writer = ClientCredentials(token=tokens["writer"], ca_file=ca)
    drive_one_round(stack, admin, writer, "k8s-live")
