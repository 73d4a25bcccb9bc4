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
   (``prune_margin``) far above the relative rounding of normal floats plus an absolute one
   (4 D tiny) above the rounding of sums that underflow, so the picks are exactly those of
   plain greedy at every magnitude.
4. Layout: each group also keeps its member list, so a pick's update can test only the lists of
   the groups the new centre reaches instead of every row, and the farthest row is found from
   the group bounds; a cost model picks the cheaper scan per pick (:class:`KCenterShard`). On a
   10M-row pool where a pick reaches a few groups, this is what keeps a pick far below O(N).
5. int8 screen (CPU, D >= 256, numba installed): the rows pruning leaves are first tested against
   an int8 copy of the pool with a proven lower bound on their distance; only the rows it cannot
   rule out are measured exactly (``_int8_screen``; same picks and scores, ~1 byte read a value).

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
    NumpyKernel,
    PoolView,
    make_kernel,
    rounding_floor,
    rounding_margin,
    uses_torch,
)
from activekd.selection._int8_screen import Int8Screen, use_int8_screen
from activekd.selection.result import SelectionResult
from activekd.selection.threads import limit_threads, quiet_torch

#: Relative safety margin of the pruning test, on squared distances: a row is skipped only when
#: d(c,x)^2 >= 4 * (1 + margin) * m^2. Float32 rounding of a D-term sum is ~D * 6e-8 relative at
#: worst; 1e-3 (or 4*D*eps if larger) keeps pruning conservative by orders of magnitude.
PRUNE_MARGIN: float = 1e-3

ProgressFn = Callable[[int, int], None]


