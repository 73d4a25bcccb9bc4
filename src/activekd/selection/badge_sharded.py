"""BADGE over a pool split into row shards, each held by its own worker.

:func:`~activekd.selection.badge.badge_select` needs, per pick, the dot products of every
eligible row with the new centre (two mat-vecs) and one draw proportional to D^2 over all of
them. Here each worker holds rows ``[start, stop)`` of the probabilities and the features (a
pool's shard files, memory-mapped) and the state of its eligible rows (predicted class,
squared gradient norm, squared distance to the nearest centre); the coordinator sends each
centre's row (C + D floats) to every worker, gets back each worker's sum of D^2, draws the one
uniform number the single-process code draws, and asks the worker whose bucket holds it for
the row. Two messages a pick; no worker ever sees another's rows.

Picks equal ``badge_select``'s on the joined pool (the same per-block functions, the same draws
from ``numpy.random.default_rng(seed)``), and scores equal them to float32 rounding: a shard's
blocks start at other rows than the joined pool's, and BLAS may round a mat-vec of another shape
differently in the last bits. A pick could differ only when a uniform number falls within that
rounding of a bucket boundary, or when rows nearly coincide with a centre: their D^2 is then
rounding noise (exact duplicates of a centre included), and the draws among them can differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from activekd.arrays import iter_row_chunks
from activekd.selection.badge import _CHUNK_BYTES, block_dots, block_norms, centre_of, draw_position
from activekd.selection.result import SelectionResult

#: a chosen centre as the workers take it: (probabilities, features, predicted class, ||g||^2)
Centre = tuple[np.ndarray, np.ndarray, int, float]


@dataclass(frozen=True)
class BadgeShardSpec:
    """Where a worker's rows are (picklable: sent to Ray actors)."""

    start: int
    stop: int
    #: sorted global row ids of this shard that may not be picked (labeled or excluded)
    taken: np.ndarray
    #: the global row of the files' first row (a shard file of a sharded pool: ``start``)
    file_offset: int = 0
    chunk_bytes: int = _CHUNK_BYTES


class BadgeWorker:
    """One shard of a BADGE selection: rows ``spec.start:spec.stop`` of ``probs`` and
    ``features`` (arrays or memmaps holding rows from ``spec.file_offset``)."""

    def __init__(self, probs: np.ndarray, features: np.ndarray, spec: BadgeShardSpec) -> None:
        a, b, off = spec.start, spec.stop, spec.file_offset
        self.start = a
        self.probs = probs[a - off : b - off]
        self.features = features[a - off : b - off]
        if len(self.probs) != b - a or len(self.features) != b - a:
            raise ValueError(f"shard rows [{a}, {b}) lie outside its files")
        n, c, d = b - a, self.probs.shape[1], self.features.shape[1]
        self.row_bytes = (c + d) * 4
        self.chunk_bytes = spec.chunk_bytes
        self.y = np.empty(n, dtype=np.int64)
        self.sq_norm = np.empty(n, dtype=np.float64)
        for sl in iter_row_chunks(n, self.row_bytes, self.chunk_bytes):
            self.y[sl], self.sq_norm[sl] = block_norms(self.probs[sl], self.features[sl])
        keep = np.ones(n, dtype=bool)
        keep[np.asarray(spec.taken, dtype=np.int64) - a] = False
        self.local = np.flatnonzero(keep).astype(np.int64)  # eligible rows, shard positions
        self.el_norm = self.sq_norm[self.local]
        self.mind2 = np.full(len(self.local), np.inf, dtype=np.float64)
        self.picked = np.zeros(len(self.local), dtype=bool)
        self.cum = np.zeros(0, dtype=np.float64)
        self.compute_seconds = 0.0

    def first(self) -> tuple[float, int]:
        """(largest ``||g||^2`` of an eligible row, its global row); (-inf, -1) when none."""
        if not len(self.local):
            return -np.inf, -1
        j = int(np.argmax(self.el_norm))
        return float(self.el_norm[j]), self.start + int(self.local[j])

    def take(self, row: int, d2: float | None = None) -> tuple[Centre, float]:
        """Mark global ``row`` (one of this shard's eligible rows) picked; returns it as a centre
        and its score (sqrt of ``d2``, its D^2 when drawn; the first pick's: its norm)."""
        j = int(np.searchsorted(self.local, row - self.start))
        if j >= len(self.local) or self.local[j] != row - self.start:
            raise ValueError(f"row {row} is not an eligible row of this shard")
        self.picked[j] = True
        r = int(self.local[j])
        pj, fj = centre_of(self.probs[r], self.features[r])
        score = float(np.sqrt(self.el_norm[j] if d2 is None else d2))
        return (pj, fj, int(self.y[r]), float(self.sq_norm[r])), score

    def update(self, centre: Centre) -> float:
        """Apply a new centre to this shard's D^2; returns their sum (0.0 when none is left)."""
        t0 = time.perf_counter()
        pj, fj, yj, sq_r = centre
        if len(self.local):
            n = len(self.y)
            dot = np.empty(n, dtype=np.float64)
            for sl in iter_row_chunks(n, self.row_bytes, self.chunk_bytes):
                dot[sl] = block_dots(self.probs[sl], self.features[sl], self.y[sl], pj, fj, yj)
            d2 = np.maximum(self.el_norm + sq_r - 2.0 * dot[self.local], 0.0)
            np.minimum(self.mind2, d2, out=self.mind2)
            self.mind2[self.picked] = 0.0
        self.cum = np.cumsum(self.mind2)
        self.compute_seconds += time.perf_counter() - t0
        return float(self.cum[-1]) if len(self.cum) else 0.0

    def locate(self, u: float) -> tuple[int, float]:
        """(global row, its D^2) whose bucket holds ``u`` (0 <= u < this shard's sum), as
        ``badge_select`` draws; (-1, 0.0) when the step back over a float edge leaves the shard."""
        pos = draw_position(self.mind2, self.cum, u)
        if pos < 0:
            return -1, 0.0
        return self.start + int(self.local[pos]), float(self.mind2[pos])

    def last_with_mass(self) -> tuple[int, float]:
        """(global row, D^2) of the last row with D^2 > 0; (-1, 0.0) when none."""
        pos = np.flatnonzero(self.mind2 > 0.0)
        if not len(pos):
            return -1, 0.0
        j = int(pos[-1])
        return self.start + int(self.local[j]), float(self.mind2[j])

    def free_count(self) -> int:
        """Eligible rows not picked yet."""
        return int(len(self.picked) - self.picked.sum())

    def free_row(self, k: int) -> int:
        """The global row of this shard's ``k``-th unpicked eligible row."""
        return self.start + int(self.local[np.flatnonzero(~self.picked)[k]])

    def counters(self) -> dict[str, float]:
        return {"compute_seconds": self.compute_seconds}


