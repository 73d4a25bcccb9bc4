"""The DHO dual-head student: backbones, KD loss, one round of training, pool scoring, checkpoints.

No gRPC here. Typical round::

    cfg = StudentConfig(num_classes=10, steps=400)
    res = train_round(cfg, x_lab, y_lab, x_pool, teacher_probs_pool, labeled_rows=rows)
    scores = score_pool(res.model, x_pool)          # probs / features for select_batch
    save_checkpoint(path, res.model, res.config, {"round": r})

Names load on first use (PEP 562), so light modules of this package (``config``,
``checkpoint_registry``) import without torch; the rest needs the ``trainer`` extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from activekd.arrays import (
        PROB_SUM_ATOL,
    )
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
    from activekd.student.config import (
        StudentConfig,
    )
    from activekd.student.errors import (
        CheckpointCorruptError,
        NonFiniteLossError,
    )
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
    from activekd.student.scoring import (
        PoolScores,
        evaluate,
        score_pool,
    )
    from activekd.student.training import (
        TrainEvent,
        TrainResult,
        TrainStep,
        lr_factor,
        resolve_config,
        train_round,
    )

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "PROB_SUM_ATOL": "activekd.arrays",
    "BACKBONES": "activekd.student.backbones",
    "BackboneSpec": "activekd.student.backbones",
    "ImageInput": "activekd.student.backbones",
    "available_backbones": "activekd.student.backbones",
    "build_backbone": "activekd.student.backbones",
    "register_backbone": "activekd.student.backbones",
    "Checkpoint": "activekd.student.checkpoint",
    "dumps_checkpoint": "activekd.student.checkpoint",
    "load_checkpoint": "activekd.student.checkpoint",
    "load_student": "activekd.student.checkpoint",
    "loads_checkpoint": "activekd.student.checkpoint",
    "save_checkpoint": "activekd.student.checkpoint",
    "StudentConfig": "activekd.student.config",
    "CheckpointCorruptError": "activekd.student.errors",
    "NonFiniteLossError": "activekd.student.errors",
    "DualHeadStudent": "activekd.student.model",
    "LossParts": "activekd.student.model",
    "StudentOutput": "activekd.student.model",
    "build_student": "activekd.student.model",
    "combine_predictions": "activekd.student.model",
    "dho_loss": "activekd.student.model",
    "kd_kl": "activekd.student.model",
    "model_summary": "activekd.student.model",
    "soften_probs": "activekd.student.model",
    "PoolScores": "activekd.student.scoring",
    "evaluate": "activekd.student.scoring",
    "score_pool": "activekd.student.scoring",
    "TrainEvent": "activekd.student.training",
    "TrainResult": "activekd.student.training",
    "TrainStep": "activekd.student.training",
    "lr_factor": "activekd.student.training",
    "resolve_config": "activekd.student.training",
    "train_round": "activekd.student.training",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
