"""docker-compose.yml (+ the GPU override): schema, entry points, env names, ports, Prometheus,
and the security settings (auth, TLS, Redis password from secrets; health-only probe port)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.deploy.conftest import DEPLOY, REPO, THIRD_PARTY_ENV, run_redis_script, tool

SERVICES = ("selection", "teacher", "trainer", "experiment")


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # ["KEY=value", ...] form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file: mappings merge, everything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return override


def _check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    cmd = [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_compose_files_match_the_compose_spec_schema() -> None:
    proc = _check_jsonschema(REPO / "docker-compose.yml", REPO / "docker-compose.gpu.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_rejects_a_broken_file(tmp_path: Path, compose: dict[str, Any]) -> None:
    """The validator above really validates: a misspelt key fails it."""
    broken = dict(compose)
    broken["services"] = {**compose["services"], "redis": {**compose["services"]["redis"]}}
    broken["services"]["redis"]["helthcheck"] = {"test": ["CMD", "true"]}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    proc = _check_jsonschema(path)
    assert proc.returncode != 0
    assert "helthcheck" in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_service_entry_point_ports_and_health(
    name: str, compose: dict[str, Any], architecture_services: dict[str, dict[str, str]]
) -> None:
    svc, spec = compose["services"][name], architecture_services[name]
    assert " ".join(svc["command"]) == spec["entry"]
    module = spec["entry"].split()[-1]
    package_dir = REPO / module.replace("activekd_services", "services").replace(".", "/")
    assert (package_dir / "__main__.py").is_file(), f"{module} has no __main__.py"
    env = _env(svc)
    assert env["ACTIVEKD_GRPC_PORT"] == spec["grpc_port"]
    assert env["ACTIVEKD_METRICS_PORT"] == spec["metrics_port"]
    assert env["ACTIVEKD_HEALTH_PORT"] == spec["health_port"]
    assert env["ACTIVEKD_REDIS_URL"].startswith("redis://redis:")
    assert any(p.endswith(f":{spec['grpc_port']}") for p in svc["ports"])
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"]), "publish on loopback only"
    # the healthcheck asks the plaintext health-only port (the gRPC port speaks TLS) for the
    # service's readiness: depends_on waits until its Redis is reachable
    test = svc["healthcheck"]["test"]
    assert test[:4] == ["CMD", "python", "-m", "activekd.server.healthcheck"]
    assert test[test.index("--port") + 1] == spec["health_port"]
    assert test[test.index("--service") + 1] == spec["grpc_service"]
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert svc["user"] != "0" and not str(svc["user"]).startswith("root")
    assert svc["read_only"] is True and "/tmp" in svc["tmpfs"]
    volumes = {v.split(":")[1] for v in svc["volumes"]}
    assert env["ACTIVEKD_STORE_URI"] in volumes, "the pool store must be on the shared volume"
    grace = float(env["ACTIVEKD_GRACE_SECONDS"])
    assert float(svc["stop_grace_period"].rstrip("s")) > grace


@pytest.mark.parametrize("name", SERVICES)
def test_env_names_are_read_by_the_code(
    name: str,
    compose: dict[str, Any],
    architecture_services: dict[str, dict[str, str]],
    service_env_names: Callable[[str], set[str]],
) -> None:
    gpu = yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())
    merged = _merge(compose["services"][name], gpu["services"].get(name, {}))
    known = service_env_names(architecture_services[name]["entry"].split()[-1])
    names = set(_env(merged))
    unknown = {n for n in names if n.startswith("ACTIVEKD_")} - known
    assert not unknown, f"{name} sets {sorted(unknown)}, which the code never reads"
    assert {n for n in names if not n.startswith("ACTIVEKD_")} <= THIRD_PARTY_ENV


def test_experiment_targets_point_at_the_services(
    compose: dict[str, Any], architecture_services: dict[str, dict[str, str]]
) -> None:
    env = _env(compose["services"]["experiment"])
    for other in ("selection", "teacher", "trainer"):
        target = env[f"ACTIVEKD_{other.upper()}_TARGET"].removeprefix("dns:///")
        assert target == f"{other}:{architecture_services[other]['grpc_port']}"
        assert compose["services"]["experiment"]["depends_on"][other] == {
            "condition": "service_healthy"
        }


def test_gpu_override_reserves_gpus_for_teacher_and_trainer() -> None:
    gpu = yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())
    assert set(gpu["services"]) == {"teacher", "trainer"}
    for svc in gpu["services"].values():
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert svc["build"]["target"] == "cuda"
        assert _env(svc)["ACTIVEKD_DEVICE"] == "cuda"


def _unescape(text: str) -> str:
    """What compose hands the container: ``$$`` is a literal ``$``."""
    return text.replace("$$", "$")


def _redis_script(compose: dict[str, Any]) -> str:
    cmd = compose["services"]["redis"]["command"]
    assert cmd[:2] == ["sh", "-c"], "the start script reads the password from the secret"
    return _unescape(cmd[2])


def test_redis_persists_with_aof(compose: dict[str, Any]) -> None:
    service = compose["services"]["redis"]
    script = _redis_script(compose)
    assert "--appendonly yes" in script and "--appendfsync everysec" in script
    assert "--dir /data" in script
    assert any(v.startswith("redis-data:/data") for v in service["volumes"])
    assert "redis-data" in compose["volumes"]


def test_redis_requires_the_password(compose: dict[str, Any], tmp_path: Path) -> None:
    """Run compose's Redis start script (and its healthcheck) with the local redis-server."""
    service = compose["services"]["redis"]
    assert _secret_names(service) == {"redis.password"}
    script = _redis_script(compose)
    assert "exec docker-entrypoint.sh redis-server" in script, "the image's entrypoint drops root"
    assert "--requirepass" not in script, "the password must not be in the process list"
    path = "/run/secrets/redis.password"
    assert f"requirepass $(cat {path})" in script
    password = "a-test-password-0123456789"
    with run_redis_script(script, {path: password}, password, tmp_path) as client:
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        sock = client.connection_pool.connection_kwargs["path"]
        assert redis.Redis(unix_socket_path=sock, password=password).ping()
        kind, check = service["healthcheck"]["test"]
        assert kind == "CMD-SHELL" and "PONG" in check
        check = _unescape(check).replace(path, str(tmp_path / "redis.password"))
        check = check.replace("redis-cli ", f"redis-cli -s {sock} ")
        assert subprocess.run(["sh", "-c", check], timeout=10).returncode == 0
        (tmp_path / "redis.password").write_text("wrong-password-0123456789")
        assert subprocess.run(["sh", "-c", check], timeout=10).returncode != 0


