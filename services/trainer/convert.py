"""TrainerService messages from the round job's results (library -> proto).

``Evaluation`` fields that do not apply (``kd_accuracy`` of a CE-only student, teacher fields
without teacher test probabilities) are left unset (``optional`` in the proto).
"""

from __future__ import annotations

from activekd.student import TrainEvent
from activekd.student.checkpoint_registry import CheckpointInfo
from activekd.student.round_job import Evaluation, RoundOutcome
from activekd.v1 import trainer_pb2
from activekd.wire.pool_info import pool_info

_OPTIONAL_METRICS = ("kd_accuracy", "teacher_agreement", "teacher_accuracy")


def checkpoint_proto(info: CheckpointInfo) -> trainer_pb2.CheckpointInfo:
    return trainer_pb2.CheckpointInfo(
        checkpoint_id=info.checkpoint_id,
        experiment_id=info.experiment_id,
        round=info.round,
        size_bytes=info.size_bytes,
        sha256=info.sha256,
        created_unix=info.created_unix,
    )


def evaluation_proto(ev: Evaluation) -> trainer_pb2.Evaluation:
    optional = {name: getattr(ev, name) for name in _OPTIONAL_METRICS}
    return trainer_pb2.Evaluation(
        accuracy=ev.accuracy,
        ce_accuracy=ev.ce_accuracy,
        num_examples=ev.num_examples,
        **{name: value for name, value in optional.items() if value is not None},
    )


def progress_proto(ev: TrainEvent) -> trainer_pb2.TrainRoundResponse:
    progress = trainer_pb2.TrainProgress(
        step=ev.step,
        total_steps=ev.total_steps,
        loss=ev.loss,
        ce_loss=ev.ce,
        kd_loss=ev.kd,
        elapsed_seconds=ev.elapsed_seconds,
    )
    return trainer_pb2.TrainRoundResponse(progress=progress)


def result_proto(out: RoundOutcome) -> trainer_pb2.TrainRoundResponse:
    result = trainer_pb2.TrainResult(
        checkpoint=checkpoint_proto(out.checkpoint),
        evaluation=None if out.evaluation is None else evaluation_proto(out.evaluation),
        student_pool=None if out.student_pool is None else pool_info(out.student_pool),
        train_seconds=out.train_seconds,
        predict_seconds=out.predict_seconds,
        num_labeled=out.num_labeled,
    )
    return trainer_pb2.TrainRoundResponse(result=result)
