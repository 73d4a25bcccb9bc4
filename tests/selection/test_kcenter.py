"""k-center engine: exact picks vs a recompute-everything reference, pruning, dtypes, memmaps."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from activekd.selection import kcenter_greedy, select_batch


def reference_kcenter(
    x: np.ndarray, budget: int, centres: list[int], *, normalize: bool = False
) -> tuple[list[int], list[float]]:
    """Plain greedy k-center, written independently: every pick recomputes the distance of every
    row to every centre (the authors' algorithm), in float64, argmax with ties to the lowest id."""
    x = np.asarray(x, dtype=np.float64)
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    pickable = np.ones(len(x), dtype=bool)
    pickable[centres] = False
    picks: list[int] = []
    scores: list[float] = []
    for _ in range(budget):
        cent = list(centres) + picks
        if cent:
            d2 = np.stack([((x - x[c]) ** 2).sum(axis=1) for c in cent]).min(axis=0)
        else:
            d2 = ((x - x.mean(axis=0)) ** 2).sum(axis=1)
        d2[~pickable] = -np.inf
        j = int(np.argmax(d2))
        picks.append(j)
        scores.append(float(np.sqrt(d2[j])))
        pickable[j] = False
    return picks, scores


def dirichlet_mixture(n: int, c: int, k: int, seed: int, conc: float = 30.0) -> np.ndarray:
    """n probability vectors from k Dirichlet components, each peaked on a random class."""
    rng = np.random.default_rng(seed)
    comp = rng.integers(k, size=n)
    peaks = rng.choice(c, size=k, replace=c < k)
    alpha = np.full((k, c), 0.05)
    alpha[np.arange(k), peaks] += conc
    g = rng.standard_gamma(alpha[comp])
    return g / g.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n_labeled", [0, 7])
@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_pcoreset_matches_reference_float64(n_labeled: int, prune: bool, backend: str) -> None:
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(6, 0.7), size=300)
    labeled = rng.choice(300, n_labeled, replace=False)
    want, want_scores = reference_kcenter(p, 25, labeled.tolist())
    res = select_batch(
        "pcoreset", 25, probs=p, labeled=labeled, prune=prune, device="cpu", backend=backend
    )
    assert res.indices.tolist() == want
    np.testing.assert_allclose(res.scores, want_scores, rtol=1e-9, atol=1e-12)
    assert not set(res.indices.tolist()) & set(labeled.tolist())


@pytest.mark.parametrize("n_labeled", [0, 5])
@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_coreset_matches_reference_float64(n_labeled: int, prune: bool, backend: str) -> None:
    rng = np.random.default_rng(2)
    f = rng.normal(size=(250, 12)) + 0.3
    labeled = rng.choice(250, n_labeled, replace=False)
    want, want_scores = reference_kcenter(f, 20, labeled.tolist(), normalize=True)
    res = select_batch(
        "coreset", 20, features=f, labeled=labeled, prune=prune, device="cpu", backend=backend
    )
    assert res.indices.tolist() == want
    np.testing.assert_allclose(res.scores, want_scores, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_float32_paths_match_reference(prune: bool, backend: str) -> None:
    # float32 compute (faiss kernels or torch on CPU) on random data without near-ties
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(20, 0.5), size=2000).astype(np.float32)
    labeled = rng.choice(2000, 30, replace=False)
    want, want_scores = reference_kcenter(p, 40, labeled.tolist())
    res = select_batch(
        "pcoreset", 40, probs=p, labeled=labeled, prune=prune, device="cpu", backend=backend
    )
    assert res.backend.startswith(backend)
    assert res.indices.tolist() == want
    np.testing.assert_allclose(res.scores, want_scores, rtol=1e-5)


def test_prune_on_off_identical_and_prunes_on_clustered_data() -> None:
    p = dirichlet_mixture(20_000, 50, 50, seed=4).astype(np.float32)
    labeled = np.arange(0, 20_000, 400)  # 50 labeled rows
    on = select_batch("pcoreset", 200, probs=p, labeled=labeled, prune=True, device="cpu")
    off = select_batch("pcoreset", 200, probs=p, labeled=labeled, prune=False, device="cpu")
    assert on.indices.tolist() == off.indices.tolist()
    np.testing.assert_array_equal(on.scores, off.scores)
    assert off.stats["pruned_fraction"] == 0.0
    # measured 0.98: most rows sit in groups whose centre is far from the new pick
    assert on.stats["pruned_fraction"] > 0.8
    assert on.stats["distance_evals"] < 0.2 * off.stats["distance_evals"]


