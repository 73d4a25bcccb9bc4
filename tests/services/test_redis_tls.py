"""Redis over TLS for real: a redis-server with only a TLS port (certificates from
scripts/dev_secrets.py), the state store through ``rediss://`` + ``ACTIVEKD_REDIS_CA_FILE``, and
a selection service process that reads both settings and serves."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from activekd.client import SelectionClient
from activekd.orchestration.local_services import ServiceProcess, free_port, local_auth
from activekd.state import redis_conn
from activekd.state.experiment_spec import ExperimentSpec
from activekd.state.experiments import ExperimentStore
from tests.tls_certs import write_dev_secrets


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Path]]]:
    exe = shutil.which("redis-server")
    assert exe, "redis-server is needed (make setup installs it)"
    root = tmp_path_factory.mktemp("redis-tls")
    secrets = write_dev_secrets(root / "secrets", ["localhost", "127.0.0.1"])
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(secrets["server.crt"]), "--tls-key-file", str(secrets["server.key"]),
         "--tls-ca-cert-file", str(secrets["ca.crt"]), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"redis-server with TLS did not start: {out[-2000:]}")
        time.sleep(0.1)
    try:
        yield f"rediss://localhost:{port}/0", secrets
    finally:
        proc.terminate()
        proc.wait(10)


def test_state_store_over_tls_and_refusals(tls_redis: tuple[str, dict[str, Path]]) -> None:
    url, secrets = tls_redis
    client = redis_conn.connect(url, ca_file=str(secrets["ca.crt"]))
    assert client.ping()
    store = ExperimentStore(client)
    spec = ExperimentSpec(pool_id="p", class_names=["a", "b"], initial_per_class=1, num_rounds=1)
    exp = store.create(spec, "tls-exp", ["i0", "i1"], [0, 1], pool_size=4)
    assert store.get("tls-exp").version == exp.version and store.labels("tls-exp") == {
        "i0": 0,
        "i1": 1,
    }
    # without our CA the server's certificate is not trusted; plaintext gets no answer
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()
    plain = url.replace("rediss://", "redis://")
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(plain, socket_timeout=2, socket_connect_timeout=2).ping()


def test_a_service_reads_rediss_and_its_ca_from_the_environment(
    tls_redis: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    url, secrets = tls_redis
    auth = local_auth()
    svc = ServiceProcess(
        "selection",
        url,
        str(tmp_path / "store"),
        env={"ACTIVEKD_REDIS_CA_FILE": str(secrets["ca.crt"]), "ACTIVEKD_THREADS": "1"},
        auth=auth,
    ).start()
    try:
        with SelectionClient(svc.target, credentials=auth.credentials("writer")) as sel:
            sel.upload_pool("tls/pool", item_ids=["a", "b", "c"],
                            arrays={"probs": np.eye(3, dtype=np.float32)})  # fmt: skip
            assert sel.describe_pool("tls/pool").num_items == 3
            with pytest.raises(grpc.RpcError) as exc:
                sel.describe_pool("tls/missing")
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        svc.stop()
    # the pool's metadata went to the TLS Redis
    client = redis_conn.connect(url, ca_file=str(secrets["ca.crt"]))
    assert any(b"tls/pool" in k for k in client.keys("*"))
    assert os.environ.get("ACTIVEKD_REDIS_CA_FILE") is None  # nothing leaked into this process
