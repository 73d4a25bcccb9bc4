"""k-center update layouts: the flat scan (every row per pick) and the grouped scan (only the
active groups' member lists) give the same picks and scores; the lazy ``best()`` and its full
argmax fallback agree; the cost model takes the grouped scan where few groups are active."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activekd import arrays
from activekd.arrays import widen
from activekd.selection import kcenter as kc
from activekd.selection import kcenter_greedy
from tests.selection.test_kcenter import dirichlet_mixture, reference_kcenter

LAYOUTS = ("flat", "grouped", "auto")


def _clustered(n: int, seed: int, k: int = 12, c: int = 8) -> np.ndarray:
    return dirichlet_mixture(n, c, k, seed, conc=60.0).astype(np.float32)


def _run_all(x: np.ndarray, budget: int, **kw: object) -> dict[str, kc.SelectionResult]:
    return {lay: kcenter_greedy(x, budget, layout=lay, **kw) for lay in LAYOUTS}  # type: ignore[arg-type]


@pytest.mark.parametrize("n_labeled", [0, 1, 40])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_layouts_pick_the_same_rows_with_the_same_scores(n_labeled: int, dtype: type) -> None:
    x = _clustered(3000, seed=n_labeled).astype(dtype)
    labeled = np.random.default_rng(5).choice(len(x), n_labeled, replace=False)
    res = _run_all(x, 120, centres=labeled)
    ref = res["flat"]
    for lay in ("grouped", "auto"):
        np.testing.assert_array_equal(res[lay].indices, ref.indices, err_msg=lay)
        np.testing.assert_array_equal(res[lay].scores, ref.scores, err_msg=lay)
    assert res["flat"].stats["grouped_steps"] == 0
    assert res["grouped"].stats["flat_steps"] == 0
    if dtype is np.float64:  # and both are the recompute-everything greedy
        want, want_scores = reference_kcenter(x, 120, labeled.tolist())
        assert res["grouped"].indices.tolist() == want
        np.testing.assert_allclose(res["grouped"].scores, want_scores, rtol=1e-12)


def test_layouts_agree_with_ties_duplicates_and_normalisation() -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 3, size=(60, 4)).astype(np.float64)  # many exact duplicates/ties
    x = np.repeat(base, 5, axis=0) + 0.0
    labeled = np.array([0, 7, 99])
    for normalize in (False, True):
        xx = x + 1.0 if normalize else x  # no zero rows to normalise
        res = _run_all(xx, 40, centres=labeled, normalize=normalize)
        for lay in ("grouped", "auto"):
            np.testing.assert_array_equal(res[lay].indices, res["flat"].indices)
            np.testing.assert_array_equal(res[lay].scores, res["flat"].scores)
        if not normalize:  # normalised copies tie only up to the rounding of each normalisation
            want, _ = reference_kcenter(xx, 40, labeled.tolist())
            assert res["grouped"].indices.tolist() == want


def test_best_falls_back_to_full_argmax_with_the_same_picks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = _clustered(4000, seed=9)
    labeled = np.arange(0, 4000, 97)
    want = kcenter_greedy(x, 150, centres=labeled, layout="flat")
    monkeypatch.setattr(kc, "BEST_SCAN_FRACTION", 0.0)  # every best() is one full argmax
    got = kcenter_greedy(x, 150, centres=labeled, layout="flat")
    np.testing.assert_array_equal(got.indices, want.indices)
    assert got.stats["full_argmax_steps"] == 150
    assert want.stats["full_argmax_steps"] < 150  # the lazy bounds decided the others


def test_auto_takes_the_grouped_scan_when_few_groups_are_active() -> None:
    # 40 tight clusters: a new centre activates its own cluster's groups only
    x = _clustered(60_000, seed=2, k=40, c=40)
    labeled = np.random.default_rng(0).choice(len(x), 200, replace=False)
    auto = kcenter_greedy(x, 200, centres=labeled)
    flat = kcenter_greedy(x, 200, centres=labeled, layout="flat")
    np.testing.assert_array_equal(auto.indices, flat.indices)
    assert auto.stats["grouped_steps"] > 0.9 * 199
    # and it can still drop to the flat scan when a pick activates most of the rows
    broad = np.random.default_rng(1).dirichlet(np.full(40, 2.0), size=20_000).astype(np.float32)
    res = kcenter_greedy(broad, 30, centres=np.arange(5))
    assert res.stats["flat_steps"] > 0


def test_grouped_memmap_float16_matches_in_ram(tmp_path: Path) -> None:
    x = _clustered(20_000, seed=4).astype(np.float16)
    path = tmp_path / "p.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    labeled = np.arange(0, 20_000, 211)
    a = kcenter_greedy(mm, 80, centres=labeled, layout="grouped", chunk_bytes=1 << 16)
    b = kcenter_greedy(np.asarray(x, dtype=np.float32), 80, centres=labeled, layout="flat")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="layout must be"):
        kcenter_greedy(_clustered(50, seed=0), 3, layout="diagonal")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_widen_gives_numpys_values_with_or_without_torch(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import torch  # noqa: F401  (loaded: widen takes the torch path)

    rng = np.random.default_rng(0)
    raw = rng.normal(size=(400, 100)).astype(np.float16)
    raw[0, :4] = [np.inf, -np.inf, np.nan, np.float16(6e-8)]  # specials and a subnormal
    want = raw.astype(dtype)
    fast = widen(raw, dtype)
    assert fast.dtype == dtype and fast.flags.c_contiguous
    np.testing.assert_array_equal(fast, want)
    monkeypatch.delitem(sys.modules, "torch")  # a process without torch: numpy's cast
    slow = widen(raw[::2], dtype)
    np.testing.assert_array_equal(slow, want[::2])


def test_widen_copies_unless_the_block_is_owned() -> None:
    x = np.ones((4, 3), dtype=np.float32)
    assert widen(x, np.float32) is not x
    assert widen(x, np.float32, owned=True) is x
    ro = x.copy()
    ro.flags.writeable = False
    assert widen(ro, np.float32, owned=True) is not ro
    assert arrays.TORCH_WIDEN_MIN > 0


def test_selection_leaves_torch_and_faiss_threads_as_it_found_them() -> None:
    import faiss
    import torch

    from activekd.selection.threads import quiet_torch

    before = (torch.get_num_threads(), faiss.omp_get_max_threads())
    with quiet_torch():
        assert torch.get_num_threads() == 1
    with quiet_torch(False):
        assert torch.get_num_threads() == before[0]
    x = _clustered(5000, seed=1).astype(np.float16)
    kcenter_greedy(x, 20, centres=np.arange(0, 5000, 50))  # seeding + float16 casts
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before


def test_float16_probability_check_reports_what_float32_does() -> None:
    import torch  # noqa: F401  (loaded: the float16 rows are widened by torch)

    from activekd.arrays import check_probabilities
    from activekd.errors import InvalidArgument

    p = np.full((40_000, 4), 0.25, dtype=np.float32)
    p[31_007, 2] = -0.25
    messages = []
    for dt in (np.float32, np.float16):
        with pytest.raises(InvalidArgument) as err:
            check_probabilities(p.astype(dt))
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "row 31007" in messages[1]
    p[31_007, 2] = 0.25
    p[39_999] = [0.5, 0.5, 0.5, 0.5]
    with pytest.raises(InvalidArgument, match="row 39999 sums to 2"):
        check_probabilities(p.astype(np.float16))
