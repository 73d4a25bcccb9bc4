"""Services as real subprocesses on loopback, sharing the session's real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import RedisProcess, ServiceProcess


@pytest.fixture(scope="module")
def selection_service(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    store = tmp_path_factory.mktemp("store")
    svc = ServiceProcess("selection", redis_server.url, str(store),
                         env={"ACTIVEKD_MAX_MESSAGE_BYTES": str(8 * 1024 * 1024)}).start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def store_root(selection_service: ServiceProcess) -> Path:
    return Path(selection_service.store_uri)
