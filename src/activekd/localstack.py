"""Deprecated path (one release): use :mod:`activekd.orchestration.local_services`.

``LocalStack`` is the old name of :class:`~activekd.orchestration.local_services.LocalServices`.
"""

from activekd.orchestration.local_services import (
    SERVICES,
    LocalServices,
    RedisProcess,
    ServiceProcess,
    free_port,
    redis_server_binary,
)

LocalStack = LocalServices

__all__ = [
    "SERVICES",
    "LocalServices",
    "LocalStack",
    "RedisProcess",
    "ServiceProcess",
    "free_port",
    "redis_server_binary",
]
