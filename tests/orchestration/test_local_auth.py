"""Local services run with auth on, as deployed: LocalAuth's token file, the process-wide token a
client without credentials reads, least role, and a kill -9 restart that keeps auth and ports."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from activekd.client import ClientCredentials, SelectionClient
from activekd.orchestration.local_services import ROLES, LocalAuth, local_auth
from activekd.wire.channel import CLIENT_ENV, TOKEN_CHARS
from tests.procs import RedisProcess, ServiceProcess


def test_local_auth_writes_one_private_token_per_role(tmp_path: Path) -> None:
    auth = LocalAuth.create(tmp_path / "auth")
    assert stat.S_IMODE(auth.tokens_file.stat().st_mode) == 0o600
    lines = [line for line in auth.tokens_file.read_text().splitlines() if not line.startswith("#")]
    parsed = {
        name.removeprefix("local-"): (role, tok)
        for role, tok, name in (line.split(":") for line in lines)
    }
    assert parsed == {name: (ROLES[name], auth.tokens[name]) for name in ROLES}
    assert ROLES["service"] == "writer"  # the experiment service's calls need no more
    for tok in auth.tokens.values():
        assert len(tok) >= 16 and set(tok) <= TOKEN_CHARS
    assert len(set(auth.tokens.values())) == len(ROLES)
    assert auth.server_env() == {"ACTIVEKD_AUTH_TOKENS_FILE": str(auth.tokens_file)}
    env = auth.client_env("service")
    assert set(env) == set(CLIENT_ENV.values())
    assert ClientCredentials.from_env(env) == ClientCredentials(token=auth.tokens["service"])
    assert auth.credentials("reader") == ClientCredentials(token=auth.tokens["reader"])


def test_the_process_wide_auth_sets_the_default_client_token() -> None:
    """In a fresh interpreter without client settings (this one may have had them)."""
    code = (
        "import os\n"
        "from activekd.orchestration.local_services import local_auth\n"
        "auth = local_auth()\n"
        "assert local_auth() is auth\n"
        "assert os.environ['ACTIVEKD_CLIENT_TOKEN'] == auth.tokens['admin']\n"
        "assert auth.tokens_file.is_file()\n"
        "print(auth.dir)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV.values()}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert not Path(proc.stdout.strip()).exists()  # removed at exit
    assert local_auth() is local_auth()


# ---------------------------------------------------------------------------------- a service
@pytest.fixture(scope="module")
def selection(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(
        "selection", redis_server.url, str(tmp_path_factory.mktemp("auth-store"))
    ).start()
    try:
        yield svc
    finally:
        svc.stop()


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return]


def test_a_client_without_credentials_uses_the_local_admin_token(
    selection: ServiceProcess,
) -> None:
    with SelectionClient(selection.target, timeout=30) as sel:
        assert "pcoreset" in {s.name for s in sel.list_strategies()}
        sel.upload_pool(
            "auth/pool",
            item_ids=["a", "b"],
            arrays={"probs": np.eye(2, dtype=np.float32)},
            overwrite=True,
        )
        assert sel.delete_pool("auth/pool")


def test_roles_are_enforced_on_a_real_service(selection: ServiceProcess) -> None:
    probs = {"probs": np.eye(2, dtype=np.float32)}
    with SelectionClient(selection.target, credentials=ClientCredentials()) as anon:
        assert _code(anon.list_strategies) is grpc.StatusCode.UNAUTHENTICATED
    bad = ClientCredentials(token="x" * 32)
    with SelectionClient(selection.target, credentials=bad) as wrong:
        assert _code(wrong.list_strategies) is grpc.StatusCode.UNAUTHENTICATED
    with SelectionClient(selection.target, credentials=selection.credentials("writer")) as writer:
        writer.upload_pool("auth/roles", item_ids=["a", "b"], arrays=probs)
    with SelectionClient(selection.target, credentials=selection.credentials("reader")) as reader:
        assert reader.describe_pool("auth/roles").num_items == 2
        assert _code(lambda: reader.delete_pool("auth/roles")) is grpc.StatusCode.PERMISSION_DENIED
        assert (
            _code(lambda: reader.upload_pool("auth/other", item_ids=["a", "b"], arrays=probs))
            is grpc.StatusCode.PERMISSION_DENIED
        )
    with SelectionClient(selection.target, credentials=selection.credentials("admin")) as admin:
        assert admin.delete_pool("auth/roles")


def test_kill_9_and_start_keep_auth_ports_and_health(selection: ServiceProcess) -> None:
    """Last of the tests on the module's service: it kills it."""
    ports = (selection.port, selection.health_port, selection.metrics_port)
    pid = selection.proc.pid if selection.proc else None
    selection.kill()
    selection.start()
    assert (selection.port, selection.health_port, selection.metrics_port) == ports
    # the main port takes a first call at once (no backoff left from probing it too early)
    with grpc.insecure_channel(selection.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert selection.proc is not None and selection.proc.pid != pid
    with SelectionClient(selection.target, timeout=30) as sel:
        assert sel.list_strategies()
    with SelectionClient(selection.target, credentials=ClientCredentials()) as anon:
        assert _code(anon.list_strategies) is grpc.StatusCode.UNAUTHENTICATED


def test_auth_off_is_explicit(redis_server: RedisProcess, tmp_path: Path) -> None:
    """``ACTIVEKD_AUTH=off`` in ``env`` wins over the token file (the golden masters' setting)."""
    svc = ServiceProcess(
        "selection", redis_server.url, str(tmp_path / "store"), env={"ACTIVEKD_AUTH": "off"}
    ).start()
    try:
        with SelectionClient(svc.target, credentials=ClientCredentials()) as anon:
            assert anon.list_strategies()
    finally:
        svc.stop()


def test_local_services_give_the_experiment_the_service_token_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Least role: the experiment service calls the others as a writer, not with the admin token
    this process holds; and a caller's own client token or Redis password is passed on."""
    from activekd.orchestration import local_services

    started: dict[str, ServiceProcess] = {}

    def fake_start(self: ServiceProcess, timeout: float = 120.0) -> ServiceProcess:
        started[self.name] = self
        return self

    monkeypatch.setattr(local_services.ServiceProcess, "start", fake_start)
    monkeypatch.setattr(local_services.RedisProcess, "start", lambda self: self)
    monkeypatch.setattr(local_services.ServiceProcess, "stop", lambda self: None)
    monkeypatch.setattr(local_services.RedisProcess, "stop", lambda self: None)

    stack = local_services.LocalServices(tmp_path / "a", redis_password="pw-123").start()
    auth = local_auth()
    assert stack.auth is auth and all(s.auth is auth for s in started.values())
    exp = started["experiment"].env
    assert ClientCredentials.from_env(exp) == ClientCredentials(token=auth.tokens["service"])
    assert exp["ACTIVEKD_SELECTION_TARGET"] == started["selection"].target
    for name in ("selection", "teacher", "trainer"):
        assert not set(CLIENT_ENV.values()) & set(started[name].env), name
    password_file = Path(exp["ACTIVEKD_REDIS_PASSWORD_FILE"])
    assert password_file.read_text().strip() == "pw-123"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert all(
        s.env["ACTIVEKD_REDIS_PASSWORD_FILE"] == str(password_file) for s in started.values()
    )
    assert stack.credentials("reader") == ClientCredentials(token=auth.tokens["reader"])

    started.clear()
    own = {"ACTIVEKD_CLIENT_TOKEN_FILE": "/run/secrets/experiment.token"}
    local_services.LocalServices(tmp_path / "b", env=own).start(names=("selection", "experiment"))
    exp = started["experiment"].env
    assert ClientCredentials.from_env(exp) == ClientCredentials(
        token_file=own[CLIENT_ENV["token_file"]]
    )
    assert "ACTIVEKD_REDIS_PASSWORD_FILE" not in exp
