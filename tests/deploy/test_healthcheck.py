"""`python -m activekd.server.healthcheck` (container HEALTHCHECK) against a real gRPC server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from activekd.server import healthcheck
from tests.procs import free_port

NAME = "activekd.v1.TeacherService"


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(0)


def test_exit_codes_follow_the_serving_status(
    health_server: tuple[int, health.HealthServicer], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, servicer = health_server
    servicer.set(NAME, health_pb2.HealthCheckResponse.SERVING)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main(["--port", str(port), "--service", NAME]) == 0
    assert healthcheck.main(["--port", str(port)]) == 0
    servicer.set(NAME, health_pb2.HealthCheckResponse.NOT_SERVING)  # graceful shutdown
    assert healthcheck.main(["--port", str(port), "--service", NAME]) == 1
    assert healthcheck.main(["--port", str(port), "--service", "activekd.v1.Nope"]) == 1
    monkeypatch.setenv("ACTIVEKD_GRPC_PORT", str(port))
    assert healthcheck.main([]) == 0  # the port comes from the service's own env


def test_unreachable_or_unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert healthcheck.main(["--port", str(free_port()), "--timeout", "0.5"]) == 2
    monkeypatch.delenv("ACTIVEKD_GRPC_PORT", raising=False)
    assert healthcheck.main([]) == 2
    monkeypatch.setenv("ACTIVEKD_GRPC_PORT", "0")  # "pick a free port" cannot be probed
    assert healthcheck.main([]) == 2


def test_module_entry_point(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    servicer.set(NAME, health_pb2.HealthCheckResponse.SERVING)
    cmd = [sys.executable, "-m", "activekd.server.healthcheck", "--port", str(port), "--service"]
    ok = subprocess.run([*cmd, NAME], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "SERVING" in ok.stdout
    servicer.set(NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    bad = subprocess.run([*cmd, NAME], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "NOT_SERVING" in bad.stdout
