"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on gradient embeddings, factorised.

The gradient embedding of row i is g_i = a_i (x) f_i with a_i = onehot(argmax p_i) - p_i (C) and
f_i the features (D). It is never formed: with

    ||g_i||^2     = ||a_i||^2 ||f_i||^2,          ||a_i||^2 = 1 - 2 p_i[y_i] + ||p_i||^2
    <g_i, g_j>    = (a_i . a_j)(f_i . f_j)
    a_i . a_j     = [y_i == y_j] - p_j[y_i] - p_i[y_j] + p_i . p_j

one k-means++ step costs two mat-vecs over the pool (P p_j and F f_j): O(N (C + D)) time and
O(N) extra memory, instead of the O(N C D) embedding matrix.

Seeding follows Ash et al.'s code: the first centre is the eligible row with the largest gradient
norm (score = that norm); every next centre is drawn with probability proportional to D^2, the
squared distance to the nearest chosen centre (score = D at pick time), from
``numpy.random.default_rng(seed)``. As in the paper, labeled rows are not centres: BADGE spreads the
batch over the unlabeled pool only.
"""

from __future__ import annotations

import numpy as np

from activekd.arrays import iter_row_chunks
from activekd.selection._distance import compute_dtype
from activekd.selection.result import SelectionResult

_CHUNK_BYTES = 32 << 20


def _in_compute_dtype(block: np.ndarray) -> np.ndarray:
    """``block`` as float64 when it is float64, else as float32 (the k-center engine's rule)."""
    return np.asarray(block, dtype=compute_dtype(block.dtype))


def block_norms(p_block: np.ndarray, f_block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, ``||g||^2``) of a block of rows (probabilities, features)."""
    p = _in_compute_dtype(p_block)
    f = _in_compute_dtype(f_block)
    yy = np.argmax(p, axis=1)
    pyy = p[np.arange(len(yy)), yy].astype(np.float64)
    pp = np.einsum("ij,ij->i", p, p, dtype=np.float64)
    ff = np.einsum("ij,ij->i", f, f, dtype=np.float64)
    return yy, np.maximum(1.0 - 2.0 * pyy + pp, 0.0) * ff


def centre_of(p_row: np.ndarray, f_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A chosen centre's probabilities and features as the dot products take them."""
    return (
        _in_compute_dtype(p_row).astype(np.float64),
        _in_compute_dtype(f_row).astype(np.float64),
    )


def block_dots(
    p_block: np.ndarray, f_block: np.ndarray, y_block: np.ndarray,
    pj: np.ndarray, fj: np.ndarray, yj: int,
) -> np.ndarray:  # fmt: skip
    """``<g_i, g_j>`` of a block of rows with the centre ``j`` (float64)."""
    p = _in_compute_dtype(p_block)
    f = _in_compute_dtype(f_block)
    aa = (y_block == yj).astype(np.float64) - pj[y_block] - p[:, yj] + p @ pj.astype(p.dtype)
    return np.asarray(aa * (f @ fj.astype(f.dtype)), dtype=np.float64)


def draw_position(mind2: np.ndarray, cum: np.ndarray, u: float) -> int:
    """The row of ``mind2`` whose bucket of ``cum`` (its cumulative sum) holds ``u``; -1 when
    the step back over float edges at bucket boundaries leaves the array."""
    pos = min(int(np.searchsorted(cum, u, side="right")), len(mind2) - 1)
    while pos >= 0 and mind2[pos] <= 0.0:  # float edge at a bucket boundary: step back to mass
        pos -= 1
    return pos


def badge_select(
    probs: np.ndarray,
    features: np.ndarray,
    eligible: np.ndarray,
    budget: int,
    seed: int,
) -> SelectionResult:
    """k-means++ seeding of ``budget`` eligible rows in gradient-embedding space.

    Returns the row ids in pick order, their scores and stats (backend ``numpy:cpu``).
    """
    n, c = probs.shape
    d = features.shape[1]
    y = np.empty(n, dtype=np.int64)
    sq_norm = np.empty(n, dtype=np.float64)  # ||g_i||^2
    for sl in iter_row_chunks(n, (c + d) * 4, _CHUNK_BYTES):
        y[sl], sq_norm[sl] = block_norms(probs[sl], features[sl])

    rng = np.random.default_rng(seed)
    m = len(eligible)
    el_norm = sq_norm[eligible]
    picks = np.empty(budget, dtype=np.int64)
    scores = np.empty(budget, dtype=np.float64)
    first = int(np.argmax(el_norm))
    picks[0] = eligible[first]
    scores[0] = float(np.sqrt(el_norm[first]))
    mind2 = np.full(m, np.inf, dtype=np.float64)
    picked = np.zeros(m, dtype=bool)
    picked[first] = True
    pos = first
    uniform_draws = 0
    for t in range(1, budget):
        r = int(eligible[pos])
        pj, fj = centre_of(probs[r], features[r])
        yj = int(y[r])
        dot = np.empty(n, dtype=np.float64)
        for sl in iter_row_chunks(n, (c + d) * 4, _CHUNK_BYTES):
            dot[sl] = block_dots(probs[sl], features[sl], y[sl], pj, fj, yj)
        d2 = np.maximum(el_norm + sq_norm[r] - 2.0 * dot[eligible], 0.0)
        np.minimum(mind2, d2, out=mind2)
        mind2[picked] = 0.0
        cum = np.cumsum(mind2)
        if cum[-1] > 0.0:
            pos = draw_position(mind2, cum, rng.random() * cum[-1])
        else:  # every remaining row coincides with a centre: draw uniformly
            free = np.flatnonzero(~picked)
            pos = int(free[rng.integers(len(free))])
            uniform_draws += 1
        picked[pos] = True
        picks[t] = eligible[pos]
        scores[t] = float(np.sqrt(mind2[pos]))
    stats = {"uniform_draws": float(uniform_draws), "embedding_dim": float(c * d)}
    return SelectionResult(picks, scores, stats)
