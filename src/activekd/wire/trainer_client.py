"""Client of ``activekd.v1.TrainerService``: train a round, score pools, evaluate, checkpoints."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from activekd.student.checkpoint_registry import CheckpointInfo
from activekd.v1 import trainer_pb2, trainer_pb2_grpc
from activekd.wire.channel import BaseClient
from activekd.wire.pool_records import PoolInfo
from activekd.wire.structs import dict_to_struct

TRAIN_TIMEOUT = 6 * 3600.0


def checkpoint_from_proto(c: trainer_pb2.CheckpointInfo) -> CheckpointInfo:
    """The library's :class:`CheckpointInfo` (no ``path``: the file is on the server)."""
    return CheckpointInfo(
        checkpoint_id=c.checkpoint_id,
        experiment_id=c.experiment_id,
        round=c.round,
        size_bytes=c.size_bytes,
        sha256=c.sha256,
        created_unix=c.created_unix,
    )


@dataclass(frozen=True)
class TrainProgress:
    """One TrainRound progress event (1-based ``step`` of ``total_steps``)."""

    step: int
    total_steps: int
    loss: float
    ce_loss: float
    kd_loss: float
    elapsed_seconds: float


@dataclass(frozen=True)
class StudentEvaluation:
    """Test metrics; ``kd_accuracy`` None for a CE-only student, teacher fields None without
    teacher test probabilities."""

    accuracy: float
    ce_accuracy: float
    kd_accuracy: float | None
    num_examples: int
    teacher_accuracy: float | None
    teacher_agreement: float | None

    @classmethod
    def from_proto(cls, e: trainer_pb2.Evaluation) -> StudentEvaluation:
        def opt(name: str) -> float | None:
            return float(getattr(e, name)) if e.HasField(name) else None

        return cls(e.accuracy, e.ce_accuracy, opt("kd_accuracy"), e.num_examples,
                   opt("teacher_accuracy"), opt("teacher_agreement"))  # fmt: skip


@dataclass(frozen=True)
class TrainRoundResult:
    """The last TrainRound message: checkpoint, optional evaluation and student pool, timings."""

    checkpoint: CheckpointInfo
    evaluation: StudentEvaluation | None
    student_pool: PoolInfo | None
    train_seconds: float
    predict_seconds: float
    num_labeled: int


@dataclass(frozen=True)
class PredictPoolResult:
    """PredictPool: the stored student pool and timings."""

    pool: PoolInfo
    compute_seconds: float
    total_seconds: float


