"""Start any activekd service: grpc.aio server, auth, TLS, health, reflection, metrics, logs,
graceful shutdown.

Health answers two questions (both on the gRPC port and, when ``health_port >= 0``, on a
plaintext health-only port for probes):

- liveness, service ``activekd.liveness``: SERVING from start until shutdown;
- readiness, service ``""`` and each full service name: SERVING while the state store (Redis)
  answers a ping (checked every ``ready_interval_seconds``), NOT_SERVING while it does not, so an
  outage takes pods out of load balancing instead of restarting them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from activekd.server import metrics
from activekd.server.allocator import apply_malloc_settings, check_mmap_threshold
from activekd.server.auth import AuthInterceptor, auth_from_config
from activekd.server.config import ServerConfig
from activekd.server.healthcheck import LIVENESS_SERVICE
from activekd.server.interceptors import ServerInterceptor
from activekd.server.limits import Limits
from activekd.server.logs import configure_logging
from activekd.server.tls import server_credentials, tls_mode

log = logging.getLogger("activekd.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_PING_TIMEOUT = 1.0  # seconds a readiness ping may take


@dataclass
class Service:
    """What a service module hands the bootstrap: its gRPC names, how to register it, cleanup.

    ``ready`` replaces the default readiness check (a ping of ``config.redis_url``): a blocking
    callable, run in a thread, that returns True when the service can serve.
    """

    full_names: Sequence[str]
    register: Callable[[grpc.aio.Server], None]
    close: Callable[[], Awaitable[None]] | None = None
    on_serving: Callable[[], Awaitable[None]] | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    ready: Callable[[], bool] | None = None


def grpc_service(
    pb2_module: object,
    service_name: str,
    add_to_server: Callable[[object, grpc.aio.Server], None],
    servicer: object,
    close: Callable[[], Awaitable[None]] | None = None,
) -> Service:
    """The usual Service: one servicer registered with its generated ``add_*_to_server``."""
    descriptor = pb2_module.DESCRIPTOR  # type: ignore[attr-defined]
    return Service(
        full_names=[descriptor.services_by_name[service_name].full_name],
        register=lambda server: add_to_server(servicer, server),
        close=close,
    )


class RedisPing:
    """The default readiness check: one Redis PING with a short timeout (blocking)."""

    def __init__(self, url: str) -> None:
        from activekd.state.redis_conn import connect

        self.client = connect(
            url, socket_timeout=_PING_TIMEOUT, socket_connect_timeout=_PING_TIMEOUT
        )

    def __call__(self) -> bool:
        return bool(self.client.ping())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


@dataclass(frozen=True)
class Security:
    """What :func:`prepare` read from the config: the auth interceptor (None = auth off), the
    server credentials (None = plaintext), the reflection mode and the limits."""

    auth: AuthInterceptor | None
    credentials: grpc.ServerCredentials | None
    reflection: str
    transport: str
    limits: Limits


def prepare(config: ServerConfig) -> Security:
    """Check the auth/TLS/reflection/limit settings; ``SystemExit`` with one line if they cannot
    work.

    :func:`run` calls this before the service's factory, so a bad setting fails before models load.
    """
    mode = config.reflection.strip().lower()
    if mode not in ("open", "auth", "off"):
        raise SystemExit(
            f"ACTIVEKD_REFLECTION={config.reflection[:32]!r} is not one of: open, auth, off"
        )
    return Security(
        auth_from_config(config),
        server_credentials(config),
        mode,
        tls_mode(config),
        Limits.from_config(config),
    )


class Readiness:
    """Sets the readiness names SERVING/NOT_SERVING from a periodic check (never liveness)."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        names: Sequence[str],
        check: Callable[[], bool] | None,
        interval: float,
    ) -> None:
        self.servicer, self.names = servicer, tuple(names)
        self.check, self.interval = check, interval
        self.ready: bool | None = None
        self._pending: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[None] | None = None

    async def probe(self) -> bool:
        """Run the check in a thread; a check still running from last time counts as not ready."""
        if self.check is None:
            return True
        if self._pending is None:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self.check))
        done, _ = await asyncio.wait({self._pending}, timeout=max(_PING_TIMEOUT, self.interval))
        if not done:
            return False
        future, self._pending = self._pending, None
        try:
            return bool(future.result())
        except Exception as exc:  # redis.ConnectionError, TimeoutError, OSError...
            if self.ready is not False:
                log.warning("readiness check failed", extra={"error": type(exc).__name__})
            return False

    async def update(self) -> bool:
        ok = await self.probe()
        if ok != self.ready:
            if self.ready is not None:
                log.log(
                    logging.INFO if ok else logging.WARNING,
                    "ready" if ok else "not ready: state store (Redis) unreachable",
                )
            self.ready = ok
            for name in self.names:
                await self.servicer.set(name, SERVING if ok else NOT_SERVING)
        return ok

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.update()
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - keep probing whatever happens
                log.exception("readiness update failed")

    def start(self) -> None:
        if self.check is not None and self.interval > 0:
            self._task = asyncio.create_task(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        close = getattr(self.check, "close", None)
        if callable(close):
            close()


@dataclass
class RunningServer:
    """A started server (``port`` is the bound gRPC port, ``health_port`` the plaintext one)."""

    config: ServerConfig
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    service: Service
    port: int
    metrics_port: int | None
    health_port: int | None = None
    health_server: grpc.aio.Server | None = None
    readiness: Readiness | None = None

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: health NOT_SERVING, then ``stop(grace)``, then the service's close()."""
        grace = self.config.grace_seconds if grace is None else grace
        log.info("shutting down", extra={"grace_seconds": grace})
        if self.readiness is not None:
            self.readiness.stop()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        for task in self.service.background:
            task.cancel()
        if self.service.close is not None:
            await self.service.close()
        if self.metrics_port is not None:
            metrics.stop_metrics_server(self.metrics_port)
        log.info("stopped")


async def _start_health_server(
    config: ServerConfig, servicer: health.aio.HealthServicer
) -> tuple[grpc.aio.Server, int]:
    """The plaintext health-only server (no auth: probes send no token or client certificate)."""
    server = grpc.aio.server(maximum_concurrent_rpcs=256, options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{config.grpc_host}:{config.health_port}")
    if port == 0:
        raise SystemExit(f"could not bind health port {config.grpc_host}:{config.health_port}")
    await server.start()
    return server, port


async def start(
    config: ServerConfig, service: Service, security: Security | None = None
) -> RunningServer:
    """Build, register and start the server; returns once it listens.

    ``security`` is :func:`prepare`'s answer for ``config`` (computed here when None).
    """
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    security = prepare(config) if security is None else security
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if security.auth is not None:
        interceptors.append(security.auth)  # outermost: refuses before anything else runs
    interceptors.append(ServerInterceptor(limits=security.limits))
    server = grpc.aio.server(interceptors=interceptors, options=options)
    service.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if security.reflection != "off":
        names = [*service.full_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
    address = f"{config.grpc_host}:{config.grpc_port}"
    if security.credentials is not None:
        port = server.add_secure_port(address, security.credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise SystemExit(f"could not bind gRPC port {address}")
    check: Callable[[], bool] | None = service.ready
    if check is None and config.ready_interval_seconds > 0:
        check = RedisPing(config.redis_url)
    readiness = Readiness(
        health_servicer, ("", *service.full_names), check, config.ready_interval_seconds
    )
    await server.start()
    health_server, health_port = None, None
    if config.health_port >= 0:
        health_server, health_port = await _start_health_server(config, health_servicer)
    metrics_port = None
    if config.metrics_port >= 0:
        metrics_port = metrics.start_metrics_server(config.metrics_port)
    if service.on_serving is not None:
        await service.on_serving()
    await health_servicer.set(LIVENESS_SERVICE, SERVING)
    await readiness.update()
    readiness.start()
    log.info(
        "listening",
        extra={
            "grpc_port": port,
            "health_port": health_port,
            "metrics_port": metrics_port,
            "services": list(service.full_names),
            "transport": security.transport,
            "auth": "required" if security.auth is not None else "off",
            "reflection": security.reflection,
        },
    )
    return RunningServer(
        config,
        server,
        health_servicer,
        service,
        port,
        metrics_port,
        health_port,
        health_server,
        readiness,
    )


def run(
    service_name: str,
    factory: Callable[[ServerConfig], Awaitable[Service]],
    argv: list[str] | None = None,
    extra_keys: tuple[str, ...] = (),
) -> int:
    """Entry point of every service's ``__main__``: serve until SIGTERM/SIGINT, then shut down gracefully."""
    config = ServerConfig.load(service_name, argv, extra_keys)
    configure_logging(service_name, config.log_level)
    apply_malloc_settings(check_mmap_threshold(config.malloc_mmap_threshold), config.malloc)
    security = prepare(config)  # fail fast, before models load

    async def main() -> None:
        service = await factory(config)
        running = await start(config, service, security)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(running.server.wait_for_termination())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        await running.stop()
        waiter.cancel()

    asyncio.run(main())
    return 0
