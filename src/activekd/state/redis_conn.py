"""Redis connections from a URL (``redis://host:port/db``, ``rediss://``, ``unix:///path.sock``)."""

from __future__ import annotations

import redis


def connect(url: str) -> redis.Redis:
    """A client with health checks and bounded timeouts; raises on a malformed URL."""
    return redis.Redis.from_url(
        url,
        socket_timeout=30,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry_on_timeout=True,
    )
