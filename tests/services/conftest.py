"""Services as real subprocesses on loopback, sharing the session's real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import RedisProcess, ServiceProcess


@pytest.fixture(scope="module")
def selection_service(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    store = tmp_path_factory.mktemp("store")
    svc = ServiceProcess(
        "selection",
        redis_server.url,
        str(store),
        env={"ACTIVEKD_MAX_MESSAGE_BYTES": str(8 * 1024 * 1024)},
    ).start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def store_root(selection_service: ServiceProcess) -> Path:
    return Path(selection_service.store_uri)


# --- teacher service ----------------------------------------------------------------------------
def tiny_teacher_env(checkpoint: Path, **extra: str) -> dict[str, str]:
    """Env for a teacher service running the tiny CLIP on CPU (fast enough for tests)."""
    import json

    from activekd.data.templates import FASHION_MNIST_TEMPLATES

    return {
        "ACTIVEKD_TEACHER_BACKEND": "open_clip",
        "ACTIVEKD_TEACHER_MODEL": "tiny-clip-32",
        "ACTIVEKD_TEACHER_PRETRAINED": str(checkpoint),
        "ACTIVEKD_TEACHER_TEMPLATES": json.dumps(list(FASHION_MNIST_TEMPLATES)),
        "ACTIVEKD_TEACHER_TARGET": "0.7",  # the experiment service's setting: must be ignored
        "ACTIVEKD_DEVICE": "cpu",
        "ACTIVEKD_THREADS": "1",
        **extra,
    }


@pytest.fixture(scope="module")
def teacher_service(
    redis_server: RedisProcess, tiny_clip_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The teacher service with the tiny CLIP; ``ACTIVEKD_CACHE_DIR`` is an empty temp folder
    (tests drop precomputed cache files there) and the batcher waits up to 30 ms per batch.
    ScorePool may read sources anywhere under the session's temp folder (``ACTIVEKD_DATA_ROOTS``),
    where the tests write them."""
    env = tiny_teacher_env(
        tiny_clip_checkpoint,
        ACTIVEKD_CACHE_DIR=str(tmp_path_factory.mktemp("teacher-cache")),
        ACTIVEKD_MAX_QUEUE_DELAY_MS="30",
        ACTIVEKD_MAX_BATCH_SIZE="32",
        ACTIVEKD_DATA_ROOTS=str(tmp_path_factory.getbasetemp()),
    )
    svc = ServiceProcess(
        "teacher", redis_server.url, str(tmp_path_factory.mktemp("teacher-store")), env=env
    ).start()
    try:
        yield svc
    finally:
        svc.stop()


# --- trainer service ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trainer_service(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """TrainerService on CPU, one torch thread, 16 KiB GetCheckpoint chunks (to see chunking)."""
    store = tmp_path_factory.mktemp("trainer-store")
    svc = ServiceProcess(
        "trainer",
        redis_server.url,
        str(store),
        env={
            "ACTIVEKD_DEVICE": "cpu",
            "ACTIVEKD_THREADS": "1",
            "ACTIVEKD_CHECKPOINT_CHUNK_BYTES": str(16 * 1024),
        },
    ).start()
    try:
        yield svc
    finally:
        svc.stop()
