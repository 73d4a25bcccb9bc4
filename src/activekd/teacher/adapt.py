"""Few-shot adaptation of a zero-shot head, CLAP-style, and its equivalent for teachers without one.

A linear head initialised at the zero-shot prototypes is trained with cross-entropy on a few
labeled images' features, plus an L2 penalty keeping each class weight near its prototype
(Silva-Rodríguez et al., "A Closer Look at the Few-Shot Adaptation of Large Vision-Language
Models", CVPR 2024). ``penalty="auto"`` uses CLAP's class-adaptive weights: for class c, the mean
zero-shot probability of c over the labeled images of c (classes the zero-shot head already gets
right are held closer to their prototype). ``penalty="auto-n"`` divides those weights by the
number of labeled images of the class (at least 1): the cross-entropy is a mean, so this is the
fixed prior of a summed likelihood, and the pull fades as labels accumulate. The Lagrangian
updates of the full CLAP are not implemented; the penalty stays fixed during a fit.

The open_clip teacher has text prototypes. The label-map teacher (ImageNet logits summed through
a label map) has no linear head; :func:`fit_zero_shot_head` defines its equivalent without labels:
a linear head on the teacher's L2-normalised features fitted to the teacher's own probabilities
on the pool (mean KL(teacher || head), full-batch L-BFGS), written as unit-scale prototypes and a
logit scale. :class:`TeacherAdapter` then refits the head CLAP-style on the labels collected so
far, pulled towards that fit, optionally with a self-training pass on the pool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from activekd.errors import InvalidArgument, shown


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


def _check_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2 or f.shape[1] == 0:
        raise InvalidArgument(f"{name} must be (N, D) with D >= 1, got {f.shape}", field=name)
    if not np.isfinite(f).all():
        raise InvalidArgument(f"{name} contain NaN or inf", field=name)
    return f


def _check_labels(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,) or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise InvalidArgument(
            f"labels must be integers of shape ({n},), got {y.dtype} {y.shape}", field="labels"
        )
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise InvalidArgument(f"labels must be in 0..{num_classes - 1}", field="labels")
    return y


def _normalize(features: np.ndarray) -> torch.Tensor:
    return F.normalize(torch.from_numpy(np.ascontiguousarray(features, np.float32)), dim=-1)


def clap_penalty(
    features: np.ndarray,
    labels: np.ndarray,
    prototypes: np.ndarray,
    *,
    logit_scale: float,
    mode: str = "auto",
) -> np.ndarray:
    """CLAP's class-adaptive penalty weights (C,) float32 from labeled ``features``.

    ``auto``: for class c the mean zero-shot probability of c over the labeled rows of c (over
    all rows when c has none). ``auto-n``: the same divided by max(1, number of rows of c).
    """
    if mode not in PENALTY_MODES:
        raise InvalidArgument(
            f"penalty {shown(mode)} must be a number >= 0 or one of {', '.join(PENALTY_MODES)}",
            field="penalty",
        )
    f = _check_features(features)
    p = _check_features(prototypes, "prototypes")
    if f.shape[1] != p.shape[1]:
        raise InvalidArgument(
            f"features {f.shape} and prototypes {p.shape} must be (N, D) and (C, D)",
            field="features",
        )
    y = torch.from_numpy(_check_labels(labels, f.shape[0], p.shape[0]))
    num_classes = p.shape[0]
    with torch.no_grad():
        zs = (logit_scale * _normalize(f) @ torch.from_numpy(p).T).softmax(-1)
    lam = np.zeros(num_classes, np.float32)
    for c in range(num_classes):
        rows = y == c
        lam[c] = float(zs[rows, c].mean()) if rows.any() else float(zs[:, c].mean())
        if mode == "auto-n":
            lam[c] /= max(1, int(rows.sum()))
    return lam


PENALTY_MODES = ("auto", "auto-n")
#: rows :meth:`TeacherAdapter.from_zero_shot` fits the zero-shot-equivalent head on by default (a
#: seeded subset of larger pools: the fit is a full-batch L-BFGS, its cost grows with the rows)
ZERO_SHOT_FIT_ROWS = 20_000


def fit_clap_head(
    features: np.ndarray,
    labels: np.ndarray,
    prototypes: np.ndarray,
    *,
    logit_scale: float,
    penalty: float | str | np.ndarray = "auto",
    steps: int = 300,
    lr: float = 1e-3,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
) -> AdaptedHead:
    """Fit the adapted head on L2-normalised ``features`` (N, D) with ``labels`` (N,) in 0..C-1.

    ``prototypes`` (C, D) are the zero-shot weights the head starts from and is pulled to;
    ``penalty`` is a number, ``"auto"``/``"auto-n"`` (see :func:`clap_penalty`) or per-class
    weights (C,). ``sample_weight`` (N,) >= 0 weights the cross-entropy (a weighted mean).
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
    if not np.isfinite(p).all():
        raise InvalidArgument("prototypes contain NaN or inf", field="prototypes")
    if steps < 1:
        raise InvalidArgument(f"steps {steps} must be >= 1", field="steps")
    if not np.isfinite(logit_scale) or logit_scale <= 0:
        raise InvalidArgument(f"logit_scale {logit_scale} must be > 0", field="logit_scale")
    if not np.isfinite(lr) or lr <= 0:
        raise InvalidArgument(f"lr {lr} must be > 0", field="lr")
    wt: torch.Tensor | None = None
    if sample_weight is not None:
        sw = np.asarray(sample_weight, dtype=np.float32)
        if sw.shape != (f.shape[0],) or not np.isfinite(sw).all() or (sw < 0).any():
            raise InvalidArgument(
                f"sample_weight must be ({f.shape[0]},) finite and >= 0, got {sw.shape}",
                field="sample_weight",
            )
        if sw.sum() <= 0:
            raise InvalidArgument("sample_weight sums to 0", field="sample_weight")
        wt = torch.from_numpy(sw)

    torch.manual_seed(seed)
    ft = F.normalize(torch.from_numpy(f), dim=-1)
    yt = torch.from_numpy(y.astype(np.int64))
    proto = torch.from_numpy(p)
    with torch.no_grad():
        zs_probs = (logit_scale * ft @ proto.T).softmax(-1)
        zs_top1 = float((zs_probs.argmax(1) == yt).float().mean())
    if isinstance(penalty, str):
        lam = torch.from_numpy(clap_penalty(f, y, p, logit_scale=logit_scale, mode=penalty))
        penalty_desc = penalty
    elif isinstance(penalty, np.ndarray):
        pen = np.asarray(penalty, dtype=np.float32)
        if pen.shape != (num_classes,) or not np.isfinite(pen).all() or (pen < 0).any():
            raise InvalidArgument(
                f"per-class penalty must be ({num_classes},) finite and >= 0, got {pen.shape}",
                field="penalty",
            )
        lam = torch.from_numpy(pen)
        penalty_desc = f"per-class(mean={float(pen.mean()):.4g})"
    else:
        if not np.isfinite(penalty) or penalty < 0:
            raise InvalidArgument(f"penalty {penalty} must be a finite number >= 0")
        lam = torch.full((num_classes,), float(penalty))
        penalty_desc = f"{float(penalty):g}"

    w = proto.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        logits = logit_scale * ft @ w.T
        if wt is None:
            ce = F.cross_entropy(logits, yt)
        else:
            ce = (F.cross_entropy(logits, yt, reduction="none") * wt).sum() / wt.sum()
        loss = ce + (lam * ((w - proto) ** 2).sum(1)).sum()
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


