"""Greedy k-center (farthest-first traversal) with exact triangle-inequality pruning.

Algorithm (Gonzalez 1985; the core-set selection of Sener & Savarese 2018):

1. Initial centres are the given rows (the labeled set, plus rows excluded from picking). Each
   remaining ("eligible") row gets its nearest initial centre by a blocked GEMM (thousands of
   centres cost one GEMM, not a Python loop), then the distance to that centre is recomputed
   directly. On CPUs with native bfloat16 and D >= 256 the GEMM runs in bf16 as a screen with a
   rigorous error bound, and every centre the bound cannot rule out is measured exactly (see
   ``_distance._Bf16Screen``). With no initial centres at all, the first pick is the eligible row
   farthest from the pool mean (its score is that distance).
2. Each step picks the eligible row with the largest distance to its nearest centre (ties: the
   lowest row id), makes it a centre, and lowers the running min-distance vector with the distances
   to the new centre. One O(N) vector, updated once per pick; the authors' code recomputes the
   distances to every centre at every pick.
3. Pruning (exact): every row keeps its nearest centre c and distance m. For a new centre x, the
   triangle inequality gives d(p, x) >= d(c, x) - m, so when d(c, x) >= 2 m the row cannot get
   closer and is skipped. Rows are grouped by nearest centre with an upper bound R_c on their
   distances, so a whole group is skipped when d(c, x) >= 2 R_c, and d(c, x) is computed once per
   centre, only for groups with R_c > d(x, nearest)/2 (all others are skipped outright, since
   d(c, x) >= d(x, nearest centre of x)). The test is taken with a relative safety margin
   (``prune_margin``) far above float rounding, so the picks are exactly those of plain greedy.

Distances are L2 (scores are distances, not squared). Extra memory is O(N) plus one chunk beyond
the pool and the (centres x D) centre matrix; the pool may be an ``np.memmap`` larger than RAM.
On CPU the per-pick distances run on faiss' ``fvec_L2sqr_by_idx`` straight on the pool (float32)
split over the threads; float16 / memmap / normalised pools are gathered a chunk at a time. With
CUDA the same loop runs its distance kernels in torch on the GPU (bookkeeping stays on the host).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from activekd.selection._distance import (
    DEFAULT_CHUNK_BYTES,
    FaissKernel,
    Kernel,
    PoolView,
    make_kernel,
)
from activekd.selection.result import SelectionResult
from activekd.selection.threads import limit_threads

#: Relative safety margin of the pruning test, on squared distances: a row is skipped only when
#: d(c,x)^2 >= 4 * (1 + margin) * m^2. Float32 rounding of a D-term sum is ~D * 6e-8 relative at
#: worst; 1e-3 (or 4*D*eps if larger) keeps pruning conservative by orders of magnitude.
PRUNE_MARGIN: float = 1e-3

ProgressFn = Callable[[int, int], None]


def _pruning_margin(pool: PoolView, margin: float | None) -> float:
    if margin is not None:
        return margin
    return max(PRUNE_MARGIN, 4.0 * pool.d * float(np.finfo(pool.cd).eps))


def _centre_sqdist(
    kernel: Kernel, centre: np.ndarray, cbuf: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Squared distances from ``centre`` to rows ``rows`` of the (small) centre matrix ``cbuf``."""
    if isinstance(kernel, FaissKernel):
        return kernel.sqdist_in(cbuf, centre, rows)
    diff = cbuf[rows] - centre
    return np.einsum("ij,ij->i", diff, diff)


def kcenter_greedy(
    x: np.ndarray,
    budget: int,
    *,
    centres: np.ndarray | None = None,
    normalize: bool = False,
    prune: bool = True,
    device: str = "cpu",
    backend: str = "auto",
    threads: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    prune_margin: float | None = None,
    progress: ProgressFn | None = None,
) -> SelectionResult:
    """Greedy farthest-first selection of ``budget`` rows of ``x`` (N, D).

    Returns a :class:`SelectionResult`: the picks, their scores (L2 distance to the nearest
    centre at pick time), stats and the backend (``strategy`` is left empty).

    Args:
        x: pool, float16/32/64 ndarray or memmap (float64 computes in float64, else float32).
        budget: number of picks (1..eligible rows); inputs are assumed validated.
        centres: row ids that start as centres (e.g. labeled rows); never picked.
        normalize: L2-normalise rows first (cosine geometry), chunk by chunk.
        prune: triangle-inequality pruning (same picks; off is for checks and benchmarks).
        device: 'cpu' or 'cuda'. backend: 'auto', 'faiss', 'numpy' or 'torch'.
        threads: cap faiss/torch/BLAS threads for this call (None = library defaults).
        prune_margin: override of the relative pruning safety margin (tests).
        progress: called as ``progress(done, budget)`` after each pick.
    """
    t_start = time.perf_counter()
    with limit_threads(threads):
        pool = PoolView(x, normalize=normalize, chunk_bytes=chunk_bytes)
        kernel = make_kernel(pool, backend, device)
        try:
            res = _run(
                pool,
                kernel,
                budget,
                centres,
                prune,
                _pruning_margin(pool, prune_margin),
                progress,
            )
        finally:
            kernel.close()
    res.stats["elapsed_seconds"] = time.perf_counter() - t_start
    res.backend = f"{kernel.name}:{kernel.device}"
    return res


