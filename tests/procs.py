"""Re-export of ``activekd.orchestration.local_services`` for the tests (real Redis and service
processes)."""

from activekd.orchestration.local_services import (
    LocalServices,
    RedisProcess,
    ServiceProcess,
    free_port,
    redis_server_binary,
)

__all__ = ["LocalServices", "RedisProcess", "ServiceProcess", "free_port", "redis_server_binary"]
