"""Golden masters: the in-process loop's per-round accuracies and picks for a short seeded run.

Synthetic Gaussian blobs (5 classes, 16-d vectors) with a deliberately imperfect soft teacher and
the MLP student on CPU with one thread; 3 selections of 6 rows each for pcoreset and random.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from activekd.experiment.loop import LoopConfig, run_active_learning

FILE = "loop"
#: RoundResult fields newer than the baseline (issue 12); see tests/experiment/test_loop_options.py
ADDED = ("teacher_accuracy", "selection_stats")
C, D = 5, 16
STUDENT = {
    "backbone": "mlp",
    "backbone_args": {"hidden": [32]},
    "steps": 60,
    "lr": 5e-3,
    "batch_size_labeled": 16,
    "batch_size_unlabeled": 32,
    "threads": 1,
}


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(100).normal(size=(C, D)) * 1.5
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    x = centres[y] + rng.normal(size=(n, D)) * 1.2
    return x.astype(np.float32), y.astype(np.int64)


def _teacher(y: np.ndarray, seed: int) -> np.ndarray:
    """Right on ~65% of the rows, soft."""
    rng = np.random.default_rng(seed)
    guess = np.where(rng.random(y.size) < 0.65, y, rng.integers(0, C, y.size))
    probs = np.full((y.size, C), 0.05)
    probs[np.arange(y.size), guess] += 0.6
    return (probs / probs.sum(1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    x, y = _blobs(300, 1)
    xt, yt = _blobs(150, 2)
    return {"x": x, "y": y, "t": _teacher(y, 3), "xt": xt, "yt": yt, "tt": _teacher(yt, 4)}


@pytest.mark.skipif(torch.cuda.is_available(), reason="golden values were recorded on CPU")
@pytest.mark.parametrize("strategy", ["pcoreset", "random"])
def test_loop_rounds(golden: Any, data: dict[str, np.ndarray], strategy: str) -> None:
    cfg = LoopConfig(
        strategy=strategy, rounds=3, budget=6, initial_per_class=2, seed=4, student=STUDENT
    )
    threads = torch.get_num_threads()
    try:
        results = run_active_learning(
            cfg, data["x"], data["y"], data["t"], data["xt"], data["yt"], data["tt"]
        )
    finally:
        torch.set_num_threads(threads)
    rounds = [
        {k: v for k, v in r.to_dict().items() if not k.endswith("seconds") and k not in ADDED}
        for r in results
    ]
    golden.check(FILE, strategy, rounds)
