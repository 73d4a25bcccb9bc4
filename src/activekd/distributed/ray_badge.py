"""BADGE over a sharded pool's files, one Ray actor per shard (probabilities + features).

The coordinator is :func:`activekd.selection.badge_sharded.badge_over_shards`; this module
only puts :class:`~activekd.selection.badge_sharded.BadgeWorker` into actors. Each actor maps
its shard's two files (``probs`` and ``features``, the same rows) read-only, downloading them
first when the store is remote, so its memory is its shard plus O(shard rows) state.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from activekd.distributed.ray_kcenter import (
    ACTOR_START_SECONDS,
    ShardActor,
    ShardFileRef,
    _ray,
    file_arg,
    in_row_order,
    launch_actors,
)
from activekd.selection.badge_sharded import BadgeShardSpec, BadgeWorker, badge_over_shards
from activekd.selection.result import SelectionResult


class BadgeActor(ShardActor):
    """A :class:`BadgeWorker` over one shard's probabilities and features files."""

    def __init__(  # the parent's (one file) is replaced: two files here
        self, probs: str | ShardFileRef, features: str | ShardFileRef, spec: BadgeShardSpec
    ) -> None:
        self.base_rss = self.rss_bytes()
        files = self._open(probs, features)
        if files is None:
            return
        p, f = files
        self.width, self.dtype = int(p.shape[1]), p.dtype
        self.worker = BadgeWorker(p, f, spec)  # type: ignore[assignment]


def badge_on_ray_files(
    probs: Sequence[ShardFileRef],
    features: Sequence[ShardFileRef],
    budget: int,
    *,
    labeled: np.ndarray,
    exclude: np.ndarray,
    seed: int,
    cpus_per_worker: float = 1.0,
    start_timeout: float = ACTOR_START_SECONDS,
) -> SelectionResult:
    """``budget`` BADGE picks over the shard files of a sharded pool's ``probs`` and
    ``features`` (a connected Ray first), labeled and excluded rows never picked: the picks and
    scores of ``badge_select`` on the joined pool. Stats add ``setup_seconds`` and
    ``worker_data_bytes_max``. Actors not all up within ``start_timeout`` seconds:
    :class:`~activekd.distributed.ray_kcenter.ShardPlacementError`."""
    ray = _ray()
    t0 = time.perf_counter()
    probs, features = in_row_order(probs), in_row_order(features)
    bounds = [(int(s.start), int(s.stop)) for s in probs]
    if [(int(s.start), int(s.stop)) for s in features] != bounds:
        raise ValueError("the probs and features shard files must hold the same rows")
    taken = np.union1d(labeled, exclude).astype(np.int64)
    actor_cls = ray.remote(num_cpus=cpus_per_worker, max_restarts=0)(BadgeActor)
    args = [
        (
            file_arg(p),
            file_arg(f),
            BadgeShardSpec(a, b, taken[(taken >= a) & (taken < b)], file_offset=a),
        )
        for p, f, (a, b) in zip(probs, features, bounds, strict=True)
    ]
    handles, _ = launch_actors(actor_cls, args, cpus_per_worker, start_timeout)
    setup = time.perf_counter() - t0
    try:

        def call_all(method: str, args: tuple[Any, ...]) -> list[Any]:
            return list(ray.get([h.call.remote(method, *args) for h in handles]))

        def call_one(w: int, method: str, args: tuple[Any, ...]) -> Any:
            return ray.get(handles[w].call.remote(method, *args))

        res = badge_over_shards(call_all, call_one, budget, seed)
        mem = ray.get([h.memory.remote() for h in handles])
    finally:
        for h in handles:
            ray.kill(h)
    res.strategy = "badge"
    res.backend = f"ray:{len(handles)}"
    res.stats["setup_seconds"] = setup
    res.stats["worker_data_bytes_max"] = float(max(m[1] for m in mem))
    return res


__all__ = ["BadgeActor", "badge_on_ray_files"]
