"""TypiClust over a sharded pool's features files, Ray tasks per shard file.

The driver is :func:`activekd.selection.typiclust_sharded.typiclust_over_shards`; this module
gives it two task kinds over the shard files: normalise and send some rows (the k-means sample,
a picked cluster's members), and assign every row of a shard to its nearest centroid. Tasks only
read, so Ray retries one whose worker died.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from activekd.arrays import iter_row_chunks
from activekd.distributed.ray_kcenter import ShardFileRef, _ray, file_arg, in_row_order
from activekd.selection.coverage import (
    _CHUNK_BYTES,
    nearest_centroids,
    normalized,
    typiclust_clusters,
)
from activekd.selection.result import SelectionResult
from activekd.selection.strategies import STRATEGY_INFO
from activekd.selection.typiclust_sharded import typiclust_over_shards
from activekd.store.remote import local_file


def normalized_rows(path: str | ShardFileRef, local: np.ndarray) -> np.ndarray:
    """Rows ``local`` (sorted, in the file) of a shard file, L2-normalised (float32)."""
    x = np.load(local_file(path), mmap_mode="r")
    return normalized(np.asarray(x[np.asarray(local, dtype=np.int64)]))


def nearest_in_file(path: str | ShardFileRef, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid of every (normalised) row of a shard file, int32, in row order."""
    x = np.load(local_file(path), mmap_mode="r")
    n, d = x.shape
    out = np.empty(n, dtype=np.int32)
    for sl in iter_row_chunks(n, d * 4, _CHUNK_BYTES):
        out[sl] = nearest_centroids(normalized(x[sl]), centroids)
    return out


def typiclust_on_ray_files(
    shards: Sequence[ShardFileRef],
    budget: int,
    *,
    labeled: np.ndarray,
    exclude: np.ndarray,
    seed: int,
    params: Mapping[str, float] | None = None,
    cpus_per_task: float = 1.0,
) -> SelectionResult:
    """``budget`` TypiClust picks over the ``features`` shard files of a sharded pool (a
    connected Ray first), labeled and excluded rows never picked: ``select_batch``'s picks and
    scores on the joined pool. ``params``: the strategy's (``max_clusters``, ``k_nn``,
    ``min_cluster_size``; None: its defaults)."""
    p = {**STRATEGY_INFO["typiclust"].params, **(params or {})}
    ray = _ray()
    t0 = time.perf_counter()
    shards = in_row_order(shards)
    n = int(shards[-1].stop)
    refs: list[Any] = [file_arg(s) for s in shards]
    rows_task = ray.remote(num_cpus=cpus_per_task)(normalized_rows)
    assign_task = ray.remote(num_cpus=cpus_per_task)(nearest_in_file)

    def gather(ids: np.ndarray) -> np.ndarray:
        pending = []
        for s, ref in zip(shards, refs, strict=True):
            part = ids[(ids >= s.start) & (ids < s.stop)]
            if len(part):
                pending.append(rows_task.remote(ref, part - s.start))
        return np.concatenate(ray.get(pending))

    def assign(centroids: np.ndarray) -> np.ndarray:
        c = ray.put(centroids)
        parts = ray.get([assign_task.remote(ref, c) for ref in refs])
        return np.concatenate(parts).astype(np.int64)

    taken = np.union1d(labeled, exclude).astype(np.int64)
    eligible = np.setdiff1d(np.arange(n, dtype=np.int64), taken, assume_unique=True)
    res = typiclust_over_shards(
        gather,
        assign,
        n,
        eligible,
        budget,
        clusters=typiclust_clusters(len(labeled), len(exclude), budget, p["max_clusters"]),
        seed=seed,
        k_nn=int(p["k_nn"]),
        min_cluster_size=int(p["min_cluster_size"]),
    )
    res.strategy = "typiclust"
    res.backend = f"ray:{len(shards)}"
    res.stats["shards"] = float(len(shards))
    res.stats["elapsed_seconds"] = time.perf_counter() - t0
    return res


__all__ = ["nearest_in_file", "normalized_rows", "typiclust_on_ray_files"]
