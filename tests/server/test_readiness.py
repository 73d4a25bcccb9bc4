"""Liveness vs readiness: with Redis gone the readiness names go NOT_SERVING while
``activekd.liveness`` stays SERVING (a Redis outage must not make Kubernetes restart every pod),
and the same process is ready again when Redis returns."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from activekd.server import healthcheck
from tests.procs import RedisProcess, ServiceProcess, free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
READINESS = ("", "activekd.v1.SelectionService")


def _statuses(target: str) -> dict[str, int]:
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        return {
            name: health.Check(health_pb2.HealthCheckRequest(service=name), timeout=3).status
            for name in (*READINESS, healthcheck.LIVENESS_SERVICE)
        }


def _wait_for(target: str, ready: int, within: float) -> dict[str, int]:
    deadline = time.monotonic() + within
    while True:
        got = _statuses(target)
        if all(got[name] == ready for name in READINESS):
            return got
        assert time.monotonic() < deadline, f"readiness still {got} after {within} s"
        time.sleep(0.1)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[ServiceProcess, RedisProcess, int]]:
    redis = RedisProcess(tmp_path / "redis")
    redis.dir.mkdir()
    redis.start()
    health_port = free_port()
    env = {
        "ACTIVEKD_AUTH": "required",
        "ACTIVEKD_AUTH_TOKENS": "admin:readiness-test-token-0123",
        "ACTIVEKD_AUTH_TOKENS_FILE": "",
        "ACTIVEKD_READY_INTERVAL_SECONDS": "0.5",
    }
    svc = ServiceProcess(
        "selection", redis.url, str(tmp_path / "store"), env=env, health_port=health_port
    ).start()
    try:
        yield svc, redis, health_port
    finally:
        svc.stop()
        redis.stop()


def test_redis_outage_is_not_ready_but_alive(
    service: tuple[ServiceProcess, RedisProcess, int],
) -> None:
    svc, redis, health_port = service
    assert svc.proc is not None
    pid = svc.proc.pid
    health_target = f"127.0.0.1:{health_port}"
    for target in (svc.target, health_target):
        assert set(_statuses(target).values()) == {SERVING}
    redis.stop()
    started = time.monotonic()
    for target in (health_target, svc.target):
        got = _wait_for(target, NOT_SERVING, within=5.0)
        assert got[healthcheck.LIVENESS_SERVICE] == SERVING
    assert time.monotonic() - started < 5.0
    assert healthcheck.main(["--port", str(health_port)]) == healthcheck.EXIT_NOT_SERVING
    assert healthcheck.main(["--port", str(health_port), "--liveness"]) == healthcheck.EXIT_SERVING

    redis.start()
    for target in (health_target, svc.target):
        got = _wait_for(target, SERVING, within=10.0)
        assert got[healthcheck.LIVENESS_SERVICE] == SERVING
    assert svc.proc.poll() is None and svc.proc.pid == pid  # the same process, reconnected
    assert healthcheck.main(["--port", str(health_port)]) == healthcheck.EXIT_SERVING


def test_healthcheck_prefers_the_health_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIVEKD_GRPC_PORT", "50051")
    monkeypatch.setenv("ACTIVEKD_HEALTH_PORT", "50061")
    assert healthcheck.default_port() == 50061
    monkeypatch.setenv("ACTIVEKD_HEALTH_PORT", "-1")
    assert healthcheck.default_port() == 50051
    monkeypatch.delenv("ACTIVEKD_HEALTH_PORT")
    assert healthcheck.default_port() == 50051
    monkeypatch.setenv("ACTIVEKD_GRPC_PORT", "0")
    assert healthcheck.default_port() is None
