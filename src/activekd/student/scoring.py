"""Scoring a trained student over a pool, and evaluating it on a labeled test split.

``score_pool`` returns exactly what every selection strategy needs: combined ``probs`` (pcoreset,
entropy, margin, ...) and penultimate ``features`` (coreset, badge), plus both heads' logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from activekd.arrays import check_probabilities
from activekd.devices import autocast, resolve_precision, torch_threads
from activekd.errors import InvalidArgument
from activekd.student.data import to_tensor, validate_labels, validate_x
from activekd.student.model import DualHeadStudent

ScoreProgressFn = Callable[[int, int], None]


@dataclass
class PoolScores:
    """Student outputs for N pool rows, all float32: ``probs`` (N, C) combined prediction (rows sum
    to 1), ``ce_logits`` (N, C), ``kd_logits`` (N, C) or None without a KD head, ``features``
    (N, D) penultimate activations."""

    probs: np.ndarray
    ce_logits: np.ndarray
    kd_logits: np.ndarray | None
    features: np.ndarray

    @property
    def ce_probs(self) -> np.ndarray:
        """Softmax of the CE head alone (float32; computed in float64), what ``pcoreset_ce``
        selects on."""
        logits = np.asarray(self.ce_logits, dtype=np.float64)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for a pool store (``kd_logits`` omitted when absent)."""
        out = {
            "probs": self.probs,
            "ce_probs": self.ce_probs,
            "ce_logits": self.ce_logits,
            "features": self.features,
        }
        if self.kd_logits is not None:
            out["kd_logits"] = self.kd_logits
        return out


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - every student has parameters
        return torch.device("cpu")


CPU_BATCH = 128
CUDA_BATCH = 1024


def score_pool(
    model: DualHeadStudent,
    x_all: np.ndarray,
    batch_size: int | None = None,
    *,
    precision: str = "auto",
    threads: int | None = None,
    progress: ScoreProgressFn | None = None,
) -> PoolScores:
    """Runs the student over ``x_all`` in batches (eval mode, ``torch.inference_mode``) on the
    model's device; ``batch_size`` None/0: 128 on CPU, 1024 on CUDA; ``threads`` > 0 sets torch
    CPU threads for the call; ``progress(done_rows, total_rows)`` after each batch."""
    if batch_size is None:
        batch_size = 0
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0:
        raise InvalidArgument(f"batch_size = {batch_size!r} must be an integer >= 1 (0: auto)")
    validate_x(x_all, model.input_kind, "x_all", model.input_dim)
    dev = _model_device(model)
    if batch_size == 0:
        batch_size = CUDA_BATCH if dev.type == "cuda" else CPU_BATCH
    amp_dtype = resolve_precision(precision, dev)
    n, c, d = x_all.shape[0], model.num_classes, model.feature_dim
    probs = np.empty((n, c), np.float32)
    ce = np.empty((n, c), np.float32)
    kd = np.empty((n, c), np.float32) if model.has_kd else None
    feats = np.empty((n, d), np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads), torch.inference_mode():
            for lo in range(0, n, batch_size):
                hi = min(n, lo + batch_size)
                xb = to_tensor(x_all[lo:hi], model.input_kind, dev)
                with autocast(dev, amp_dtype):
                    out = model(xb)
                probs[lo:hi] = model.predict_proba(out).cpu().numpy()
                ce[lo:hi] = out.ce_logits.float().cpu().numpy()
                if kd is not None and out.kd_logits is not None:
                    kd[lo:hi] = out.kd_logits.float().cpu().numpy()
                feats[lo:hi] = out.features.float().cpu().numpy()
                if progress is not None:
                    progress(hi, n)
    finally:
        model.train(was_training)
    return PoolScores(probs=probs, ce_logits=ce, kd_logits=kd, features=feats)


def evaluate(
    model: DualHeadStudent,
    x_test: np.ndarray,
    y_test: np.ndarray,
    teacher_probs_test: np.ndarray | None = None,
    *,
    batch_size: int | None = None,
    precision: str = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Test metrics: ``accuracy`` (combined prediction), ``accuracy_ce``, ``accuracy_kd`` (None
    without a KD head), ``n``; with teacher probabilities also ``teacher_accuracy`` and
    ``teacher_agreement`` (share of rows where the student's and teacher's argmax agree)."""
    y = validate_labels(y_test, x_test.shape[0], model.num_classes, "y_test")
    scores = score_pool(model, x_test, batch_size, precision=precision, threads=threads)
    out: dict[str, Any] = {
        "n": int(y.size),
        "accuracy": float((scores.probs.argmax(1) == y).mean()),
        "accuracy_ce": float((scores.ce_logits.argmax(1) == y).mean()),
        "accuracy_kd": None
        if scores.kd_logits is None
        else float((scores.kd_logits.argmax(1) == y).mean()),
    }
    if teacher_probs_test is not None:
        check_probabilities(
            teacher_probs_test,
            "teacher_probs_test",
            rows=y.size,
            classes=model.num_classes,
            classes_owner="the student",
        )
        t_pred = np.asarray(teacher_probs_test).argmax(1)
        out["teacher_accuracy"] = float((t_pred == y).mean())
        out["teacher_agreement"] = float((scores.probs.argmax(1) == t_pred).mean())
    return out
