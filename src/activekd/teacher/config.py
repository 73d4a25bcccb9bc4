"""Teacher configuration as data and the factory that builds a teacher from it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from activekd.errors import InvalidArgument, shown
from activekd.teacher.base import BaseTeacher

BACKENDS = ("label-map", "open_clip", "precomputed")
_ALIASES = {
    "label-map": "label-map",
    "label_map": "label-map",
    "labelmap": "label-map",
    "open_clip": "open_clip",
    "open-clip": "open_clip",
    "openclip": "open_clip",
    "clip": "open_clip",
    "precomputed": "precomputed",
}
ENV_PREFIX = "ACTIVEKD_TEACHER_"


def normalize_backend(name: str) -> str:
    """Canonical backend name (accepts ``open-clip``, ``label_map``...)."""
    key = (name or "").strip().lower()
    if key not in _ALIASES:
        raise InvalidArgument(f"unknown teacher backend {shown(name)}; use one of {BACKENDS}")
    return _ALIASES[key]


@dataclass
class TeacherConfig:
    """Everything :func:`create_teacher` needs. Fields that do not apply to a backend are ignored.

    - ``label-map`` (the offline default): ``model`` (``efficientnet-lite0`` or
      ``torchvision:<arch>``), ``weights``, ``label_map`` (built-in name or JSON path),
      ``image_size``, ``invert``, ``class_names`` (subset of the map), ``precision`` (``auto`` =
      fp32 everywhere: bf16 drifts this teacher's probabilities).
    - ``open_clip``: ``model`` (architecture, ``local-dir:/folder`` or ``hf-hub:org/repo``),
      ``pretrained`` (tag, checkpoint path or ``random``), ``class_names``, ``templates``,
      ``precision`` (``auto`` = bf16 on CUDA, fp32 on CPU), ``invert``.
    - ``precomputed``: ``probs``, ``features``, ``images`` (arrays or ``.npy`` paths),
      ``class_names``.
    """

    backend: str = "label-map"
    model: str = ""
    pretrained: str | None = None
    weights: str | None = None
    label_map: str = "fashion-mnist"
    class_names: tuple[str, ...] | None = None
    templates: tuple[str, ...] | None = None
    image_size: int | None = None
    invert: bool | None = None
    temperature: float = 1.0
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 64
    cache_dir: str | None = None
    probs: Any = None
    features: Any = None
    images: Any = None
    name: str = "precomputed"

    def __post_init__(self) -> None:
        self.backend = normalize_backend(self.backend)
        if self.class_names is not None:
            self.class_names = tuple(self.class_names)
        if self.templates is not None:
            self.templates = tuple(self.templates)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TeacherConfig:
        """From a dict of strings or typed values (env, YAML, flags). List fields accept a JSON
        list or ``|``-separated text; unknown keys raise InvalidArgument."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            k = key.lower().replace("-", "_")
            if k not in known:
                raise InvalidArgument(
                    f"unknown teacher setting {shown(key)}; known: {sorted(known)}"
                )
            if raw is None or raw == "":
                continue
            if k in ("class_names", "templates"):
                kwargs[k] = _as_list(raw, k)
            elif k in ("image_size", "batch_size"):
                kwargs[k] = _as_int(raw, k)
            elif k == "temperature":
                try:
                    kwargs[k] = float(raw)
                except (TypeError, ValueError) as exc:
                    raise InvalidArgument(f"temperature {shown(raw)} is not a number") from exc
            elif k == "invert":
                kwargs[k] = (
                    raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
                )
            else:
                kwargs[k] = raw
        return cls(**kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TeacherConfig:
        """From ``ACTIVEKD_TEACHER_<FIELD>`` variables (e.g. ``ACTIVEKD_TEACHER_BACKEND``)."""
        env = os.environ if environ is None else environ
        # ACTIVEKD_TEACHER_TARGET is the experiment service's address of the teacher, not a setting
        return cls.from_mapping(
            {
                k[len(ENV_PREFIX) :].lower(): v
                for k, v in env.items()
                if k.startswith(ENV_PREFIX) and k != f"{ENV_PREFIX}TARGET"
            }
        )


def _as_list(raw: Any, name: str) -> tuple[str, ...]:
    if isinstance(raw, list | tuple):
        return tuple(str(x) for x in raw)
    text = str(raw).strip()
    if text.startswith("["):
        try:
            val = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"{name} is not a valid JSON list: {exc}") from exc
        return tuple(str(x) for x in val)
    return tuple(s.strip() for s in text.split("|") if s.strip())


def _as_int(raw: Any, name: str) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{name} {shown(raw)} is not an integer") from exc


def create_teacher(config: TeacherConfig | Mapping[str, Any] | None = None) -> BaseTeacher:
    """Build the teacher ``config`` describes (default: the offline label-map teacher)."""
    if config is None:
        cfg = TeacherConfig()
    elif isinstance(config, TeacherConfig):
        cfg = config
    else:
        cfg = TeacherConfig.from_mapping(config)
    if cfg.backend == "label-map":
        from activekd.teacher.label_map_teacher import DEFAULT_MODEL, LabelMapTeacher

        return LabelMapTeacher.load(
            cfg.label_map,
            model=cfg.model or DEFAULT_MODEL,
            weights=cfg.weights,
            image_size=cfg.image_size or 224,
            invert=True if cfg.invert is None else cfg.invert,
            temperature=cfg.temperature,
            device=cfg.device,
            precision=cfg.precision,
            batch_size=cfg.batch_size,
            class_names=cfg.class_names,
        )
    if cfg.backend == "open_clip":
        from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES
        from activekd.teacher.open_clip_teacher import OpenClipTeacher

        if not cfg.model:
            raise InvalidArgument(
                "open_clip teacher needs model= (e.g. RN50, ViT-B-32, local-dir:/folder)",
                field="model",
            )
        return OpenClipTeacher.load(
            cfg.model,
            cfg.pretrained or cfg.weights,
            class_names=cfg.class_names or FASHION_MNIST_CLASSES,
            templates=cfg.templates,
            temperature=cfg.temperature,
            device=cfg.device,
            precision=cfg.precision,
            batch_size=cfg.batch_size,
            invert=bool(cfg.invert),
            cache_dir=cfg.cache_dir,
        )
    from activekd.teacher.precomputed import PrecomputedTeacher

    if cfg.probs is None:
        raise InvalidArgument(
            "precomputed teacher needs probs= (array or .npy path)", field="probs"
        )
    probs = cfg.probs if isinstance(cfg.probs, np.ndarray) else Path(str(cfg.probs))
    return PrecomputedTeacher(
        probs,
        cfg.features,
        class_names=cfg.class_names,
        images=cfg.images,
        name=cfg.name,
        batch_size=cfg.batch_size,
    )
