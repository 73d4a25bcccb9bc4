"""The DHO dual-head student: backbones, KD loss, one round of training, pool scoring, checkpoints.

No gRPC here. Typical round::

    cfg = StudentConfig(num_classes=10, steps=400)
    res = train_round(cfg, x_lab, y_lab, x_pool, teacher_probs_pool, labeled_rows=rows)
    scores = score_pool(res.model, x_pool)          # probs / features for select_batch
    save_checkpoint(path, res.model, res.config, {"round": r})
"""

from __future__ import annotations

from activekd.arrays import PROB_SUM_ATOL
from activekd.student.backbones import (
    BACKBONES,
    BackboneSpec,
    ImageInput,
    available_backbones,
    build_backbone,
    register_backbone,
)
from activekd.student.checkpoint import (
    Checkpoint,
    dumps_checkpoint,
    load_checkpoint,
    load_student,
    loads_checkpoint,
    save_checkpoint,
)
from activekd.student.config import StudentConfig
from activekd.student.errors import CheckpointCorruptError, NonFiniteLossError
from activekd.student.model import (
    DualHeadStudent,
    LossParts,
    StudentOutput,
    build_student,
    combine_predictions,
    dho_loss,
    kd_kl,
    model_summary,
    soften_probs,
)
from activekd.student.scoring import PoolScores, evaluate, score_pool
from activekd.student.training import (
    TrainEvent,
    TrainResult,
    TrainStep,
    lr_factor,
    resolve_config,
    train_round,
)

__all__ = [
    "BACKBONES",
    "PROB_SUM_ATOL",
    "BackboneSpec",
    "Checkpoint",
    "CheckpointCorruptError",
    "DualHeadStudent",
    "ImageInput",
    "LossParts",
    "NonFiniteLossError",
    "PoolScores",
    "StudentConfig",
    "StudentOutput",
    "TrainEvent",
    "TrainResult",
    "TrainStep",
    "available_backbones",
    "build_backbone",
    "build_student",
    "combine_predictions",
    "dho_loss",
    "dumps_checkpoint",
    "evaluate",
    "kd_kl",
    "load_checkpoint",
    "load_student",
    "loads_checkpoint",
    "lr_factor",
    "model_summary",
    "register_backbone",
    "resolve_config",
    "save_checkpoint",
    "score_pool",
    "soften_probs",
    "train_round",
]
