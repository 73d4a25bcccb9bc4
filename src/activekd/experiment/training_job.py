"""Deprecated path (one release): use :mod:`activekd.student.round_job` (the trainer's round job)
and :mod:`activekd.student.checkpoint_registry` (``CheckpointInfo``)."""

from activekd.student.checkpoint_registry import CheckpointInfo
from activekd.student.round_job import (
    DEFAULT_INPUT_ARRAY,
    INPUT_ARRAY_KEY,
    TRAINER_KEYS,
    Evaluation,
    PreparedRound,
    RoundOutcome,
    RoundRequest,
    RoundTrainer,
    coerce_numbers,
    labels_for_round,
    resolve_student_config,
    student_pool_id,
)

__all__ = [
    "DEFAULT_INPUT_ARRAY",
    "INPUT_ARRAY_KEY",
    "TRAINER_KEYS",
    "CheckpointInfo",
    "Evaluation",
    "PreparedRound",
    "RoundOutcome",
    "RoundRequest",
    "RoundTrainer",
    "coerce_numbers",
    "labels_for_round",
    "resolve_student_config",
    "student_pool_id",
]
