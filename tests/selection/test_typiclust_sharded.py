"""TypiClust over row shards (``typiclust_sharded``, shards in this process): the k-means sample
gathered and normalised per shard, rows assigned per shard, members gathered per picked
cluster give ``select_batch("typiclust")``'s picks and scores on the joined pool, and the
driver receives the sample and the picked clusters' rows, never the whole matrix."""

from __future__ import annotations

import numpy as np
import pytest

from activekd.arrays import iter_row_chunks
from activekd.selection import select_batch
from activekd.selection.coverage import _CHUNK_BYTES, nearest_centroids, normalized
from activekd.selection.sharded import shard_bounds
from activekd.selection.typiclust_sharded import typiclust_over_shards


def _clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, d)) * 3
    return (centres[rng.integers(0, 12, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _local(feats: np.ndarray, bounds: list[tuple[int, int]], log: list[int]):  # type: ignore[no-untyped-def]
    def gather(ids: np.ndarray) -> np.ndarray:
        parts = []
        for a, b in bounds:  # each shard normalises its own rows
            part = ids[(ids >= a) & (ids < b)]
            if len(part):
                parts.append(normalized(feats[a:b][part - a]))
        log.append(len(ids))
        return np.concatenate(parts)

    def assign(centroids: np.ndarray) -> np.ndarray:
        out = []
        for a, b in bounds:
            shard = feats[a:b]
            for sl in iter_row_chunks(b - a, shard.shape[1] * 4, _CHUNK_BYTES):
                out.append(nearest_centroids(normalized(shard[sl]), centroids))
        return np.concatenate(out)

    return gather, assign


@pytest.mark.parametrize("shards", [1, 4])
@pytest.mark.parametrize("seed", [0, 7])
def test_shards_equal_select_batch(shards: int, seed: int) -> None:
    n = 3000
    feats = _clustered(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    labeled = np.sort(rng.choice(n, 15, replace=False))
    exclude = np.setdiff1d(rng.choice(n, 10, replace=False), labeled)
    want = select_batch(
        "typiclust", 20, features=feats, labeled=labeled, exclude=exclude, seed=seed
    )
    log: list[int] = []
    gather, assign = _local(feats, shard_bounds(n, shards), log)
    eligible = np.setdiff1d(np.arange(n), np.union1d(labeled, exclude))
    got = typiclust_over_shards(
        gather, assign, n, eligible, 20, clusters=len(labeled) + len(exclude) + 20, seed=seed
    )
    assert got.indices.tolist() == want.indices.tolist()
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    for key in ("clusters", "clusters_picked", "new_cluster_picks", "kmeans_k"):
        assert got.stats[key] == want.stats[key], key
    # the driver saw the k-means sample and one gather per newly picked cluster, not every row
    assert log[0] == min(n, 256 * 45) and len(log) - 1 <= 20
    assert got.stats["rows_gathered"] == sum(log)


def test_one_cluster_and_a_budget_past_the_clusters() -> None:
    feats = _clustered(400, seed=3)
    eligible = np.arange(400)
    for clusters, budget in ((1, 6), (3, 9)):
        want_k = clusters  # select_batch caps k with max_clusters
        want = select_batch(
            "typiclust", budget, features=feats, seed=2, params={"max_clusters": want_k}
        )
        log: list[int] = []
        gather, assign = _local(feats, [(0, 150), (150, 400)], log)
        got = typiclust_over_shards(
            gather, assign, 400, eligible, budget, clusters=clusters, seed=2
        )
        assert got.indices.tolist() == want.indices.tolist(), clusters
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
