"""TrainerService: protos <-> :class:`activekd.student.round_job.RoundTrainer`.

A round trains in a worker thread (:class:`~activekd_services.trainer.worker.ThreadedJob`) while
TrainRound streams its progress; messages are built by :mod:`activekd_services.trainer.convert`.
Errors are the library's ``activekd.errors`` exceptions, mapped to statuses by the shared
interceptor.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator

import grpc
from activekd_services.trainer.convert import (
    checkpoint_proto,
    evaluation_proto,
    progress_proto,
    result_proto,
)
from activekd_services.trainer.worker import ThreadedJob

from activekd.server import metrics
from activekd.student import NonFiniteLossError, TrainEvent
from activekd.student.round_job import RoundOutcome, RoundRequest, RoundTrainer
from activekd.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from activekd.wire.pool_info import pool_info
from activekd.wire.structs import struct_to_dict

log = logging.getLogger("activekd.trainer")

DEFAULT_CHUNK_BYTES = 1 << 20
_TRAIN_METHOD = "/activekd.v1.TrainerService/TrainRound"
_GET_METHOD = "/activekd.v1.TrainerService/GetCheckpoint"
_POOL_FIELDS = ("pool_id", "teacher_pool_id", "test_pool_id", "teacher_test_pool_id")


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    """TrainerService over a :class:`RoundTrainer`; ``chunk_bytes`` sizes GetCheckpoint chunks."""

    def __init__(self, trainer: RoundTrainer, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.trainer = trainer
        self.chunk_bytes = max(1, int(chunk_bytes))

    async def TrainRound(
        self, request: trainer_pb2.TrainRoundRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[trainer_pb2.TrainRoundResponse]:
        round_request = RoundRequest(
            experiment_id=request.experiment_id,
            round=request.round,
            overrides=struct_to_dict(request.student_config, "student_config"),
            predict_pool=request.predict_pool,
            write_teacher_targets=request.write_teacher_targets,
            seed=request.seed if request.HasField("seed") else None,
            **{name: getattr(request, name) for name in _POOL_FIELDS},
        )
        prepared = await asyncio.to_thread(self.trainer.prepare, round_request)
        spec = prepared.experiment.spec
        dataset = spec.dataset or "unknown"
        where = {"experiment_id": request.experiment_id, "round": request.round}
        training = {
            "num_labeled": prepared.num_labeled,
            "steps": prepared.config.steps,
            "pool_id": prepared.pool_id,
            "teacher_pool_id": prepared.teacher_pool_id,
        }
        log.info("round training", extra={**where, **training})
        started = time.perf_counter()
        job = ThreadedJob[TrainEvent, RoundOutcome](
            lambda emit, cancel: self.trainer.run(prepared, emit, cancel)
        )
        try:
            async for event in job.events():
                metrics.rpc_msg_sent(_TRAIN_METHOD, "server_stream")
                yield progress_proto(event)
            outcome = job.result()
        except NonFiniteLossError as exc:
            nan = {"total": math.nan, "ce": math.nan, "kd": math.nan}
            metrics.observe_training_round(dataset, time.perf_counter() - started, exc.step, nan)
            raise
        finally:
            # the client went away: stop training at the next step; "round stopped" follows
            # once the worker thread has returned and the round can be trained again
            if job.stop(lambda: log.info("round stopped", extra=where)):
                log.info("round cancelled", extra=where)
        metrics.observe_training_round(
            dataset, outcome.train_seconds, outcome.steps, outcome.losses
        )
        accuracy = None if outcome.evaluation is None else outcome.evaluation.accuracy
        if accuracy is not None:
            clipped = min(1.0, max(0.0, accuracy))
            metrics.record_round_result(
                request.experiment_id, spec.strategy, dataset, outcome.num_labeled, clipped
            )
        trained = {
            "checkpoint_sha256": outcome.checkpoint.sha256,
            "train_seconds": round(outcome.train_seconds, 3),
            "accuracy": accuracy,
        }
        log.info("round trained", extra={**where, **trained})
        metrics.rpc_msg_sent(_TRAIN_METHOD, "server_stream")
        yield result_proto(outcome)

    async def PredictPool(
        self, request: trainer_pb2.PredictPoolRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.PredictPoolResponse:
        start = time.perf_counter()
        meta, compute = await asyncio.to_thread(
            self.trainer.predict_pool,
            request.experiment_id,
            request.round,
            request.pool_id,
            request.output_pool_id,
        )
        total = time.perf_counter() - start
        timing = common_pb2.Timing(compute_seconds=compute, total_seconds=total)
        return trainer_pb2.PredictPoolResponse(pool=pool_info(meta), timing=timing)

    async def Evaluate(
        self, request: trainer_pb2.EvaluateRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.EvaluateResponse:
        ev = await asyncio.to_thread(
            self.trainer.evaluate,
            request.experiment_id,
            request.round,
            request.test_pool_id,
            request.teacher_test_pool_id,
        )
        return trainer_pb2.EvaluateResponse(evaluation=evaluation_proto(ev))

    async def ListCheckpoints(
        self, request: trainer_pb2.ListCheckpointsRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.ListCheckpointsResponse:
        infos = await asyncio.to_thread(self.trainer.list_checkpoints, request.experiment_id)
        return trainer_pb2.ListCheckpointsResponse(checkpoints=[checkpoint_proto(i) for i in infos])

    async def GetCheckpoint(
        self, request: trainer_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[trainer_pb2.GetCheckpointResponse]:
        opener = self.trainer.open_checkpoint(request.experiment_id, request.round)
        fh, info = await asyncio.to_thread(opener.__enter__)
        try:  # the first message carries the info (with an empty chunk for an empty file)
            chunk = await asyncio.to_thread(fh.read, self.chunk_bytes)
            metrics.rpc_msg_sent(_GET_METHOD, "server_stream")
            yield trainer_pb2.GetCheckpointResponse(info=checkpoint_proto(info), chunk=chunk)
            while chunk and (chunk := await asyncio.to_thread(fh.read, self.chunk_bytes)):
                metrics.rpc_msg_sent(_GET_METHOD, "server_stream")
                yield trainer_pb2.GetCheckpointResponse(chunk=chunk)
        finally:
            opener.__exit__(None, None, None)
