"""Teacher backends behind one interface (no gRPC here).

- ``label-map`` (the offline default): an ImageNet-1k classifier (EfficientNet-Lite0) with a label
  map from target classes to ImageNet classes — not a vision-language model.
- ``open_clip``: zero-shot CLIP on any open_clip architecture, optional few-shot CLAP-style head.
- ``precomputed``: caller-supplied probabilities/features.

Build one with :func:`create_teacher` (:class:`TeacherConfig`). Importing this package registers
the model configs under ``model_configs/`` (e.g. ``tiny-clip-32``) with open_clip.
"""

from __future__ import annotations

from pathlib import Path

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
_registered = False


def register_model_configs() -> None:
    """Add ``model_configs/*.json`` to open_clip's architecture registry (idempotent)."""
    global _registered
    if _registered:
        return
    import open_clip
    from open_clip import factory

    if MODEL_CONFIG_DIR not in factory._MODEL_CONFIG_PATHS:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
    _registered = True


register_model_configs()

from activekd.teacher.base import (  # noqa: E402
    BaseTeacher,
    ItemPrediction,
    Teacher,
    TeacherDescription,
    TeacherIdentity,
    TeacherOutput,
    check_probs,
)
from activekd.teacher.batching import BatchStats, DynamicBatcher  # noqa: E402
from activekd.teacher.cache import TeacherOutputCache, default_cache_dir  # noqa: E402
from activekd.teacher.config import BACKENDS, TeacherConfig, create_teacher  # noqa: E402
from activekd.teacher.evaluate import EvalReport, evaluate_probs, evaluate_teacher  # noqa: E402
from activekd.teacher.images import (  # noqa: E402
    decode_image,
    validate_image_array,
    validate_image_batch,
)
from activekd.teacher.scoring import (  # noqa: E402
    ChunkSink,
    DirectoryChunkSink,
    MemoryChunkSink,
    ScoreProgress,
    iter_score_pool,
    score_pool,
)

__all__ = [
    "BACKENDS",
    "MODEL_CONFIG_DIR",
    "BaseTeacher",
    "BatchStats",
    "ChunkSink",
    "DirectoryChunkSink",
    "DynamicBatcher",
    "EvalReport",
    "ItemPrediction",
    "MemoryChunkSink",
    "ScoreProgress",
    "Teacher",
    "TeacherConfig",
    "TeacherDescription",
    "TeacherIdentity",
    "TeacherOutput",
    "TeacherOutputCache",
    "check_probs",
    "create_teacher",
    "decode_image",
    "default_cache_dir",
    "evaluate_probs",
    "evaluate_teacher",
    "iter_score_pool",
    "register_model_configs",
    "score_pool",
    "validate_image_array",
    "validate_image_batch",
]
