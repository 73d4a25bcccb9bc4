"""BADGE over row shards (``badge_sharded``, workers in this process): the picks and scores of
``badge_select`` on the joined pool for any shard bounds, including shards with no eligible
row, float16 inputs, and the uniform draws once every remaining row sits on a centre."""

from __future__ import annotations

import numpy as np
import pytest

from activekd.selection.badge import badge_select
from activekd.selection.badge_sharded import BadgeShardSpec, BadgeWorker, badge_local
from activekd.selection.sharded import shard_bounds


def _pool(n: int, c: int = 7, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.dirichlet(np.full(c, 0.5), size=n).astype(np.float32),
        rng.normal(size=(n, d)).astype(np.float32),
    )


@pytest.mark.parametrize("shards", [1, 3, 7])
@pytest.mark.parametrize("seed", [0, 11])
def test_shards_equal_badge_select(shards: int, seed: int) -> None:
    probs, feats = _pool(900, seed=seed)
    rng = np.random.default_rng(seed + 1)
    eligible = np.sort(np.setdiff1d(np.arange(900), rng.choice(900, 120, replace=False)))
    want = badge_select(probs, feats, eligible, 40, seed)
    got = badge_local(probs, feats, eligible, 40, seed, shard_bounds(900, shards))
    assert got.indices.tolist() == want.indices.tolist()
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    assert got.stats["embedding_dim"] == want.stats["embedding_dim"] == 7 * 12
    assert got.stats["shards"] == shards and got.stats["rounds"] == 2 * 40


def test_a_shard_without_eligible_rows_and_uneven_bounds() -> None:
    probs, feats = _pool(500, seed=3)
    eligible = np.r_[np.arange(0, 100), np.arange(260, 500)]  # rows 100..259: all labeled
    bounds = [(0, 37), (37, 100), (100, 260), (260, 261), (261, 500)]
    want = badge_select(probs, feats, eligible, 60, 5)
    got = badge_local(probs, feats, eligible, 60, 5, bounds)
    assert got.indices.tolist() == want.indices.tolist()
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    assert not set(got.indices.tolist()) & set(range(100, 260))


def test_float16_inputs() -> None:
    probs, feats = _pool(400, seed=4)
    p16, f16 = probs.astype(np.float16), feats.astype(np.float16)
    eligible = np.arange(400)
    want = badge_select(p16, f16, eligible, 25, 2)
    got = badge_local(p16, f16, eligible, 25, 2, shard_bounds(400, 4))
    assert got.indices.tolist() == want.indices.tolist()
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)


def test_uniform_draws_once_every_row_sits_on_a_centre() -> None:
    """Zero features: every gradient embedding is 0, so after the first pick every D^2 is
    exactly 0 and the rest are drawn uniformly from the unpicked rows, across shards, with the
    single-process draws. (Rows that only nearly coincide have D^2 of float rounding noise,
    which a shard's mat-vec may round differently: their draws can differ.)"""
    probs, _ = _pool(24, seed=6)
    feats = np.zeros((24, 5), np.float32)
    eligible = np.setdiff1d(np.arange(24), [3, 17])
    want = badge_select(probs, feats, eligible, 12, 8)
    assert want.stats["uniform_draws"] == 11
    got = badge_local(probs, feats, eligible, 12, 8, [(0, 5), (5, 13), (13, 24)])
    assert got.indices.tolist() == want.indices.tolist()
    assert got.stats["uniform_draws"] == 11
    np.testing.assert_array_equal(got.scores, np.zeros(12))


def test_worker_rejects_rows_it_does_not_hold() -> None:
    probs, feats = _pool(50)
    worker = BadgeWorker(probs, feats, BadgeShardSpec(10, 20, np.array([12, 13])))
    assert worker.free_count() == 8 and worker.first()[1] in set(range(10, 20)) - {12, 13}
    for row in (12, 25, 9):  # taken, another shard's, before the shard
        with pytest.raises(ValueError, match="not an eligible row"):
            worker.take(row)
    with pytest.raises(ValueError, match="outside its files"):
        BadgeWorker(probs[:15], feats[:15], BadgeShardSpec(10, 20, np.array([], np.int64)))
