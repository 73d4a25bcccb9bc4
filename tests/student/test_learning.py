"""The student learns for real on Fashion-MNIST with a teacher (see conftest: a synthetic
nearest-centroid teacher, 68.0% on the test subset).

Pool: 3,000 train images (300/class); test: 1,000 test images (100/class). Labeled rows are drawn
from the pool with ``balanced_subset(y_pool, per_class, seed)``; ``seed`` also seeds training.
Numbers in comments were measured with seeds 0-4 (1 torch thread, shared 2-core box); the asserts
use seed 0 and keep a margin of at least the spread over those seeds.

Finding: with the small CNN, KD wins big at 1 label/class but no longer reliably at 10
labels/class (KD 0.69-0.71 vs CE-only 0.65-0.74): the CE-only CNN is already as good as this 68%
teacher. KD still lowers the spread and raises teacher agreement. The MLP on PCA features gains from KD at both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from activekd.data.fashion_mnist import balanced_subset
from activekd.student import StudentConfig, TrainResult, evaluate, train_round

CNN_STEPS = 200
MLP_STEPS = 300


def fit(
    x_pool: np.ndarray, y_pool: np.ndarray, t_pool: np.ndarray, per_class: int, kd: bool, **kw: Any
) -> TrainResult:
    seed = 0
    rows = balanced_subset(y_pool, per_class, seed=seed)
    cfg = StudentConfig(num_classes=10, kd=kd, seed=seed, threads=1, batch_size_labeled=32, **kw)
    return train_round(cfg, None, y_pool[rows], x_pool, t_pool, labeled_rows=rows, device="cpu")


def loss_drop(res: TrainResult) -> float:
    """Mean loss of the last 10 steps over the mean of the first 10."""
    losses = [h.loss for h in res.history]
    return float(np.mean(losses[-10:]) / np.mean(losses[:10]))


@pytest.mark.slow
def test_cnn_one_label_per_class_kd_beats_ce(fashion: Any) -> None:
    kw = dict(steps=CNN_STEPS, batch_size_unlabeled=64)
    kd = fit(fashion.x_pool, fashion.y_pool, fashion.t_pool, 1, True, **kw)
    ce = fit(fashion.x_pool, fashion.y_pool, fashion.t_pool, 1, False, **kw)
    ev_kd = evaluate(kd.model, fashion.x_test, fashion.y_test, fashion.t_test)
    ev_ce = evaluate(ce.model, fashion.x_test, fashion.y_test, fashion.t_test)
    # teacher 0.680. seeds 0-4: KD 0.579 0.604 0.619 0.566 0.589; CE-only 0.447 0.469 0.454 0.389
    # 0.407; KD - CE = +0.13 .. +0.18 (seed 0: 0.579 vs 0.447).
    assert ev_kd["teacher_accuracy"] == pytest.approx(0.68, abs=0.005)
    assert ev_kd["accuracy"] >= ev_ce["accuracy"] + 0.07
    assert ev_kd["accuracy"] > 0.5  # chance is 0.1
    # The KD head alone tracks the teacher (0.660-0.665); the 1-shot CE head drags the mix down.
    assert ev_kd["accuracy_kd"] > 0.6
    # Loss (last 10 / first 10 steps): KD 5.0 -> 0.03, CE-only 1.0 -> 0.000 (memorises 10 images).
    assert loss_drop(kd) < 0.1 and loss_drop(ce) < 0.1


@pytest.mark.slow
def test_cnn_ten_labels_per_class(fashion: Any) -> None:
    kw = dict(steps=CNN_STEPS, batch_size_unlabeled=64)
    kd = fit(fashion.x_pool, fashion.y_pool, fashion.t_pool, 10, True, **kw)
    ce = fit(fashion.x_pool, fashion.y_pool, fashion.t_pool, 10, False, **kw)
    ev_kd = evaluate(kd.model, fashion.x_test, fashion.y_test, fashion.t_test)
    ev_ce = evaluate(ce.model, fashion.x_test, fashion.y_test, fashion.t_test)
    # seeds 0-4: KD 0.712 0.692 0.693 0.700 0.700 (mean 0.699); CE-only 0.737 0.664 0.655 0.720
    # 0.678 (mean 0.691); teacher 0.680. KD - CE ranges -0.025 .. +0.038: no assert on it.
    assert ev_kd["accuracy"] > 0.6 and ev_ce["accuracy"] > 0.6
    assert ev_kd["accuracy"] >= ev_kd["teacher_accuracy"] - 0.04
    # Teacher agreement: KD 0.835 0.816 0.840 0.874 0.807; CE-only 0.747 0.670 0.674 0.748 0.665.
    assert ev_kd["teacher_agreement"] >= ev_ce["teacher_agreement"] + 0.04
    assert loss_drop(kd) < 0.1 and loss_drop(ce) < 0.1  # KD 5.1 -> 0.07..0.11


@pytest.mark.parametrize("per_class", [1, 10])
def test_mlp_on_feature_vectors(fashion: Any, fashion_pca: Any, per_class: int) -> None:
    kw = dict(backbone="mlp", steps=MLP_STEPS, batch_size_unlabeled=128)
    kd = fit(fashion_pca.f_pool, fashion.y_pool, fashion.t_pool, per_class, True, **kw)
    ce = fit(fashion_pca.f_pool, fashion.y_pool, fashion.t_pool, per_class, False, **kw)
    ev_kd = evaluate(kd.model, fashion_pca.f_test, fashion.y_test, fashion.t_test)
    ev_ce = evaluate(ce.model, fashion_pca.f_test, fashion.y_test, fashion.t_test)
    assert kd.config.backbone_args["input_dim"] == 64
    if per_class == 1:
        # seeds 0-4: KD 0.672 0.672 0.646 0.646 0.661; CE-only 0.329 0.263 0.251 0.225 0.232.
        assert ev_kd["accuracy"] >= ev_ce["accuracy"] + 0.2
        assert ev_kd["accuracy"] > 0.55
    else:
        # seeds 0-4: KD 0.702 0.695 0.709 0.700 0.706; CE-only 0.625 0.582 0.572 0.619 0.588.
        assert ev_kd["accuracy"] >= ev_ce["accuracy"] + 0.04
        assert ev_ce["accuracy"] > 0.45
        assert ev_kd["accuracy"] >= ev_kd["teacher_accuracy"] - 0.04
    # Loss (last 10 / first 10 steps), seed 0, 1/class: KD 5.6 -> 0.23; CE-only 1.1 -> 0.003.
    assert loss_drop(kd) < 0.2 and loss_drop(ce) < 0.2
