"""Redis connections from a URL (``redis://host:port/db``, ``rediss://``, ``unix:///path.sock``).

Secrets and TLS come from files, so they stay out of URLs, env dumps and process lists:

- ``ACTIVEKD_REDIS_PASSWORD_FILE``: the password (one line), used when the URL carries none.
- ``ACTIVEKD_REDIS_CA_FILE``: the CA bundle that verifies a ``rediss://`` server.

A command that cannot reach Redis is retried a few times with a short exponential backoff
(:data:`RETRIES`, :data:`BACKOFF_BASE` .. :data:`BACKOFF_CAP` seconds), then raises
``redis.ConnectionError``: a down Redis fails a call within about two seconds instead of hanging,
and the next command after Redis is back reconnects by itself (no restart).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

PASSWORD_FILE_ENV = "ACTIVEKD_REDIS_PASSWORD_FILE"
CA_FILE_ENV = "ACTIVEKD_REDIS_CA_FILE"
#: retries after the first failed attempt of a command
RETRIES = 3
#: backoff between attempts: min(cap, base * 2**failures) seconds
BACKOFF_BASE, BACKOFF_CAP = 0.05, 1.0
CONNECT_TIMEOUT_SECONDS = 2.0
SOCKET_TIMEOUT_SECONDS = 30.0


def _read_secret(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read the file it names ({exc.strerror})") from None
    if not value:
        raise ValueError(f"{what}: the file it names is empty")
    return value


def retry_policy() -> Retry:
    """The bounded retry every connection uses (a fresh object: redis-py mutates it)."""
    return Retry(
        ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE),
        RETRIES,
        supported_errors=(redis.ConnectionError, redis.TimeoutError, TimeoutError),
    )


def connect(
    url: str,
    *,
    password_file: str | None = None,
    ca_file: str | None = None,
    **options: Any,
) -> redis.Redis:
    """A client with health checks, bounded timeouts and bounded retries; raises ``ValueError``
    on a malformed URL or an unusable password/CA setting.

    ``password_file`` / ``ca_file`` default to ``$ACTIVEKD_REDIS_PASSWORD_FILE`` /
    ``$ACTIVEKD_REDIS_CA_FILE`` (empty = unset). ``options`` override the redis-py keyword
    arguments (e.g. ``socket_timeout=1`` for a readiness probe).
    """
    if password_file is None:
        password_file = os.environ.get(PASSWORD_FILE_ENV, "")
    if ca_file is None:
        ca_file = os.environ.get(CA_FILE_ENV, "")
    parts = urlsplit(url)
    kwargs: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "health_check_interval": 30,
        "retry": retry_policy(),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }
    if password_file and parts.password is None:
        kwargs["password"] = _read_secret(password_file, PASSWORD_FILE_ENV)
    if ca_file:
        if parts.scheme != "rediss":
            raise ValueError(
                f"{CA_FILE_ENV} is set but the Redis URL is not rediss:// (TLS); "
                "use rediss:// or unset it"
            )
        if not os.path.isfile(ca_file):
            raise ValueError(f"{CA_FILE_ENV}: the file it names does not exist")
        kwargs["ssl_ca_certs"] = ca_file
        kwargs["ssl_cert_reqs"] = "required"
    kwargs.update(options)
    return redis.Redis.from_url(url, **kwargs)
