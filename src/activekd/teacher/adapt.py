"""Few-shot adaptation of a zero-shot head, CLAP-style.

A linear head initialised at the zero-shot text prototypes is trained with cross-entropy on a
few labeled images' features, plus an L2 penalty keeping each class weight near its prototype
(Silva-Rodríguez et al., "A Closer Look at the Few-Shot Adaptation of Large Vision-Language
Models", CVPR 2024). ``penalty="auto"`` uses CLAP's class-adaptive weights: for class c, the mean
zero-shot probability of c over the labeled images of c (classes the zero-shot head already gets
right are held closer to their prototype). The Lagrangian updates of the full CLAP are not
implemented; the penalty stays fixed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from activekd.errors import InvalidArgument


@dataclass(frozen=True)
class AdaptedHead:
    """Head weights (C, D) float32 and how they were fitted."""

    weights: np.ndarray = field(repr=False)
    penalty: str
    steps: int
    num_labeled: int
    train_top1: float
    zero_shot_train_top1: float
    distance_to_prototypes: float

    @property
    def weights_hash(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.weights, np.float32).tobytes()).hexdigest()

    def describe(self) -> str:
        return (
            f"clap-linear penalty={self.penalty} steps={self.steps} n={self.num_labeled} "
            f"head_sha256={self.weights_hash[:16]}"
        )


def fit_clap_head(
    features: np.ndarray,
    labels: np.ndarray,
    prototypes: np.ndarray,
    *,
    logit_scale: float,
    penalty: float | str = "auto",
    steps: int = 300,
    lr: float = 1e-3,
    seed: int = 0,
) -> AdaptedHead:
    """Fit the adapted head on L2-normalised ``features`` (N, D) with ``labels`` (N,) in 0..C-1.

    ``prototypes`` (C, D) are the zero-shot text weights the head starts from and is pulled to.
    Full-batch Adam for ``steps`` steps; deterministic for a given ``seed``.
    """
    f = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels)
    p = np.asarray(prototypes, dtype=np.float32)
    if f.ndim != 2 or p.ndim != 2 or f.shape[1] != p.shape[1]:
        raise InvalidArgument(
            f"features {f.shape} and prototypes {p.shape} must be (N, D) and (C, D)",
            field="features",
        )
    if y.shape != (f.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise InvalidArgument(
            f"labels must be integers of shape ({f.shape[0]},), got {y.dtype} {y.shape}",
            field="labels",
        )
    num_classes = p.shape[0]
    if f.shape[0] == 0:
        raise InvalidArgument("adaptation needs at least one labeled image", field="labels")
    if y.min() < 0 or y.max() >= num_classes:
        raise InvalidArgument(f"labels must be in 0..{num_classes - 1}", field="labels")
    if not np.isfinite(f).all():
        raise InvalidArgument("features contain NaN or inf", field="features")
    if steps < 1:
        raise InvalidArgument(f"steps {steps} must be >= 1", field="steps")

    torch.manual_seed(seed)
    ft = F.normalize(torch.from_numpy(f), dim=-1)
    yt = torch.from_numpy(y.astype(np.int64))
    proto = torch.from_numpy(p)
    with torch.no_grad():
        zs_probs = (logit_scale * ft @ proto.T).softmax(-1)
        zs_top1 = float((zs_probs.argmax(1) == yt).float().mean())
    if isinstance(penalty, str):
        if penalty != "auto":
            raise InvalidArgument(f"penalty {penalty!r} must be a number >= 0 or 'auto'")
        lam = torch.zeros(num_classes)
        for c in range(num_classes):
            rows = yt == c
            lam[c] = zs_probs[rows, c].mean() if rows.any() else zs_probs[:, c].mean()
        penalty_desc = "auto"
    else:
        if not np.isfinite(penalty) or penalty < 0:
            raise InvalidArgument(f"penalty {penalty} must be a finite number >= 0")
        lam = torch.full((num_classes,), float(penalty))
        penalty_desc = f"{float(penalty):g}"

    w = proto.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        logits = logit_scale * ft @ w.T
        loss = F.cross_entropy(logits, yt) + (lam * ((w - proto) ** 2).sum(1)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    w_final = w.detach()
    with torch.no_grad():
        top1 = float(((ft @ w_final.T).argmax(1) == yt).float().mean())
        dist = float((w_final - proto).norm(dim=1).mean())
    return AdaptedHead(
        weights=w_final.numpy().astype(np.float32),
        penalty=penalty_desc,
        steps=steps,
        num_labeled=int(f.shape[0]),
        train_top1=top1,
        zero_shot_train_top1=zs_top1,
        distance_to_prototypes=dist,
    )
