"""Each strategy's defining property, plus invariants shared by all of them."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from activekd.errors import InvalidArgument
from activekd.selection import STRATEGY_INFO, available_strategies, select_batch
from activekd.selection.strategies import class_quotas


@pytest.fixture(scope="module")
def pool() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(8, 0.4), size=600)
    f = rng.normal(size=(600, 10))
    labeled = rng.choice(600, 40, replace=False)
    return p, f, labeled


def test_registry_lists_every_strategy() -> None:
    names = available_strategies()
    assert names == sorted(
        [
            "pcoreset",
            "coreset",
            "random",
            "entropy",
            "margin",
            "least_confidence",
            "badge",
            "class_balanced",
            "typiclust",
            "probcover",
            "typiclust_pcoreset",
            "pcoreset_typical",
            "pcoreset_teacher",
            "pcoreset_ce",
        ]
    )
    assert STRATEGY_INFO["coreset"].needs_features and not STRATEGY_INFO["coreset"].needs_probs
    assert STRATEGY_INFO["badge"].needs_features and STRATEGY_INFO["badge"].needs_probs


@pytest.mark.parametrize("name", available_strategies())
def test_no_labeled_or_excluded_rows_and_no_duplicates(
    name: str, pool: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    p, f, labeled = pool
    exclude = np.array([5, 6, 7])
    exclude = exclude[~np.isin(exclude, labeled)]
    budget = 600 - len(labeled) - len(exclude)  # everything that is left
    res = select_batch(name, budget, probs=p, features=f, labeled=labeled, exclude=exclude, seed=3)
    got = res.indices.tolist()
    assert res.indices.dtype == np.int64
    assert len(got) == budget == len(set(got))
    assert not set(got) & set(labeled.tolist()) and not set(got) & set(exclude.tolist())
    assert res.scores.shape == (budget,) and np.isfinite(res.scores).all()
    assert res.strategy == name and res.elapsed_seconds > 0


def _eligible(n: int, labeled: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.arange(n), labeled)


def test_entropy_picks_top_entropy_in_order(
    pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    p, _, labeled = pool
    h = -(p * np.log(p)).sum(axis=1)
    el = _eligible(len(p), labeled)
    want = el[np.argsort(-h[el], kind="stable")[:30]]
    res = select_batch("entropy", 30, probs=p, labeled=labeled)
    assert res.indices.tolist() == want.tolist()
    np.testing.assert_allclose(res.scores, h[want], rtol=1e-12)
    assert (np.diff(res.scores) <= 0).all()


def test_margin_picks_smallest_margins_first(
    pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    p, _, labeled = pool
    s = np.sort(p, axis=1)
    m = s[:, -1] - s[:, -2]
    el = _eligible(len(p), labeled)
    want = el[np.argsort(m[el], kind="stable")[:30]]
    res = select_batch("margin", 30, probs=p, labeled=labeled)
    assert res.indices.tolist() == want.tolist()
    np.testing.assert_allclose(res.scores, m[want], rtol=1e-12)


def test_least_confidence(pool: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    p, _, labeled = pool
    lc = 1 - p.max(axis=1)
    el = _eligible(len(p), labeled)
    want = el[np.argsort(-lc[el], kind="stable")[:25]]
    res = select_batch("least_confidence", 25, probs=p, labeled=labeled)
    assert res.indices.tolist() == want.tolist()


def test_uncertainty_ties_go_to_lowest_index() -> None:
    p = np.tile([0.5, 0.5, 0.0], (10, 1))  # all rows identical: every score ties
    p[[2, 6]] = [0.9, 0.1, 0.0]
    for name in ["entropy", "margin", "least_confidence"]:
        res = select_batch(name, 4, probs=p, labeled=[1])
        assert res.indices.tolist() == [0, 3, 4, 5], name


def test_random_seeded_and_uniform() -> None:
    p = np.full((60, 2), 0.5)
    labeled = np.arange(10)
    a = select_batch("random", 10, probs=p, labeled=labeled, seed=5)
    b = select_batch("random", 10, probs=p, labeled=labeled, seed=5)
    c = select_batch("random", 10, probs=p, labeled=labeled, seed=6)
    assert a.indices.tolist() == b.indices.tolist() != c.indices.tolist()
    counts = np.zeros(60)
    for seed in range(1000):
        counts[select_batch("random", 10, probs=p, labeled=labeled, seed=seed).indices] += 1
    assert counts[:10].sum() == 0
    # each of the 50 rows is expected 200 times (sd ~13): a fixed bias would push rows out
    assert counts[10:].min() > 140 and counts[10:].max() < 260


def test_class_balanced_favours_underrepresented_classes() -> None:
    rng = np.random.default_rng(1)
    c = 5
    pred = np.repeat(np.arange(c), 200)  # 200 pool rows predicted per class
    p = rng.dirichlet(np.ones(c), size=1000) * 0.3
    p[np.arange(1000), pred] += 0.7
    labeled = np.arange(0, 1000, 10)[:75]  # predicted classes of labeled rows: skewed on purpose
    labels = np.array([0] * 50 + [1] * 20 + [2] * 5)  # known labels: 50/20/5/0/0
    res = select_batch("class_balanced", 40, probs=p, labeled=labeled, labels=labels, seed=0)
    per_class = np.bincount(pred[res.indices], minlength=c)
    assert per_class.sum() == 40
    # inverse-count quotas: the fewer labels a class has, the more picks it gets
    assert per_class[3] >= per_class[2] >= per_class[1] >= per_class[0]
    assert per_class[3] + per_class[4] > 0.7 * 40
    after = np.bincount(labels, minlength=c) + per_class
    assert np.ptp(after) < np.ptp(np.bincount(labels, minlength=c))
    # seeded: same seed same rows, other seed other rows
    again = select_batch("class_balanced", 40, probs=p, labeled=labeled, labels=labels, seed=0)
    other = select_batch("class_balanced", 40, probs=p, labeled=labeled, labels=labels, seed=1)
    assert res.indices.tolist() == again.indices.tolist() != other.indices.tolist()
    # without labels=, the labeled rows' predicted classes are counted: 20/20/20/15/0 here, so
    # class 4 gets weight 1 vs 1/21 and 1/16: 40 * 1 / (3/21 + 1/16 + 1) = 33.2 -> 33 picks
    no_lab = select_batch("class_balanced", 40, probs=p, labeled=labeled, seed=0)
    got = np.bincount(pred[no_lab.indices], minlength=c)
    assert got[4] == 33 and got[3] >= got[0]


def test_class_quotas_respect_capacity() -> None:
    quota, w = class_quotas(np.array([0.0, 0.0, 10.0]), np.array([1, 50, 50]), 30)
    assert quota.tolist()[0] == 1 and quota.sum() == 30  # class 0 capped at what it has
    assert quota[1] > quota[2]
    assert w.sum() == pytest.approx(1.0)


def reference_badge(
    p: np.ndarray, f: np.ndarray, eligible: np.ndarray, budget: int, seed: int
) -> list[int]:
    """BADGE with materialised gradient embeddings, same seeded sampling sequence."""
    onehot = np.eye(p.shape[1])[p.argmax(axis=1)]
    g = ((onehot - p)[:, :, None] * f[:, None, :]).reshape(len(p), -1)[eligible]
    rng = np.random.default_rng(seed)
    norms = (g**2).sum(axis=1)
    picks = [int(np.argmax(norms))]
    mind2 = np.full(len(eligible), np.inf)
    for _ in range(budget - 1):
        mind2 = np.minimum(mind2, ((g - g[picks[-1]]) ** 2).sum(axis=1))
        mind2[picks] = 0
        cum = np.cumsum(mind2)
        picks.append(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")))
    return eligible[picks].tolist()


def test_badge_matches_materialised_reference_and_is_seeded(
    pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    p, f, labeled = pool
    el = _eligible(len(p), labeled)
    for seed in [0, 1]:
        res = select_batch("badge", 20, probs=p, features=f, labeled=labeled, seed=seed)
        assert res.indices.tolist() == reference_badge(p, f, el, 20, seed)
    a = select_batch("badge", 20, probs=p, features=f, labeled=labeled, seed=4)
    b = select_batch("badge", 20, probs=p, features=f, labeled=labeled, seed=4)
    assert a.indices.tolist() == b.indices.tolist()
    onehot = np.eye(8)[p.argmax(axis=1)]
    gnorm = np.linalg.norm(onehot - p, axis=1) * np.linalg.norm(f, axis=1)
    assert a.indices[0] == el[np.argmax(gnorm[el])]  # Ash et al.: largest gradient norm first
    assert a.scores[0] == pytest.approx(gnorm[el].max(), rel=1e-6)


def test_badge_never_materialises_n_by_c_by_d() -> None:
    n, c, d = 4000, 1000, 1000
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.full(c, 0.1), size=n).astype(np.float32)
    f = rng.normal(size=(n, d)).astype(np.float32)
    tracemalloc.start()
    res = select_batch("badge", 5, probs=p, features=f, seed=0, threads=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(set(res.indices.tolist())) == 5
    # N*C*D float32 would be 16 GB (does not fit this machine's RAM); inputs are 32 MB.
    # measured peak ~1 MB of extra allocations
    assert peak < 64 << 20


def test_threads_option_is_restored_and_progress_reported(
    pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    import faiss
    import torch

    p, _, labeled = pool
    before = (faiss.omp_get_max_threads(), torch.get_num_threads())
    seen: list[tuple[int, int]] = []
    res = select_batch(
        "pcoreset",
        12,
        probs=p,
        labeled=labeled,
        threads=1,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert (faiss.omp_get_max_threads(), torch.get_num_threads()) == before
    assert [d for d, _ in seen] == list(range(1, 13)) and {t for _, t in seen} == {12}
    same = select_batch("pcoreset", 12, probs=p, labeled=labeled)  # default threads
    assert res.indices.tolist() == same.indices.tolist()


def test_pcoreset_variants_are_pcoreset_on_the_probabilities_their_name_says(
    pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """pcoreset_teacher / pcoreset_ce are the same engine on other probabilities: given the same
    matrix they pick exactly what pcoreset picks; they differ only in what the loop and the
    experiment service pass them (the registry's probs_source), and pcoreset stays the paper's."""
    from activekd.selection.strategies import PROBS_SOURCES

    p, f, labeled = pool
    want = select_batch("pcoreset", 25, probs=p, labeled=labeled, seed=4)
    for name, source in (("pcoreset_teacher", "teacher"), ("pcoreset_ce", "ce")):
        got = select_batch(name, 25, probs=p, labeled=labeled, seed=4)
        assert got.indices.tolist() == want.indices.tolist() and got.strategy == name
        np.testing.assert_array_equal(got.scores, want.scores)
        assert STRATEGY_INFO[name].probs_source == source
        assert STRATEGY_INFO[name].needs_probs and not STRATEGY_INFO[name].needs_features
    assert STRATEGY_INFO["pcoreset"].probs_source == "combined"
    assert {i.probs_source for i in STRATEGY_INFO.values()} <= set(PROBS_SOURCES)
    with pytest.raises(InvalidArgument, match="probs"):
        select_batch("pcoreset_teacher", 5, features=f, labeled=labeled)
