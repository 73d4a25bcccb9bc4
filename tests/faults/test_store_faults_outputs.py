"""What the teacher and the trainer write, under store faults, on real service processes.

The teacher's ScorePool writes a teacher pool (probs + features) and the trainer's TrainRound
writes a checkpoint (and, with ``predict_pool``, a student pool). A full disk (RLIMIT_FSIZE:
writes past it fail EFBIG) is RESOURCE_EXHAUSTED and a read-only store FAILED_PRECONDITION, each
with the fixed message and no host path; nothing half-written stays (no pool, no version dir, no
temp checkpoint), a previous checkpoint keeps its bytes, Redis holds what it held, and the same
process goes on serving what fits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import redis

from activekd.client import TeacherClient, TrainerClient
from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from activekd.server.interceptors import (
    ACCESS_DENIED_MESSAGE,
    STORE_FULL_MESSAGE,
    STORE_READ_ONLY_MESSAGE,
)
from activekd.state.experiment_spec import ExperimentSpec
from activekd.state.experiments import ExperimentStore
from activekd.store import PoolStore
from tests.faults.test_store_faults import _read_only_prefix
from tests.procs import RedisProcess, ServiceProcess
from tests.services.conftest import tiny_teacher_env

C = len(FASHION_MNIST_CLASSES)
N = 120  # pool rows
#: a file may grow to this in the "small disk" services: the small student's checkpoint and a
#: 40-row teacher pool fit, the wide student's checkpoint and a 600-row teacher pool do not
FSIZE = 48 * 1024
SMALL = {"widths": [8, 16], "hidden": 32}
WIDE = {"widths": [32, 64], "hidden": 256}


@pytest.fixture(scope="module")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """This module's own Redis: a dump of all of it is the state a fault must not change."""
    server = RedisProcess(tmp_path_factory.mktemp("outputs-redis")).start()
    try:
        yield server
    finally:
        server.stop()


def _redis_dump(client: redis.Redis) -> dict[bytes, Any]:
    """Every key and its value, read by type (a DUMP payload also encodes the field order)."""
    readers = {
        b"string": client.get,
        b"hash": client.hgetall,
        b"set": client.smembers,
        b"list": lambda k: client.lrange(k, 0, -1),
        b"zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        b"stream": lambda k: client.xrange(k),
    }
    return {k: (kind := client.type(k), readers[kind](k)) for k in sorted(client.scan_iter())}


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _version_dirs(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("v-*") if p.is_dir())


# ------------------------------------------------------------------------------------ teacher
@pytest.fixture(scope="module")
def images_npy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, _ = load_fashion_mnist("test")
    path = tmp_path_factory.mktemp("fault-sources") / "images.npy"
    np.save(path, x[:600])
    return path


def _teacher(
    redis_proc: RedisProcess,
    checkpoint: Path,
    store: Path,
    cache: Path,
    data_root: Path,
    **kw: Any,
) -> ServiceProcess:
    env = tiny_teacher_env(
        checkpoint, ACTIVEKD_CACHE_DIR=str(cache), ACTIVEKD_DATA_ROOTS=str(data_root)
    )
    return ServiceProcess("teacher", redis_proc.url, str(store), env=env, **kw)


def _score(svc: ServiceProcess, npy: Path, limit: int, out: str) -> Any:
    with TeacherClient(svc.target, credentials=svc.credentials("writer"), timeout=120) as t:
        return list(t.score_pool(array_uri=str(npy), limit=limit, output_pool_id=out))[-1]


def test_score_pool_on_a_full_store_is_resource_exhausted_and_stores_no_pool(
    redis_proc: RedisProcess, tiny_clip_checkpoint: Path, images_npy: Path, tmp_path: Path
) -> None:
    store, cache = tmp_path / "store", tmp_path / "cache"
    store.mkdir()
    cache.mkdir()
    client = redis_proc.client()
    svc = _teacher(
        redis_proc, tiny_clip_checkpoint, store, cache, images_npy.parent, rlimit_fsize=FSIZE
    )
    try:
        svc.start()
        before = _redis_dump(client)
        with pytest.raises(grpc.RpcError) as info:
            _score(svc, images_npy, 600, "full/teacher")
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
        assert info.value.details() == STORE_FULL_MESSAGE
        assert str(store) not in info.value.details()
        assert _redis_dump(client) == before  # no pool, no unfinished write kept
        assert not (store / "full").exists() or _files(store / "full") == {}
        assert _version_dirs(store) == []
        for path in cache.rglob("*.npy"):  # resume chunks that were written are whole files
            np.load(path)
        # the same process stores a pool that fits
        small = _score(svc, images_npy, 40, "full/small")
        assert small.pool is not None and small.pool.num_items == 40
        pools = PoolStore(str(store), client)
        assert pools.open_array("full/small", "probs").shape == (40, C)
        assert svc.proc is not None and svc.proc.poll() is None
    finally:
        svc.stop()
    # nothing the failure left in the store or the cache stops a teacher with space
    roomy = _teacher(redis_proc, tiny_clip_checkpoint, store, cache, images_npy.parent)
    try:
        roomy.start()
        done = _score(roomy, images_npy, 600, "full/teacher")
        assert done.pool is not None and done.pool.num_items == 600 and done.chunks_resumed == 0
        np.testing.assert_allclose(
            pools.open_array("full/teacher", "probs")[:40],
            pools.open_array("full/small", "probs"),
            atol=1e-5,
        )
    finally:
        roomy.stop()


