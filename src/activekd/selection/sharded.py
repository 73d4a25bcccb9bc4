"""Greedy k-center over a pool split into row shards, each held by its own worker.

Every pick is one round: each worker applies the previous pick to its rows (marks it taken if
it owns it, makes it a centre with the pruning of :class:`~activekd.selection.kcenter.KCenterShard`)
and answers its local farthest row, its squared distance and its vector; the coordinator takes
the global maximum (ties: the lowest row id, as in the single-process engine) and sends that
vector with the next round. Per pick that is one message of D floats to each worker and one of
D floats + two numbers back.

The picks and scores equal :func:`~activekd.selection.kcenter.kcenter_greedy`'s: each shard's
min distances are those of one shard holding every row (pruning is exact), the initial centres
are gathered in the same order, and with no initial centre the pool mean is summed over the same
chunks in the same order (shard bounds are aligned to the chunk size; :func:`shard_bounds`).

Workers are anything with the :class:`KCenterWorker` methods: :class:`LocalWorker` runs in this
process (tests, and the reference the Ray actors are checked against); ``activekd.distributed``
wraps the same class in Ray actors that memory-map their shard.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from activekd.selection._distance import (
    DEFAULT_CHUNK_BYTES,
    PoolView,
    compute_dtype,
    make_kernel,
    mean_of_chunk_sums,
)
from activekd.selection.kcenter import KCenterShard, ProgressFn
from activekd.selection.result import SelectionResult

#: one step's answer: (squared distance, global row id, vector) of the shard's farthest row
#: ((-inf, -1, None) when the shard has no row left) and the seconds the shard computed for it
Best = tuple[float, int, "np.ndarray | None", float]


def shard_bounds(n: int, shards: int, align: int = 1) -> list[tuple[int, int]]:
    """``shards`` contiguous [a, b) row ranges covering 0..n, as equal as ``align`` allows (every
    bound but the last a multiple of ``align``); empty ranges are dropped."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    units = -(-n // align)
    per = -(-units // shards)
    bounds = [(i * per * align, min(n, (i + 1) * per * align)) for i in range(shards)]
    return [(a, b) for a, b in bounds if a < b]


def chunk_rows(d: int, dtype: np.dtype, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """The rows per chunk a :class:`PoolView` of width ``d`` uses (shard bounds align to it)."""
    probe = PoolView(np.empty((1, d), dtype=dtype), normalize=False, chunk_bytes=chunk_bytes)
    return probe.chunk_rows


class KCenterWorker(Protocol):
    """What the coordinator calls on each shard (rows are global ids)."""

    def gather(self, rows: np.ndarray) -> np.ndarray: ...
    def chunk_sums(self) -> np.ndarray: ...
    def grid_chunk_sums(self, grid: int, n: int) -> tuple[int, np.ndarray]: ...
    def seed(self, centres: np.ndarray) -> Best: ...
    def farthest_from(self, v: np.ndarray) -> Best: ...
    def seed_one(self, xv: np.ndarray, taken_row: int) -> Best: ...
    def step(self, taken_row: int, xv: np.ndarray | None, d2x: float) -> Best: ...
    def counters(self) -> dict[str, float]: ...


@dataclass
class ShardSpec:
    """Where a worker's rows are and how to compute on them (picklable: sent to Ray actors)."""

    start: int
    stop: int
    initial: np.ndarray  # sorted unique global row ids that start as centres (whole pool)
    cap: int  # initial centres + budget
    normalize: bool = False
    prune: bool = True
    backend: str = "auto"
    device: str = "cpu"
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    prune_margin: float | None = None
    #: the global row of ``x``'s first row (a shard file of a sharded pool holds rows from here)
    file_offset: int = 0


class LocalWorker:
    """One shard in this process: rows ``spec.start:spec.stop`` of ``x`` (an array or memmap)."""

    def __init__(self, x: np.ndarray, spec: ShardSpec) -> None:
        self.a = spec.start
        off = spec.file_offset
        self.pool = PoolView(
            x[spec.start - off : spec.stop - off],
            normalize=spec.normalize,
            chunk_bytes=spec.chunk_bytes,
        )
        self.kernel = make_kernel(self.pool, spec.backend, spec.device)
        init = spec.initial[(spec.initial >= spec.start) & (spec.initial < spec.stop)] - spec.start
        taken = np.zeros(self.pool.n, dtype=bool)
        taken[init] = True
        eligible = np.flatnonzero(~taken).astype(np.int64)
        self.shard = KCenterShard(
            self.pool, self.kernel, eligible, spec.cap, prune=spec.prune, margin=spec.prune_margin
        )
        self.compute_seconds = 0.0

    def close(self) -> None:
        self.kernel.close()

    def _answer(self, d2: float, j: int, t0: float) -> Best:
        vec = None if j < 0 else self.shard.row(j)
        row = -1 if j < 0 else self.a + int(self.shard.eligible[j])
        spent = time.perf_counter() - t0
        self.compute_seconds += spent
        return d2, row, vec, spent

    def _local(self, row: int) -> int:
        """Position of global ``row`` among this shard's eligible rows, -1 when not here."""
        e = self.shard.eligible
        local = row - self.a
        j = int(np.searchsorted(e, local))
        return j if j < len(e) and e[j] == local else -1

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Vectors of global ``rows`` (all in this shard), in the compute dtype."""
        return self.pool.gather(np.asarray(rows, dtype=np.int64) - self.a)

    def chunk_sums(self) -> np.ndarray:
        """float64 sums of this shard's rows, one per chunk (``PoolView.chunk_sums``)."""
        return self.pool.chunk_sums()

    def grid_chunk_sums(self, grid: int, n: int) -> tuple[int, np.ndarray]:
        """(first chunk, sums) of the chunks of the whole pool's grid (``grid`` rows each, ``n``
        rows in all) that lie wholly in this shard, summed as ``PoolView.chunk_sums`` does."""
        a, b = self.a, self.a + self.pool.n
        first, sums = -(-a // grid), []
        for c in range(first, -(-n // grid)):
            lo, hi = c * grid, min(n, (c + 1) * grid)
            if hi > b:
                break
            sums.append(
                self.gather(np.arange(lo, hi, dtype=np.int64)).sum(axis=0, dtype=np.float64)
            )
        width = self.pool.d
        return first, np.asarray(sums, dtype=np.float64).reshape(len(sums), width)

    def seed(self, centres: np.ndarray) -> Best:
        t = time.perf_counter()
        self.shard.seed(centres)
        return self._answer(*self.shard.best(), t)

    def farthest_from(self, v: np.ndarray) -> Best:
        t = time.perf_counter()
        return self._answer(*self.shard.farthest_from(v), t)

    def seed_one(self, xv: np.ndarray, taken_row: int) -> Best:
        t = time.perf_counter()
        self.shard.seed_one(xv, taken=self._local(taken_row))
        return self._answer(*self.shard.best(), t)

    def step(self, taken_row: int, xv: np.ndarray | None, d2x: float) -> Best:
        """Apply the last pick (``taken_row``; ``xv`` None: it was the last, no update) and
        answer this shard's farthest row."""
        t = time.perf_counter()
        j = self._local(taken_row)
        if j >= 0:
            self.shard.take(j)
        if xv is not None:
            self.shard.add_centre(xv, d2x)
        return self._answer(*self.shard.best(), t)

    def counters(self) -> dict[str, float]:
        s = self.shard
        return {
            "distance_evals": float(s.evals),
            "exact_distance_evals": float(s.exact_evals),
            "centre_distance_evals": float(s.centre_evals),
            "seed_distance_evals": float(s.seed_evals),
            "eligible_rows": float(s.m_rows),
            "int8_screened_rows": float(s.screened),
            "compute_seconds": self.compute_seconds,
        }


#: calls one method on every worker with the same arguments and returns the answers in worker
#: order (in process: a loop; Ray: ``ray.get([w.m.remote(*args) ...])``)
CallAll = Callable[[str, tuple[Any, ...]], list[Any]]


def call_local(workers: Sequence[Any]) -> CallAll:
    """:data:`CallAll` for in-process workers."""
    return lambda method, args: [getattr(w, method)(*args) for w in workers]


def _argmax(answers: Sequence[Best]) -> Best:
    """The largest distance; ties: the lowest row id (shards are ascending row ranges)."""
    best: Best = (-np.inf, -1, None, 0.0)
    for ans in answers:
        if ans[1] >= 0 and (best[1] < 0 or ans[0] > best[0]):
            best = ans
    return best


def _grid_mean(
    call_all: CallAll,
    owners: Callable[[np.ndarray], list[tuple[int, np.ndarray]]],
    gather: Callable[[int, np.ndarray], np.ndarray],
    n: int,
    d: int,
    cd: np.dtype,
    grid: int,
) -> np.ndarray:
    """The pool mean over the single-process chunk grid, whatever the workers' bounds."""
    sums = np.zeros((-(-n // grid), d), dtype=np.float64)
    done = np.zeros(len(sums), dtype=bool)
    for first, part in call_all("grid_chunk_sums", (grid, n)):
        sums[first : first + len(part)] = part
        done[first : first + len(part)] = True
    for c in np.flatnonzero(~done).tolist():  # cut by a shard bound: its rows, in row order
        rows = np.arange(c * grid, min(n, (c + 1) * grid), dtype=np.int64)
        block = np.concatenate([gather(w, r) for w, r in owners(rows)])
        sums[c] = block.sum(axis=0, dtype=np.float64)
    return mean_of_chunk_sums(sums, n, cd)


def kcenter_over_shards(
    call_all: CallAll,
    owners: Callable[[np.ndarray], list[tuple[int, np.ndarray]]],
    gather: Callable[[int, np.ndarray], np.ndarray],
    n: int,
    d: int,
    cd: np.dtype,
    budget: int,
    initial: np.ndarray,
    progress: ProgressFn | None = None,
    *,
    grid: int = 0,
) -> SelectionResult:
    """The coordinator: ``budget`` greedy picks over the workers behind ``call_all``.

    ``grid``: the chunk rows of the single-process engine, given when the workers' bounds may
    not be multiples of it (the shard files of a stored sharded pool); the pool mean (no initial
    centre) is then summed over that grid, chunks cut by a shard bound gathered here, so it
    stays bitwise that of ``PoolView.mean``.

    ``owners(rows)`` splits sorted global rows into (worker index, rows) in worker order and
    ``gather(worker, rows)`` fetches their vectors; ``initial`` are the sorted unique initial
    centres. Stats split the greedy steps' wall time into ``step_compute_seconds`` (the slowest
    worker's compute, summed over steps) and ``step_coordination_seconds`` (the rest: messages,
    serialisation, the coordinator's own work).
    """
    t_start = time.perf_counter()
    k0 = len(initial)
    eligible_rows = n - k0
    if not 1 <= budget <= eligible_rows:
        raise ValueError(f"budget {budget} must be in 1..{eligible_rows}")
    picks = np.empty(budget, dtype=np.int64)
    scores = np.empty(budget, dtype=np.float64)
    before = [c["compute_seconds"] for c in call_all("counters", ())]
    if k0:
        centres = np.empty((k0, d), dtype=cd)
        at = 0
        for w, rows in owners(initial):
            centres[at : at + len(rows)] = gather(w, rows)
            at += len(rows)
        answers = call_all("seed", (centres,))
        done = 0
    else:  # the pool mean, summed over the same chunks in the same order as PoolView.mean
        if grid:
            mean = _grid_mean(call_all, owners, gather, n, d, cd, grid)
        else:
            mean = mean_of_chunk_sums(np.concatenate(call_all("chunk_sums", ())), n, cd)
        d2m, row, xv, _ = _argmax(call_all("farthest_from", (mean,)))
        picks[0], scores[0] = row, float(np.sqrt(max(d2m, 0.0)))
        answers = call_all("seed_one", (xv, row))
        done = 1
        if progress is not None:
            progress(done, budget)
    seed_seconds = time.perf_counter() - t_start
    step_wall = step_compute = 0.0
    for t in range(done, budget):
        d2x, row, xv, _ = _argmax(answers)
        picks[t], scores[t] = row, float(np.sqrt(max(d2x, 0.0)))
        if progress is not None:
            progress(t + 1, budget)
        if t == budget - 1:
            break
        t0 = time.perf_counter()
        answers = call_all("step", (row, xv, d2x))
        step_wall += time.perf_counter() - t0
        step_compute += max(a[3] for a in answers)
    counters = call_all("counters", ())
    per_shard = [c["compute_seconds"] - b for c, b in zip(counters, before, strict=True)]
    steps = max(0, budget - done - 1)
    stats: dict[str, float] = {
        "shards": float(len(counters)),
        "eligible_rows": float(eligible_rows),
        "initial_centres": float(k0),
        "distance_evals": float(sum(c["distance_evals"] for c in counters)),
        "centre_distance_evals": float(sum(c["centre_distance_evals"] for c in counters)),
        "seed_distance_evals": float(sum(c["seed_distance_evals"] for c in counters)),
        "exact_distance_evals": float(sum(c["exact_distance_evals"] for c in counters)),
        "int8_screened_rows": float(sum(c["int8_screened_rows"] for c in counters)),
        "seed_seconds": seed_seconds,
        "greedy_seconds": time.perf_counter() - t_start - seed_seconds,
        "steps": float(steps),
        "step_wall_seconds": step_wall,
        "step_compute_seconds": step_compute,
        "step_coordination_seconds": max(0.0, step_wall - step_compute),
        "shard_compute_seconds_max": max(per_shard) if per_shard else 0.0,
        "shard_compute_seconds_sum": float(sum(per_shard)),
        "elapsed_seconds": time.perf_counter() - t_start,
    }
    return SelectionResult(indices=picks, scores=scores, stats=stats, backend="sharded")


def kcenter_sharded_local(
    x: np.ndarray,
    budget: int,
    shards: int,
    *,
    centres: np.ndarray | None = None,
    normalize: bool = False,
    prune: bool = True,
    backend: str = "auto",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: ProgressFn | None = None,
    bounds: Sequence[tuple[int, int]] | None = None,
) -> SelectionResult:
    """:func:`kcenter_over_shards` with ``shards`` :class:`LocalWorker` s in this process: the
    same picks as ``kcenter_greedy(x, budget, centres=centres, ...)`` (CPU). ``bounds``: the
    shards' [a, b) rows instead (any split, e.g. a stored pool's shard files; ``shards``
    ignored), the pool mean then summed over the single-process chunk grid."""
    n, d = int(x.shape[0]), int(x.shape[1])
    cd = compute_dtype(x.dtype)
    grid = chunk_rows(d, cd, chunk_bytes)
    if bounds is None:
        bounds, grid = shard_bounds(n, shards, align=grid), 0
    bounds = list(bounds)
    initial = np.unique(np.asarray(centres if centres is not None else [], dtype=np.int64))
    specs = [
        ShardSpec(
            a,
            b,
            initial,
            len(initial) + budget,
            normalize=normalize,
            prune=prune,
            backend=backend,
            chunk_bytes=chunk_bytes,
        )
        for a, b in bounds
    ]
    workers = [LocalWorker(x, s) for s in specs]
    try:
        return kcenter_over_shards(
            call_local(workers),
            owners_of(bounds),
            lambda w, rows: workers[w].gather(rows),
            n,
            d,
            cd,
            budget,
            initial,
            progress,
            grid=grid,
        )
    finally:
        for w in workers:
            w.close()


def owners_of(
    bounds: Sequence[tuple[int, int]],
) -> Callable[[np.ndarray], list[tuple[int, np.ndarray]]]:
    """``owners`` for :func:`kcenter_over_shards` from the shards' [a, b) bounds."""
    starts = np.array([a for a, _ in bounds], dtype=np.int64)

    def owners(rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        which = np.searchsorted(starts, rows, side="right") - 1
        return [(int(w), rows[which == w]) for w in np.unique(which)]

    return owners


__all__ = [
    "CallAll",
    "KCenterWorker",
    "LocalWorker",
    "ShardSpec",
    "call_local",
    "chunk_rows",
    "kcenter_over_shards",
    "kcenter_sharded_local",
    "owners_of",
    "shard_bounds",
]
