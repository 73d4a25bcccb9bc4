"""Row-local strategies over a sharded pool's files, one Ray task per shard file.

``entropy``, ``margin`` and ``least_confidence`` score every row by itself
(:data:`activekd.selection.strategies.ROW_SCORES`): each task maps its shard file, scores its
eligible rows and returns its own best ``budget``; the driver merges them with the
single-process ties rule (``top_positions`` over the candidates in row order). Any row of the
global top is in its shard's top under the same order, so the picks and scores are those of
``select_batch`` on the joined pool, and the driver receives at most ``budget`` rows a shard.

``class_balanced`` reads only each row's predicted class: the tasks return the argmax of their
eligible, labeled and excluded rows (4 bytes a row instead of 4 x C) and the driver runs the
same quotas and seeded draws (``class_balanced_picks``). ``random`` reads no rows at all, so it
needs no shards. Tasks only read, so Ray retries one whose worker died.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from activekd.distributed.ray_kcenter import ShardFileRef, _ray, file_arg
from activekd.selection.result import SelectionResult
from activekd.selection.strategies import (
    ROW_SCORES,
    class_balanced_picks,
    predicted_classes,
    row_scores,
    top_positions,
)
from activekd.store.remote import local_file

#: the strategies this module runs over shard files (the k-center ones: ``ray_kcenter``)
ROW_LOCAL_ON_SHARDS = frozenset({*ROW_SCORES, "class_balanced"})


def _within(rows: np.ndarray, a: int, b: int) -> np.ndarray:
    return rows[(rows >= a) & (rows < b)]


def shard_task(
    path: str | ShardFileRef,
    start: int,
    stop: int,
    strategy: str,
    budget: int,
    taken: np.ndarray,
    labeled: np.ndarray,
    exclude: np.ndarray,
) -> dict[str, np.ndarray]:
    """One shard file (rows ``start:stop`` of the pool; a path, or a pool store shard reference,
    downloaded here when remote): its eligible rows (``taken``: this shard's labeled and
    excluded rows) and what the strategy needs of them, in row order."""
    x = np.load(local_file(path), mmap_mode="r")
    keep = np.ones(stop - start, dtype=bool)
    keep[taken - start] = False
    local = np.flatnonzero(keep).astype(np.int64)
    if strategy == "class_balanced":
        return {
            "rows": local + start,
            "classes": np.array(x.shape[1]),
            "pred": predicted_classes(x, local).astype(np.int32),
            "labeled": predicted_classes(x, labeled - start).astype(np.int32),
            "exclude": predicted_classes(x, exclude - start).astype(np.int32),
        }
    fn, largest = ROW_SCORES[strategy]
    scores = row_scores(x, local, fn)
    pos = top_positions(scores, min(budget, len(scores)), largest=largest)
    pos.sort()  # row order: the driver's ties rule is the lowest row
    return {"rows": local[pos] + start, "scores": scores[pos]}


def rowwise_on_ray_files(
    shards: Sequence[ShardFileRef],
    strategy: str,
    budget: int,
    *,
    labeled: np.ndarray,
    exclude: np.ndarray,
    labels: np.ndarray | None = None,
    seed: int = 0,
    cpus_per_task: float = 1.0,
) -> SelectionResult:
    """``strategy`` (one of :data:`ROW_LOCAL_ON_SHARDS`) over the shard files of a pool (a
    connected Ray first), with validated inputs: the result of ``select_batch`` on the joined
    pool. ``labels`` are those of ``labeled``, in its order (class_balanced)."""
    if strategy not in ROW_LOCAL_ON_SHARDS:
        raise ValueError(f"{strategy!r} is not a row-local strategy")
    ray = _ray()
    t0 = time.perf_counter()
    taken = np.union1d(labeled, exclude).astype(np.int64)
    task = ray.remote(num_cpus=cpus_per_task)(shard_task)
    refs = [
        task.remote(
            file_arg(s),
            int(s.start),
            int(s.stop),
            strategy,
            budget,
            _within(taken, s.start, s.stop),
            _within(labeled, s.start, s.stop),
            _within(exclude, s.start, s.stop),
        )
        for s in shards
    ]
    parts: list[dict[str, np.ndarray]] = ray.get(refs)
    rows = np.concatenate([p["rows"] for p in parts])
    if strategy == "class_balanced":
        c = int(parts[0]["classes"])
        known = labels if labels is not None else np.concatenate([p["labeled"] for p in parts])
        res = class_balanced_picks(
            np.concatenate([p["pred"] for p in parts]),
            known,
            np.concatenate([p["exclude"] for p in parts]),
            c,
            rows,
            budget,
            seed,
        )
    else:
        scores = np.concatenate([p["scores"] for p in parts])
        pos = top_positions(scores, budget, largest=ROW_SCORES[strategy][1])
        res = SelectionResult(rows[pos], scores[pos])
    res.strategy = strategy
    res.backend = f"ray:{len(shards)}"
    res.stats["shards"] = float(len(shards))
    res.stats["rows_sent"] = float(len(rows))
    res.stats["elapsed_seconds"] = time.perf_counter() - t0
    return res


__all__ = ["ROW_LOCAL_ON_SHARDS", "rowwise_on_ray_files", "shard_task"]
