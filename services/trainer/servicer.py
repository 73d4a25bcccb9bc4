"""TrainerService: protos <-> ``activekd.experiment.training_job.RoundTrainer``.

Training runs in a worker thread; progress events cross to the event loop through an asyncio
queue, so health checks and other RPCs stay responsive while a round trains. Errors are the
library's ``activekd.errors`` exceptions, mapped to statuses by the shared interceptor.

``Evaluation`` fields that do not apply (``kd_accuracy`` of a CE-only student, teacher fields
without teacher test probabilities) are left unset (``optional`` in the proto).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import numpy as np
from google.protobuf import json_format, struct_pb2

from activekd.experiment.training_job import (
    CheckpointInfo,
    Evaluation,
    RoundOutcome,
    RoundRequest,
    RoundTrainer,
)
from activekd.server import metrics
from activekd.server.tensors import dtype_to_proto
from activekd.store import PoolMeta
from activekd.student import NonFiniteLossError, TrainEvent
from activekd.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc

log = logging.getLogger("activekd.trainer")

DEFAULT_CHUNK_BYTES = 1 << 20
_TRAIN_METHOD = "/activekd.v1.TrainerService/TrainRound"
_GET_METHOD = "/activekd.v1.TrainerService/GetCheckpoint"
_DONE = object()


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a plain dict (numbers arrive as floats; the library coerces integral ones)."""
    out = json_format.MessageToDict(struct)
    return out if isinstance(out, dict) else {}


def pool_info(meta: PoolMeta) -> common_pb2.PoolInfo:
    """PoolMeta -> PoolInfo proto."""
    return common_pb2.PoolInfo(
        pool_id=meta.pool_id,
        num_items=meta.num_items,
        arrays=[
            common_pb2.ArrayInfo(
                name=n, dtype=cast(Any, dtype_to_proto(np.dtype(a.dtype))), shape=a.shape
            )
            for n, a in sorted(meta.arrays.items())
        ],
        metadata=meta.metadata,
        created_unix=meta.created_unix,
        complete=meta.complete,
    )


def checkpoint_info(info: CheckpointInfo) -> trainer_pb2.CheckpointInfo:
    return trainer_pb2.CheckpointInfo(
        checkpoint_id=info.checkpoint_id,
        experiment_id=info.experiment_id,
        round=info.round,
        size_bytes=info.size_bytes,
        sha256=info.sha256,
        created_unix=info.created_unix,
    )


def evaluation(ev: Evaluation) -> trainer_pb2.Evaluation:
    msg = trainer_pb2.Evaluation(
        accuracy=ev.accuracy, ce_accuracy=ev.ce_accuracy, num_examples=ev.num_examples
    )
    if ev.kd_accuracy is not None:
        msg.kd_accuracy = ev.kd_accuracy
    if ev.teacher_agreement is not None:
        msg.teacher_agreement = ev.teacher_agreement
    if ev.teacher_accuracy is not None:
        msg.teacher_accuracy = ev.teacher_accuracy
    return msg


def _progress(ev: TrainEvent) -> trainer_pb2.TrainRoundResponse:
    return trainer_pb2.TrainRoundResponse(
        progress=trainer_pb2.TrainProgress(
            step=ev.step,
            total_steps=ev.total_steps,
            loss=ev.loss,
            ce_loss=ev.ce,
            kd_loss=ev.kd,
            elapsed_seconds=ev.elapsed_seconds,
        )
    )


