"""TypiClust over a pool split into row shards (only the driver's O(N) cluster ids in one place).

:func:`~activekd.selection.strategies.typiclust` runs :func:`~activekd.selection.coverage.kmeans_labels`
then :func:`~activekd.selection.coverage.typiclust_select` on the whole normalised feature
matrix. Over shards the same steps run where their data is:

1. the seeded k-means sample (at most 256 rows a centroid, :func:`kmeans_sample`) is gathered
   from the shards, normalised there, and the centroids are trained on it here, with the same
   draws (:func:`train_centroids`);
2. every shard assigns its own rows to the nearest centroid (:func:`nearest_centroids`) and
   sends back one cluster id a row;
3. the picks run here on the cluster ids; a picked cluster's members are gathered from the
   shards (normalised there) when its typicality is first needed, at most once per pick.

So the driver holds the cluster ids (8 bytes a row), the sample and one cluster's rows at a time,
never the N x D matrix. Picks and scores equal ``select_batch("typiclust", ...)`` on the joined
pool; a row could fall in another cluster only when two centroids are equally near it to float
rounding (a shard's search runs on a block of other rows, which BLAS may round differently).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from activekd.selection.coverage import kmeans_sample, train_centroids, typiclust_select
from activekd.selection.result import SelectionResult

#: normalised feature rows of the given sorted global rows, in their order
Gather = Callable[[np.ndarray], np.ndarray]
#: every row's nearest centroid (int64, global row order) for the given (k, D) centroids
Assign = Callable[[np.ndarray], np.ndarray]


def typiclust_over_shards(
    gather: Gather,
    assign: Assign,
    n: int,
    eligible: np.ndarray,
    budget: int,
    *,
    clusters: int,
    seed: int,
    k_nn: int = 20,
    min_cluster_size: int = 5,
) -> SelectionResult:
    """``budget`` TypiClust picks over ``n`` rows reached through ``gather`` and ``assign``
    (``clusters``: the k-means K the strategy asks for, capped at ``n``); stats as the
    strategy's plus ``rows_gathered`` (rows sent to the driver: the sample and the members of
    the picked clusters)."""
    gathered = 0

    def counted(ids: np.ndarray) -> np.ndarray:
        nonlocal gathered
        gathered += len(ids)
        return gather(ids)

    k = min(int(clusters), n)
    if k <= 1:
        labels = np.zeros(n, dtype=np.int64)
    else:
        sample_ids, rng = kmeans_sample(n, k, seed)
        sample = np.ascontiguousarray(counted(sample_ids), dtype=np.float32)
        labels = np.asarray(assign(train_centroids(sample, k, seed, rng)), dtype=np.int64)
    res = typiclust_select(
        None,
        labels,
        eligible,
        budget,
        k_nn=k_nn,
        min_cluster_size=min_cluster_size,
        rows=counted,
    )
    res.stats["kmeans_k"] = float(int(clusters))
    res.stats["rows_gathered"] = float(gathered)
    return res


__all__ = ["typiclust_over_shards"]