def _run(
    pool: PoolView,
    kernel: Kernel,
    budget: int,
    centres: np.ndarray | None,
    prune: bool,
    margin: float,
    progress: ProgressFn | None,
) -> SelectionResult:
    n = pool.n
    cd = pool.cd
    init = np.unique(np.asarray(centres if centres is not None else [], dtype=np.int64))
    taken = np.zeros(n, dtype=bool)
    taken[init] = True
    eligible = np.flatnonzero(~taken).astype(np.int64)
    m_rows = len(eligible)
    if not 1 <= budget <= m_rows:
        raise ValueError(f"budget {budget} must be in 1..{m_rows}")

    k0 = len(init)
    cap = k0 + budget
    cbuf = np.empty((cap, pool.d), dtype=cd)  # centre vectors, initial then picked
    radius2 = np.zeros(cap, dtype=cd)  # upper bound on max mind^2 of each centre's group
    four = 4.0 * (1.0 + margin)
    shrink = 1.0 - margin

    picks = np.empty(budget, dtype=np.int64)
    scores = np.empty(budget, dtype=np.float64)
    evals = 0
    evals_plain = 0
    centre_evals = 0
    seed_evals = 0
    t0 = time.perf_counter()

    if k0:
        for a, part in pool.chunks(init):
            cbuf[a : a + len(part)] = pool.gather(part)
        assign, mind = kernel.nearest(eligible, cbuf[:k0])
        mind = mind.astype(cd, copy=False)
        seed_evals += m_rows * k0
        np.maximum.at(radius2, assign, mind)
        k = k0
        done = 0
    else:
        # No centres: first pick = farthest from the pool mean, then a full pass to it.
        d2mean = kernel.sqdist(pool.mean(), eligible)
        j = int(np.argmax(d2mean))
        picks[0] = eligible[j]
        scores[0] = float(np.sqrt(max(float(d2mean[j]), 0.0)))
        cbuf[0] = pool.row(int(eligible[j]))
        mind = kernel.sqdist(cbuf[0], eligible).astype(cd, copy=False)
        mind[j] = -np.inf
        assign = np.zeros(m_rows, dtype=np.int32)
        radius2[0] = max(float(mind.max()), 0.0)
        seed_evals += 2 * m_rows
        k = 1
        done = 1
        if progress is not None:
            progress(done, budget)
    seed_seconds = time.perf_counter() - t0

    all_pos = np.arange(m_rows, dtype=np.int64)
    inf = np.array(np.inf, dtype=cd)
    for t in range(done, budget):
        j = int(np.argmax(mind))
        d2x = float(mind[j])
        picks[t] = eligible[j]
        scores[t] = float(np.sqrt(max(d2x, 0.0)))
        mind[j] = -np.inf
        if progress is not None:
            progress(t + 1, budget)
        if t == budget - 1:
            break  # the last pick needs no update
        xv = pool.row(int(eligible[j]))
        cbuf[k] = xv
        remaining = m_rows - t - 1
        evals_plain += remaining
        if prune:
            # groups that might hold a row closer to x than to its centre: R_c > d(x, centres)/2
            maybe = np.flatnonzero(radius2[:k] * four > d2x * shrink)
            dcc2 = _centre_sqdist(kernel, xv, cbuf, maybe)
            centre_evals += len(maybe)
            act = dcc2 < four * radius2[maybe]
            active = maybe[act]
            thr = np.full(k + 1, inf, dtype=cd)
            thr[active] = dcc2[act] / four
            cand = np.flatnonzero(mind > np.take(thr, assign))
        else:
            active = np.zeros(0, dtype=np.int64)
            thr = np.zeros(0, dtype=cd)
            cand = all_pos[mind > -np.inf]
        evals += len(cand)
        d2 = kernel.sqdist(xv, np.take(eligible, cand)) if len(cand) else np.zeros(0, dtype=cd)
        better = d2 < np.take(mind, cand)
        moved = cand[better]
        if prune and len(active):
            # bound for active groups: non-candidates have mind <= thr; stayers are exact
            new_r = np.full(k + 1, -np.inf, dtype=cd)
            new_r[active] = thr[active]
            stay = cand[~better]
            np.maximum.at(new_r, assign[stay], mind[stay])
            radius2[active] = np.minimum(radius2[active], new_r[active])
        mind[moved] = d2[better]
        assign[moved] = k
        radius2[k] = float(mind[moved].max()) if len(moved) else 0.0
        k += 1

    greedy_seconds = time.perf_counter() - t0 - seed_seconds
    seed_plain = m_rows * k0 if k0 else 2 * m_rows
    stats = {
        "eligible_rows": float(m_rows),
        "initial_centres": float(k0),
        "seed_distance_evals": float(seed_evals),
        "seed_distance_evals_unpruned": float(seed_plain),
        "distance_evals": float(evals),
        "distance_evals_unpruned": float(evals_plain),
        "pruned_fraction": float(1.0 - evals / evals_plain) if evals_plain else 0.0,
        "centre_distance_evals": float(centre_evals),
        **{f"seed_{k}": float(v) for k, v in getattr(kernel, "counters", {}).items()},
        "seed_seconds": seed_seconds,
        "greedy_seconds": greedy_seconds,
    }
    return SelectionResult(indices=picks, scores=scores, stats=stats)


__all__ = ["PRUNE_MARGIN", "ProgressFn", "kcenter_greedy"]
