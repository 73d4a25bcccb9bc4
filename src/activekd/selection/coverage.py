"""Low-budget coverage selection: TypiClust, ProbCover and the typicality they share.

Both work on L2-normalised features (cosine geometry: ``d = sqrt(2 - 2 cos)``, in [0, 2]), held
once as a float32 copy (4 N D bytes; the input, float16/32/64 ndarray or memmap, is converted a
chunk at a time). Everything runs on the CPU with faiss (k-means, exact kNN) and BLAS.

* **Typicality** (Hacohen et al. 2022): ``1 / (mean L2 distance to the k nearest other rows +
  1e-5)``; exact kNN by ``faiss.knn`` over query chunks (the 1e-5 is the authors' guard against
  duplicates). The paper's definition uses L2 distances; the authors' code averages the squared
  distances faiss returns (IndexFlatL2), which ranks differently in general: we use L2.
* **TypiClust** (:func:`typiclust_select`): seeded k-means (k-means++ start, faiss Lloyd
  iterations, :func:`kmeans_labels`) into K clusters; each pick takes
  the cluster with the fewest labeled + excluded + already picked rows (ties: the largest cluster,
  then the lowest cluster id), clusters smaller than ``min_cluster_size`` skipped while others
  remain, and picks its most typical eligible row not picked yet. Typicality is computed within
  the cluster with ``k = min(k_nn, size // 2)`` as in the authors' code; sizes and counts are
  recomputed after every pick (the paper's "largest uncovered cluster"), where the authors' code
  walks a list sorted once. Two further differences from the authors' code, both kept because
  every measurement in docs/benchmarks.md ran with them: (1) typicality is computed once per
  cluster over *all* its rows, labeled and picked ones included (density is a property of the
  data; the authors drop labeled and picked rows from the cluster and recompute after each
  pick); (2) a cluster of exactly ``min_cluster_size`` rows counts as big (the authors keep
  only clusters *larger* than their MIN_CLUSTER_SIZE = 5).
* **ProbCover** (Yehuda et al. 2022, :func:`probcover_select`): the ball of row i holds the rows
  within ``delta`` of it (itself included), truncated to its ``max_neighbors`` nearest rows
  (stats ``truncated_balls``: the fraction of rows whose ball hit that cap). Rows covered by the
  balls of labeled and excluded rows are removed first; each pick is the eligible row whose ball
  covers the most uncovered rows (ties: lowest row id). When every row is covered, the rest of the
  batch is drawn uniformly from the eligible rows (``default_rng(seed)``; stats
  ``random_fallback_picks``). The radius comes from the paper's purity heuristic, without labels
  (:func:`purity_radius`): k-means into K clusters; a ball is pure when all its rows share the
  centre's cluster, i.e. when the distance to the nearest row of another cluster (computed
  exactly, untruncated) exceeds delta; delta = the largest value of ``RADIUS_GRID`` for which at
  least ``alpha`` of the rows have pure balls (the smallest grid value if none does).

One pass of chunked float32 GEMMs over all pairs (N^2 D multiply-adds, numpy/BLAS, plus
``torch.topk``) gives both every row's ``max_neighbors`` nearest rows and its distance to the
nearest row of another cluster; the neighbour lists take 8 N ``max_neighbors`` bytes and the ball
graph about as much again. Pool-wide typicality is one pass of ``faiss.knn``. At N = 60k, D = 1280 each such pass is ~5e12
multiply-adds (about a minute or two on two cores); PCA-reduced features cut that in proportion.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from activekd.arrays import iter_row_chunks
from activekd.selection.result import SelectionResult

_CHUNK_BYTES = 32 << 20
#: Candidate radii of the purity heuristic: 0.01, 0.02, ..., 2.00 (L2 on the unit sphere).
RADIUS_GRID: np.ndarray = np.round(np.arange(1, 201) * 0.01, 2)
#: faiss k-means iterations (faiss' default).
KMEANS_ITER = 25
#: Typicality's guard against zero mean distances (the authors' value).
TYPICALITY_EPS = 1e-5


def normalized(x: np.ndarray) -> np.ndarray:
    """``x`` (N, D) with rows scaled to unit L2 norm (zero rows stay zero), as a new C-contiguous
    float32 array; norms are taken in float64, a chunk at a time."""
    n, d = x.shape
    out = np.empty((n, d), dtype=np.float32)
    for sl in iter_row_chunks(n, d * 8, _CHUNK_BYTES):
        block = np.asarray(x[sl], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        out[sl] = block / np.where(norms > 0, norms, 1.0)[:, None]
    return out


def _faiss_seed(seed: int) -> int:
    return int(seed % (2**31 - 1))


def kmeans_labels(xn: np.ndarray, k: int, seed: int, *, niter: int = KMEANS_ITER) -> np.ndarray:
    """Cluster id (int64, 0..k-1) of every row of the float32 matrix ``xn``: k-means seeded by
    k-means++ (D^2 sampling from ``default_rng(seed)``, as sklearn's KMeans the authors used) on a
    seeded sample of at most 256 rows per centroid, ``niter`` faiss Lloyd iterations on that
    sample, then the nearest centroid of every row. ``k`` is capped at N; k <= 1: all in 0.
    The steps are :func:`kmeans_sample`, :func:`train_centroids` and :func:`nearest_centroids`
    (a sharded pool runs the first two on the driver, the last on each shard)."""
    n, d = xn.shape
    k = min(int(k), n)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    sample_ids, rng = kmeans_sample(n, k, seed)
    centroids = train_centroids(
        np.ascontiguousarray(xn[sample_ids], dtype=np.float32), k, seed, rng, niter=niter
    )
    out = np.empty(n, dtype=np.int64)
    for sl in iter_row_chunks(n, d * 4, _CHUNK_BYTES):
        out[sl] = nearest_centroids(xn[sl], centroids)
    return out


def kmeans_sample(n: int, k: int, seed: int) -> tuple[np.ndarray, np.random.Generator]:
    """The sorted rows :func:`kmeans_labels` trains on (at most 256 per centroid) and the seeded
    generator after drawing them (k-means++ goes on with it)."""
    rng = np.random.default_rng(seed)
    m = min(n, 256 * k)
    sample_ids = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    return sample_ids, rng


def train_centroids(
    sample: np.ndarray, k: int, seed: int, rng: np.random.Generator, *, niter: int = KMEANS_ITER
) -> np.ndarray:
    """k-means++ start (drawn with ``rng``) and ``niter`` faiss Lloyd iterations on the float32
    ``sample``: the (k, D) float32 centroids."""
    import faiss

    km = faiss.Kmeans(
        sample.shape[1],
        k,
        niter=niter,
        seed=_faiss_seed(seed),
        max_points_per_centroid=256,
        min_points_per_centroid=1,  # no "please provide more points" warnings on small pools
        verbose=False,
    )
    km.train(sample, init_centroids=_kmeanspp(sample, k, rng))
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def nearest_centroids(block: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid (int64, exact L2, ties: the lowest id) of each row of ``block``."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, lab = index.search(np.ascontiguousarray(block, dtype=np.float32), 1)
    return lab[:, 0].astype(np.int64)


def _kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ initial centroids (Arthur & Vassilvitskii 2007): rows of ``x`` drawn with
    probability proportional to the squared distance to the nearest centroid drawn so far."""
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    mind2 = np.full(n, np.inf)
    for t in range(1, k):
        c = x[chosen[t - 1]]
        d2 = sq - 2.0 * (x @ c).astype(np.float64) + float(sq[chosen[t - 1]])
        np.minimum(mind2, np.maximum(d2, 0.0), out=mind2)
        mind2[chosen[:t]] = 0.0
        total = mind2.sum()
        if total > 0:
            chosen[t] = min(int(np.searchsorted(np.cumsum(mind2), rng.random() * total)), n - 1)
            while mind2[chosen[t]] <= 0.0:  # float edge at a bucket boundary: step back to mass
                chosen[t] -= 1
        else:  # every row coincides with a centroid: any unused row
            chosen[t] = int(np.setdiff1d(np.arange(n), chosen[:t])[0])
    return np.ascontiguousarray(x[chosen], dtype=np.float32)


def knn_mean_distance(xb: np.ndarray, k: int, queries: np.ndarray | None = None) -> np.ndarray:
    """Mean L2 distance from rows ``queries`` of ``xb`` (default: all) to their ``k`` nearest
    *other* rows of ``xb`` (exact, ``faiss.knn``; k capped at N - 1; N = 1 gives inf)."""
    import faiss

    n, d = xb.shape
    q = np.arange(n, dtype=np.int64) if queries is None else np.asarray(queries, dtype=np.int64)
    k = min(int(k), n - 1)
    out = np.empty(len(q), dtype=np.float64)
    if k < 1:
        out[:] = np.inf
        return out
    base = np.ascontiguousarray(xb, dtype=np.float32)
    for sl in iter_row_chunks(len(q), (k + 1) * 12 + d * 4, _CHUNK_BYTES):
        ids = q[sl]
        dist2, nbr = faiss.knn(np.ascontiguousarray(base[ids]), base, k + 1)
        # drop the query itself (or, when duplicates push it out of the list, the farthest one)
        keep = nbr != ids[:, None]
        no_self = keep.all(axis=1)
        keep[no_self, -1] = False
        dist = np.sqrt(np.maximum(dist2[keep].reshape(len(ids), k), 0.0), dtype=np.float64)
        out[sl] = dist.mean(axis=1)
    return out


def typicality(xb: np.ndarray, k: int, queries: np.ndarray | None = None) -> np.ndarray:
    """``1 / (knn_mean_distance + TYPICALITY_EPS)``: high where the k nearest rows are close."""
    return 1.0 / (knn_mean_distance(xb, k, queries) + TYPICALITY_EPS)


def typiclust_clusters(labeled: int, excluded: int, budget: int, max_clusters: float) -> int:
    """TypiClust's k-means K: one cluster per labeled, excluded and new pick, at most
    ``max_clusters``."""
    return min(int(labeled) + int(excluded) + int(budget), int(max_clusters))


def typiclust_select(
    xn: np.ndarray | None,
    clusters: np.ndarray,
    eligible: np.ndarray,
    budget: int,
    *,
    k_nn: int = 20,
    min_cluster_size: int = 5,
    rows: Callable[[np.ndarray], np.ndarray] | None = None,
) -> SelectionResult:
    """TypiClust's picks given the normalised features and a cluster id per row (see the module
    docstring). Rows not in ``eligible`` (labeled, excluded) count towards their cluster's
    coverage and are never picked. Scores: the pick's typicality within its cluster.
    ``rows``: the normalised features of the given (sorted) rows, in place of ``xn`` (a sharded
    pool gathers a picked cluster's members from its shards)."""
    if rows is None:
        if xn is None:
            raise ValueError("give xn or rows")
        matrix = xn

        def rows(ids: np.ndarray) -> np.ndarray:
            return matrix[ids]

    n = len(clusters)
    k = int(clusters.max()) + 1 if n else 0
    sizes = np.bincount(clusters, minlength=k)
    pickable = np.zeros(n, dtype=bool)
    pickable[eligible] = True
    counts = np.bincount(clusters[~pickable], minlength=k)  # labeled + excluded per cluster
    avail = np.bincount(clusters[eligible], minlength=k)
    order = np.argsort(clusters, kind="stable")  # rows grouped by cluster, ascending within
    starts = np.r_[0, np.cumsum(sizes)]
    typ: dict[int, np.ndarray] = {}
    ids = np.arange(k)
    picks = np.empty(budget, dtype=np.int64)
    scores = np.empty(budget, dtype=np.float64)
    new_clusters = small_picks = 0
    for t in range(budget):
        open_ = avail > 0
        big = open_ & (sizes >= min_cluster_size)
        cand = np.flatnonzero(big if big.any() else open_)
        c = int(cand[np.lexsort((ids[cand], -sizes[cand], counts[cand]))[0]])
        members = order[starts[c] : starts[c + 1]]
        if c not in typ:
            kk = min(k_nn, len(members) // 2)
            typ[c] = typicality(rows(members), kk) if kk >= 1 else np.zeros(len(members))
        tc = np.where(pickable[members], typ[c], -np.inf)
        j = int(np.argmax(tc))  # members ascend: ties go to the lowest row id
        row = int(members[j])
        new_clusters += int(counts[c] == 0)
        small_picks += int(sizes[c] < min_cluster_size)
        picks[t], scores[t] = row, float(typ[c][j])
        pickable[row] = False
        counts[c] += 1
        avail[c] -= 1
    stats = {
        "clusters": float(int((sizes > 0).sum())),
        "clusters_picked": float(len(np.unique(clusters[picks]))),
        "new_cluster_picks": float(new_clusters),
        "small_cluster_picks": float(small_picks),
    }
    return SelectionResult(picks, scores, stats, backend="faiss:cpu")


def neighbour_scan(
    xn: np.ndarray, m: int, clusters: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """For every row of the float32 unit-norm matrix ``xn``: its ``m`` nearest rows (itself
    first; int32 ids (N, m), nearest first) with their L2 distances (float32), and, when
    ``clusters`` is given, the exact L2 distance to the nearest row of another cluster (inf if
    none). One pass of chunked float32 GEMMs over all pairs; ``torch.topk`` keeps the nearest
    (about 2x numpy's argpartition), per-cluster maxima come from one ``reduceat`` over columns
    grouped by cluster."""
    import torch

    n, d = xn.shape
    m = min(int(m), n)
    nbr = np.empty((n, m), dtype=np.int32)
    ndist = np.empty((n, m), dtype=np.float32)
    other = np.full(n, np.inf, dtype=np.float32) if clusters is not None else None
    if clusters is not None:
        col = np.argsort(clusters, kind="stable")  # columns grouped by cluster
        sizes = np.bincount(clusters)
        seg_start = np.r_[0, np.cumsum(sizes)[:-1]][sizes > 0]
        seg_cluster = np.flatnonzero(sizes > 0)
    else:
        col = np.arange(n)
    pos = np.empty(n, dtype=np.int64)
    pos[col] = np.arange(n)  # column of each row
    base = np.ascontiguousarray(xn[col], dtype=np.float32)
    for sl in iter_row_chunks(n, n * 4 + d * 4, _CHUNK_BYTES):
        rows = np.arange(sl.start, sl.stop)
        sim = np.ascontiguousarray(xn[sl], dtype=np.float32) @ base.T  # (chunk, N) cosines
        sim[np.arange(len(rows)), pos[rows]] = np.inf  # itself first, whatever the rounding
        if other is not None and clusters is not None:
            seg = np.maximum.reduceat(sim, seg_start, axis=1)  # (chunk, clusters present)
            seg[seg_cluster[None, :] == clusters[rows, None]] = -np.inf
            best = seg.max(axis=1) if seg.shape[1] else np.full(len(rows), -np.inf)
            other[sl] = np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0))
        val, idx = torch.topk(torch.from_numpy(sim), m, dim=1, largest=True, sorted=True)
        ps = val.numpy()
        ps[:, 0] = 1.0  # itself: distance 0
        nbr[sl] = col[idx.numpy()]
        ndist[sl] = np.sqrt(np.maximum(2.0 - 2.0 * ps, 0.0))
    return nbr, ndist, other


def purity_radius(
    other_dist: np.ndarray, alpha: float, grid: np.ndarray = RADIUS_GRID
) -> tuple[float, float]:
    """(delta, purity): the largest grid value at which at least ``alpha`` of the rows have a pure
    ball (distance to the nearest row of another cluster > delta), and that fraction; the
    smallest grid value when none reaches ``alpha``."""
    srt = np.sort(np.asarray(other_dist, dtype=np.float64))
    n = len(srt)
    # purity(delta) = #(other > delta) / n, non-increasing in delta
    pure = (n - np.searchsorted(srt, grid, side="right")) / n
    ok = np.flatnonzero(pure >= alpha)
    i = int(ok[-1]) if len(ok) else 0
    return float(grid[i]), float(pure[i])


def probcover_select(
    nbr: np.ndarray,
    ndist: np.ndarray,
    radius: float,
    eligible: np.ndarray,
    budget: int,
    seed: int,
) -> SelectionResult:
    """Greedy max coverage of ``radius``-balls over the neighbour lists of
    :func:`neighbour_scan` (see the module docstring). Scores: rows newly covered by each pick
    (0 for the random fill once everything is covered)."""
    n, m = nbr.shape
    inside = ndist <= np.float32(radius)
    inside[:, 0] = True  # a ball always holds its centre
    sizes = inside.sum(axis=1)
    indptr = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    targets = nbr[inside]  # int32, row-major: ball of row 0, then row 1, ...
    owners = np.repeat(np.arange(n, dtype=np.int32), sizes)
    by_target = np.argsort(targets, kind="stable")
    rev_ptr = np.r_[0, np.cumsum(np.bincount(targets, minlength=n))].astype(np.int64)
    rev_owner = owners[by_target]  # balls holding row j: rev_owner[rev_ptr[j]:rev_ptr[j+1]]
    del by_target

    covered = np.zeros(n, dtype=bool)
    pickable = np.zeros(n, dtype=bool)
    pickable[eligible] = True
    covered[targets[~pickable[owners]]] = True  # balls of labeled and excluded rows
    covered[~pickable] = True
    before = float(covered.mean())
    gain = np.bincount(owners, weights=~covered[targets], minlength=n).astype(np.int64)

    picks = np.empty(budget, dtype=np.int64)
    scores = np.zeros(budget, dtype=np.float64)
    t = 0
    while t < budget:
        g = np.where(pickable, gain, -1)
        i = int(np.argmax(g))
        if g[i] <= 0:
            break
        ball = targets[indptr[i] : indptr[i + 1]]
        new = ball[~covered[ball]]
        covered[new] = True
        if len(new):
            hit = np.concatenate([rev_owner[rev_ptr[j] : rev_ptr[j + 1]] for j in new])
            gain -= np.bincount(hit, minlength=n)
        picks[t], scores[t] = i, float(len(new))
        pickable[i] = False
        t += 1
    fallback = budget - t
    if fallback:
        rng = np.random.default_rng(seed)
        rest = np.flatnonzero(pickable)
        picks[t:] = rest[rng.choice(len(rest), size=fallback, replace=False)]
    stats = {
        "radius": float(radius),
        "coverage_before": before,
        "coverage_after": float(covered.mean()),
        "mean_ball_size": float(sizes.mean()),
        "truncated_balls": float(inside[:, -1].mean()) if 1 < m < n else 0.0,
        "random_fallback_picks": float(fallback),
    }
    return SelectionResult(picks, scores, stats, backend="numpy:cpu")


__all__ = [
    "KMEANS_ITER",
    "RADIUS_GRID",
    "TYPICALITY_EPS",
    "kmeans_labels",
    "kmeans_sample",
    "knn_mean_distance",
    "nearest_centroids",
    "neighbour_scan",
    "normalized",
    "probcover_select",
    "purity_radius",
    "train_centroids",
    "typicality",
    "typiclust_clusters",
    "typiclust_select",
]
