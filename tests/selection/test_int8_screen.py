"""The int8 greedy screen: its bound never drops a row that gets closer, so every pick and score
equals the unscreened engine's (and the float64 reference's); it is used only where it applies."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from activekd.selection import _int8_screen, kcenter_greedy
from activekd.selection.sharded import kcenter_sharded_local

from .test_kcenter import reference_kcenter

pytest.importorskip("numba", reason="numba comes with activekd[selection]")


@pytest.fixture
def screen_on() -> Iterator[None]:
    prev = _int8_screen.GREEDY_INT8
    _int8_screen.GREEDY_INT8 = True
    yield
    _int8_screen.GREEDY_INT8 = prev


def _broad(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """softmax(centre + noise): broad clusters, the pools the screen is for."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(k, d))[rng.integers(k, size=n)] + rng.normal(size=(n, d))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _heavy(n: int, d: int, seed: int) -> np.ndarray:
    """Signed rows, a few huge values per row: int8 with a per-row scale is coarse here."""
    rng = np.random.default_rng(seed)
    return rng.standard_t(1.5, size=(n, d))


def _screen(x: np.ndarray, margin: float = 1e-3) -> _int8_screen.Int8Screen:
    return _int8_screen.Int8Screen(
        lambda a, b: x[a:b], len(x), x.shape[1], x.dtype, margin, lambda fn, n: fn(0, n), 64
    )


@pytest.mark.parametrize("make", [_broad, _heavy], ids=["broad", "heavy"])
def test_quantization_error_bound_holds_and_is_tight(make: object) -> None:
    x = (make(300, 257, 3, 0) if make is _broad else make(300, 257, 0)).astype(np.float32)  # type: ignore[operator]
    sc = _screen(x)
    assert np.abs(sc.q).max() <= 127
    recon = sc.scale[:, None] * sc.q.astype(np.float64)
    true_err = np.linalg.norm(x.astype(np.float64) - recon, axis=1)
    assert np.all(true_err <= sc.err)
    assert np.all(sc.err <= true_err * (1 + 1e-6) + 1e-12)  # an inflation, not a loose bound
    np.testing.assert_array_equal(sc.qnorm, (sc.q.astype(np.int64) ** 2).sum(axis=1))
    assert sc.nbytes == _int8_screen.copy_bytes(*x.shape)  # what the memory rule budgets


def test_zero_rows_and_zero_centre() -> None:
    x = np.zeros((6, 300), dtype=np.float32)
    x[3, 7] = 2.0
    sc = _screen(x)
    assert sc.scale[0] == 0.0 and sc.err[0] == 0.0 and not sc.q[0].any()
    mind = np.full(6, 1.0, dtype=np.float32)  # row 3 is at 4.0 (squared) from the zero centre
    keep = sc.maybe_closer(np.zeros(300, np.float32), np.arange(6), mind)
    assert keep.tolist() == [True, True, True, False, True, True]
    mind[3] = 4.0  # a tie is kept: the exact kernel decides
    assert sc.maybe_closer(np.zeros(300, np.float32), np.array([3]), mind).tolist() == [True]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_never_drops_a_row_just_below_its_min_distance(dtype: type) -> None:
    """Adversarial: every row's min distance set a hair above its exact distance to the centre:
    all must be kept; at half the distance the screen must rule nearly all of them out."""
    x = _broad(2000, 400, 5, seed=1).astype(dtype)
    sc = _screen(x)
    for c in (0, 17, 1999):
        d2 = ((x - x[c]) ** 2).sum(axis=1)
        cand = np.flatnonzero(d2 > 0)
        keep = sc.maybe_closer(x[c], cand, (d2 * (1 + 1e-7)).astype(dtype))
        assert keep.all()
        far = sc.maybe_closer(x[c], cand, (d2 * 0.5).astype(dtype))
        assert far.mean() < 0.01, far.mean()


def test_interleaved_and_tail_rows_agree() -> None:
    """The kernel takes rows four at a time and then one at a time: same answer per row."""
    x = _heavy(103, 300, seed=2).astype(np.float32)
    sc = _screen(x)
    rng = np.random.default_rng(3)
    mind = (((x - x[9]) ** 2).sum(axis=1) * rng.uniform(0.8, 1.2, size=103)).astype(np.float32)
    cand = rng.permutation(103)
    whole = sc.maybe_closer(x[9], cand, mind)
    single = np.array([sc.maybe_closer(x[9], cand[i : i + 1], mind)[0] for i in range(103)])
    np.testing.assert_array_equal(whole, single)