class TrainerClient(BaseClient):
    """TrainerService: train a round (streamed progress), score pools, evaluate, checkpoints."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self.stub = trainer_pb2_grpc.TrainerServiceStub(self.channel)

    def train_round(
        self,
        experiment_id: str,
        round: int,
        *,
        student_config: dict[str, Any] | None = None,
        seed: int | None = None,
        pool_id: str = "",
        teacher_pool_id: str = "",
        test_pool_id: str = "",
        teacher_test_pool_id: str = "",
        predict_pool: bool = False,
        timeout: float | None = None,
    ) -> Iterator[TrainProgress | TrainRoundResult]:
        """Train one round: yields :class:`TrainProgress` events, then one
        :class:`TrainRoundResult`. Empty ids default to the experiment spec's on the server, and
        ``seed`` None to the experiment's round seed. ``timeout`` defaults to
        :data:`TRAIN_TIMEOUT`; stopping the iteration early cancels the call (the server stops
        training at its next progress event)."""
        req = trainer_pb2.TrainRoundRequest(
            experiment_id=experiment_id,
            round=round,
            student_config=dict_to_struct(student_config),
            pool_id=pool_id,
            teacher_pool_id=teacher_pool_id,
            test_pool_id=test_pool_id,
            teacher_test_pool_id=teacher_test_pool_id,
            predict_pool=predict_pool,
        )
        if seed is not None:
            req.seed = seed
        call = self.stub.TrainRound(req, timeout=TRAIN_TIMEOUT if timeout is None else timeout)
        try:
            for msg in call:
                if msg.HasField("progress"):
                    p = msg.progress
                    yield TrainProgress(p.step, p.total_steps, p.loss, p.ce_loss, p.kd_loss,
                                        p.elapsed_seconds)  # fmt: skip
                elif msg.HasField("result"):
                    r = msg.result
                    yield TrainRoundResult(
                        checkpoint=checkpoint_from_proto(r.checkpoint),
                        evaluation=StudentEvaluation.from_proto(r.evaluation)
                        if r.HasField("evaluation")
                        else None,
                        student_pool=PoolInfo.from_proto(r.student_pool)
                        if r.HasField("student_pool")
                        else None,
                        train_seconds=r.train_seconds,
                        predict_seconds=r.predict_seconds,
                        num_labeled=r.num_labeled,
                    )
        finally:
            call.cancel()  # no-op once the stream has ended

    def train_round_result(
        self,
        experiment_id: str,
        round: int,
        on_progress: Callable[[TrainProgress], None] | None = None,
        **kwargs: Any,
    ) -> TrainRoundResult:
        """:meth:`train_round` to the end; progress events go to ``on_progress``."""
        result = None
        for event in self.train_round(experiment_id, round, **kwargs):
            if isinstance(event, TrainRoundResult):
                result = event
            elif on_progress is not None:
                on_progress(event)
        if result is None:
            raise RuntimeError("TrainRound ended without a result")
        return result

    def predict_pool(
        self,
        experiment_id: str,
        round: int,
        *,
        pool_id: str = "",
        output_pool_id: str = "",
        timeout: float | None = None,
    ) -> PredictPoolResult:
        """Score a pool (default: the round's training pool) with the round's student into
        ``output_pool_id`` (default ``<experiment>/round-<r>/student``)."""
        r = self.stub.PredictPool(
            trainer_pb2.PredictPoolRequest(experiment_id=experiment_id, round=round,
                                           pool_id=pool_id, output_pool_id=output_pool_id),
            timeout=self._deadline(timeout),
        )  # fmt: skip
        return PredictPoolResult(
            PoolInfo.from_proto(r.pool), r.timing.compute_seconds, r.timing.total_seconds
        )

    def evaluate(
        self,
        experiment_id: str,
        round: int,
        *,
        test_pool_id: str = "",
        teacher_test_pool_id: str = "",
        timeout: float | None = None,
    ) -> StudentEvaluation:
        """Evaluate the round's student on a test pool (default: the experiment's)."""
        r = self.stub.Evaluate(
            trainer_pb2.EvaluateRequest(experiment_id=experiment_id, round=round,
                                        test_pool_id=test_pool_id,
                                        teacher_test_pool_id=teacher_test_pool_id),
            timeout=self._deadline(timeout),
        )  # fmt: skip
        return StudentEvaluation.from_proto(r.evaluation)

    def list_checkpoints(
        self, experiment_id: str, timeout: float | None = None
    ) -> list[CheckpointInfo]:
        r = self.stub.ListCheckpoints(
            trainer_pb2.ListCheckpointsRequest(experiment_id=experiment_id),
            timeout=self._deadline(timeout),
        )
        return [checkpoint_from_proto(c) for c in r.checkpoints]

    def get_checkpoint(self, experiment_id: str, round: int, timeout: float | None = None) -> bytes:
        """The checkpoint file's bytes, checked against the size and SHA-256 the server sent
        (``OSError`` on a mismatch). ``activekd.student.loads_checkpoint`` parses them."""
        info: CheckpointInfo | None = None
        parts: list[bytes] = []
        for msg in self.stub.GetCheckpoint(
            trainer_pb2.GetCheckpointRequest(experiment_id=experiment_id, round=round),
            timeout=self._deadline(timeout),
        ):
            if msg.HasField("info"):
                info = checkpoint_from_proto(msg.info)
            parts.append(msg.chunk)
        data = b"".join(parts)
        if info is None:
            raise OSError("GetCheckpoint sent no checkpoint info")
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != info.size_bytes or digest != info.sha256:
            raise OSError(
                f"checkpoint {info.checkpoint_id} arrived damaged: {len(data)} bytes with sha256 "
                f"{digest[:12]}, expected {info.size_bytes} bytes with {info.sha256[:12]}"
            )
        return data