def head_probs(
    features: np.ndarray, weights: np.ndarray, logit_scale: float, *, batch_rows: int = 16384
) -> np.ndarray:
    """``softmax(logit_scale * normalize(features) @ weights.T)`` as float32 (N, C), chunked."""
    f = _check_features(features)
    w = torch.from_numpy(np.ascontiguousarray(weights, np.float32))
    if w.ndim != 2 or w.shape[1] != f.shape[1]:
        raise InvalidArgument(
            f"features {f.shape} do not fit head weights {tuple(w.shape)}", field="features"
        )
    out = np.empty((f.shape[0], w.shape[0]), np.float32)
    with torch.no_grad():
        for a in range(0, f.shape[0], batch_rows):
            x = _normalize(f[a : a + batch_rows])
            out[a : a + batch_rows] = (logit_scale * x @ w.T).softmax(-1).numpy()
    return out


@dataclass(frozen=True)
class ZeroShotHead:
    """A linear head equivalent to a teacher without one: ``softmax(logit_scale *
    normalize(f) @ prototypes.T)``; prototypes (C, D) float32 with mean row norm 1."""

    prototypes: np.ndarray = field(repr=False)
    logit_scale: float
    kl: float
    agreement: float
    steps: int
    num_rows: int

    def probs(self, features: np.ndarray) -> np.ndarray:
        return head_probs(features, self.prototypes, self.logit_scale)

    def describe(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.prototypes).tobytes()).hexdigest()
        return (
            f"zero-shot-equivalent linear head (KL fit to the teacher on {self.num_rows} rows, "
            f"kl={self.kl:.4g}, argmax agreement={self.agreement:.4f}) "
            f"logit_scale={self.logit_scale:.6g} sha256={digest[:16]}"
        )


