"""The DHO loss and the combined prediction against hand computations in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from activekd.student import (
    StudentConfig,
    StudentOutput,
    combine_predictions,
    dho_loss,
    kd_kl,
    soften_probs,
)

# Two labeled rows, three unlabeled rows, three classes.
CE_L = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
KD_L = np.array([[1.5, -0.5, 0.0], [-1.0, 2.0, 0.5]])
Y_L = np.array([0, 2])
T_L = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
KD_U = np.array([[0.2, 0.1, -0.3], [3.0, -2.0, 0.0], [0.0, 0.0, 1.0]])
T_U = np.array([[0.5, 0.25, 0.25], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_soften(p: np.ndarray, t: float) -> np.ndarray:
    q = p ** (1.0 / t)
    return q / q.sum(axis=1, keepdims=True)


def np_kl(p_teacher: np.ndarray, student_logits: np.ndarray, t: float) -> float:
    q = np_softmax(student_logits / t)
    return float(np.mean(np.sum(p_teacher * (np.log(p_teacher) - np.log(q)), axis=1)))


def outputs(ce: np.ndarray, kd: np.ndarray | None) -> StudentOutput:
    ce_t = torch.tensor(ce, dtype=torch.float32)
    kd_t = None if kd is None else torch.tensor(kd, dtype=torch.float32)
    return StudentOutput(ce_t, kd_t, torch.zeros(len(ce), 4))


def f32(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32)


def test_uniform_case_by_hand() -> None:
    # All-zero logits and a uniform teacher: CE = log 3, both KL terms 0 -> loss = 0.5 * log 3.
    cfg = StudentConfig(num_classes=3)
    zeros = np.zeros((2, 3))
    uniform = np.full((2, 3), 1 / 3)
    parts = dho_loss(
        cfg,
        outputs(zeros, zeros),
        torch.tensor([0, 1]),
        f32(uniform),
        outputs(zeros, zeros),
        f32(uniform),
    )
    assert float(parts.ce) == pytest.approx(math.log(3), abs=1e-6)
    assert float(parts.kd) == pytest.approx(0.0, abs=1e-6)
    assert float(parts.total) == pytest.approx(0.5 * math.log(3), abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_dho_loss_matches_numpy(temperature: float) -> None:
    cfg = StudentConfig(num_classes=3, temperature=temperature)
    parts = dho_loss(
        cfg, outputs(CE_L, KD_L), torch.tensor(Y_L), f32(T_L), outputs(KD_U, KD_U), f32(T_U)
    )
    ce = float(np.mean(-np.log(np_softmax(CE_L)[np.arange(2), Y_L])))
    kl_l = np_kl(np_soften(T_L, temperature), KD_L, temperature)
    kl_u = np_kl(np_soften(T_U, temperature), KD_U, temperature)
    kd = (kl_l + kl_u) * temperature**2
    assert float(parts.ce) == pytest.approx(ce, rel=1e-5)
    assert float(parts.kd) == pytest.approx(kd, rel=1e-5)
    assert float(parts.total) == pytest.approx(0.5 * ce + 0.5 * kd, rel=1e-5)
    assert kl_l > 1e-3 and kl_u > 1e-3  # the example is not trivially zero (T=4: 0.0073)


def test_weights_and_switches() -> None:
    t = 2.0
    cfg = StudentConfig(
        num_classes=3,
        ce_weight=0.2,
        kd_weight=0.8,
        kd_labeled_weight=0.0,
        kd_unlabeled_weight=1.5,
        soften_teacher=False,
    )
    parts = dho_loss(
        cfg, outputs(CE_L, KD_L), torch.tensor(Y_L), f32(T_L), outputs(KD_U, KD_U), f32(T_U)
    )
    ce = float(np.mean(-np.log(np_softmax(CE_L)[np.arange(2), Y_L])))
    kd = 1.5 * np_kl(T_U, KD_U, t) * t * t  # teacher used as given (not softened)
    assert float(parts.total) == pytest.approx(0.2 * ce + 0.8 * kd, rel=1e-5)

    ce_only = dho_loss(
        StudentConfig(num_classes=3, kd=False),
        outputs(CE_L, None),
        torch.tensor(Y_L),
        None,
        None,
        None,
    )
    assert float(ce_only.kd) == 0.0
    assert float(ce_only.total) == pytest.approx(0.5 * ce, rel=1e-5)


def test_soften_probs_equals_teacher_logits_over_t() -> None:
    logits = np.array([[3.0, 1.0, -2.0], [0.5, 0.4, 0.1]])
    p = np_softmax(logits)
    for t in (1.0, 2.0, 5.0):
        got = soften_probs(f32(p), t).numpy()
        np.testing.assert_allclose(got, np_softmax(logits / t), atol=1e-6)
    # Zeros in the teacher are clamped, not NaN.
    assert torch.isfinite(soften_probs(torch.tensor([[1.0, 0.0, 0.0]]), 2.0)).all()


def test_kd_kl_zero_when_student_matches_teacher() -> None:
    logits = torch.tensor([[1.0, -1.0, 0.5]])
    t = 2.0
    teacher_t = torch.softmax(logits / t, dim=-1)
    assert float(kd_kl(logits, teacher_t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_kl(-logits, teacher_t, t)) > 0.1


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 1.0), (0.3, 2.0), (1.0, 1.0), (0.0, 0.5)])
def test_combined_prediction(alpha: float, beta: float) -> None:
    got = combine_predictions(f32(CE_L), f32(KD_L), alpha, beta).numpy()
    want = alpha * np_softmax(CE_L) + (1 - alpha) * np_softmax(KD_L / beta)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)


def test_combined_prediction_by_hand() -> None:
    # ce = [0, 0] -> [0.5, 0.5]; kd = [ln 3, 0] -> [0.75, 0.25]; mean -> [0.625, 0.375].
    got = combine_predictions(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]]))
    np.testing.assert_allclose(got.numpy(), [[0.625, 0.375]], atol=1e-6)
    # Without a KD head the prediction is softmax(ce).
    only_ce = combine_predictions(torch.tensor([[math.log(3), 0.0]]), None)
    np.testing.assert_allclose(only_ce.numpy(), [[0.75, 0.25]], atol=1e-6)
