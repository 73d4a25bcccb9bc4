"""score_pool / evaluate: outputs agree with the model and feed every selection strategy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from activekd.selection import select_batch
from activekd.student import (
    StudentConfig,
    TrainResult,
    build_student,
    combine_predictions,
    evaluate,
    score_pool,
    train_round,
)
from activekd.student.data import to_tensor


@pytest.fixture
def trained(tiny: Any) -> TrainResult:
    cfg = StudentConfig(
        num_classes=4,
        backbone_args={"widths": [4, 8], "pool": 2, "hidden": 16},
        steps=5,
        batch_size_labeled=4,
        batch_size_unlabeled=8,
        alpha=0.3,
        beta=2.0,
    )
    return train_round(cfg, None, tiny.y[tiny.labeled], tiny.x, tiny.t, labeled_rows=tiny.labeled)


def test_scores_match_the_model(tiny: Any, trained: TrainResult) -> None:
    calls: list[tuple[int, int]] = []
    s = score_pool(trained.model, tiny.x, batch_size=20, progress=lambda d, n: calls.append((d, n)))
    assert calls == [(20, 48), (40, 48), (48, 48)]
    assert s.kd_logits is not None
    for a in (s.probs, s.ce_logits, s.kd_logits, s.features):
        assert a.dtype == np.float32 and a.shape[0] == 48 and np.isfinite(a).all()
    assert s.probs.shape == (48, 4) and s.features.shape == (48, 16)
    np.testing.assert_allclose(s.probs.sum(axis=1), 1.0, atol=1e-5)
    want = combine_predictions(
        torch.from_numpy(s.ce_logits), torch.from_numpy(s.kd_logits), 0.3, 2.0
    )
    np.testing.assert_allclose(s.probs, want.numpy(), atol=1e-6)
    with torch.inference_mode():
        feats = trained.model.backbone(to_tensor(tiny.x[:5], "image", torch.device("cpu")))
    np.testing.assert_allclose(s.features[:5], feats.numpy(), atol=1e-5)
    # Batch size does not change the result (eval-mode batch norm).
    s1 = score_pool(trained.model, tiny.x, batch_size=7)
    np.testing.assert_allclose(s1.probs, s.probs, atol=1e-5)
    assert set(s.arrays()) == {"probs", "ce_probs", "ce_logits", "kd_logits", "features"}


def test_layouts_and_dtypes_agree(tiny: Any, trained: TrainResult) -> None:
    base = score_pool(trained.model, tiny.x).probs
    for x in (tiny.x[:, :, :, None], tiny.x[:, None], tiny.x.astype(np.float32) / 255.0):
        np.testing.assert_allclose(score_pool(trained.model, x).probs, base, atol=1e-5)


def test_scoring_restores_train_mode(tiny: Any, trained: TrainResult) -> None:
    trained.model.train()
    score_pool(trained.model, tiny.x[:4])
    assert trained.model.training
    trained.model.eval()


def test_evaluate_matches_manual_computation(tiny: Any, trained: TrainResult) -> None:
    s = score_pool(trained.model, tiny.x)
    ev = evaluate(trained.model, tiny.x, tiny.y, tiny.t)
    assert ev["n"] == 48
    assert ev["accuracy"] == pytest.approx(float((s.probs.argmax(1) == tiny.y).mean()))
    assert ev["accuracy_ce"] == pytest.approx(float((s.ce_logits.argmax(1) == tiny.y).mean()))
    assert s.kd_logits is not None
    assert ev["accuracy_kd"] == pytest.approx(float((s.kd_logits.argmax(1) == tiny.y).mean()))
    t_pred = tiny.t.argmax(1)
    assert ev["teacher_accuracy"] == pytest.approx(float((t_pred == tiny.y).mean()))
    assert ev["teacher_agreement"] == pytest.approx(float((s.probs.argmax(1) == t_pred).mean()))
    assert "teacher_accuracy" not in evaluate(trained.model, tiny.x, tiny.y)


@pytest.mark.parametrize("strategy", ["pcoreset", "coreset", "badge", "entropy", "margin"])
def test_scores_feed_every_selection_strategy(
    tiny: Any, trained: TrainResult, strategy: str
) -> None:
    s = score_pool(trained.model, tiny.x)
    res = select_batch(strategy, 5, probs=s.probs, features=s.features, labeled=tiny.labeled)
    assert len(res.indices) == 5
    assert not set(res.indices.tolist()) & set(tiny.labeled.tolist())


def test_channels_last_matches_contiguous(tiny: Any, trained: TrainResult) -> None:
    assert trained.model.channels_last  # the default for image backbones
    plain = build_student(trained.config.replace(channels_last=False))
    plain.load_state_dict(trained.state_dict())
    plain.eval()
    assert not plain.channels_last
    a = score_pool(trained.model, tiny.x)
    b = score_pool(plain, tiny.x)
    np.testing.assert_allclose(a.features, b.features, atol=1e-5)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
