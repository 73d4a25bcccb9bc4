"""Sharded greedy k-center (selection/sharded.py): the same picks and scores as the
single-process engine for any split of the rows, and the coordinator's tie rule."""

from __future__ import annotations

import numpy as np
import pytest

from activekd.selection.kcenter import kcenter_greedy
from activekd.selection.sharded import kcenter_sharded_local, owners_of, shard_bounds

SMALL_CHUNKS = 4096  # bytes: many chunks per shard, so shard bounds land on chunk bounds


def _plain_greedy(x: np.ndarray, budget: int, centres: np.ndarray) -> list[int]:
    """Float64 farthest-first from scratch (no pruning, no chunks): the reference."""
    x = x.astype(np.float64)
    mind = np.full(len(x), np.inf)
    for c in centres:
        mind = np.minimum(mind, ((x - x[c]) ** 2).sum(1))
    mind[centres] = -np.inf
    picks = []
    for _ in range(budget):
        j = int(np.argmax(mind))
        picks.append(j)
        mind = np.minimum(mind, ((x - x[j]) ** 2).sum(1))
        mind[j] = -np.inf
    return picks


def _pools() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.full(10, 0.3), size=2500).astype(np.float32)
    blobs = (rng.normal(size=(40, 24))[rng.integers(0, 40, 3000)]
             + 0.3 * rng.normal(size=(3000, 24)))  # fmt: skip
    grid = rng.integers(0, 3, size=(1200, 4)).astype(np.float32)  # many exact distance ties
    return {
        "probs-f32": probs,
        "probs-f16": probs.astype(np.float16),
        "blobs-f64": blobs,
        "blobs-f32": blobs.astype(np.float32),
        "ties-grid": grid,
    }


POOLS = _pools()


def test_shard_bounds_cover_and_align() -> None:
    for n, shards, align in ((10, 3, 1), (1000, 4, 64), (1000, 7, 300), (5, 8, 1), (64, 2, 64)):
        b = shard_bounds(n, shards, align)
        assert b[0][0] == 0 and b[-1][1] == n
        assert all(a < z for a, z in b) and len(b) <= shards
        assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
        assert all(z % align == 0 for _, z in b[:-1])
    with pytest.raises(ValueError, match="shards must be >= 1"):
        shard_bounds(10, 0)
    owners = owners_of([(0, 5), (5, 9), (9, 12)])
    got = owners(np.array([0, 4, 5, 11]))
    assert [(w, r.tolist()) for w, r in got] == [(0, [0, 4]), (1, [5]), (2, [11])]


@pytest.mark.parametrize("name", sorted(POOLS))
@pytest.mark.parametrize("shards", [1, 2, 3, 5])
def test_same_picks_and_scores_as_one_process(name: str, shards: int) -> None:
    x = POOLS[name]
    rng = np.random.default_rng(shards)
    for centres in (rng.choice(len(x), 25, replace=False), None):
        for normalize in (False, True):
            one = kcenter_greedy(x, 60, centres=centres, normalize=normalize,
                                 chunk_bytes=SMALL_CHUNKS)  # fmt: skip
            many = kcenter_sharded_local(x, 60, shards, centres=centres, normalize=normalize,
                                         chunk_bytes=SMALL_CHUNKS)  # fmt: skip
            assert many.indices.tolist() == one.indices.tolist(), (name, centres is None)
            np.testing.assert_array_equal(many.scores, one.scores)
            assert 1 <= many.stats["shards"] <= shards


def test_matches_a_float64_reference_and_prunes() -> None:
    x = POOLS["blobs-f64"]
    centres = np.arange(0, 3000, 97)
    res = kcenter_sharded_local(x, 80, 4, centres=centres, chunk_bytes=SMALL_CHUNKS)
    assert res.indices.tolist() == _plain_greedy(x, 80, centres)
    # pruning skipped most per-pick distances, in every shard
    assert res.stats["distance_evals"] < 0.5 * 79 * (3000 - len(centres))
    assert res.stats["step_wall_seconds"] >= res.stats["step_compute_seconds"] > 0


def test_exhausting_the_pool_and_empty_shards() -> None:
    x = POOLS["ties-grid"][:300]
    centres = np.arange(0, 150)  # the first shards have no eligible row at all
    # 1 KiB chunks of 4-d float32 rows: 64 rows, shards (0,128) (128,256) (256,300)
    one = kcenter_greedy(x, 150, centres=centres, chunk_bytes=1024)
    many = kcenter_sharded_local(x, 150, 4, centres=centres, chunk_bytes=1024)
    assert many.stats["shards"] == 3
    assert many.indices.tolist() == one.indices.tolist()
    assert sorted(many.indices.tolist()) == list(range(150, 300))
    with pytest.raises(ValueError, match=r"budget 151 must be in 1\.\.150"):
        kcenter_sharded_local(x, 151, 2, centres=centres)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_any_shard_bounds_give_the_single_process_picks(dtype: type) -> None:
    """A stored sharded pool's files cut the engine's chunk grid anywhere: bounds of 1, 37, 64
    and uneven rows, with several chunks per shard and chunks cut by every bound; the pool mean
    (no initial centre) is still bitwise PoolView.mean's, so the picks and scores are exact."""
    rng = np.random.default_rng(4)
    x = rng.dirichlet(np.full(6, 0.5), size=700).astype(dtype)
    chunk = 64 * 6 * (8 if dtype == np.float64 else 4)  # 64-row chunks: 11 of them
    for bounds in ([(0, 1), (1, 700)], [(0, 37), (37, 101), (101, 500), (500, 700)]):
        for centres in (None, rng.choice(700, 9, replace=False)):
            want = kcenter_greedy(x, 25, centres=centres, chunk_bytes=chunk)
            got = kcenter_sharded_local(x, 25, 0, centres=centres, chunk_bytes=chunk, bounds=bounds)
            assert got.indices.tolist() == want.indices.tolist(), (bounds, centres is None)
            np.testing.assert_array_equal(got.scores, want.scores)
            assert got.stats["shards"] == len(bounds)


def test_the_pool_mean_over_cut_chunks_is_bitwise_the_single_process_mean() -> None:
    """Summing each shard's own chunks is not enough when bounds cut the chunk grid (float64
    rounding differs: checked here, so the test can fail); the grid rule gives PoolView.mean."""
    from activekd.selection._distance import PoolView
    from activekd.selection.sharded import (
        LocalWorker,
        ShardSpec,
        _grid_mean,
        call_local,
        mean_of_chunk_sums,
    )

    x = np.random.default_rng(0).lognormal(sigma=3, size=(700, 6))  # float64, wide range
    chunk = 64 * 6 * 8
    view = PoolView(x, normalize=False, chunk_bytes=chunk)
    bounds = [(0, 37), (37, 101), (101, 500), (500, 700)]
    none = np.array([], dtype=np.int64)
    workers = [LocalWorker(x, ShardSpec(a, b, none, 10, chunk_bytes=chunk)) for a, b in bounds]
    call_all = call_local(workers)
    naive = mean_of_chunk_sums(np.concatenate(call_all("chunk_sums", ())), 700, view.cd)
    assert not np.array_equal(naive, view.mean()), "the data no longer shows the difference"
    grid = _grid_mean(
        call_all,
        owners_of(bounds),
        lambda w, r: workers[w].gather(r),
        700,
        6,
        view.cd,
        view.chunk_rows,
    )
    assert grid.dtype == view.mean().dtype and np.array_equal(grid, view.mean())