def fit_zero_shot_head(
    features: np.ndarray,
    teacher_probs: np.ndarray,
    *,
    steps: int = 100,
    l2: float = 0.0,
    max_rows: int | None = None,
    seed: int = 0,
) -> ZeroShotHead:
    """Fit a linear head on L2-normalised ``features`` (N, D) to ``teacher_probs`` (N, C), no
    labels: minimise mean KL(teacher || softmax(normalize(f) @ W.T)) + ``l2`` * |W|^2 with
    full-batch L-BFGS (strong Wolfe line search, at most ``steps`` iterations) from W = 0.

    No bias: the label-map teacher's features are non-negative, so their mean direction plays
    that role. Returned as prototypes W / s and logit_scale s = mean row norm of W, the form of a
    CLIP head, so :func:`fit_clap_head` penalties mean the same for both teachers.
    ``max_rows`` fits on a seeded random subset of the rows (speed). Deterministic.
    """
    f = _check_features(features)
    q = np.asarray(teacher_probs, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != f.shape[0] or q.shape[1] < 2:
        raise InvalidArgument(
            f"teacher_probs {q.shape} must be ({f.shape[0]}, C) with C >= 2",
            field="teacher_probs",
        )
    if not np.isfinite(q).all() or (q < 0).any() or (q.sum(1) <= 0).any():
        raise InvalidArgument(
            "teacher_probs must be finite, >= 0, with positive row sums", field="teacher_probs"
        )
    if f.shape[0] == 0:
        raise InvalidArgument("need at least one pool row", field="features")
    if steps < 1:
        raise InvalidArgument(f"steps {steps} must be >= 1", field="steps")
    if not np.isfinite(l2) or l2 < 0:
        raise InvalidArgument(f"l2 {l2} must be >= 0", field="l2")
    rows = np.arange(f.shape[0])
    if max_rows is not None:
        if max_rows < 1:
            raise InvalidArgument(f"max_rows {max_rows} must be >= 1", field="max_rows")
        if max_rows < f.shape[0]:
            rows = np.sort(np.random.default_rng(seed).choice(f.shape[0], max_rows, replace=False))
    x = _normalize(f[rows])
    target = torch.from_numpy((q[rows] / q[rows].sum(1, keepdims=True)).astype(np.float32))
    entropy = float(torch.special.entr(target).sum(1).mean())
    w = torch.zeros(q.shape[1], f.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS(
        [w],
        lr=1.0,
        max_iter=steps,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(x @ w.T, target) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        logits = x @ w.T
        kl = float(F.cross_entropy(logits, target)) - entropy
        agree = float((logits.argmax(1) == target.argmax(1)).float().mean())
        scale = float(w.norm(dim=1).mean())
    weights = w.detach().numpy().astype(np.float32)
    if scale <= 1e-12:  # a teacher without any signal (uniform): keep a usable zero head
        scale = 1.0
    return ZeroShotHead(
        prototypes=(weights / scale).astype(np.float32),
        logit_scale=scale,
        kl=max(kl, 0.0),
        agreement=agree,
        steps=steps,
        num_rows=int(rows.size),
    )


class TeacherAdapter:
    """The teacher's head refitted each round on the labels collected so far.

    Start from ``prototypes`` (C, D) and ``logit_scale`` (an open_clip teacher's text head) or
    :meth:`from_zero_shot` (fits :func:`fit_zero_shot_head` to a teacher's pool probabilities).
    :meth:`fit` runs :func:`fit_clap_head` (full-batch Adam, torch CPU) on the labeled rows of
    the pool; with ``self_training`` = m > 0 it then pseudo-labels, per class, the m unlabeled
    pool rows the adapted head is most confident about and refits from the prototypes on the
    labels plus those rows (weight ``pseudo_weight``), with the penalty of the labels alone.
    :meth:`predict` gives float32 probabilities whose rows sum to 1. Deterministic under ``seed``.
    """

    def __init__(
        self,
        prototypes: np.ndarray,
        logit_scale: float,
        *,
        penalty: float | str = "auto-n",
        steps: int = 300,
        lr: float = 1e-2,
        self_training: int = 0,
        pseudo_weight: float = 0.5,
        seed: int = 0,
        zero_shot: ZeroShotHead | None = None,
    ) -> None:
        p = _check_features(prototypes, "prototypes")
        if p.shape[0] < 2:
            raise InvalidArgument("prototypes need at least 2 classes", field="prototypes")
        if not np.isfinite(logit_scale) or logit_scale <= 0:
            raise InvalidArgument(f"logit_scale {logit_scale} must be > 0", field="logit_scale")
        if isinstance(penalty, str):
            if penalty not in PENALTY_MODES:
                raise InvalidArgument(
                    f"penalty {shown(penalty)} must be a number >= 0 or one of "
                    f"{', '.join(PENALTY_MODES)}",
                    field="penalty",
                )
        elif not np.isfinite(penalty) or penalty < 0:
            raise InvalidArgument(f"penalty {penalty} must be >= 0", field="penalty")
        if steps < 1:
            raise InvalidArgument(f"steps {steps} must be >= 1", field="steps")
        if self_training < 0:
            raise InvalidArgument(f"self_training {self_training} must be >= 0")
        if not np.isfinite(pseudo_weight) or pseudo_weight <= 0:
            raise InvalidArgument(f"pseudo_weight {pseudo_weight} must be > 0")
        self.prototypes = p.copy()
        self.logit_scale = float(logit_scale)
        self.penalty = penalty
        self.steps = int(steps)
        self.lr = float(lr)
        self.self_training = int(self_training)
        self.pseudo_weight = float(pseudo_weight)
        self.seed = int(seed)
        self.zero_shot = zero_shot
        self.head: AdaptedHead | None = None

    @classmethod
    def from_zero_shot(
        cls,
        features: np.ndarray,
        teacher_probs: np.ndarray,
        *,
        zero_shot_steps: int = 100,
        max_rows: int | None = ZERO_SHOT_FIT_ROWS,
        penalty: float | str = "auto-n",
        steps: int = 300,
        lr: float = 1e-2,
        self_training: int = 0,
        pseudo_weight: float = 0.5,
        seed: int = 0,
    ) -> TeacherAdapter:
        """An adapter starting from the zero-shot-equivalent head of a teacher without one,
        fitted to its probabilities ``teacher_probs`` (N, C) on the pool ``features`` (N, D)."""
        zs = fit_zero_shot_head(
            features, teacher_probs, steps=zero_shot_steps, max_rows=max_rows, seed=seed
        )
        return cls(
            zs.prototypes,
            zs.logit_scale,
            penalty=penalty,
            steps=steps,
            lr=lr,
            self_training=self_training,
            pseudo_weight=pseudo_weight,
            seed=seed,
            zero_shot=zs,
        )

    @property
    def num_classes(self) -> int:
        return int(self.prototypes.shape[0])

    @property
    def weights(self) -> np.ndarray:
        """The current head (C, D): adapted, or the prototypes before any label."""
        return self.head.weights if self.head is not None else self.prototypes

    def fit(
        self, features: np.ndarray, labeled_rows: np.ndarray, labels: np.ndarray
    ) -> AdaptedHead | None:
        """Refit from the prototypes on ``features[labeled_rows]`` with ``labels``; the rest of
        ``features`` (the pool) is used only for self-training. No rows: back to zero-shot."""
        f = _check_features(features)
        if f.shape[1] != self.prototypes.shape[1]:
            raise InvalidArgument(
                f"features {f.shape} do not fit prototypes {self.prototypes.shape}",
                field="features",
            )
        rows = np.asarray(labeled_rows)
        if rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer) or rows.size == 0):
            raise InvalidArgument("labeled_rows must be a 1-d integer array", field="labeled_rows")
        rows = rows.astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= f.shape[0]):
            raise InvalidArgument(
                f"labeled_rows must be in 0..{f.shape[0] - 1}", field="labeled_rows"
            )
        if np.unique(rows).size != rows.size:
            raise InvalidArgument("labeled_rows has duplicates", field="labeled_rows")
        y = _check_labels(labels, rows.size, self.num_classes)
        if rows.size == 0:
            self.head = None
            return None
        x = f[rows]
        lam: float | np.ndarray
        if isinstance(self.penalty, str):
            lam = clap_penalty(
                x, y, self.prototypes, logit_scale=self.logit_scale, mode=self.penalty
            )
        else:
            lam = float(self.penalty)
        head = fit_clap_head(
            x,
            y,
            self.prototypes,
            logit_scale=self.logit_scale,
            penalty=lam,
            steps=self.steps,
            lr=self.lr,
            seed=self.seed,
        )
        if self.self_training > 0:
            pseudo = self._pseudo_labels(f, rows, head.weights)
            if pseudo[0].size:
                pr, py = pseudo
                weight = np.concatenate(
                    [
                        np.ones(rows.size, np.float32),
                        np.full(pr.size, self.pseudo_weight, np.float32),
                    ]
                )
                head = fit_clap_head(
                    np.concatenate([x, f[pr]]),
                    np.concatenate([y, py]),
                    self.prototypes,
                    logit_scale=self.logit_scale,
                    penalty=lam,
                    steps=self.steps,
                    lr=self.lr,
                    seed=self.seed,
                    sample_weight=weight,
                )
        self.head = head
        return head

    def _pseudo_labels(
        self, features: np.ndarray, labeled: np.ndarray, weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        probs = head_probs(features, weights, self.logit_scale)
        probs[labeled] = -1.0
        pred = probs.argmax(1)
        conf = probs.max(1)
        out_rows, out_labels = [], []
        for c in range(self.num_classes):
            cand = np.flatnonzero((pred == c) & (conf >= 0))
            if cand.size == 0:
                continue
            # most confident first; ties -> lowest row (stable sort of -conf)
            top = cand[np.argsort(-conf[cand], kind="stable")[: self.self_training]]
            out_rows.append(top)
            out_labels.append(np.full(top.size, c, np.int64))
        if not out_rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(out_rows), np.concatenate(out_labels)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """float32 (N, C) probabilities of the current head; rows sum to 1."""
        return head_probs(features, self.weights, self.logit_scale)

    def describe(self) -> str:
        base = self.zero_shot.describe() if self.zero_shot is not None else "prototypes"
        if self.head is None:
            return base
        st = f" self_training={self.self_training}" if self.self_training else ""
        return f"{self.head.describe()}{st} from {base}"


def adapt_teacher(
    features_pool: np.ndarray,
    labeled_rows: np.ndarray,
    labels: np.ndarray,
    prototypes: np.ndarray,
    logit_scale: float,
    *,
    predict: Sequence[np.ndarray] | None = None,
    penalty: float | str = "auto-n",
    steps: int = 300,
    lr: float = 1e-2,
    self_training: int = 0,
    pseudo_weight: float = 0.5,
    seed: int = 0,
) -> list[np.ndarray]:
    """Adapt the head (``prototypes``, ``logit_scale``) with the labeled pool rows (see
    :class:`TeacherAdapter`) and return its float32 probabilities for each matrix in
    ``predict`` (default: the pool)."""
    adapter = TeacherAdapter(
        prototypes,
        logit_scale,
        penalty=penalty,
        steps=steps,
        lr=lr,
        self_training=self_training,
        pseudo_weight=pseudo_weight,
        seed=seed,
    )
    adapter.fit(features_pool, labeled_rows, labels)
    mats = [features_pool] if predict is None else list(predict)
    return [adapter.predict(m) for m in mats]
