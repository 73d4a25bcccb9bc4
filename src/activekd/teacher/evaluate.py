"""Top-1 accuracy of a teacher, overall and per class."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from activekd.errors import InvalidArgument
from activekd.teacher.base import Teacher, TeacherIdentity
from activekd.teacher.cache import TeacherOutputCache


@dataclass(frozen=True)
class EvalReport:
    """Accuracy of argmax predictions against labels."""

    top1: float
    num_images: int
    class_names: tuple[str, ...]
    per_class_top1: dict[str, float]
    per_class_count: dict[str, int]
    confusion: np.ndarray
    predictions: np.ndarray
    identity: TeacherIdentity | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-image predictions)."""
        return {
            "top1": self.top1,
            "num_images": self.num_images,
            "per_class_top1": dict(self.per_class_top1),
            "per_class_count": dict(self.per_class_count),
            "confusion": self.confusion.tolist(),
            "identity": self.identity.to_dict() if self.identity else None,
            "cached": self.cached,
        }


def evaluate_probs(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> EvalReport:
    """Report for probabilities (N, C) against integer labels (N,) in 0..C-1."""
    p = np.asarray(probs)
    y = np.asarray(labels)
    names = tuple(class_names)
    if p.ndim != 2 or p.shape[1] != len(names):
        raise InvalidArgument(f"probs shape {p.shape} must be (N, {len(names)})", field="probs")
    if y.shape != (p.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise InvalidArgument(
            f"labels must be integers of shape ({p.shape[0]},), got {y.dtype} {y.shape}",
            field="labels",
        )
    if p.shape[0] == 0:
        raise InvalidArgument("nothing to evaluate: zero images", field="labels")
    if y.min() < 0 or y.max() >= len(names):
        raise InvalidArgument(f"labels must be in 0..{len(names) - 1}", field="labels")
    pred = p.argmax(axis=1)
    conf = np.zeros((len(names), len(names)), np.int64)
    np.add.at(conf, (y, pred), 1)
    counts = conf.sum(axis=1)
    per_class = {n: float(conf[i, i] / counts[i]) for i, n in enumerate(names) if counts[i] > 0}
    return EvalReport(
        top1=float((pred == y).mean()),
        num_images=int(p.shape[0]),
        class_names=names,
        per_class_top1=per_class,
        per_class_count={n: int(counts[i]) for i, n in enumerate(names)},
        confusion=conf,
        predictions=pred,
    )


def evaluate_teacher(
    teacher: Teacher,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    cache: TeacherOutputCache | None = None,
    cache_key: tuple[str, str, np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Top-1 of ``teacher`` on uint8 ``images`` with integer ``labels``.

    ``class_names`` (label order) switches the teacher to those classes first when they differ
    from its own (a view; ``teacher`` is unchanged). With ``cache`` and
    ``cache_key=(dataset, split, row_indices)`` outputs are reused across runs.
    """
    t = teacher
    if class_names is not None and tuple(class_names) != teacher.identity.class_names:
        t = teacher.with_classes(list(class_names))
    if len(images) != len(labels):
        raise InvalidArgument(f"{len(images)} images but {len(labels)} labels", field="labels")
    if cache is not None and cache_key is not None:
        dataset, split, rows = cache_key
        out, cached = cache.get_or_compute(
            t, dataset, split, rows, images, store_features=False, progress=progress
        )
        probs = out.probs
    else:
        cached = False
        parts = []
        step = t.max_batch_size
        for start in range(0, len(images), step):
            parts.append(t.predict(images[start : start + step]).probs)
            if progress is not None:
                progress(min(start + step, len(images)), len(images))
        probs = np.concatenate(parts) if parts else np.zeros((0, t.num_classes), np.float32)
    report = evaluate_probs(probs, labels, t.identity.class_names)
    return replace(report, identity=t.identity, cached=cached)
