"""Start any activekd service: grpc.aio server, health, reflection, metrics, logs, graceful shutdown."""

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
from activekd.server.config import ServerConfig
from activekd.server.interceptors import ServerInterceptor
from activekd.server.logs import configure_logging

log = logging.getLogger("activekd.server")


@dataclass
class Service:
    """What a service module hands the bootstrap: its gRPC names, how to register it, cleanup."""

    full_names: Sequence[str]
    register: Callable[[grpc.aio.Server], None]
    close: Callable[[], Awaitable[None]] | None = None
    on_serving: Callable[[], Awaitable[None]] | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)


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


@dataclass
class RunningServer:
    """A started server (``port`` is the bound gRPC port)."""

    config: ServerConfig
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    service: Service
    port: int
    metrics_port: int | None

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: health NOT_SERVING, then ``stop(grace)``, then the service's close()."""
        grace = self.config.grace_seconds if grace is None else grace
        log.info("shutting down", extra={"grace_seconds": grace})
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for task in self.service.background:
            task.cancel()
        if self.service.close is not None:
            await self.service.close()
        if self.metrics_port is not None:
            metrics.stop_metrics_server(self.metrics_port)
        log.info("stopped")


async def start(config: ServerConfig, service: Service) -> RunningServer:
    """Build, register and start the server; returns once it listens."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(interceptors=[ServerInterceptor()], options=options)
    service.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*service.full_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"{config.grpc_host}:{config.grpc_port}")
    if port == 0:
        raise SystemExit(f"could not bind gRPC port {config.grpc_host}:{config.grpc_port}")
    await server.start()
    metrics_port = None
    if config.metrics_port >= 0:
        metrics_port = metrics.start_metrics_server(config.metrics_port)
    if service.on_serving is not None:
        await service.on_serving()
    for name in ("", *service.full_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "listening",
        extra={
            "grpc_port": port,
            "metrics_port": metrics_port,
            "services": list(service.full_names),
        },
    )
    return RunningServer(config, server, health_servicer, service, port, metrics_port)


def run(
    service_name: str,
    factory: Callable[[ServerConfig], Awaitable[Service]],
    argv: list[str] | None = None,
    extra_keys: tuple[str, ...] = (),
) -> int:
    """Entry point of every service's ``__main__``: serve until SIGTERM/SIGINT, then shut down gracefully."""
    config = ServerConfig.load(service_name, argv, extra_keys)
    configure_logging(service_name, config.log_level)

    async def main() -> None:
        service = await factory(config)
        running = await start(config, service)
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
