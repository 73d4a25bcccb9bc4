"""A teacher's zero-shot linear head, stored beside its pool of outputs.

Teacher adaptation (``teacher_config.adaptation: clap``, :mod:`activekd.teacher.adapt`) starts
from the teacher's zero-shot head and is pulled towards it. A vision-language teacher has one:
open_clip's prompt-ensemble text weights, MiniLM's class-description embeddings. The trainer
service only sees pools, so the head travels as a small pool of its own:

- the pool ``<teacher pool id>/zero-shot-head``: one item per class (item id = class name, in
  class order), array ``prototypes`` float32 (C, D), metadata ``logit_scale`` (the factor of
  ``softmax(logit_scale * normalize(features) @ prototypes.T)``);
- the teacher pool names it in its metadata under :data:`HEAD_POOL_KEY`.

Whoever registers the teacher pool writes the head: ScorePool and the Ray Data scoring job for a
teacher that has one (:func:`teacher_head`), ``activekd run`` for the Fortunes-10 text teacher. A
teacher without a linear head (the label-map teacher: ImageNet logits summed through a label
map) writes none, and adaptation starts from a head fitted to its zero-shot probabilities
(:meth:`~activekd.teacher.adapt.TeacherAdapter.from_zero_shot`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from activekd.errors import FailedPrecondition, NotFound, shown

#: teacher-pool metadata key naming the pool of its zero-shot head
HEAD_POOL_KEY = "zero_shot_head_pool"
HEAD_ARRAY = "prototypes"
HEAD_SUFFIX = "/zero-shot-head"


@dataclass(frozen=True)
class TeacherHead:
    """A teacher's own zero-shot linear head, as stored beside its pool (open_clip's prompt
    ensemble, MiniLM's class descriptions): ``softmax(logit_scale * normalize(f) @
    prototypes.T)``, prototypes (C, D) float32. Not :class:`activekd.teacher.adapt.ZeroShotHead`,
    the head fitted to a teacher's probabilities, which adaptation starts from."""

    prototypes: np.ndarray
    logit_scale: float
    class_names: tuple[str, ...]


def head_pool_id(teacher_pool_id: str) -> str:
    """Where the head of ``teacher_pool_id`` is stored."""
    return teacher_pool_id + HEAD_SUFFIX


def teacher_head(teacher: Any) -> TeacherHead | None:
    """The zero-shot linear head of a teacher object, or None when it has none (its
    ``zero_shot_head`` attribute, e.g. :class:`~activekd.teacher.open_clip_teacher.OpenClipTeacher`)."""
    head = getattr(teacher, "zero_shot_head", None)
    return head if isinstance(head, TeacherHead) else None


def head_arrays(head: TeacherHead) -> tuple[list[str], dict[str, np.ndarray], dict[str, str]]:
    """``(item_ids, arrays, metadata)`` of the head's pool."""
    protos = np.ascontiguousarray(head.prototypes, dtype=np.float32)
    if protos.ndim != 2 or protos.shape[0] != len(head.class_names):
        raise ValueError(f"prototypes {protos.shape} must be (C={len(head.class_names)}, D)")
    if not (math.isfinite(head.logit_scale) and head.logit_scale > 0):
        raise ValueError(f"logit_scale {head.logit_scale} must be finite and > 0")
    metadata = {"kind": "teacher-head", "logit_scale": repr(float(head.logit_scale))}
    return list(head.class_names), {HEAD_ARRAY: protos}, metadata


def write_head(store: Any, teacher_pool_id: str, head: TeacherHead) -> str:
    """Store ``head`` as the head pool of ``teacher_pool_id`` (replacing one there); its id."""
    ids, arrays, metadata = head_arrays(head)
    pool_id = head_pool_id(teacher_pool_id)
    store.put(pool_id, ids, arrays, metadata=metadata, overwrite=True)
    return pool_id


def read_head(
    store: Any, teacher_meta: Any, *, num_classes: int, feature_dim: int
) -> TeacherHead | None:
    """The head the teacher pool ``teacher_meta`` names (None when it names none).

    FailedPrecondition when the named pool is gone or does not fit the teacher's outputs
    (``num_classes`` columns of probabilities, ``feature_dim`` features): a head for other
    classes or another model must not be adapted silently."""
    pool_id = teacher_meta.metadata.get(HEAD_POOL_KEY, "")
    if not pool_id:
        return None
    where = f"teacher pool {shown(teacher_meta.pool_id)} names head pool {shown(pool_id)}"
    try:
        meta = store.describe(pool_id)
    except NotFound:
        raise FailedPrecondition(
            f"{where}, which is not in the store: score the teacher pool again (force) or "
            "register the head"
        ) from None
    if HEAD_ARRAY not in meta.arrays or "logit_scale" not in meta.metadata:
        raise FailedPrecondition(f"{where}, which has no {HEAD_ARRAY!r} array or logit_scale")
    protos = np.array(store.open_array(pool_id, HEAD_ARRAY), dtype=np.float32)  # small: a copy
    try:
        scale = float(meta.metadata["logit_scale"])
    except ValueError:
        raise FailedPrecondition(f"{where}, whose logit_scale is not a number") from None
    if protos.shape != (num_classes, feature_dim):
        raise FailedPrecondition(
            f"{where}, whose prototypes are {list(protos.shape)}; the teacher pool has "
            f"{num_classes} classes and {feature_dim}-d features"
        )
    if not (np.isfinite(protos).all() and math.isfinite(scale) and scale > 0):
        raise FailedPrecondition(f"{where}, whose prototypes or logit_scale are not finite")
    names: Sequence[str] = [str(i) for i in store.item_ids(pool_id)]
    pool_names = teacher_meta.metadata.get("class_names")
    if pool_names:
        try:
            listed = json.loads(pool_names)
        except ValueError:
            raise FailedPrecondition(
                f"teacher pool {shown(teacher_meta.pool_id)} has class_names metadata that is not "
                "a JSON list: store it again"
            ) from None
        if not isinstance(listed, list) or tuple(map(str, listed)) != tuple(names):
            raise FailedPrecondition(f"{where}, whose classes are not the teacher pool's")
    return TeacherHead(protos, scale, tuple(names))


__all__ = [
    "HEAD_ARRAY",
    "HEAD_POOL_KEY",
    "TeacherHead",
    "head_arrays",
    "head_pool_id",
    "read_head",
    "teacher_head",
    "write_head",
]