def test_score_pool_on_a_read_only_store_is_failed_precondition_and_stores_nothing(
    redis_proc: RedisProcess, tiny_clip_checkpoint: Path, images_npy: Path, tmp_path: Path
) -> None:
    store, cache = tmp_path / "ro-store", tmp_path / "cache"
    store.mkdir()
    cache.mkdir()
    client = redis_proc.client()
    prefix, how = _read_only_prefix(store)
    svc = _teacher(
        redis_proc, tiny_clip_checkpoint, store, cache, images_npy.parent, command_prefix=prefix
    )
    try:
        svc.start()
        before = _redis_dump(client)
        with pytest.raises(grpc.RpcError) as info:
            _score(svc, images_npy, 40, "ro/teacher")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, (how, info.value)
        want = STORE_READ_ONLY_MESSAGE if how == "bind mount" else ACCESS_DENIED_MESSAGE
        assert info.value.details() == want, how
        assert _redis_dump(client) == before
        assert list(store.iterdir()) == []
        assert svc.proc is not None and svc.proc.poll() is None
    finally:
        svc.stop()
        store.chmod(0o755)


# ------------------------------------------------------------------------------------ trainer
def _put_world(store: Path, client: redis.Redis, exp_id: str) -> None:
    """A 120-row Fashion-MNIST pool, a synthetic teacher pool and an experiment of 2 labels a
    class, written by the test process (not by the service under test)."""
    x, y = load_fashion_mnist("train")
    x, y = x[:N], y[:N]
    ids = [f"fm-{i:04d}" for i in range(N)]
    probs = np.full((N, C), 0.05, np.float32)
    probs[np.arange(N), y] += 0.5
    pools = PoolStore(str(store), client)
    pools.put("fault/pool", ids, {"images": x, "labels": y}, overwrite=True)
    pools.put("fault/teacher", ids, {"probs": probs / probs.sum(1, keepdims=True)}, overwrite=True)
    rows = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(C)])
    spec = ExperimentSpec(
        pool_id="fault/pool",
        dataset="fashion-mnist-faults",
        class_names=list(FASHION_MNIST_CLASSES),
        teacher_config={"pool_id": "fault/teacher"},
        student_config={
            "steps": 4,
            "batch_size_labeled": 8,
            "batch_size_unlabeled": 16,
            "threads": 1,
            "backbone_args": SMALL,
        },
        strategy="random",
        initial_item_ids=[ids[r] for r in rows],
        initial_labels=[int(y[r]) for r in rows],
        budget_per_round=5,
        num_rounds=2,
        seed=3,
    )
    ExperimentStore(client).create(spec, exp_id)


def _trainer(redis_proc: RedisProcess, store: Path, **kw: Any) -> ServiceProcess:
    env = {"ACTIVEKD_DEVICE": "cpu", "ACTIVEKD_THREADS": "1"}
    return ServiceProcess("trainer", redis_proc.url, str(store), env=env, **kw)


def _train(svc: ServiceProcess, exp: str, backbone_args: dict[str, Any], **kw: Any) -> Any:
    with TrainerClient(svc.target, credentials=svc.credentials("writer"), timeout=120) as t:
        config = {"backbone_args": backbone_args}
        return t.train_round_result(exp, 0, student_config=config, **kw)


def test_a_checkpoint_past_a_full_disk_is_resource_exhausted_and_keeps_the_previous_one(
    redis_proc: RedisProcess, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    client = redis_proc.client()
    _put_world(store, client, "ckpt-full")
    svc = _trainer(redis_proc, store, rlimit_fsize=FSIZE)
    try:
        svc.start()
        first = _train(svc, "ckpt-full", SMALL)  # fits
        folder = store / "checkpoints" / "ckpt-full"
        assert first.checkpoint.size_bytes < FSIZE
        before_files, before_redis = _files(store), _redis_dump(client)
        for kwargs in ({}, {"predict_pool": True}):
            with pytest.raises(grpc.RpcError) as info:
                _train(svc, "ckpt-full", WIDE, **kwargs)  # its checkpoint does not fit
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
            assert info.value.details() == STORE_FULL_MESSAGE
            assert sorted(p.name for p in folder.iterdir()) == ["round-0.ckpt"]  # no temp file
            assert _files(store) == before_files  # the old checkpoint, byte for byte
            assert _redis_dump(client) == before_redis
        again = _train(svc, "ckpt-full", SMALL, predict_pool=True)  # the process goes on
        assert again.student_pool is not None and again.student_pool.num_items == N
        assert svc.proc is not None and svc.proc.poll() is None
    finally:
        svc.stop()


def test_a_read_only_store_fails_the_round_and_writes_no_checkpoint(
    redis_proc: RedisProcess, tmp_path: Path
) -> None:
    store = tmp_path / "ro-store"
    store.mkdir()
    client = redis_proc.client()
    _put_world(store, client, "ckpt-ro")
    prefix, how = _read_only_prefix(store)
    svc = _trainer(redis_proc, store, command_prefix=prefix)
    try:
        svc.start()
        before_files, before_redis = _files(store), _redis_dump(client)
        with pytest.raises(grpc.RpcError) as info:
            _train(svc, "ckpt-ro", SMALL)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, (how, info.value)
        want = STORE_READ_ONLY_MESSAGE if how == "bind mount" else ACCESS_DENIED_MESSAGE
        assert info.value.details() == want, how
        assert str(store) not in info.value.details()
        assert _files(store) == before_files
        assert not (store / "checkpoints").exists()
        assert _redis_dump(client) == before_redis
        assert svc.proc is not None and svc.proc.poll() is None
    finally:
        svc.stop()
        store.chmod(0o755)
