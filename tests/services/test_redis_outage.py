"""A selection service on a private redis-server: while Redis is down calls fail fast with
UNAVAILABLE and no host details; once Redis is back the same process serves again. Plus
``state.redis_conn.connect``: password and CA files, bounded retries."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from activekd.server.interceptors import REDIS_UNAVAILABLE_MESSAGE
from activekd.state import redis_conn
from activekd.v1 import selection_pb2, selection_pb2_grpc
from tests.procs import RedisProcess, ServiceProcess, redis_server_binary


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[RedisProcess, ServiceProcess]]:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis_server = RedisProcess(redis_dir).start()
    # auth is not what this test is about; off explicitly (the service logs a warning)
    svc = ServiceProcess(
        "selection", redis_server.url, str(tmp_path / "store"), env={"ACTIVEKD_AUTH": "off"}
    )
    try:
        svc.start()
        yield redis_server, svc
    finally:
        svc.stop()
        redis_server.stop()


def _upload(stub: selection_pb2_grpc.SelectionServiceStub, pool_id: str) -> None:
    header = selection_pb2.UploadPoolRequest(
        header=selection_pb2.UploadPoolHeader(pool_id=pool_id, num_items=2)
    )
    chunk = selection_pb2.UploadPoolRequest(
        chunk=selection_pb2.UploadPoolChunk(offset=0, item_ids=["a", "b"])
    )
    stub.UploadPool(iter([header, chunk]), timeout=30)


def test_redis_down_is_unavailable_fast_and_the_service_recovers(
    stack: tuple[RedisProcess, ServiceProcess], tmp_path: Path
) -> None:
    redis_server, svc = stack
    assert svc.proc is not None
    pid = svc.proc.pid
    with grpc.insecure_channel(svc.target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = selection_pb2_grpc.SelectionServiceStub(channel)
        _upload(stub, "outage/before")
        assert (
            stub.DescribePool(
                selection_pb2.DescribePoolRequest(pool_id="outage/before"), timeout=10
            ).pool.num_items
            == 2
        )

        redis_server.stop()
        calls = {
            "DescribePool": lambda: stub.DescribePool(
                selection_pb2.DescribePoolRequest(pool_id="outage/before"), timeout=10
            ),
            "ListPools": lambda: stub.ListPools(selection_pb2.ListPoolsRequest(), timeout=10),
            "UploadPool": lambda: _upload(stub, "outage/during"),
        }
        for name, call in calls.items():
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                call()
            elapsed = time.monotonic() - start
            err = info.value
            assert err.code() == grpc.StatusCode.UNAVAILABLE, (name, err.code(), err.details())
            assert err.details() == REDIS_UNAVAILABLE_MESSAGE
            assert elapsed < 5, f"{name} took {elapsed:.1f} s with Redis down"
            seen = f"{err.details()} {err.debug_error_string()} {err.trailing_metadata()}"
            for secret in ("redis.sock", "/tmp", str(tmp_path)):
                assert secret not in seen, (name, secret)
        assert svc.proc.poll() is None, svc.logs()

        redis_server.start()  # same socket path; an empty database (no persistence here)
        deadline = time.monotonic() + 10
        while True:
            try:
                stub.ListPools(selection_pb2.ListPoolsRequest(), timeout=10)
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() < deadline, "the service did not reconnect to Redis"
                time.sleep(0.2)
        _upload(stub, "outage/after")
        assert (
            stub.DescribePool(
                selection_pb2.DescribePoolRequest(pool_id="outage/after"), timeout=10
            ).pool.num_items
            == 2
        )
    assert svc.proc.poll() is None and svc.proc.pid == pid
    assert "redis.sock" in svc.logs()  # the details are in the service's log, not the answer


# --- state/redis_conn.connect: password and CA files, bounded retries ----------------------------
@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A private redis-server requiring a password; (its unix:// URL, a 0600 password file)."""
    sock = tmp_path / "pw-redis.sock"
    args = ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "s3cret-pw"]
    proc = subprocess.Popen(
        [redis_server_binary(), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    secret = tmp_path / "redis.password"
    secret.write_text("s3cret-pw\n")
    secret.chmod(0o600)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"unix://{sock}", secret
    finally:
        proc.terminate()
        proc.wait(10)


def test_connect_reads_the_password_from_a_file_or_its_env_setting(
    redis_with_password: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, secret = redis_with_password
    monkeypatch.delenv(redis_conn.PASSWORD_FILE_ENV, raising=False)
    with pytest.raises(redis.RedisError):  # NOAUTH
        redis_conn.connect(url).ping()
    assert redis_conn.connect(url, password_file=str(secret)).ping()
    monkeypatch.setenv(redis_conn.PASSWORD_FILE_ENV, str(secret))
    assert redis_conn.connect(url).ping()
    with pytest.raises(redis.AuthenticationError):  # a password in the URL wins over the file
        redis_conn.connect(url.replace("unix://", "unix://:wrong-pw@")).ping()


def test_connect_refuses_unusable_secret_settings(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "redis.password"
    with pytest.raises(ValueError, match=redis_conn.PASSWORD_FILE_ENV) as info:
        redis_conn.connect("redis://localhost:6379/0", password_file=str(missing))
    assert str(missing) not in str(info.value)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        redis_conn.connect("redis://localhost:6379/0", password_file=str(empty))
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="rediss://"):  # a CA without TLS is a mistake
        redis_conn.connect("redis://localhost:6379/0", ca_file=str(ca))
    with pytest.raises(ValueError, match=redis_conn.CA_FILE_ENV):
        redis_conn.connect("rediss://localhost:6380/0", ca_file=str(tmp_path / "nope.crt"))
    client = redis_conn.connect("rediss://localhost:6380/0", ca_file=str(ca))
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == str(ca) and kwargs["ssl_cert_reqs"] == "required"


def test_a_down_redis_fails_a_command_within_two_seconds(tmp_path: Path) -> None:
    client = redis_conn.connect(f"unix://{tmp_path / 'nobody-here.sock'}")
    start = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        client.get("x")
    assert time.monotonic() - start < 2.0
    assert client.get_retry().get_retries() == redis_conn.RETRIES
