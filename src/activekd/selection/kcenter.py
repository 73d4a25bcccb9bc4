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


class KCenterShard:
    """Greedy k-center state over one set of eligible rows: the running min-distance vector,
    each row's nearest centre, the per-centre group bounds and the centre matrix.

    The single-process engine is one shard holding every eligible row; a sharded pool is one
    shard per part of the rows (``activekd.selection.sharded``), fed the same centres in the same
    order. Every pick then updates each shard's rows exactly as one shard would: pruning only
    skips rows that provably cannot get closer, so the min distances (and the picks) are the
    same however the rows are split; only the pruning bounds are local.

    Positions (``j``) index ``eligible`` (ascending row ids of ``pool``), so the lowest position at
    the maximum is the lowest row id: the engine's ties rule.
    """

    def __init__(
        self,
        pool: PoolView,
        kernel: Kernel,
        eligible: np.ndarray,
        cap: int,
        *,
        prune: bool = True,
        margin: float | None = None,
    ) -> None:
        self.pool, self.kernel, self.prune = pool, kernel, prune
        self.eligible = eligible
        self.m_rows = len(eligible)
        cd = pool.cd
        self.cbuf = np.empty((cap, pool.d), dtype=cd)  # centre vectors, initial then picked
        self.radius2 = np.zeros(cap, dtype=cd)  # upper bound on max mind^2 of each group
        margin = _pruning_margin(pool, margin)
        self.four = 4.0 * (1.0 + margin)
        self.shrink = 1.0 - margin
        self.mind = np.full(self.m_rows, np.inf, dtype=cd)
        self.assign = np.zeros(self.m_rows, dtype=np.int32)
        self.k = 0
        self.evals = self.centre_evals = self.seed_evals = 0
        self._all_pos = np.arange(self.m_rows, dtype=np.int64)
        self._inf = np.array(np.inf, dtype=cd)

    def seed(self, centres: np.ndarray) -> None:
        """Start from ``centres`` (K >= 1, D) in the compute dtype: nearest centre per row."""
        k0 = len(centres)
        self.cbuf[:k0] = centres
        if self.m_rows:
            assign, mind = self.kernel.nearest(self.eligible, self.cbuf[:k0])
            self.assign, self.mind = assign, mind.astype(self.pool.cd, copy=False)
            np.maximum.at(self.radius2, self.assign, self.mind)
        self.seed_evals += self.m_rows * k0
        self.k = k0

    def farthest_from(self, v: np.ndarray) -> tuple[float, int]:
        """(squared distance, position) of the eligible row farthest from ``v`` (-inf, -1 when
        there is none)."""
        if not self.m_rows:
            return -np.inf, -1
        d2 = self.kernel.sqdist(v, self.eligible)
        self.seed_evals += self.m_rows
        j = int(np.argmax(d2))
        return float(d2[j]), j

    def seed_one(self, xv: np.ndarray, taken: int = -1) -> None:
        """Start from the single centre ``xv`` (the first pick; ``taken``: its position here)."""
        self.cbuf[0] = xv
        if self.m_rows:
            self.mind = self.kernel.sqdist(xv, self.eligible).astype(self.pool.cd, copy=False)
            if taken >= 0:
                self.mind[taken] = -np.inf
            self.radius2[0] = max(float(self.mind.max()), 0.0)
        self.seed_evals += self.m_rows
        self.k = 1

    def best(self) -> tuple[float, int]:
        """(squared distance to the nearest centre, position) of the farthest eligible row not
        picked yet (-inf, -1 when there is none)."""
        if not self.m_rows:
            return -np.inf, -1
        j = int(np.argmax(self.mind))
        return float(self.mind[j]), j

    def take(self, j: int) -> None:
        """Position ``j`` was picked: it is never picked again."""
        self.mind[j] = -np.inf

    def row(self, j: int) -> np.ndarray:
        """The (transformed) vector of position ``j``."""
        return self.pool.row(int(self.eligible[j]))

    def add_centre(self, xv: np.ndarray, d2x: float) -> None:
        """Make ``xv`` a centre; ``d2x`` is the squared distance at which it was picked (the
        global maximum): groups with R_c <= d(x, nearest)/2 are skipped outright."""
        k, mind, assign, radius2, four = self.k, self.mind, self.assign, self.radius2, self.four
        self.cbuf[k] = xv
        if not self.m_rows:
            self.k += 1
            return
        if self.prune:
            maybe = np.flatnonzero(radius2[:k] * four > d2x * self.shrink)
            dcc2 = _centre_sqdist(self.kernel, xv, self.cbuf, maybe)
            self.centre_evals += len(maybe)
            act = dcc2 < four * radius2[maybe]
            active = maybe[act]
            thr = np.full(k + 1, self._inf, dtype=self.pool.cd)
            thr[active] = dcc2[act] / four
            cand = np.flatnonzero(mind > np.take(thr, assign))
        else:
            active = np.zeros(0, dtype=np.int64)
            thr = np.zeros(0, dtype=self.pool.cd)
            cand = self._all_pos[mind > -np.inf]
        self.evals += len(cand)
        d2 = (
            self.kernel.sqdist(xv, np.take(self.eligible, cand))
            if len(cand)
            else np.zeros(0, dtype=self.pool.cd)
        )
        better = d2 < np.take(mind, cand)
        moved = cand[better]
        if self.prune and len(active):
            # bound for active groups: non-candidates have mind <= thr; stayers are exact
            new_r = np.full(k + 1, -np.inf, dtype=self.pool.cd)
            new_r[active] = thr[active]
            stay = cand[~better]
            np.maximum.at(new_r, assign[stay], mind[stay])
            radius2[active] = np.minimum(radius2[active], new_r[active])
        mind[moved] = d2[better]
        assign[moved] = k
        radius2[k] = float(mind[moved].max()) if len(moved) else 0.0
        self.k += 1


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
    init = np.unique(np.asarray(centres if centres is not None else [], dtype=np.int64))
    taken = np.zeros(n, dtype=bool)
    taken[init] = True
    eligible = np.flatnonzero(~taken).astype(np.int64)
    m_rows = len(eligible)
    if not 1 <= budget <= m_rows:
        raise ValueError(f"budget {budget} must be in 1..{m_rows}")

    k0 = len(init)
    shard = KCenterShard(pool, kernel, eligible, k0 + budget, prune=prune, margin=margin)
    picks = np.empty(budget, dtype=np.int64)
    scores = np.empty(budget, dtype=np.float64)
    evals_plain = 0
    t0 = time.perf_counter()

    if k0:
        cvec = np.empty((k0, pool.d), dtype=pool.cd)
        for a, part in pool.chunks(init):
            cvec[a : a + len(part)] = pool.gather(part)
        shard.seed(cvec)
        done = 0
    else:
        # No centres: first pick = farthest from the pool mean, then a full pass to it.
        d2m, j = shard.farthest_from(pool.mean())
        picks[0] = eligible[j]
        scores[0] = float(np.sqrt(max(d2m, 0.0)))
        shard.seed_one(shard.row(j), taken=j)
        done = 1
        if progress is not None:
            progress(done, budget)
    seed_seconds = time.perf_counter() - t0

    for t in range(done, budget):
        d2x, j = shard.best()
        picks[t] = eligible[j]
        scores[t] = float(np.sqrt(max(d2x, 0.0)))
        shard.take(j)
        if progress is not None:
            progress(t + 1, budget)
        if t == budget - 1:
            break  # the last pick needs no update
        evals_plain += m_rows - t - 1
        shard.add_centre(shard.row(j), d2x)

    greedy_seconds = time.perf_counter() - t0 - seed_seconds
    seed_plain = m_rows * k0 if k0 else 2 * m_rows
    evals = shard.evals
    stats = {
        "eligible_rows": float(m_rows),
        "initial_centres": float(k0),
        "seed_distance_evals": float(shard.seed_evals),
        "seed_distance_evals_unpruned": float(seed_plain),
        "distance_evals": float(evals),
        "distance_evals_unpruned": float(evals_plain),
        "pruned_fraction": float(1.0 - evals / evals_plain) if evals_plain else 0.0,
        "centre_distance_evals": float(shard.centre_evals),
        **{f"seed_{k}": float(v) for k, v in getattr(kernel, "counters", {}).items()},
        "seed_seconds": seed_seconds,
        "greedy_seconds": greedy_seconds,
    }
    return SelectionResult(indices=picks, scores=scores, stats=stats)


__all__ = ["PRUNE_MARGIN", "KCenterShard", "ProgressFn", "kcenter_greedy"]