#: calls ``method(*args)`` on every worker, answers in worker order
CallAll = Callable[[str, tuple[Any, ...]], list[Any]]
#: calls ``method(*args)`` on worker ``w``
CallOne = Callable[[int, str, tuple[Any, ...]], Any]


def badge_over_shards(
    call_all: CallAll, call_one: CallOne, budget: int, seed: int
) -> SelectionResult:
    """``budget`` BADGE picks over workers holding consecutive row shards (in row order): the
    picks and scores of ``badge_select`` on the joined pool. Stats as ``badge_select``'s plus
    ``rounds`` (worker round trips) and ``shards``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    firsts: list[tuple[float, int]] = call_all("first", ())
    w = max(range(len(firsts)), key=lambda i: (firsts[i][0], -i))  # ties: the lowest row
    if firsts[w][1] < 0:
        raise ValueError("no eligible row in any shard")
    picks = np.empty(budget, dtype=np.int64)
    scores = np.empty(budget, dtype=np.float64)
    centre, scores[0] = call_one(w, "take", (firsts[w][1],))
    picks[0] = firsts[w][1]
    rounds, uniform_draws = 2, 0
    for t in range(1, budget):
        sums = np.asarray(call_all("update", (centre,)), dtype=np.float64)
        prefix = np.cumsum(sums)
        rounds += 1
        if prefix[-1] > 0.0:
            u = rng.random() * prefix[-1]
            w = min(int(np.searchsorted(prefix, u, side="right")), len(sums) - 1)
            while sums[w] <= 0.0:
                w -= 1
            base = float(prefix[w - 1]) if w else 0.0
            row, d2 = call_one(w, "locate", (u - base,))
            while row < 0:  # a float edge stepped back out of shard w: the mass before it
                w -= 1
                row, d2 = call_one(w, "last_with_mass", ())
        else:  # every remaining row coincides with a centre: draw uniformly
            free = np.asarray(call_all("free_count", ()), dtype=np.int64)
            k = int(rng.integers(int(free.sum())))
            w = int(np.searchsorted(np.cumsum(free), k, side="right"))
            row = int(call_one(w, "free_row", (k - int(free[:w].sum()),)))
            d2 = 0.0
            uniform_draws += 1
        centre, scores[t] = call_one(w, "take", (row, d2))
        picks[t] = row
        rounds += 1
    d = len(centre[0]) * len(centre[1])
    res = SelectionResult(picks, scores)
    res.stats.update(
        uniform_draws=float(uniform_draws),
        embedding_dim=float(d),
        rounds=float(rounds),
        shards=float(len(firsts)),
        elapsed_seconds=time.perf_counter() - t0,
    )
    return res


def badge_local(
    probs: np.ndarray,
    features: np.ndarray,
    eligible: np.ndarray,
    budget: int,
    seed: int,
    bounds: Sequence[tuple[int, int]],
) -> SelectionResult:
    """:func:`badge_over_shards` with :class:`BadgeWorker` s in this process over ``bounds``
    (the reference the Ray actors are checked against)."""
    taken = np.setdiff1d(np.arange(len(probs)), np.asarray(eligible, dtype=np.int64))
    workers = [
        BadgeWorker(probs, features, BadgeShardSpec(a, b, taken[(taken >= a) & (taken < b)]))
        for a, b in bounds
    ]

    def call_all(method: str, args: tuple[Any, ...]) -> list[Any]:
        return [getattr(wk, method)(*args) for wk in workers]

    def call_one(w: int, method: str, args: tuple[Any, ...]) -> Any:
        return getattr(workers[w], method)(*args)

    return badge_over_shards(call_all, call_one, budget, seed)


__all__ = ["BadgeShardSpec", "BadgeWorker", "badge_local", "badge_over_shards"]