def _result(out: RoundOutcome) -> trainer_pb2.TrainRoundResponse:
    res = trainer_pb2.TrainResult(
        checkpoint=checkpoint_info(out.checkpoint),
        train_seconds=out.train_seconds,
        predict_seconds=out.predict_seconds,
        num_labeled=out.num_labeled,
    )
    if out.evaluation is not None:
        res.evaluation.CopyFrom(evaluation(out.evaluation))
    if out.student_pool is not None:
        res.student_pool.CopyFrom(pool_info(out.student_pool))
    return trainer_pb2.TrainRoundResponse(result=res)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done callback: mark a worker's exception as seen when nobody awaits it any more."""
    if not task.cancelled():
        task.exception()


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    """Adapts TrainerService to :class:`RoundTrainer`; ``chunk_bytes`` sizes GetCheckpoint chunks."""

    def __init__(self, trainer: RoundTrainer, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.trainer = trainer
        self.chunk_bytes = max(1, int(chunk_bytes))

    async def TrainRound(
        self, request: trainer_pb2.TrainRoundRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[trainer_pb2.TrainRoundResponse]:
        req = RoundRequest(
            experiment_id=request.experiment_id,
            round=request.round,
            overrides=struct_to_dict(request.student_config),
            pool_id=request.pool_id,
            teacher_pool_id=request.teacher_pool_id,
            test_pool_id=request.test_pool_id,
            teacher_test_pool_id=request.teacher_test_pool_id,
            predict_pool=request.predict_pool,
        )
        prepared = await asyncio.to_thread(self.trainer.prepare, req)
        spec = prepared.experiment.spec
        dataset = spec.dataset or "unknown"
        log.info(
            "round training",
            extra={
                "experiment_id": req.experiment_id,
                "round": req.round,
                "num_labeled": prepared.num_labeled,
                "steps": prepared.config.steps,
                "pool_id": prepared.pool_id,
                "teacher_pool_id": prepared.teacher_pool_id,
            },
        )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def on_progress(ev: TrainEvent) -> None:  # worker thread
            loop.call_soon_threadsafe(queue.put_nowait, ev)

        started = time.perf_counter()
        task = asyncio.ensure_future(
            asyncio.to_thread(self.trainer.run, prepared, on_progress, cancel)
        )
        task.add_done_callback(_retrieve)
        task.add_done_callback(lambda _t: queue.put_nowait(_DONE))
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                metrics.rpc_msg_sent(_TRAIN_METHOD, "server_stream")
                yield _progress(item)
            try:
                outcome = task.result()
            except NonFiniteLossError as exc:
                metrics.observe_training_round(
                    dataset,
                    time.perf_counter() - started,
                    exc.step,
                    {"total": math.nan, "ce": math.nan, "kd": math.nan},
                )
                raise
        finally:
            if not task.done():
                cancel.set()  # the client went away: stop training at the next event
                log.info(
                    "round cancelled",
                    extra={"experiment_id": req.experiment_id, "round": req.round},
                )
        metrics.observe_training_round(
            dataset, outcome.train_seconds, outcome.steps, outcome.losses
        )
        if outcome.evaluation is not None:
            metrics.record_round_result(
                req.experiment_id,
                spec.strategy,
                dataset,
                outcome.num_labeled,
                min(1.0, max(0.0, outcome.evaluation.accuracy)),
            )
        log.info(
            "round trained",
            extra={
                "experiment_id": req.experiment_id,
                "round": req.round,
                "checkpoint_sha256": outcome.checkpoint.sha256,
                "train_seconds": round(outcome.train_seconds, 3),
                "accuracy": None if outcome.evaluation is None else outcome.evaluation.accuracy,
            },
        )
        metrics.rpc_msg_sent(_TRAIN_METHOD, "server_stream")
        yield _result(outcome)

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
        return trainer_pb2.PredictPoolResponse(
            pool=pool_info(meta),
            timing=common_pb2.Timing(
                compute_seconds=compute, total_seconds=time.perf_counter() - start
            ),
        )

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
        return trainer_pb2.EvaluateResponse(evaluation=evaluation(ev))

    async def ListCheckpoints(
        self, request: trainer_pb2.ListCheckpointsRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.ListCheckpointsResponse:
        infos = await asyncio.to_thread(self.trainer.list_checkpoints, request.experiment_id)
        return trainer_pb2.ListCheckpointsResponse(checkpoints=[checkpoint_info(i) for i in infos])

    async def GetCheckpoint(
        self, request: trainer_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[trainer_pb2.GetCheckpointResponse]:
        opener = self.trainer.open_checkpoint(request.experiment_id, request.round)
        fh, info = await asyncio.to_thread(opener.__enter__)
        try:
            first = True
            while True:
                chunk = await asyncio.to_thread(fh.read, self.chunk_bytes)
                if not chunk and not first:
                    break
                msg = trainer_pb2.GetCheckpointResponse(chunk=chunk)
                if first:
                    msg.info.CopyFrom(checkpoint_info(info))
                    first = False
                metrics.rpc_msg_sent(_GET_METHOD, "server_stream")
                yield msg
                if not chunk:
                    break
        finally:
            opener.__exit__(None, None, None)
