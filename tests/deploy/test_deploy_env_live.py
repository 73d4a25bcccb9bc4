"""docker-compose.yml's security settings, fed to the real local stack: the settings the deploy
file names are the ones the code reads, and together they give TLS + tokens + a Redis password.

compose's ``/run/secrets/<name>`` files are written by ``scripts/dev_secrets.py`` into a temp
folder, the compose hosts become 127.0.0.1 (the dev certificate names it), and the ports are
the harness's free ones. The experiment service then drives teacher, trainer and selection with
its own token over TLS, as in compose.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from activekd.client import ClientCredentials, ExperimentClient, SelectionClient
from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from activekd.orchestration.local_services import LocalServices
from activekd.v1 import experiment_pb2
from tests.deploy.conftest import REPO

pytestmark = pytest.mark.slow
SECRETS = "/run/secrets/"
#: compose settings the harness owns (ports, addresses, paths inside the image, log level)
HARNESS = {
    "ACTIVEKD_GRPC_PORT", "ACTIVEKD_METRICS_PORT", "ACTIVEKD_HEALTH_PORT", "ACTIVEKD_REDIS_URL",
    "ACTIVEKD_STORE_URI", "ACTIVEKD_CACHE_DIR", "ACTIVEKD_LOG_LEVEL", "ACTIVEKD_GRACE_SECONDS",
}  # fmt: skip
SMALL = {
    "ACTIVEKD_TEACHER_BACKEND": "label-map",
    "ACTIVEKD_TEACHER_IMAGE_SIZE": "64",
    "ACTIVEKD_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}


def _security_env(service: dict[str, Any], secrets: Path) -> dict[str, str]:
    """A compose service's ACTIVEKD_* settings minus what the harness owns, with the secret
    paths mapped to ``secrets``."""
    out = {}
    for key, value in (service.get("environment") or {}).items():
        # ${NAME:-default}: what compose gives when NAME is unset in the host's environment
        value = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))
        if not key.startswith("ACTIVEKD_") or key in HARNESS or key.endswith("_TARGET"):
            continue
        if key.startswith("ACTIVEKD_TEACHER_"):
            continue  # the teacher model: SMALL picks a tiny one
        if value.startswith(SECRETS):
            value = str(secrets / value.removeprefix(SECRETS))
        out[key] = value
    return out


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("cryptography")
    spec = importlib.util.spec_from_file_location("dev_secrets", REPO / "scripts/dev_secrets.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("secrets")
    module.write_dev_secrets(out, overwrite=True)
    return out


@pytest.fixture(scope="module")
def compose_env(secrets: Path) -> dict[str, str]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    per_service = {
        name: _security_env(compose["services"][name], secrets)
        for name in ("selection", "teacher", "trainer", "experiment")
    }
    env = per_service["experiment"]
    for name, other in per_service.items():  # the harness passes one env to all four
        assert other.items() <= env.items(), f"{name} has settings the experiment lacks"
    for key in ("ACTIVEKD_AUTH_TOKENS_FILE", "ACTIVEKD_TLS_CERT_FILE", "ACTIVEKD_TLS_KEY_FILE",
                "ACTIVEKD_REDIS_PASSWORD_FILE", "ACTIVEKD_CLIENT_TOKEN_FILE",
                "ACTIVEKD_CLIENT_CA_FILE"):  # fmt: skip
        assert Path(env[key]).is_file(), f"{key}: compose names a secret dev_secrets.py lacks"
    return env


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, compose_env: dict[str, str], secrets: Path
) -> Iterator[LocalServices]:
    password = (secrets / "redis.password").read_text().strip()
    # as in a compose container, no ACTIVEKD_CLIENT_TOKEN is inherited (this test process has
    # the local stack's one, which would win over compose's ACTIVEKD_CLIENT_TOKEN_FILE)
    env = {**SMALL, **compose_env, "ACTIVEKD_CLIENT_TOKEN": ""}
    s = LocalServices(tmp_path_factory.mktemp("stack"), env=env, redis_password=password).start()
    try:
        yield s
    finally:
        s.stop()


def _creds(secrets: Path, role: str | None = "admin") -> ClientCredentials:
    token = (secrets / f"{role}.token").read_text().strip() if role else ""
    return ClientCredentials(token=token, ca_file=str(secrets / "ca.crt"))


def check_tls_tokens_and_roles(stack: LocalServices, ca_file: Path, tokens: dict[str, str]) -> None:
    """TLS + a token with a role on the main port; plaintext health on the health port."""

    def creds(role: str | None) -> ClientCredentials:
        return ClientCredentials(token=tokens[role] if role else "", ca_file=str(ca_file))

    target = stack.target("selection")
    with SelectionClient(target, credentials=creds("admin")) as client:
        assert client.list_strategies()
    with (
        SelectionClient(target, credentials=creds(None)) as client,
        pytest.raises(grpc.RpcError) as exc,
    ):
        client.list_strategies()
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with (
        SelectionClient(target, credentials=creds("reader")) as client,
        pytest.raises(grpc.RpcError) as exc,
    ):
        client.delete_pool("nope/pool")
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # plaintext to the TLS port fails; the health port answers plaintext (what probes use)
    plain = ClientCredentials(token=tokens["admin"])
    with (
        SelectionClient(target, credentials=plain, timeout=10) as client,
        pytest.raises(grpc.RpcError) as exc,
    ):
        client.list_strategies()
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    for name, svc in stack.services.items():
        proc = subprocess.run(
            [sys.executable, "-m", "activekd.server.healthcheck", "--port", str(svc.health_port),
             "--service", f"activekd.v1.{name.capitalize()}Service"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr


def drive_one_round(
    stack: LocalServices, admin: ClientCredentials, writer: ClientCredentials, experiment_id: str
) -> None:
    """AdvanceRound through teacher (ScorePool), trainer (TrainRound, PredictPool) and selection
    (SelectBatch): the experiment service calls each with the client settings it was given."""
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    prefix = experiment_id
    with SelectionClient(stack.target("selection"), credentials=admin) as sel:
        sel.upload_pool(f"{prefix}/pool", item_ids=[f"p{i}" for i in range(120)],
                        arrays={"images": x[:120], "labels": y[:120]})  # fmt: skip
        sel.upload_pool(f"{prefix}/test", item_ids=[f"t{i}" for i in range(40)],
                        arrays={"images": xt[:40], "labels": yt[:40]})  # fmt: skip
    spec = experiment_pb2.ExperimentSpec(
        pool_id=f"{prefix}/pool",
        test_pool_id=f"{prefix}/test",
        dataset="fmnist-live",
        class_names=list(FASHION_MNIST_CLASSES),
        strategy="pcoreset",
        initial_per_class=1,
        budget_per_round=5,
        num_rounds=1,
        seed=3,
        simulated_oracle=True,
    )
    spec.student_config.update({"steps": 4, "batch_size_labeled": 16, "batch_size_unlabeled": 32})
    with ExperimentClient(stack.target("experiment"), timeout=600, credentials=writer) as client:
        client.create(spec, experiment_id=experiment_id)
        states = []
        for _ in range(4):
            resp = client.advance(experiment_id)
            states.append(experiment_pb2.RoundState.Name(resp.to_state))
    assert states == [
        "ROUND_STATE_TEACHER_SCORED",
        "ROUND_STATE_STUDENT_TRAINED",
        "ROUND_STATE_POOL_SCORED",
        "ROUND_STATE_SELECTED",
    ]
    assert len(resp.experiment.rounds[0].selected_item_ids) == 5


def _tokens(secrets: Path) -> dict[str, str]:
    return {role: (secrets / f"{role}.token").read_text().strip()
            for role in ("admin", "writer", "reader")}  # fmt: skip


def test_tls_and_token_from_the_compose_settings(stack: LocalServices, secrets: Path) -> None:
    check_tls_tokens_and_roles(stack, secrets / "ca.crt", _tokens(secrets))


def test_experiment_drives_the_others_with_its_own_token(
    stack: LocalServices, secrets: Path
) -> None:
    """The experiment service calls the others over TLS with compose's experiment.token."""
    drive_one_round(stack, _creds(secrets), _creds(secrets, "writer"), "live-a")
