"""Re-export of ``activekd.localstack`` for the tests (real Redis and service processes)."""

from activekd.localstack import (
    LocalStack,
    RedisProcess,
    ServiceProcess,
    free_port,
    redis_server_binary,
)

__all__ = ["LocalStack", "RedisProcess", "ServiceProcess", "free_port", "redis_server_binary"]