def _pruning_margin(pool: PoolView, margin: float | None) -> float:
    if margin is not None:
        return margin
    return max(PRUNE_MARGIN, rounding_margin(pool.d, pool.cd))


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
    layout: str = "auto",
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
        layout: how each pick's update scans the rows: 'auto' (the cost model), 'flat' or
            'grouped' (same picks and scores; see :class:`KCenterShard`; tests, benchmarks).
    """
    t_start = time.perf_counter()
    with limit_threads(threads):
        pool = PoolView(x, normalize=normalize, chunk_bytes=chunk_bytes)
        kernel = make_kernel(pool, backend, device)
        try:
            with quiet_torch(not uses_torch(kernel)):
                res = _run(
                    pool,
                    kernel,
                    budget,
                    centres,
                    prune,
                    _pruning_margin(pool, prune_margin),
                    progress,
                    layout,
                )
        finally:
            kernel.close()
    res.stats["elapsed_seconds"] = time.perf_counter() - t_start
    res.backend = f"{kernel.name}:{kernel.device}"
    return res


#: Cost model of one pick's update (``KCenterShard.add_centre``), in row-scan units: the flat
#: scan tests every row (``mind > thr[assign]``, ~4 ns a row here); the grouped scan tests only
#: the member lists of the active groups but pays a fixed cost per group (list concatenation and
#: storing, ~0.75 us = ~190 rows as measured when the lists were stored with ``np.split``; plain
#: slicing since 2026-12-07 costs less, not re-measured) and ~2x per listed row (the lists hold
#: moved-out rows until compacted). The cheaper one runs; both give the same min distances.
GROUP_COST_ROWS = 190.0
GROUP_ROW_COST = 2.0
#: The int8 copy is built (one pass over the shard) only once the updates have measured this
#: many rows exactly (as a fraction of the shard's): a selection with a few cheap picks never
#: pays for it. It is dropped (and its memory freed) for the rest of a selection once it has
#: screened ``SCREEN_TRIAL_ROWS`` times the shard's rows and let more than ``SCREEN_GIVE_UP`` of
#: them through: then it only adds a pass (heavy-tailed rows, where int8 is coarse). Picks are
#: the same either way.
SCREEN_BUILD_AFTER = 0.5
SCREEN_TRIAL_ROWS = 2.0
SCREEN_GIVE_UP = 0.5
#: ``best()`` refines the per-group upper bounds lazily; after this many rows (as a fraction of
#: the shard's) it falls back to one full argmax.
BEST_SCAN_FRACTION = 0.25


class KCenterShard:
    """Greedy k-center state over one set of eligible rows: the running min-distance vector,
    each row's nearest centre, per-centre groups with an upper bound on their distances, and the
    centre matrix.

    The single-process engine is one shard holding every eligible row; a sharded pool is one
    shard per part of the rows (``activekd.selection.sharded``), fed the same centres in the same
    order. Every pick then updates each shard's rows exactly as one shard would: pruning only
    skips rows that provably cannot get closer, so the min distances (and the picks) are the
    same however the rows are split; only the pruning bounds are local.

    Groups: ``members[c]`` lists the positions assigned to centre c (it may still hold rows that
    moved to a later centre or were picked; they are dropped whenever the list is scanned) and
    ``radius2[c]`` bounds their min distances from above (``exact[c]``: it is their maximum).
    A pick's update scans either every row (flat) or only the active groups' lists (grouped),
    whichever the cost model (``GROUP_COST_ROWS``) says is cheaper, so large pools where few
    groups are active cost per pick what those groups hold, not O(N). ``best()`` finds the
    maximum from the bounds, refining only the groups that could hold it.

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
        layout: str = "auto",
    ) -> None:
        if layout not in ("auto", "flat", "grouped"):
            raise ValueError(f"layout must be auto, flat or grouped, not {layout!r}")
        self.pool, self.kernel, self.prune, self.layout = pool, kernel, prune, layout
        self.eligible = eligible
        self.m_rows = len(eligible)
        cd = pool.cd
        self.cbuf = np.empty((cap, pool.d), dtype=cd)  # centre vectors, initial then picked
        self.radius2 = np.full(cap, -np.inf, dtype=cd)  # upper bound on max mind^2 of each group
        self.exact = np.zeros(cap, dtype=bool)  # radius2[c] is the group's maximum
        self.members: list[np.ndarray] = []
        self.listed = np.zeros(cap, dtype=np.int64)  # len(members[c])
        margin = _pruning_margin(pool, margin)
        self.margin = margin
        self.four = 4.0 * (1.0 + margin)
        self.shrink = 1.0 - margin
        #: absolute slack of every pruning test: a skip needs d(c,x)^2 >= four m^2 + floor
        self.floor = rounding_floor(pool.d, cd)
        self.mind = np.full(self.m_rows, np.inf, dtype=cd)
        self.assign = np.zeros(self.m_rows, dtype=np.int32)
        self.k = 0
        self.evals = self.centre_evals = self.seed_evals = 0
        self.exact_evals = 0  # of ``evals``: rows measured exactly (the others: int8 screen)
        self.grouped_steps = self.flat_steps = self.full_argmax = 0
        self._all_pos = np.arange(self.m_rows, dtype=np.int64)
        self._inf = np.array(np.inf, dtype=cd)
        #: int8 screen of the greedy phase (``_int8_screen``), built lazily (SCREEN_BUILD_AFTER)
        self._run_split = kernel.run_split if isinstance(kernel, NumpyKernel) else None
        self.use_screen = self._run_split is not None and use_int8_screen(
            self.m_rows, pool.d, on_cpu=True, mapped=isinstance(pool.x, np.memmap)
        )
        self.screen: Int8Screen | None = None
        self.screen_seconds = 0.0
        self.screened = self.screen_kept = 0
        self.screen_dropped = False

    def _screen(self) -> Int8Screen:
        if self.screen is None:
            assert self._run_split is not None
            t0 = time.perf_counter()
            pool, eligible = self.pool, self.eligible
            self.screen = Int8Screen(
                lambda a, b: pool.gather(eligible[a:b]),
                self.m_rows,
                pool.d,
                pool.cd,
                self.margin,
                self._run_split,
                pool.chunk_rows,
            )
            self.screen_seconds = time.perf_counter() - t0
        return self.screen

    def _set_groups(self, k: int) -> None:
        """Member lists and exact bounds of groups 0..k-1 from ``assign`` / ``mind``."""
        order = np.argsort(self.assign, kind="stable").astype(np.int64, copy=False)
        counts = np.bincount(self.assign, minlength=k)[:k]
        self.members = [np.zeros(0, dtype=np.int64)] * k
        self._store_lists(np.arange(k), order, counts, self.mind[order])

    def _store_lists(
        self, groups: np.ndarray, pos: np.ndarray, counts: np.ndarray, mind: np.ndarray
    ) -> None:
        """Groups ``groups`` hold ``counts[i]`` consecutive entries of ``pos`` each (``mind``:
        their min distances, in the same order): sets their lists and exact bounds. Slices in a
        plain loop: ``np.split`` costs ~5 us per part, a slice ~0.3 us, and this runs per pick."""
        ends = np.cumsum(counts)
        starts = ends - counts
        members = self.members
        for g, a, b in zip(groups.tolist(), starts.tolist(), ends.tolist(), strict=True):
            members[g] = pos[a:b]
        self.listed[groups] = counts
        out = np.full(len(counts), -np.inf, dtype=self.pool.cd)
        full = counts > 0
        if len(pos):
            out[full] = np.maximum.reduceat(mind, starts[full])
        self.radius2[groups] = out
        self.exact[groups] = True

    def seed(self, centres: np.ndarray) -> None:
        """Start from ``centres`` (K >= 1, D) in the compute dtype: nearest centre per row."""
        k0 = len(centres)
        self.cbuf[:k0] = centres
        if self.m_rows:
            assign, mind = self.kernel.nearest(self.eligible, self.cbuf[:k0])
            self.assign = assign.astype(np.int32, copy=False)
            self.mind = mind.astype(self.pool.cd, copy=False)
            self._set_groups(k0)
        else:
            self.members = [np.zeros(0, dtype=np.int64) for _ in range(k0)]
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
            self.assign = np.zeros(self.m_rows, dtype=np.int32)
            self._set_groups(1)
        else:
            self.members = [np.zeros(0, dtype=np.int64)]
        self.seed_evals += self.m_rows
        self.k = 1

    def _refine(self, g: int) -> int:
        """Compacts group ``g``'s list and makes its bound exact; returns the rows it read."""
        mem = self.members[g]
        keep = mem[(self.assign[mem] == g) & (self.mind[mem] > -np.inf)]
        self.members[g] = keep
        self.listed[g] = len(keep)
        self.radius2[g] = self.mind[keep].max() if len(keep) else -np.inf
        self.exact[g] = True
        return len(mem)

    def best(self) -> tuple[float, int]:
        """(squared distance to the nearest centre, position) of the farthest eligible row not
        picked yet (-inf, -1 when there is none)."""
        if not self.m_rows:
            return -np.inf, -1
        k, bound, budget = self.k, self.radius2, BEST_SCAN_FRACTION * self.m_rows
        while budget > 0 and self.prune:
            g = int(np.argmax(bound[:k]))
            v = bound[g]
            if v == -np.inf:
                break  # every row was picked
            top = np.flatnonzero(bound[:k] == v)
            loose = top[~self.exact[top]]
            if len(loose) == 0:
                # every group that may hold the maximum holds it exactly: lowest position wins
                j = min(int(m[self.mind[m] == v].min()) for m in (self.members[t] for t in top))
                return float(v), j
            for t in loose:
                budget -= self._refine(int(t))
        self.full_argmax += 1
        j = int(np.argmax(self.mind))
        return float(self.mind[j]), j

    def take(self, j: int) -> None:
        """Position ``j`` was picked: it is never picked again."""
        g = int(self.assign[j])
        if self.mind[j] >= self.radius2[g]:
            self.exact[g] = False  # the group's maximum may have gone
        self.mind[j] = -np.inf

    def row(self, j: int) -> np.ndarray:
        """The (transformed) vector of position ``j``."""
        return self.pool.row(int(self.eligible[j]))

    def add_centre(self, xv: np.ndarray, d2x: float) -> None:
        """Make ``xv`` a centre; ``d2x`` is the squared distance at which it was picked (the
        global maximum): groups with R_c <= d(x, nearest)/2 are skipped outright."""
        k, radius2, four = self.k, self.radius2, self.four
        self.cbuf[k] = xv
        self.k += 1
        if not self.m_rows:
            self.members.append(np.zeros(0, dtype=np.int64))
            return
        if not self.prune:
            self._update_flat(xv, k, np.zeros(0, dtype=np.int64), None)
            return
        floor = self.floor
        maybe = np.flatnonzero(radius2[:k] * four + floor > d2x * self.shrink)
        dcc2 = _centre_sqdist(self.kernel, xv, self.cbuf, maybe)
        self.centre_evals += len(maybe)
        act = dcc2 < four * radius2[maybe] + floor
        # rows with four m^2 + floor <= d(c,x)^2 cannot get closer (m^2 >= 0 holds anyway)
        thr = np.maximum((dcc2[act] - floor) / four, 0.0)
        active, thr_active = maybe[act], thr.astype(self.pool.cd)
        layout = self.layout
        if layout == "auto":
            grouped = GROUP_COST_ROWS * len(active) + GROUP_ROW_COST * self.listed[active].sum()
            layout = "grouped" if grouped < self.m_rows else "flat"
        if layout == "grouped":
            self._update_grouped(xv, k, active, thr_active)
        else:
            self._update_flat(xv, k, active, thr_active)

    def _moves(self, xv: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances of candidate positions to the new centre: (mask of those that get
        closer, their new squared distances). With the int8 screen on, only the rows it cannot
        rule out are measured (same result, see ``_int8_screen``)."""
        if not (
            self.use_screen and len(cand) and self.exact_evals >= SCREEN_BUILD_AFTER * self.m_rows
        ):
            return self._exact_moves(xv, cand)
        maybe = np.flatnonzero(self._screen().maybe_closer(xv, cand, self.mind))
        better = np.zeros(len(cand), dtype=bool)
        sub, d2 = self._exact_moves(xv, cand[maybe])
        better[maybe[sub]] = True
        self.evals += len(cand) - len(maybe)  # reached, ruled out in int8
        self.screened += len(cand)
        self.screen_kept += len(maybe)
        if self.screened >= SCREEN_TRIAL_ROWS * self.m_rows and (
            self.screen_kept > SCREEN_GIVE_UP * self.screened
        ):  # int8 too coarse for these rows: measure them directly from now on
            self.use_screen, self.screen_dropped, self.screen = False, True, None
        return better, d2

    def _exact_moves(self, xv: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.evals += len(cand)
        self.exact_evals += len(cand)
        d2 = (
            self.kernel.sqdist(xv, np.take(self.eligible, cand))
            if len(cand)
            else np.zeros(0, dtype=self.pool.cd)
        )
        better = d2 < np.take(self.mind, cand)
        return better, d2[better]

    def _new_group(self, k: int, moved: np.ndarray, d2: np.ndarray) -> None:
        self.mind[moved] = d2
        self.assign[moved] = k
        self.members.append(moved)
        self.listed[k] = len(moved)
        self.radius2[k] = d2.max() if len(moved) else -np.inf
        self.exact[k] = True

    def _update_flat(
        self, xv: np.ndarray, k: int, active: np.ndarray, thr_active: np.ndarray | None
    ) -> None:
        """Tests every row: ``mind > thr[assign]`` (no pruning: every row not picked)."""
        mind, assign = self.mind, self.assign
        if thr_active is None:
            cand = self._all_pos[mind > -np.inf]
        else:
            thr = np.full(k + 1, self._inf, dtype=self.pool.cd)
            thr[active] = thr_active
            cand = np.flatnonzero(mind > np.take(thr, assign))
        self.flat_steps += 1
        better, d2 = self._moves(xv, cand)
        if thr_active is not None and len(active):
            # bound for active groups: non-candidates have mind <= thr; stayers are exact
            new_r = np.full(k + 1, -np.inf, dtype=self.pool.cd)
            new_r[active] = thr_active
            stay = cand[~better]
            np.maximum.at(new_r, assign[stay], mind[stay])
            self.radius2[active] = np.minimum(self.radius2[active], new_r[active])
            self.exact[active] = False
        elif thr_active is None:
            self.exact[:k] = False
        self._new_group(k, cand[better], d2)

    def _update_grouped(
        self, xv: np.ndarray, k: int, active: np.ndarray, thr_active: np.ndarray
    ) -> None:
        """Tests only the active groups' member lists, compacts them and makes their bounds
        exact."""
        self.grouped_steps += 1
        if not len(active):
            self._new_group(k, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=self.pool.cd))
            return
        lists = [self.members[g] for g in active]
        mem = np.concatenate(lists)
        owner = np.repeat(np.arange(len(active)), self.listed[active])
        m = self.mind[mem]
        live = (self.assign[mem] == active[owner]) & (m > -np.inf)
        is_cand = live & (m > thr_active[owner])
        at = np.flatnonzero(is_cand)
        better, d2 = self._moves(xv, mem[at])
        live[at[better]] = False  # moved to the new centre
        self._new_group(k, mem[at[better]], d2)
        counts = np.bincount(owner[live], minlength=len(active))
        # the rows that stay keep their min distance: m, gathered above, still holds it
        self._store_lists(active, mem[live], counts, m[live])


def _run(
    pool: PoolView,
    kernel: Kernel,
    budget: int,
    centres: np.ndarray | None,
    prune: bool,
    margin: float,
    progress: ProgressFn | None,
    layout: str = "auto",
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
    shard = KCenterShard(
        pool, kernel, eligible, k0 + budget, prune=prune, margin=margin, layout=layout
    )
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
        "exact_distance_evals": float(shard.exact_evals),
        "distance_evals_unpruned": float(evals_plain),
        "pruned_fraction": float(1.0 - evals / evals_plain) if evals_plain else 0.0,
        "centre_distance_evals": float(shard.centre_evals),
        "grouped_steps": float(shard.grouped_steps),
        "flat_steps": float(shard.flat_steps),
        "full_argmax_steps": float(shard.full_argmax),
        "int8_screened_rows": float(shard.screened),
        "int8_screen_build_seconds": shard.screen_seconds,
        "int8_screen_dropped": float(shard.screen_dropped),
        **{f"seed_{k}": float(v) for k, v in getattr(kernel, "counters", {}).items()},
        "seed_seconds": seed_seconds,
        "greedy_seconds": greedy_seconds,
    }
    return SelectionResult(indices=picks, scores=scores, stats=stats)


__all__ = ["GROUP_COST_ROWS", "PRUNE_MARGIN", "KCenterShard", "ProgressFn", "kcenter_greedy"]