def _secret_names(service: dict[str, Any]) -> set[str]:
    """The secrets a service mounts (short or long syntax), all at the default /run/secrets/."""
    names = set()
    for item in service.get("secrets", []):
        if isinstance(item, dict):
            assert item.get("target", item["source"]) == item["source"], "keep the default path"
            item = item["source"]
        names.add(item)
    return names


#: env var -> the secret whose file it names (every service / the experiment service only)
SECRET_ENV = {
    "ACTIVEKD_AUTH_TOKENS_FILE": "tokens",
    "ACTIVEKD_TLS_CERT_FILE": "server.crt",
    "ACTIVEKD_TLS_KEY_FILE": "server.key",
    "ACTIVEKD_REDIS_PASSWORD_FILE": "redis.password",
}
EXPERIMENT_SECRET_ENV = {
    "ACTIVEKD_CLIENT_TOKEN_FILE": "experiment.token",
    "ACTIVEKD_CLIENT_CA_FILE": "ca.crt",
}


#: the methods whose concurrency a deployment caps by default (the heavy ones)
CAPPED = {"ScorePool", "TrainRound", "PredictPool", "SelectBatch", "UploadPool", "Predict"}


@pytest.mark.parametrize("name", SERVICES)
def test_heavy_methods_have_concurrency_caps(name: str, compose: dict[str, Any]) -> None:
    from activekd.server.limits import parse_per_method

    raw = _env(compose["services"][name])["ACTIVEKD_MAX_CONCURRENT_PER_METHOD"]
    default = raw.split(":-", 1)[1].rstrip("}") if raw.startswith("${") else raw
    caps = parse_per_method(default)
    assert set(caps) >= CAPPED and all(0 < v <= 32 for v in caps.values()), caps


@pytest.mark.parametrize("name", SERVICES)
def test_auth_tls_and_redis_password_come_from_secrets(name: str, compose: dict[str, Any]) -> None:
    service = compose["services"][name]
    env = _env(service)
    assert env["ACTIVEKD_AUTH"] == "required", "auth is on by default"
    assert "ACTIVEKD_AUTH_TOKENS" not in env, "tokens come from the secret file, not env"
    wanted = SECRET_ENV | (EXPERIMENT_SECRET_ENV if name == "experiment" else {})
    mounted = _secret_names(service)
    for var, secret in wanted.items():
        assert env[var] == f"/run/secrets/{secret}", var
        assert secret in mounted, f"{name} reads {secret} but does not mount it"
    for var, value in env.items():  # no file named that the service cannot read
        if value.startswith("/run/secrets/"):
            assert value.removeprefix("/run/secrets/") in mounted, var
    assert set(mounted) <= set(compose["secrets"])


