"""Teacher backends behind one interface (no gRPC here).

- ``label-map`` (the offline default): an ImageNet-1k classifier (EfficientNet-Lite0) with a label
  map from target classes to ImageNet classes — not a vision-language model.
- ``open_clip``: zero-shot CLIP on any open_clip architecture, optional few-shot CLAP-style head.
- ``precomputed``: caller-supplied probabilities/features.

Build one with :func:`create_teacher` (:class:`TeacherConfig`). open_clip is imported only when
the open_clip backend is built: it then registers the model configs under ``model_configs/``
(e.g. ``tiny-clip-32``); call :func:`register_model_configs` to name them to open_clip directly.
"""

from __future__ import annotations

from activekd.arrays import check_probabilities as check_probs
from activekd.teacher.base import (
    BaseTeacher,
    ItemPrediction,
    Teacher,
    TeacherDescription,
    TeacherIdentity,
    TeacherOutput,
)
from activekd.teacher.batching import BatchStats, DynamicBatcher, PredictItem, run_batch
from activekd.teacher.cache import (
    TeacherCacheIndex,
    TeacherOutputCache,
    default_cache_dir,
    load_teacher_cache_file,
)
from activekd.teacher.clip_configs import MODEL_CONFIG_DIR, register_model_configs
from activekd.teacher.config import BACKENDS, TeacherConfig, create_teacher
from activekd.teacher.evaluate import EvalReport, evaluate_probs, evaluate_teacher
from activekd.teacher.images import (
    decode_image,
    validate_image_array,
    validate_image_batch,
)
from activekd.teacher.scoring import (
    ChunkSink,
    DirectoryChunkSink,
    MemoryChunkSink,
    ScoreProgress,
    iter_score_chunks,
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
    "PredictItem",
    "ScoreProgress",
    "Teacher",
    "TeacherCacheIndex",
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
    "iter_score_chunks",
    "iter_score_pool",
    "load_teacher_cache_file",
    "register_model_configs",
    "run_batch",
    "score_pool",
    "validate_image_array",
    "validate_image_batch",
]
