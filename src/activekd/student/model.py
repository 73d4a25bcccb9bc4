"""The DHO dual-head student, its loss and its combined prediction.

DHO (Kang et al., 2025): a shared backbone with two linear heads. The CE head learns from the
labels; the KD head matches the teacher (KL at temperature T) on labeled and unlabeled rows; the
prediction mixes both heads' softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from activekd.student.backbones import BACKBONES, build_backbone
from activekd.student.config import StudentConfig

_LOG_EPS = 1e-12


@dataclass
class StudentOutput:
    """One forward pass: head logits ``(B, C)`` (``kd_logits`` None when kd is off) and
    penultimate features ``(B, D)``."""

    ce_logits: torch.Tensor
    kd_logits: torch.Tensor | None
    features: torch.Tensor


class DualHeadStudent(nn.Module):
    """Backbone + CE head (+ KD head). ``alpha``/``beta`` set :meth:`predict_proba`;
    ``input_kind`` (``image``/``vector``) and ``input_dim`` (vectors) describe the inputs;
    ``channels_last`` keeps image weights and inputs in NHWC memory format."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        *,
        kd: bool = True,
        alpha: float = 0.5,
        beta: float = 1.0,
        input_kind: str = "image",
        input_dim: int | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.ce_head = nn.Linear(feature_dim, num_classes)
        self.kd_head: nn.Linear | None = nn.Linear(feature_dim, num_classes) if kd else None
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.input_kind = input_kind
        self.input_dim = input_dim
        self.channels_last = bool(channels_last and input_kind == "image")
        if self.channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @property
    def has_kd(self) -> bool:
        return self.kd_head is not None

    def forward(self, x: torch.Tensor) -> StudentOutput:  # type: ignore[override]
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.backbone(x)
        ce = self.ce_head(feats)
        kd = self.kd_head(feats) if self.kd_head is not None else None
        return StudentOutput(ce, kd, feats)

    def predict_proba(self, out: StudentOutput) -> torch.Tensor:
        """Combined class probabilities of a forward pass (float32)."""
        return combine_predictions(out.ce_logits, out.kd_logits, self.alpha, self.beta)


def build_student(config: StudentConfig) -> DualHeadStudent:
    """A freshly initialised student for ``config`` (uses the global torch RNG for init)."""
    config.validate()
    backbone, dim = build_backbone(config.backbone, config.backbone_args)
    kind = BACKBONES[config.backbone].input_kind
    in_dim = config.resolved_backbone_args().get("input_dim") if kind == "vector" else None
    return DualHeadStudent(
        backbone,
        dim,
        config.num_classes,
        kd=config.kd,
        alpha=config.alpha,
        beta=config.beta,
        input_kind=kind,
        input_dim=None if in_dim is None else int(in_dim),
        channels_last=config.channels_last,
    )


def combine_predictions(
    ce_logits: torch.Tensor,
    kd_logits: torch.Tensor | None,
    alpha: float = 0.5,
    beta: float = 1.0,
) -> torch.Tensor:
    """``alpha * softmax(ce) + (1 - alpha) * softmax(kd / beta)``; ``softmax(ce)`` without KD."""
    p_ce = torch.softmax(ce_logits.float(), dim=-1)
    if kd_logits is None:
        return p_ce
    p_kd = torch.softmax(kd_logits.float() / beta, dim=-1)
    return alpha * p_ce + (1.0 - alpha) * p_kd


def soften_probs(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(log p / T)``: the teacher's ``softmax(logits / T)`` from its probabilities."""
    if temperature == 1.0:
        return probs.float()
    return torch.softmax(torch.log(probs.float().clamp_min(_LOG_EPS)) / temperature, dim=-1)


def kd_kl(
    student_logits: torch.Tensor, teacher_probs_t: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Batch-mean ``KL(teacher_T || softmax(student / T))`` (teacher already at temperature T)."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    p = teacher_probs_t.float()
    kl = (p * (torch.log(p.clamp_min(_LOG_EPS)) - log_q)).sum(dim=-1)
    return kl.mean()


@dataclass
class LossParts:
    """``total = ce_weight * ce + kd_weight * kd`` (for backward); ``ce`` is the labeled
    cross-entropy, ``kd = (w_l * KL_T(labeled) + w_u * KL_T(unlabeled)) * T^2`` (0 without KD)."""

    total: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor


def dho_loss(
    config: StudentConfig,
    out_labeled: StudentOutput,
    y_labeled: torch.Tensor,
    teacher_labeled: torch.Tensor | None,
    out_unlabeled: StudentOutput | None,
    teacher_unlabeled: torch.Tensor | None,
) -> LossParts:
    """``ce_weight * CE + kd_weight * (w_l * KL_T(labeled) + w_u * KL_T(unlabeled)) * T^2``.

    Teacher tensors are probabilities; they are softened with T when ``config.soften_teacher``.
    With ``config.kd`` off only the CE term is used.
    """
    ce = F.cross_entropy(out_labeled.ce_logits.float(), y_labeled)
    zero = ce.new_zeros(())
    kd = zero
    if config.kd:
        t = config.temperature

        def teacher_t(p: torch.Tensor) -> torch.Tensor:
            return soften_probs(p, t) if config.soften_teacher else p.float()

        kd_sum = zero
        if config.kd_labeled_weight > 0:
            assert out_labeled.kd_logits is not None and teacher_labeled is not None
            kd_sum = kd_sum + config.kd_labeled_weight * kd_kl(
                out_labeled.kd_logits, teacher_t(teacher_labeled), t
            )
        if config.kd_unlabeled_weight > 0 and out_unlabeled is not None:
            assert out_unlabeled.kd_logits is not None and teacher_unlabeled is not None
            kd_sum = kd_sum + config.kd_unlabeled_weight * kd_kl(
                out_unlabeled.kd_logits, teacher_t(teacher_unlabeled), t
            )
        kd = kd_sum * (t * t)
    total = config.ce_weight * ce + config.kd_weight * kd
    return LossParts(total=total, ce=ce, kd=kd)


def model_summary(model: DualHeadStudent) -> dict[str, Any]:
    """Parameter count and head sizes, for logs and checkpoint metadata."""
    return {
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "feature_dim": model.feature_dim,
        "num_classes": model.num_classes,
        "kd": model.has_kd,
    }