def test_secrets_are_generated_files_never_committed(compose: dict[str, Any]) -> None:
    """Every secret is a file under deploy/secrets/ (git-ignored, never committed); none is
    inline, external or an environment variable."""
    files = {}
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, f"secret {name}: only file secrets ({secret})"
        assert secret["file"] == f"./deploy/secrets/{name}", name
        files[name] = secret["file"]
    ignored = {line.strip() for line in (REPO / ".gitignore").read_text().splitlines()}
    assert ignored & {"deploy/secrets/", "/deploy/secrets/", "deploy/secrets"}, ".gitignore"
    proc = subprocess.run(
        ["git", "ls-files", "deploy/secrets"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode != 0 or not proc.stdout.strip(), "committed secrets"


def test_dev_secrets_fit_the_compose_file(compose: dict[str, Any], tmp_path: Path) -> None:
    """scripts/dev_secrets.py's files are the compose secrets, and they fit together."""
    pytest.importorskip("cryptography")
    spec = importlib.util.spec_from_file_location("dev_secrets", REPO / "scripts/dev_secrets.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_dev_secrets(tmp_path)
    assert set(compose["secrets"]) <= {p.name for p in tmp_path.iterdir()}
    token = (tmp_path / "experiment.token").read_text().strip()
    roles = {
        line.split(":")[1]: line.split(":")[0]
        for line in (tmp_path / "tokens").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert roles[token] == "writer", "the experiment service's token has the least role it needs"


def test_dollars_are_escaped_for_compose(compose: dict[str, Any]) -> None:
    """A shell ``$`` in compose must be written ``$$`` (compose interpolates ``$NAME`` and
    ``${NAME}`` and rejects other ``$`` forms); ``${...}`` is compose's own."""
    text = (REPO / "docker-compose.yml").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.findall(r"(?<!\$)\$(?![${])", code.replace("$$", "")), "unescaped $"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    used = set()
    for svc in compose["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
            else:
                assert (REPO / source).exists(), f"bind-mounted {source} does not exist"
    assert used == set(compose["volumes"])


def test_prometheus_scrapes_every_service(
    compose: dict[str, Any], architecture_services: dict[str, dict[str, str]], promtool: str
) -> None:
    config_path = DEPLOY / "prometheus" / "prometheus.compose.yml"
    mount = next(v for v in compose["services"]["prometheus"]["volumes"] if "prometheus.yml" in v)
    assert mount.split(":")[0] == "./deploy/prometheus/prometheus.compose.yml"
    proc = subprocess.run(
        [promtool, "check", "config", str(config_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(config_path.read_text())
    jobs = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    for name, spec in architecture_services.items():
        assert jobs[f"activekd-{name}"] == [f"{name}:{spec['metrics_port']}"]


def test_grafana_is_provisioned(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provisioning = REPO / mounts["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "activekd.yml").read_text())
    (provider,) = providers["providers"]
    dashboards_dir = REPO / mounts[provider["options"]["path"]]
    assert (dashboards_dir / "activekd.json").is_file()
    home = _env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")


def test_env_name_discovery_reads_the_code(service_env_names: Callable[[str], set[str]]) -> None:
    """Guard for the env checks: names come from the code (flags, ServerConfig, literals,
    ACTIVEKD_TEACHER_<field> from TeacherConfig), and a made-up name is not among them."""
    names = service_env_names("activekd_services.selection")
    assert {"ACTIVEKD_GRPC_PORT", "ACTIVEKD_REDIS_URL", "ACTIVEKD_THREADS"} <= names
    assert {"ACTIVEKD_METRICS_MAX_EXPERIMENTS", "ACTIVEKD_TEACHER_PRETRAINED"} <= names
    assert "ACTIVEKD_TEACHER_PRETRAINED_TAG" not in names
    assert "ACTIVEKD_REDIS_URI" not in names


# ---- annotators in the loop (docs/annotation.md): Label Studio and the annotation backend ------
ANNOTATION_SECRET_ENV = {
    "ACTIVEKD_CLIENT_TOKEN_FILE": "annotation.token",
    "ACTIVEKD_CLIENT_CA_FILE": "ca.crt",
    "ACTIVEKD_REDIS_PASSWORD_FILE": "redis.password",
    "ACTIVEKD_ANNOTATION_SECRET_FILE": "annotation.secret",
    "LABEL_STUDIO_API_KEY_FILE": "label-studio.api-key",
}


def test_annotation_services_sit_behind_a_profile(compose: dict[str, Any]) -> None:
    """The default `docker compose up` stays the four services; the two new ones need
    `--profile annotation` (the backend needs an experiment and a project made first)."""
    for name in ("label-studio", "annotation"):
        assert compose["services"][name]["profiles"] == ["annotation"], name
    assert all(
        "profiles" not in svc for n, svc in compose["services"].items()
        if n not in ("label-studio", "annotation")
    )  # fmt: skip


def test_label_studio_service(compose: dict[str, Any]) -> None:
    ls = compose["services"]["label-studio"]
    assert ls["image"] == "heartexlabs/label-studio:1.23.2"
    assert ls["ports"] == ["127.0.0.1:8080:8080"], "publish on loopback only"
    assert "label-studio-data:/label-studio/data" in ls["volumes"]
    env = _env(ls)
    # the backend is on the compose network (a private address): without these Label Studio
    # refuses its ML backend and webhook URLs (docs/annotation.md, "SSRF settings")
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"
    assert all(k.startswith("LABEL_STUDIO_") for k in env)
    assert "/health/" in " ".join(ls["healthcheck"]["test"])


def test_annotation_backend_service(compose: dict[str, Any], library_env_names: set[str]) -> None:
    svc = compose["services"]["annotation"]
    assert svc["command"][0] == "activekd-annotation"
    connect = svc["command"][svc["command"].index("--connect") + 1]
    env = _env(svc)
    assert connect == f"http://annotation:{env['ACTIVEKD_ANNOTATION_PORT']}"
    # the console script is the project's, and the image installs the extra it needs
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["activekd-annotation"] == "activekd.annotation.__main__:main"
    dockerfile = (REPO / "Dockerfile").read_text()
    for extras in re.findall(r'pip install -c constraints\.txt "\.\[([a-z,]+)\]"', dockerfile):
        assert "annotation" in extras.split(","), "the image lacks the annotation extra"
    # every setting is one the code reads; the user's two come from the shell (empty: the
    # backend refuses to start, naming them)
    unknown = {n for n in env if n.startswith("ACTIVEKD_")} - library_env_names
    assert not unknown, f"annotation sets {sorted(unknown)}, which the code never reads"
    for name in ("ACTIVEKD_ANNOTATION_EXPERIMENT", "LABEL_STUDIO_PROJECT"):
        assert env[name] == f"${{{name}:-}}", name
    assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert env["ACTIVEKD_EXPERIMENT_TARGET"] == "experiment:50054"
    assert env["ACTIVEKD_ANNOTATION_HOST"] == "0.0.0.0", "Label Studio calls it over the network"
    assert "ports" not in svc, "the backend is reached on the compose network, not the host"
    # credentials: files from secrets, never values in env
    mounted = _secret_names(svc)
    for var, secret in ANNOTATION_SECRET_ENV.items():
        assert env[var] == f"/run/secrets/{secret}", var
        assert secret in mounted, f"annotation reads {secret} but does not mount it"
    in_env = {"ACTIVEKD_ANNOTATION_SECRET", "LABEL_STUDIO_API_KEY", "ACTIVEKD_CLIENT_TOKEN"}
    assert not in_env & set(env), "credentials come from files, not env values"
    assert mounted <= set(compose["secrets"])
    assert not mounted & {"tokens", "server.key"}, "a client: no server secrets"
    for dep in ("redis", "experiment", "label-studio"):
        assert svc["depends_on"][dep] == {"condition": "service_healthy"}, dep
    test = " ".join(svc["healthcheck"]["test"])
    assert f"127.0.0.1:{env['ACTIVEKD_ANNOTATION_PORT']}/health" in test
    assert svc["user"] == "10001:10001" and svc["read_only"] is True


def test_annotation_token_is_its_own_writer_token(tmp_path: Path) -> None:
    """dev_secrets.py gives the backend its own token (role writer: AdvanceRound and
    SubmitLabels need it), a shared secret long enough for the backend, and an empty file for
    the Label Studio key."""
    pytest.importorskip("cryptography")
    from activekd.annotation.config import MIN_SECRET_CHARS

    spec = importlib.util.spec_from_file_location("dev_secrets", REPO / "scripts/dev_secrets.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_dev_secrets(tmp_path)
    token = (tmp_path / "annotation.token").read_text().strip()
    lines = [
        line.split(":") for line in (tmp_path / "tokens").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    assert [(role, name) for role, t, name in lines if t == token] == [("writer", "annotation")]
    assert token != (tmp_path / "experiment.token").read_text().strip()
    assert len((tmp_path / "annotation.secret").read_text().strip()) >= MIN_SECRET_CHARS
    assert (tmp_path / "label-studio.api-key").read_text() == ""