@pytest.mark.usefixtures("screen_on")
@pytest.mark.parametrize(
    ("name", "dtype", "normalize", "n_labeled"),
    [
        ("broad", np.float32, False, 40),
        ("broad", np.float64, False, 40),
        ("heavy", np.float32, True, 40),
        ("heavy", np.float32, False, 0),
        ("broad", np.float16, False, 40),
    ],
)
def test_engine_picks_equal_unscreened_and_reference(
    name: str, dtype: type, normalize: bool, n_labeled: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = (_broad(1500, 300, 6, seed=4) if name == "broad" else _heavy(1500, 300, seed=4)).astype(
        dtype
    )
    labeled = np.arange(0, 1500, 1500 // n_labeled)[:n_labeled] if n_labeled else None
    on = kcenter_greedy(x, 60, centres=labeled, normalize=normalize)
    monkeypatch.setattr(_int8_screen, "GREEDY_INT8", False)
    off = kcenter_greedy(x, 60, centres=labeled, normalize=normalize)
    assert on.indices.tolist() == off.indices.tolist()
    np.testing.assert_array_equal(on.scores, off.scores)
    assert on.stats["int8_screened_rows"] > 0 and off.stats["int8_screened_rows"] == 0
    # the screen reaches the rows pruning leaves and measures exactly only those it cannot rule
    # out; on heavy-tailed rows int8 is too coarse to rule much out and the engine stops screening
    assert on.stats["distance_evals"] == off.stats["distance_evals"]
    assert off.stats["exact_distance_evals"] == off.stats["distance_evals"]
    if name == "broad":
        assert on.stats["exact_distance_evals"] < 0.2 * off.stats["distance_evals"]
        assert on.stats["int8_screen_dropped"] == 0.0
    else:
        assert on.stats["exact_distance_evals"] <= off.stats["distance_evals"]
    if name == "heavy" and not normalize:
        assert on.stats["int8_screen_dropped"] == 1.0
    want, want_scores = reference_kcenter(
        x, 60, list(labeled) if labeled is not None else [], normalize=normalize
    )
    assert on.indices.tolist() == want
    np.testing.assert_allclose(on.scores, want_scores, rtol=1e-3 if dtype == np.float16 else 1e-5)


@pytest.mark.usefixtures("screen_on")
def test_duplicates_and_ties_keep_the_lowest_id_rule() -> None:
    base = _broad(50, 300, 3, seed=5)
    x = np.concatenate([base, base, base]).astype(np.float32)  # every row three times
    on = kcenter_greedy(x, 40, centres=np.arange(5))
    want, _ = reference_kcenter(x, 40, list(range(5)))
    assert on.indices.tolist() == want


@pytest.mark.usefixtures("screen_on")
def test_sharded_engine_with_screen_equals_single_process() -> None:
    x = _broad(1200, 300, 4, seed=6).astype(np.float32)
    labeled = np.arange(0, 1200, 60)
    single = kcenter_greedy(x, 50, centres=labeled)
    res = kcenter_sharded_local(x, 50, 3, centres=labeled)
    assert res.indices.tolist() == single.indices.tolist()
    np.testing.assert_array_equal(res.scores, single.scores)
    assert res.stats["int8_screened_rows"] > 0


def test_auto_rule_width_device_and_missing_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_int8_screen, "GREEDY_INT8", None)
    use = _int8_screen.use_int8_screen
    assert use(10, _int8_screen.INT8_MIN_DIM, on_cpu=True, mapped=False)
    assert not use(10, _int8_screen.INT8_MIN_DIM - 1, on_cpu=True, mapped=False)
    assert not use(10, _int8_screen.INT8_MAX_DIM + 1, on_cpu=True, mapped=False)
    assert not use(10, 1000, on_cpu=False, mapped=False)
    assert not use(10, 1000, on_cpu=True, mapped=True)  # a memmap stays out of RAM
    too_many = _int8_screen.INT8_MAX_COPY_BYTES // 1000 + 1
    assert not use(too_many, 976, on_cpu=True, mapped=False)
    assert use(too_many - 10, 976, on_cpu=True, mapped=False)
    # a pool too narrow for the screen runs unscreened
    x = _broad(300, 50, 3, seed=7).astype(np.float32)
    assert kcenter_greedy(x, 5, centres=np.arange(3)).stats["int8_screened_rows"] == 0
    monkeypatch.setattr(_int8_screen, "_numba", lambda: None)
    assert not use(10, 1000, on_cpu=True, mapped=False)
    monkeypatch.setattr(_int8_screen, "GREEDY_INT8", True)
    with pytest.raises(RuntimeError, match=r"activekd\[selection\]"):
        use(10, 1000, on_cpu=True, mapped=False)


def test_torch_kernel_is_never_screened(screen_on: None) -> None:
    pytest.importorskip("torch")
    x = _broad(400, 300, 3, seed=8).astype(np.float32)
    res = kcenter_greedy(x, 10, centres=np.arange(4), backend="torch")
    assert res.stats["int8_screened_rows"] == 0


def test_warm_up_loads_the_kernels_and_is_a_no_op_without_numba(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from activekd.selection import warm_up_kernels

    assert warm_up_kernels() > 0.0
    monkeypatch.setattr(_int8_screen, "_numba", lambda: None)
    assert warm_up_kernels() == 0.0


def _on_off(x: np.ndarray, budget: int, **kw: object) -> tuple[object, object]:
    prev = _int8_screen.GREEDY_INT8
    try:
        _int8_screen.GREEDY_INT8 = True
        on = kcenter_greedy(x, budget, **kw)  # type: ignore[arg-type]
        _int8_screen.GREEDY_INT8 = False
        off = kcenter_greedy(x, budget, **kw)  # type: ignore[arg-type]
    finally:
        _int8_screen.GREEDY_INT8 = prev
    return on, off


@pytest.mark.parametrize(
    ("scale", "dtype"),
    [
        (3e-23, np.float32),  # squared differences underflow float32: its kernel rounds to 0
        (1e-23, np.float32),
        (2e-160, np.float64),  # squares of the int8 scale would underflow float64
        (1e-160, np.float64),
        (3e141, np.float64),  # and overflow it (the distances themselves stay finite)
        (1.0, np.float64),
    ],
)
@pytest.mark.parametrize("prune", [True, False])
def test_extreme_magnitudes_same_picks(scale: float, dtype: type, prune: bool) -> None:
    """Found in review: underflowing distances and tiny float64 rows once broke the bound."""
    g = np.random.default_rng(0).normal(size=(400, 256))
    on, off = _on_off((g * scale).astype(dtype), 30, centres=np.arange(3), prune=prune)
    assert on.indices.tolist() == off.indices.tolist()  # type: ignore[attr-defined]
    np.testing.assert_array_equal(on.scores, off.scores)  # type: ignore[attr-defined]
    assert on.stats["int8_screened_rows"] > 0  # type: ignore[attr-defined]


def test_mixed_normal_and_underflowing_rows() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(256), size=300).astype(np.float32)
    tiny = (rng.normal(size=(100, 256)) * 3e-23).astype(np.float32)
    on, off = _on_off(np.concatenate([p, tiny]), 320, centres=np.arange(3))
    assert on.indices.tolist() == off.indices.tolist()  # type: ignore[attr-defined]
    np.testing.assert_array_equal(on.scores, off.scores)  # type: ignore[attr-defined]


def test_subnormal_distance_is_kept_when_the_kernel_rounds_it_to_zero() -> None:
    d = 256
    zero, c = np.zeros(d, np.float32), np.full(d, 2.5e-23, np.float32)  # true d^2 = 1.6e-43
    sc = _screen(np.stack([zero, c]))
    mind = np.array([np.float32(1.4e-45), 0.0], np.float32)  # float32's kernel gives 0.0 < mind
    assert sc.maybe_closer(c, np.array([0]), mind).tolist() == [True]


def test_tiny_and_huge_float64_rows_get_an_infinite_bound() -> None:
    x = np.ones((4, 300))
    x[1] *= 1e-150
    x[2] *= 1e150
    x[3] = 0.0
    sc = _screen(x)
    assert np.isfinite(sc.err[0]) and sc.err[3] == 0.0
    assert np.isinf(sc.err[1]) and np.isinf(sc.err[2])
    assert sc.maybe_closer(x[0], np.arange(1, 3), np.zeros(4)).all()  # always measured


def test_margin_override_cannot_go_below_the_kernels_rounding() -> None:
    x = _broad(50, 1000, 2, seed=9).astype(np.float32)
    sc = _screen(x, margin=0.0)
    assert sc.slack >= 1.0 + 4 * 1000 * float(np.finfo(np.float32).eps)
    on, off = _on_off(x, 20, centres=np.arange(2), prune_margin=0.0)
    assert on.indices.tolist() == off.indices.tolist()  # type: ignore[attr-defined]


def test_a_few_cheap_picks_never_build_the_copy(screen_on: None) -> None:
    x = _broad(2000, 300, 4, seed=10).astype(np.float32)
    res = kcenter_greedy(x, 2, centres=np.arange(0, 2000, 10))
    assert res.stats["int8_screened_rows"] == 0
    assert res.stats["int8_screen_build_seconds"] == 0.0