def test_pruning_margin_zero_still_exact_on_float64() -> None:
    # pruning with no safety margin is still the plain greedy on float64 data without ties
    p = dirichlet_mixture(3000, 10, 10, seed=5)
    plain = kcenter_greedy(p, 60, centres=np.arange(10), prune=False)
    tight = kcenter_greedy(p, 60, centres=np.arange(10), prune=True, prune_margin=0.0)
    assert plain.indices.tolist() == tight.indices.tolist()
    assert tight.stats["pruned_fraction"] > 0.5  # measured 0.98


@pytest.mark.parametrize("seed", [149, 164, 195])
def test_pruning_exact_when_squared_distances_underflow(seed: int) -> None:
    """Rows ~1e-24 apart: float32 squared distances are subnormal, where rounding is absolute,
    not relative. Before the 4 D tiny floor, pruning changed picks on these pools."""
    rng = np.random.default_rng(seed)
    n, d, k = 300, int(rng.choice([8, 64, 256])), int(rng.integers(2, 20))
    x = rng.normal(size=(n, d)) + rng.normal(size=(k, d))[rng.integers(0, k, n)] * 3
    x = (x * 10 ** rng.uniform(-24, -21)).astype(np.float32)
    on = kcenter_greedy(x, 60, centres=np.arange(2), prune=True)
    off = kcenter_greedy(x, 60, centres=np.arange(2), prune=False)
    assert on.indices.tolist() == off.indices.tolist()
    np.testing.assert_array_equal(on.scores, off.scores)


def test_float16_consistent_with_float32_on_separated_data() -> None:
    rng = np.random.default_rng(6)
    centres = np.eye(8)[rng.integers(8, size=40)] * 0.9 + 0.1 / 8  # 40 points on 8 far corners
    noise = rng.dirichlet(np.ones(8), size=40) * 0.05
    p32 = ((centres + noise) / (centres + noise).sum(axis=1, keepdims=True)).astype(np.float32)
    p16 = p32.astype(np.float16)
    r32 = select_batch("pcoreset", 12, probs=p32, device="cpu")
    r16 = select_batch("pcoreset", 12, probs=p16, device="cpu")
    r16_up = select_batch("pcoreset", 12, probs=p16.astype(np.float32), device="cpu")
    assert r16.indices.tolist() == r32.indices.tolist()
    assert r16.indices.tolist() == r16_up.indices.tolist()  # f16 is computed in float32
    np.testing.assert_allclose(r16.scores, r16_up.scores, rtol=1e-6)  # kernels differ by ulps


def test_ties_break_to_lowest_index_and_deterministic() -> None:
    # row 0 is the centre; rows 1..6 are all at distance 1 (two copies each of +-e1, +-e2, e3)
    x = np.zeros((8, 4))
    x[[1, 4], 0] = 1
    x[[2, 5], 0] = -1
    x[[3, 6], 1] = 1
    x[7, 2] = 0.5
    for backend in ["numpy", "torch"]:
        res = kcenter_greedy(x, 4, centres=np.array([0]), backend=backend)
        assert res.indices.tolist()[0] == 1  # all of 1..6 tie at distance 1: lowest id
        again = kcenter_greedy(x, 4, centres=np.array([0]), backend=backend)
        assert res.indices.tolist() == again.indices.tolist()
        assert len(set(res.indices.tolist())) == 4


def test_exclude_rows_are_centres_and_never_picked() -> None:
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.ones(5), size=500)
    labeled = np.array([3, 10, 99])
    exclude = np.array([42, 77])
    res = select_batch("pcoreset", 30, probs=p, labeled=labeled, exclude=exclude)
    same = select_batch("pcoreset", 30, probs=p, labeled=np.array([3, 10, 42, 77, 99]))
    assert res.indices.tolist() == same.indices.tolist()
    assert not set(res.indices.tolist()) & {3, 10, 99, 42, 77}


def test_no_labeled_starts_farthest_from_mean() -> None:
    rng = np.random.default_rng(8)
    p = rng.dirichlet(np.ones(4), size=200)
    res = select_batch("pcoreset", 3, probs=p)
    d = np.linalg.norm(p - p.mean(axis=0), axis=1)
    assert res.indices[0] == int(np.argmax(d))
    assert res.scores[0] == pytest.approx(d.max(), rel=1e-12)


