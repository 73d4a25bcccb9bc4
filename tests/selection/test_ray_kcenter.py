"""k-center with the pool's shards in Ray actors, on one real local Ray instance (token auth on)
per module: the picks equal the single-process engine's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activekd.distributed.ray_kcenter import RayCluster, kcenter_on_ray, start_shard_actors
from activekd.selection.kcenter import kcenter_greedy


def _ray():  # type: ignore[no-untyped-def]
    import ray

    return ray


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.dirichlet(np.full(12, 0.3), size=6000).astype(np.float32)
    path = tmp_path_factory.mktemp("pool") / "probs.npy"
    np.save(path, x)
    return path, x


@pytest.mark.parametrize("workers", [2, 3])
def test_ray_picks_equal_single_process(
    cluster: RayCluster, pool: tuple[Path, np.ndarray], workers: int
) -> None:
    path, x = pool
    centres = np.random.default_rng(workers).choice(len(x), 30, replace=False)
    for c in (centres, None):
        want = kcenter_greedy(x, 40, centres=c, chunk_bytes=8192)
        got = kcenter_on_ray(path, 40, workers, centres=c, chunk_bytes=8192, cpus_per_worker=0.5)
        assert got.indices.tolist() == want.indices.tolist()
        np.testing.assert_array_equal(got.scores, want.scores)
        assert got.backend == f"ray:{workers}" and got.stats["shards"] == workers
        assert got.stats["step_coordination_seconds"] > 0
        # each actor maps the file and touches its own rows only
        assert got.stats["worker_rss_bytes_max"] > got.stats["worker_data_bytes_max"] > 0


def test_a_killed_shard_actor_fails_the_selection_clearly(
    cluster: RayCluster, pool: tuple[Path, np.ndarray]
) -> None:
    path, _ = pool
    started = start_shard_actors(path, 2, 20, chunk_bytes=8192, cpus_per_worker=0.5)
    handles = started[0]
    ray = _ray()
    ray.get([h.pid.remote() for h in handles])
    ray.kill(handles[1])
    with pytest.raises(ray.exceptions.RayActorError):
        kcenter_on_ray(path, 20, 2, chunk_bytes=8192, actors=started)
    ray.kill(handles[0])
