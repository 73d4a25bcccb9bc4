"""Teacher scoring as a Ray Data job on one real local Ray instance (token auth on, 2 CPUs, 2
actors each holding the real label-map teacher): the sharded pool equals ScorePool's outputs
bitwise at the same chunk size, is a cache hit for ScorePool afterwards, resumes a killed job with
only the missing shards, and survives a worker killed mid-job."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from activekd.distributed.ray_kcenter import RayCluster
from activekd.distributed.ray_scoring import (
    ActorCheck,
    ScoringJob,
    ScoringProgress,
    ShardScorer,
    StoreSpec,
    score_on_ray,
)
from activekd.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from activekd.store import PoolStore
from activekd.teacher.cache import TeacherCacheIndex
from activekd.teacher.pool_job import PoolScorer, resolve_source
from tests.procs import RedisProcess

TEACHER = {"backend": "label-map", "device": "cpu"}


@pytest.fixture
def setup(
    tmp_path: Path, redis_server: RedisProcess, redis_client: redis.Redis
) -> tuple[StoreSpec, PoolStore, str, np.ndarray]:
    from activekd.data.fashion_mnist import load_fashion_mnist

    root = tmp_path / "store"
    spec = StoreSpec(str(root), redis_server.url)
    store = spec.open()
    images = np.ascontiguousarray(load_fashion_mnist("test")[0][:40])
    path = root / "inputs" / "images.npy"
    path.parent.mkdir(parents=True)
    np.save(path, images)
    return spec, store, str(path), images


def _job(ref: str, **kw: object) -> ScoringJob:
    return ScoringJob(TEACHER, "array_uri", ref, dataset="fm40", **kw)  # type: ignore[arg-type]


def _scorepool(store: PoolStore, ref: str, pool_id: str, chunk: int, threads: int = 0) -> Any:
    """ScorePool in-process (the library the teacher service runs); ``threads``: torch's CPU
    threads meanwhile (0: unchanged)."""
    import torch

    from activekd.teacher import create_teacher

    scorer = PoolScorer(store, TeacherCacheIndex([]))

    async def run() -> Any:
        last = None
        async for u in scorer.score(
            create_teacher(TEACHER),
            "array_uri",
            ref,
            dataset="fm40",
            pool_id=pool_id,
            chunk_size=chunk,
        ):
            last = u
        return last

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return asyncio.run(run())
    finally:
        torch.set_num_threads(before)


def test_ray_job_equals_scorepool_and_is_its_cache(
    cluster: RayCluster, setup: tuple[StoreSpec, PoolStore, str, np.ndarray]
) -> None:
    spec, store, ref, _ = setup
    seen: list[ScoringProgress] = []
    res = score_on_ray(_job(ref, shard_rows=16), spec, progress=seen.append)
    meta = res.meta
    assert not res.cached and res.shards_scored == 3 and res.shards_resumed == 0
    assert meta.pool_id.startswith("teacher/") and meta.pool_id.endswith("/fm40")
    assert meta.shard_rows == 16 and meta.num_items == 40
    assert meta.metadata["scorer"] == "ray-data" and meta.metadata["features"] == "true"
    assert [p.done for p in seen] == sorted(p.done for p in seen) and seen[0].done == 0
    assert seen[-1].done == 40 and {p.shard for p in seen[1:]} == {(0, 16), (16, 32), (32, 40)}
    assert len({p.worker_pid for p in seen[1:]} - {os.getpid()}) >= 1  # scored in actors
    # bitwise equal to ScorePool at the same chunk size, device and CPU threads (each actor
    # reserves 1 CPU, so Ray gives it 1 thread; torch's CPU kernels split work by thread count)
    flat = _scorepool(store, ref, "flat/fm40", 16, threads=1)
    assert flat.meta is not None and flat.meta.shard_rows == 0
    default_threads = _scorepool(store, ref, "flat2/fm40", 16)
    for name in ("probs", "features"):
        got, want = store.open_array(meta.pool_id, name), store.open_array("flat/fm40", name)
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_array_equal(got, want)
        # with this process's own thread count: equal within float32 rounding
        other = store.open_array(default_threads.meta.pool_id, name)
        np.testing.assert_allclose(got, other, rtol=1e-4, atol=1e-5)
    # the same rule serves both ways: ScorePool on the Ray job's pool is a cache hit ...
    hit = _scorepool(store, ref, meta.pool_id, 256)
    assert hit.cached and hit.meta.version == meta.version
    # ... and so is the Ray job again
    again = score_on_ray(_job(ref, shard_rows=16), spec)
    assert again.cached and again.meta.version == meta.version and again.shards_scored == 0


class _Stop(Exception):
    pass


def test_a_killed_job_resumes_with_only_the_missing_shards(
    cluster: RayCluster, setup: tuple[StoreSpec, PoolStore, str, np.ndarray]
) -> None:
    spec, store, ref, _ = setup
    job = _job(ref, shard_rows=8, pool_id="ray/resume")

    def die_after_two(p: ScoringProgress) -> None:
        if p.done >= 16:
            raise _Stop  # the driver dies with two shards written

    with pytest.raises(_Stop):
        score_on_ray(job, spec, progress=die_after_two)
    assert not store.exists("ray/resume")
    res = score_on_ray(job, spec)
    assert res.shards_resumed >= 2 and res.shards_resumed + res.shards_scored == 5
    full = score_on_ray(_job(ref, shard_rows=8, pool_id="ray/full"), spec)
    for name in ("probs", "features"):
        np.testing.assert_array_equal(
            store.open_array("ray/resume", name), store.open_array(full.meta.pool_id, name)
        )


def test_a_worker_killed_mid_job_is_retried_and_the_pool_is_identical(
    cluster: RayCluster, setup: tuple[StoreSpec, PoolStore, str, np.ndarray]
) -> None:
    spec, store, ref, _ = setup
    killed: list[int] = []

    def kill_first_worker(p: ScoringProgress) -> None:
        if p.worker_pid and not killed:
            killed.append(p.worker_pid)
            os.kill(p.worker_pid, signal.SIGKILL)

    seen: list[ScoringProgress] = []

    def record(p: ScoringProgress) -> None:
        seen.append(p)
        kill_first_worker(p)

    res = score_on_ray(_job(ref, shard_rows=4, pool_id="ray/killed"), spec, progress=record)
    assert killed and res.meta.complete and res.meta.num_items == 40
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # it really died, after its first shard, with 9 still to score
    # (whether it held one in flight is up to Ray Data's queueing; had it, the count below
    # shows the shard was retried, not lost or doubled)
    # every shard written once
    assert sorted(p.shard for p in seen[1:]) == [(a, a + 4) for a in range(0, 40, 4)]
    full = score_on_ray(_job(ref, shard_rows=4, pool_id="ray/unkilled"), spec)
    for name in ("probs", "features"):
        np.testing.assert_array_equal(
            store.open_array("ray/killed", name), store.open_array(full.meta.pool_id, name)
        )


def test_sources_obey_the_data_roots_and_settings_are_checked(
    cluster: RayCluster, setup: tuple[StoreSpec, PoolStore, str, np.ndarray], tmp_path: Path
) -> None:
    spec, store, ref, images = setup
    outside = tmp_path / "elsewhere.npy"
    np.save(outside, images)
    with pytest.raises(PermissionDenied) as exc:
        score_on_ray(_job(str(outside)), spec)
    assert "is not under an allowed data root" in str(exc.value)  # ScorePool's rule and words
    with pytest.raises(FailedPrecondition, match="fingerprint") as exc:
        score_on_ray(_job(ref, expected_fingerprint="0" * 16, pool_id="ray/other"), spec)
    assert "0" * 16 in str(exc.value)
    assert not store.exists("ray/other") and not store.redis.keys("*ray/other*writing*")
    with pytest.raises(InvalidArgument, match="shard_rows 0 must be positive"):
        score_on_ray(_job(ref, shard_rows=0), spec)
    with pytest.raises(InvalidArgument, match="concurrency 0"):
        score_on_ray(_job(ref, concurrency=0), spec)
    assert resolve_source("array_uri", ref, 0, store).total == 40


def test_an_actor_seeing_another_source_or_teacher_refuses_to_score(
    setup: tuple[StoreSpec, PoolStore, str, np.ndarray],
) -> None:
    """The actor's own view (run here in-process) must equal the driver's: a node with other
    files, or another teacher, would write its rows under the driver's ids and cache key."""
    spec, store, ref, _ = setup
    job = _job(ref)
    source = resolve_source("array_uri", ref, 0, store, job.policy(store.root))
    fingerprint = ShardScorer(job, spec).teacher.identity.fingerprint
    ok = ActorCheck(source.signature, 40, fingerprint)
    scorer = ShardScorer(job, spec, ok)
    out = scorer({"start": np.array([0]), "stop": np.array([4])})
    assert out["probs"].shape == (1, 4, 10)
    for bad, what in (
        (ActorCheck("other-signature", 40, fingerprint), "source"),
        (ActorCheck(source.signature, 41, fingerprint), "source"),
        (ActorCheck(source.signature, 40, "0" * 16), "teacher"),
    ):
        with pytest.raises(FailedPrecondition, match=f"loads another {what} .* then rerun"):
            ShardScorer(job, spec, bad)