def test_memmap_pool_float16_streams_without_full_conversion(tmp_path: Path) -> None:
    p = dirichlet_mixture(100_000, 64, 40, seed=9)
    path = tmp_path / "probs.npy"
    np.save(path, p.astype(np.float16))
    mm = np.load(path, mmap_mode="r")
    in_ram = np.asarray(mm).copy()
    labeled = np.arange(0, 100_000, 2500)
    tracemalloc.start()
    res = kcenter_greedy(mm, 50, centres=labeled, chunk_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    ref = kcenter_greedy(in_ram, 50, centres=labeled)
    assert res.indices.tolist() == ref.indices.tolist()
    f32_bytes = 100_000 * 64 * 4  # 25.6 MB: what np.asarray(mm, float32) would allocate
    # measured ~6 MB: O(N) state + ~1 MB chunks, never a float32 copy of the pool
    assert peak < 0.5 * f32_bytes


def test_memmap_float32_through_select_batch(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    p = rng.dirichlet(np.ones(12), size=5000).astype(np.float32)
    np.save(tmp_path / "p.npy", p)
    mm = np.load(tmp_path / "p.npy", mmap_mode="r")
    a = select_batch("pcoreset", 25, probs=mm, labeled=[1, 2, 3])
    b = select_batch("pcoreset", 25, probs=p, labeled=[1, 2, 3])
    assert a.indices.tolist() == b.indices.tolist()
    assert a.backend == "faiss:cpu"


@pytest.mark.parametrize(
    ("dtype", "backend", "n_labeled"),
    [
        (np.float64, "numpy", 600),
        (np.float32, "faiss", 600),  # GEMM on eligible rows gathered chunk by chunk
        (np.float32, "faiss", 100),  # GEMM straight on row slices of the pool
        (np.float32, "torch", 600),
    ],
)
def test_many_labeled_centres_seeding_matches_reference(
    dtype: type, backend: str, n_labeled: int
) -> None:
    # hundreds of labeled centres: initial distances come from a blocked GEMM that finds the
    # nearest centre, then the distance to it is recomputed directly
    rng = np.random.default_rng(11)
    p = rng.dirichlet(np.full(16, 0.5), size=1000).astype(dtype)
    labeled = rng.choice(1000, n_labeled, replace=False)
    want, want_scores = reference_kcenter(p, 15, labeled.tolist())
    res = kcenter_greedy(p, 15, centres=labeled, backend=backend, chunk_bytes=1 << 14)
    assert res.indices.tolist() == want
    np.testing.assert_allclose(res.scores, want_scores, rtol=1e-5)


def _nearest_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(12)
    cases = {}
    x = rng.dirichlet(np.full(50, 0.3), 1500).astype(np.float32)
    cases["dirichlet"] = (x, x[rng.choice(1500, 120, replace=False)])
    x = rng.normal(size=(1500, 64)).astype(np.float32)
    cases["gaussian"] = (x, x[rng.choice(1500, 120, replace=False)])
    x = rng.dirichlet(np.full(20, 0.5), 1500).astype(np.float32)
    cases["duplicate-centres"] = (x, np.repeat(x[:40], 3, axis=0))  # exact ties
    x = (rng.normal(size=(1500, 300)) * 1e-3 + 5.0).astype(np.float32)  # |p|^2 >> distances
    cases["large-offset"] = (x, x[rng.choice(1500, 120, replace=False)])
    # every centre at the same distance from the origin rows: all candidates -> float32 path
    sphere = rng.normal(size=(120, 32))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    rows = rng.normal(size=(300, 32)) * 1e-4
    cases["equidistant"] = (rows.astype(np.float32), sphere.astype(np.float32))
    return cases


@pytest.mark.parametrize("case", list(_nearest_cases()))
@pytest.mark.parametrize("bf16", [True, False])
def test_seeding_nearest_centre_is_exact(
    case: str, bf16: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the bf16 screen keeps every centre its error bound cannot rule out, then measures them
    # exactly: the distance found must be the true minimum over all centres
    from activekd.selection import _distance

    monkeypatch.setattr(_distance, "SEED_BF16", bf16)
    x, cen = _nearest_cases()[case]
    kernel = _distance.FaissKernel(_distance.PoolView(x, normalize=False, chunk_bytes=1 << 16))
    assign, d2 = kernel.nearest(np.arange(len(x), dtype=np.int64), cen)
    full = ((x[:, None, :].astype(np.float64) - cen[None].astype(np.float64)) ** 2).sum(-1)
    best = full.min(axis=1)
    np.testing.assert_allclose(d2, best, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(full[np.arange(len(x)), assign], best, rtol=1e-5, atol=1e-12)
    if bf16:
        assert kernel.counters["bf16_rows"] == len(x)
        if case == "equidistant":  # too many candidates: those rows take the float32 GEMM
            assert kernel.counters["bf16_hard_rows"] == len(x)
        if case == "dirichlet":
            assert kernel.counters["bf16_hard_rows"] < 0.1 * len(x)


@pytest.mark.parametrize("backend", ["faiss", "numpy", "torch"])
def test_all_rows_identical(backend: str) -> None:
    # every distance is 0: no group can be active; ties go to the lowest ids, scores are 0
    p = np.full((12, 3), 1 / 3, dtype=np.float64 if backend == "numpy" else np.float32)
    res = select_batch("pcoreset", 4, probs=p, labeled=[0, 5], backend=backend, device="cpu")
    assert res.indices.tolist() == [1, 2, 3, 4]
    assert res.scores.tolist() == [0.0, 0.0, 0.0, 0.0]
