"""typiclust, probcover and the PCoreSet hybrids: defining properties vs straightforward references
(sklearn k-means / exact kNN, brute-force greedy coverage), seeds, parameters, errors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

from activekd.errors import InvalidArgument
from activekd.selection import STRATEGY_INFO, select_batch
from activekd.selection.coverage import (
    RADIUS_GRID,
    kmeans_labels,
    normalized,
    typiclust_select,
)

COVERAGE = ("typiclust", "probcover", "typiclust_pcoreset", "pcoreset_typical")


@pytest.fixture(autouse=True)
def one_faiss_thread() -> Iterator[None]:
    """faiss on one thread: these pools are tiny, and OpenMP spinning on a busy machine costs
    seconds per call (the picks do not depend on the thread count)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _blobs(sizes: list[int], d: int = 8, seed: int = 0, spread: float = 0.05) -> np.ndarray:
    """Tight, well separated blobs (one per size) around random directions."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(len(sizes), d)))
    return np.concatenate(
        [c + spread * rng.normal(size=(s, d)) for c, s in zip(centres, sizes, strict=True)]
    )


def reference_typicality(x: np.ndarray, k: int) -> np.ndarray:
    """1 / (mean L2 distance to the k nearest other rows + 1e-5), sklearn exact kNN, float64."""
    if k < 1:
        return np.zeros(len(x))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return 1.0 / (dist[:, 1:].mean(axis=1) + 1e-5)


def reference_typiclust(
    xn: np.ndarray, clusters: np.ndarray, taken: set[int], budget: int, k_nn: int = 20,
    min_size: int = 5,
) -> list[int]:  # fmt: skip
    """TypiClust written plainly: per pick, recount everything and recompute typicality."""
    picks: list[int] = []
    for _ in range(budget):
        used = taken | set(picks)
        best: tuple[int, int, int] | None = None
        cands = []
        for c in np.unique(clusters):
            members = np.flatnonzero(clusters == c)
            if not [m for m in members if m not in used]:
                continue
            cands.append((int(c), len(members)))
        big = [cs for cs in cands if cs[1] >= min_size] or cands
        for c, size in big:
            key = (sum(int(m) in used for m in np.flatnonzero(clusters == c)), -size, c)
            best = key if best is None or key < best else best
        assert best is not None
        members = np.flatnonzero(clusters == best[2])
        typ = reference_typicality(xn[members], min(k_nn, len(members) // 2))
        order = sorted(range(len(members)), key=lambda i: (-typ[i], members[i]))
        picks.append(int(next(members[i] for i in order if int(members[i]) not in used)))
    return picks


# --- typiclust ---------------------------------------------------------------------------------
def test_typiclust_picks_one_point_per_new_cluster() -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(500, 12)).astype(np.float32)
    labeled = rng.choice(500, 15, replace=False)
    exclude = np.setdiff1d(rng.choice(500, 5, replace=False), labeled)
    budget = 25
    res = select_batch("typiclust", budget, features=f, labeled=labeled, exclude=exclude, seed=4)
    k = len(labeled) + len(exclude) + budget
    clusters = kmeans_labels(normalized(f), k, 4)  # the same seeded clustering
    picked = clusters[res.indices]
    assert len(set(picked.tolist())) == budget  # one point per cluster ...
    assert not set(picked.tolist()) & set(clusters[np.r_[labeled, exclude]].tolist())  # ... new
    assert res.stats["new_cluster_picks"] == budget and res.stats["kmeans_k"] == k
    assert not set(res.indices.tolist()) & set(np.r_[labeled, exclude].tolist())


def test_typiclust_matches_sklearn_reference_on_blobs() -> None:
    sizes = [40, 35, 31, 26, 22, 17, 12]
    x = _blobs(sizes, seed=2)
    starts = np.r_[0, np.cumsum(sizes)]
    labeled = np.array([starts[0] + 3, starts[3] + 1])  # blobs 0 and 3 are covered
    budget = 5  # K = 2 + 5 = 7 clusters = the blobs
    res = select_batch("typiclust", budget, features=x, labeled=labeled, seed=0)
    xn = _unit(x)
    ref_clusters = KMeans(n_clusters=7, n_init=10, random_state=0).fit_predict(xn)
    want = reference_typiclust(xn, ref_clusters, set(labeled.tolist()), budget)
    assert res.indices.tolist() == want
    # largest uncovered blobs first: 1, 2, 4, 5, 6
    assert [int(np.searchsorted(starts, i, side="right")) - 1 for i in want] == [1, 2, 4, 5, 6]
    typ = reference_typicality(xn[starts[1] : starts[2]], 35 // 2)  # k = min(20, size // 2)
    assert res.scores[0] == pytest.approx(typ.max(), rel=1e-4)


def test_typiclust_agrees_with_scikit_activeml_on_blobs() -> None:
    """scikit-activeml's TypiClust (the bench extra's baseline; sklearn k-means, k=20) picks the
    same rows where the clustering is unambiguous."""
    from skactiveml.pool import TypiClust

    sizes = [40, 35, 31, 26, 22, 17, 12]
    x = _blobs(sizes, seed=2)
    starts = np.r_[0, np.cumsum(sizes)]
    labeled = np.array([starts[0] + 3, starts[3] + 1])
    y = np.full(len(x), np.nan)
    y[labeled] = 0
    theirs = TypiClust(random_state=0, k=20).query(_unit(x), y, batch_size=5)
    ours = select_batch("typiclust", 5, features=x, labeled=labeled, seed=0)
    assert ours.indices.tolist() == [int(i) for i in theirs]


def test_typiclust_engine_matches_reference_with_repeats_and_small_clusters() -> None:
    rng = np.random.default_rng(3)
    xn = normalized(rng.normal(size=(160, 6)))
    clusters = rng.choice(9, size=160, p=[0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.03, 0.015, 0.005])
    taken = set(rng.choice(160, 12, replace=False).tolist())
    eligible = np.setdiff1d(np.arange(160), sorted(taken))
    for budget in (4, 30):  # 30 > clusters: round robin by counts, small clusters last
        res = typiclust_select(xn, clusters, eligible, budget, k_nn=20, min_cluster_size=5)
        assert res.indices.tolist() == reference_typiclust(xn, clusters, taken, budget)


def test_typiclust_is_seeded() -> None:
    rng = np.random.default_rng(4)
    f = rng.normal(size=(400, 10)).astype(np.float32)
    a = select_batch("typiclust", 12, features=f, seed=1)
    b = select_batch("typiclust", 12, features=f, seed=1)
    c = select_batch("typiclust", 12, features=f, seed=2)
    assert a.indices.tolist() == b.indices.tolist() != c.indices.tolist()
    assert (a.scores == b.scores).all()


# --- probcover ---------------------------------------------------------------------------------
def reference_probcover(xn: np.ndarray, radius: float, taken: list[int], budget: int) -> list[int]:
    """Brute-force greedy coverage: full float64 distance matrix, balls = d <= radius."""
    d = np.sqrt(np.maximum(((xn[:, None, :] - xn[None, :, :]) ** 2).sum(-1), 0.0))
    ball = d <= radius
    covered = np.zeros(len(xn), dtype=bool)
    for r in taken:
        covered |= ball[r]
        covered[r] = True
    pickable = np.ones(len(xn), dtype=bool)
    pickable[taken] = False
    picks = []
    for _ in range(budget):
        gain = np.where(pickable, (ball & ~covered).sum(axis=1), -1)
        i = int(np.argmax(gain))
        if gain[i] <= 0:
            break
        picks.append(i)
        covered |= ball[i]
        pickable[i] = False
    return picks


def reference_radius(xn: np.ndarray, clusters: np.ndarray, alpha: float) -> tuple[float, float]:
    d = np.sqrt(np.maximum(((xn[:, None, :] - xn[None, :, :]) ** 2).sum(-1), 0.0))
    best = (float(RADIUS_GRID[0]), -1.0)
    for delta in RADIUS_GRID:
        pure = np.mean([(clusters[d[i] <= delta] == clusters[i]).all() for i in range(len(xn))])
        if pure >= alpha:
            best = (float(delta), float(pure))
    if best[1] < 0:  # none reaches alpha: the smallest radius
        delta = RADIUS_GRID[0]
        best = (float(delta), float(np.mean([(clusters[d[i] <= delta] == clusters[i]).all()
                                             for i in range(len(xn))])))  # fmt: skip
    return best


@pytest.fixture(scope="module")
def cover_pool() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    f = np.concatenate([_blobs([60, 50, 40], d=5, seed=6, spread=0.25), rng.normal(size=(30, 5))])
    p = rng.dirichlet(np.ones(3), size=len(f))
    labeled = rng.choice(len(f), 8, replace=False)
    return f.astype(np.float32), p, labeled


def test_probcover_matches_brute_force_greedy(
    cover_pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    f, p, labeled = cover_pool
    xn = _unit(f)
    for radius in (0.23, 0.41):
        res = select_batch(
            "probcover", 10, features=f, labeled=labeled, params={"radius": radius}, seed=0
        )
        want = reference_probcover(xn, radius, labeled.tolist(), 10)
        assert len(want) == 10 and res.indices.tolist() == want
        assert res.stats["random_fallback_picks"] == 0 and res.stats["truncated_balls"] == 0
    # the heuristic radius, then the same greedy
    res = select_batch("probcover", 10, probs=p, features=f, labeled=labeled, seed=0)
    assert res.stats["radius_from_heuristic"] == 1 and res.stats["purity_clusters"] == 3
    want = reference_probcover(xn, res.stats["radius"], labeled.tolist(), 10)
    assert res.indices.tolist() == want[: len(res.indices)]


def test_probcover_coverage_never_decreases(
    cover_pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    f, _, labeled = cover_pool
    res = select_batch("probcover", 40, features=f, labeled=labeled, params={"radius": 0.3}, seed=0)
    gains = res.scores
    assert (gains >= 0).all() and (np.diff(gains) <= 0).all()  # greedy on a coverage function
    n = len(f)
    before, after = res.stats["coverage_before"], res.stats["coverage_after"]
    assert 0 < before < after <= 1
    assert after - before == pytest.approx(gains.sum() / n)
    # a bigger batch covers a superset: coverage after k picks is a prefix sum, never lower
    more = select_batch(
        "probcover", 60, features=f, labeled=labeled, params={"radius": 0.3}, seed=0
    )
    assert more.indices[:40].tolist() == res.indices.tolist()
    assert more.stats["coverage_after"] >= after


def test_probcover_radius_heuristic_is_the_papers_and_reproducible(
    cover_pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    f, p, labeled = cover_pool
    a = select_batch("probcover", 5, probs=p, features=f, labeled=labeled, seed=3)
    b = select_batch("probcover", 5, probs=p, features=f, labeled=labeled, seed=3)
    assert a.indices.tolist() == b.indices.tolist() and a.stats["radius"] == b.stats["radius"]
    clusters = kmeans_labels(normalized(f), 3, 3)
    radius, purity = reference_radius(_unit(f), clusters, 0.95)
    assert a.stats["radius"] == pytest.approx(radius) and a.stats["purity"] == pytest.approx(purity)
    assert purity >= 0.95
    # num_classes stands in for probs; a lower alpha allows a larger radius
    c = select_batch("probcover", 5, features=f, params={"num_classes": 3}, labeled=labeled, seed=3)
    assert c.stats["radius"] == a.stats["radius"]
    lo = select_batch("probcover", 5, probs=p, features=f, params={"alpha": 0.5}, seed=3)
    assert lo.stats["radius"] > a.stats["radius"]


def test_probcover_falls_back_to_seeded_random_when_all_is_covered(
    cover_pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    f, _, labeled = cover_pool
    kw = {"features": f, "labeled": labeled, "params": {"radius": 2.0}}
    a = select_batch("probcover", 6, seed=1, **kw)  # type: ignore[arg-type]
    b = select_batch("probcover", 6, seed=1, **kw)  # type: ignore[arg-type]
    c = select_batch("probcover", 6, seed=2, **kw)  # type: ignore[arg-type]
    assert a.stats["coverage_before"] == 1.0 and a.stats["random_fallback_picks"] == 6
    assert a.indices.tolist() == b.indices.tolist() != c.indices.tolist()
    assert (a.scores == 0).all()


def test_probcover_caps_ball_sizes_and_says_so(
    cover_pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    f, _, _ = cover_pool
    res = select_batch(
        "probcover", 3, features=f, params={"radius": 0.5, "max_neighbors": 4}, seed=0
    )
    assert res.stats["mean_ball_size"] <= 4 and res.stats["truncated_balls"] > 0.5
    assert res.scores[0] == 4


def test_probcover_needs_a_class_count_or_a_radius() -> None:
    f = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(InvalidArgument, match="num_classes") as exc:
        select_batch("probcover", 3, features=f)
    assert exc.value.field == "params"
    assert len(select_batch("probcover", 3, features=f, params={"radius": 0.5}).indices) == 3


# --- hybrids -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hybrid_pool() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    f = rng.normal(size=(400, 8)).astype(np.float32)
    logits = f[:, :4] * 2.0
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return p.astype(np.float32), f


def test_typiclust_pcoreset_switches_at_the_documented_count(
    hybrid_pool: tuple[np.ndarray, np.ndarray],
) -> None:
    p, f = hybrid_pool
    rng = np.random.default_rng(8)
    rows = rng.choice(400, 12, replace=False)  # 4 classes x 3 = 12 rows: the switch
    cases = [(rows[:11], None, "typiclust"), (rows[:9], rows[9:], "pcoreset")]
    for labeled, exclude, phase in cases:
        kw = {"probs": p, "features": f, "labeled": labeled, "exclude": exclude, "seed": 2}
        hyb = select_batch("typiclust_pcoreset", 8, **kw)  # type: ignore[arg-type]
        ref = select_batch(phase, 8, **kw)  # type: ignore[arg-type]
        assert hyb.indices.tolist() == ref.indices.tolist(), phase
        np.testing.assert_array_equal(hyb.scores, ref.scores)
        assert hyb.stats["typiclust_phase"] == float(phase == "typiclust")
    # the switch point is a parameter
    low = select_batch(
        "typiclust_pcoreset", 8, probs=p, features=f, labeled=rows[:4],
        params={"switch_per_class": 1}, seed=2,
    )  # fmt: skip
    want = select_batch("pcoreset", 8, probs=p, labeled=rows[:4])
    assert low.indices.tolist() == want.indices.tolist()


def test_pcoreset_typical_equals_pcoreset_at_fraction_one_and_restricts_otherwise(
    hybrid_pool: tuple[np.ndarray, np.ndarray],
) -> None:
    from tests.selection.test_kcenter import reference_kcenter

    p, f = hybrid_pool
    labeled = np.arange(0, 400, 37)
    full = select_batch(
        "pcoreset_typical", 15, probs=p, features=f, labeled=labeled,
        params={"candidate_fraction": 1.0},
    )  # fmt: skip
    pc = select_batch("pcoreset", 15, probs=p, labeled=labeled)
    assert full.indices.tolist() == pc.indices.tolist()
    np.testing.assert_array_equal(full.scores, pc.scores)

    half = select_batch("pcoreset_typical", 15, probs=p, features=f, labeled=labeled)
    el = np.setdiff1d(np.arange(400), labeled)
    typ = reference_typicality(_unit(f), 20)[el]
    n_cand = int(np.ceil(0.5 * len(el)))
    cand = el[np.argsort(-typ, kind="stable")[:n_cand]]
    assert set(half.indices.tolist()) <= set(cand.tolist())
    assert half.stats["candidates"] == n_cand
    # k-center on probs over labeled + candidates only, in row order
    sub = np.union1d(labeled, cand)
    want, _ = reference_kcenter(p[sub], 15, np.searchsorted(sub, labeled).tolist())
    assert half.indices.tolist() == sub[want].tolist()
    assert half.indices.tolist() != pc.indices.tolist()


# --- shared: seeds, errors, parameters ---------------------------------------------------------
@pytest.mark.parametrize("name", COVERAGE)
def test_coverage_strategies_need_features(name: str) -> None:
    p = np.full((20, 2), 0.5)
    with pytest.raises(InvalidArgument, match="needs features") as exc:
        select_batch(name, 3, probs=p)
    assert exc.value.field == "features"


@pytest.mark.parametrize("name", COVERAGE)
def test_coverage_strategies_exact_batch_deterministic(
    name: str, hybrid_pool: tuple[np.ndarray, np.ndarray]
) -> None:
    p, f = hybrid_pool
    labeled = np.arange(5, 400, 50)
    exclude = np.array([1, 2, 3])
    runs = [
        select_batch(name, 17, probs=p, features=f, labeled=labeled, exclude=exclude, seed=9)
        for _ in range(2)
    ]
    got = runs[0].indices.tolist()
    assert got == runs[1].indices.tolist() and len(got) == len(set(got)) == 17
    assert not set(got) & (set(labeled.tolist()) | {1, 2, 3})
    assert np.isfinite(runs[0].scores).all()


def test_params_are_validated_against_the_registry() -> None:
    f = np.random.default_rng(0).normal(size=(40, 4))
    assert STRATEGY_INFO["typiclust"].params == {
        "k_nn": 20.0, "max_clusters": 500.0, "min_cluster_size": 5.0,
    }  # fmt: skip
    assert STRATEGY_INFO["pcoreset"].params == {}
    with pytest.raises(InvalidArgument, match=r"no parameter 'k'.*k_nn \(default 20\)") as exc:
        select_batch("typiclust", 3, features=f, params={"k": 3})
    assert exc.value.field == "params"
    for bad in ({"k_nn": 2.5}, {"k_nn": 0}, {"k_nn": float("nan")}, {"max_clusters": True}):
        with pytest.raises(InvalidArgument, match=r"must be an integer in 1\.\."):
            select_batch("typiclust", 3, features=f, params=bad)
    with pytest.raises(InvalidArgument, match=r"must be a number > 0 and <= 1"):
        select_batch("probcover", 3, features=f, params={"radius": 0.5, "alpha": 0})
    p = np.full((40, 2), 0.5)
    with pytest.raises(InvalidArgument, match="takes no parameters"):
        select_batch("pcoreset", 3, probs=p, params={"k_nn": 3})
    with pytest.raises(InvalidArgument, match="must map parameter names"):
        select_batch("typiclust", 3, features=f, params=[("k_nn", 3)])  # type: ignore[arg-type]
    # a parameter changes the result
    a = select_batch("typiclust", 3, features=f, params={"max_clusters": 1})
    assert a.stats["kmeans_k"] == 1
