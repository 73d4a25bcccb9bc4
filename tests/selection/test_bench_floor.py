"""bench/bench_selection.py --floor in miniature: the floor of each pool is computed from a real
run of ours and of the plain baseline, and the bounds it reports are consistent with them."""

from __future__ import annotations

import pytest

from bench import bench_selection as bs


def test_floor_in_miniature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bs, "QUIET_GATES", False)  # no waiting for a quiet machine in tests
    out = bs.part_floor(3000, 40, 30, 30, bw=20.0)

    assert set(out["pools"]) == {"clustered_k50", "peaked_kC", "broad_k50"}
    for name, row in out["pools"].items():
        # two separate timings: their order is not asserted (a unit test times nothing)
        assert row["baseline_seed_seconds"] > 0 and row["baseline_seconds"] > 0, name
        assert row["baseline_greedy_seconds"] == pytest.approx(
            row["baseline_seconds"] - row["baseline_seed_seconds"]
        )
        assert row["ours_seed_seconds"] + row["ours_greedy_seconds"] <= row["ours_seconds"], name
        assert row["five_x_target_seconds"] == pytest.approx(row["baseline_seconds"] / 5)
        at_bw = row["greedy_at_bandwidth_seconds"]
        # the greedy bytes at 20 GB/s, halved and quartered by the ideal screens
        assert at_bw["float32"] == pytest.approx(row["greedy_GB_read"] / 20.0)
        assert at_bw["float16"] == pytest.approx(at_bw["float32"] / 2)
        assert at_bw["int8"] == pytest.approx(at_bw["float32"] / 4)
        best = row["best_speedup_with_our_seeding"]
        assert best["float32"] < best["float16"] < best["int8"], name
        assert 0.0 <= row["pruned_fraction"] < 1.0
        # side by side with the int8 screen forced off: same picks (asserted inside)
        assert row["same_picks_and_scores_with_and_without_int8"], name
        assert row["ours_no_int8_seconds"] > 0, name
