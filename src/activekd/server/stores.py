"""The pool store every service opens from its settings (one copy of the rule)."""

from __future__ import annotations

import json
from typing import Any, Protocol

import redis

from activekd.store import PoolStore


def storage_options(raw: str) -> dict[str, Any]:
    """``ACTIVEKD_STORE_OPTIONS`` as a dict (ValueError naming the setting when it is not one)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ACTIVEKD_STORE_OPTIONS is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ValueError("ACTIVEKD_STORE_OPTIONS must be a JSON object of fsspec storage options")
    return value


class StoreSettings(Protocol):
    """The three store settings (:class:`ServerConfig`, the annotation worker's config)."""

    @property
    def store_uri(self) -> str: ...
    @property
    def store_cache_dir(self) -> str: ...
    @property
    def store_options(self) -> str: ...


def open_pool_store(config: StoreSettings, client: redis.Redis) -> PoolStore:
    """The pool store at ``config.store_uri`` (local path, or a remote URI with a local cache)."""
    return PoolStore(
        config.store_uri,
        client,
        cache_dir=config.store_cache_dir or None,
        storage_options=storage_options(config.store_options),
    )
