"""Re-export of ``activekd.orchestration.local_services`` for the tests (real Redis and service
processes)."""

from activekd.orchestration.local_services import (
    LocalAuth,
    LocalServices,
    RedisProcess,
    ServiceProcess,
    free_port,
    local_auth,
    redis_server_binary,
)

__all__ = [
    "LocalAuth",
    "LocalServices",
    "RedisProcess",
    "ServiceProcess",
    "free_port",
    "local_auth",
    "redis_server_binary",
]
