"""TeacherService: protos <-> ``activekd.teacher``: ``Predict``/``PredictStream`` through one
:class:`~activekd.teacher.DynamicBatcher` running :func:`~activekd.teacher.run_batch` (a bad image
fails its item only), ``SetClasses`` and every ``experiment_id`` through
:class:`~activekd.teacher.class_views.ClassViews`, ``ScorePool`` through
:class:`~activekd.teacher.pool_job.PoolScorer`."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
import numpy as np

from activekd.errors import ActiveKDError, InvalidArgument
from activekd.teacher import BatchStats, DynamicBatcher, ItemPrediction, TeacherIdentity
from activekd.teacher.batching import PredictItem, check_predict_count, map_in_order
from activekd.teacher.class_views import ClassViews
from activekd.teacher.images import ImageInput
from activekd.teacher.pool_job import PoolScorer, check_score_request
from activekd.v1 import common_pb2, teacher_pb2, teacher_pb2_grpc
from activekd.wire.pool_info import pool_info
from activekd.wire.tensors import from_proto, to_proto

log = logging.getLogger("activekd.teacher.service")

MAX_PREDICT_IMAGES = 1024
STREAM_IN_FLIGHT = 256


def identity_proto(identity: TeacherIdentity) -> teacher_pb2.TeacherIdentity:
    """TeacherIdentity -> proto (fingerprint included)."""
    return teacher_pb2.TeacherIdentity(
        backend=identity.backend, model=identity.model, weights_hash=identity.weights_hash,
        class_names=list(identity.class_names), templates=list(identity.templates),
        preprocessing=identity.preprocessing, fingerprint=identity.fingerprint,
        description=identity.description, head=identity.head,
    )  # fmt: skip


def image_input(image: teacher_pb2.Image) -> ImageInput | Callable[[], ImageInput]:
    """An ``Image`` message -> what :class:`PredictItem` decodes (in the batch's worker thread)."""
    which = image.WhichOneof("source")
    if which == "encoded":
        return image.encoded
    if which == "pixels":
        return functools.partial(from_proto, image.pixels, "pixels")
    return _no_image


def _no_image() -> ImageInput:
    raise InvalidArgument("image has neither encoded bytes nor pixels", field="source")


def prediction_proto(
    item_id: str, result: ItemPrediction, include_features: bool
) -> teacher_pb2.ImagePrediction:
    """ItemPrediction -> ImagePrediction (an error, or probs and optionally features)."""
    out = teacher_pb2.ImagePrediction(item_id=item_id)
    if result.error is not None:
        out.error.CopyFrom(common_pb2.ItemError(code=result.error.code, message=str(result.error)))
        return out
    assert result.probs is not None
    out.probs.CopyFrom(to_proto(np.asarray(result.probs, np.float32)))
    if include_features and result.features is not None:
        out.features.CopyFrom(to_proto(np.asarray(result.features, np.float32)))
    return out


def timing_proto(stats: Sequence[BatchStats], total: float) -> common_pb2.Timing:
    return common_pb2.Timing(
        queue_seconds=max((s.queue_ms_max for s in stats), default=0.0) / 1000.0,
        compute_seconds=sum(s.compute_ms for s in stats) / 1000.0, total_seconds=total,
    )  # fmt: skip


class TeacherServicer(teacher_pb2_grpc.TeacherServiceServicer):
    """Adapts TeacherService to the teacher library, the batcher and the pool scorer."""

    def __init__(
        self, views: ClassViews, batcher: DynamicBatcher[PredictItem, ItemPrediction],
        scorer: PoolScorer, *, max_predict_images: int = MAX_PREDICT_IMAGES,
    ) -> None:  # fmt: skip
        self.views, self.batcher, self.scorer = views, batcher, scorer
        self.max_predict_images = max_predict_images

    async def DescribeTeacher(
        self, request: teacher_pb2.DescribeTeacherRequest, context: grpc.aio.ServicerContext
    ) -> teacher_pb2.DescribeTeacherResponse:
        d = (await self.views.get(request.experiment_id)).describe()
        return teacher_pb2.DescribeTeacherResponse(
            identity=identity_proto(d.identity), device=d.device, dtype=d.dtype,
            num_classes=d.num_classes, feature_dim=d.feature_dim,
            max_batch_size=self.batcher.max_batch_size,
        )  # fmt: skip

    async def Predict(
        self, request: teacher_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> teacher_pb2.PredictResponse:
        start = time.perf_counter()
        check_predict_count(len(request.images), self.max_predict_images)
        teacher = await self.views.get(request.experiment_id)
        results, stats = await self.batcher.submit_with_stats(
            [PredictItem(teacher, image_input(img)) for img in request.images]
        )
        return teacher_pb2.PredictResponse(
            predictions=[
                prediction_proto(img.item_id or str(i), r, request.include_features)
                for i, (img, r) in enumerate(zip(request.images, results, strict=True))
            ],
            identity=identity_proto(teacher.identity),
            timing=timing_proto(stats, time.perf_counter() - start),
        )

    async def PredictStream(
        self,
        request_iterator: AsyncIterator[teacher_pb2.PredictStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[teacher_pb2.PredictStreamResponse]:
        """Responses come in request order; up to STREAM_IN_FLIGHT items are batched at once."""

        async def one(
            req: teacher_pb2.PredictStreamRequest, index: int
        ) -> teacher_pb2.ImagePrediction:
            item_id = req.image.item_id or str(index)
            try:
                teacher = await self.views.get(req.experiment_id)
            except ActiveKDError as exc:
                return prediction_proto(item_id, ItemPrediction(index, error=exc), False)
            result = await self.batcher.submit_one(PredictItem(teacher, image_input(req.image)))
            return prediction_proto(item_id, result, req.include_features)

        async for prediction in map_in_order(request_iterator, one, max_in_flight=STREAM_IN_FLIGHT):
            yield teacher_pb2.PredictStreamResponse(prediction=prediction)

    async def ScorePool(
        self, request: teacher_pb2.ScorePoolRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[teacher_pb2.ScorePoolResponse]:
        kind = check_score_request(request.source.WhichOneof("source"), request.chunk_size)
        teacher = await self.views.get(request.experiment_id)
        ident = identity_proto(teacher.identity)
        async for update in self.scorer.score(
            teacher, kind, getattr(request.source, kind), limit=request.limit,
            dataset=request.dataset, pool_id=request.output_pool_id,
            chunk_size=int(request.chunk_size), force=request.force,
        ):  # fmt: skip
            msg = teacher_pb2.ScorePoolResponse(
                done=update.done, total=update.total, cached=update.cached,
                chunks_resumed=update.chunks_resumed, identity=ident,
            )  # fmt: skip
            if update.meta is not None:
                msg.pool.CopyFrom(pool_info(update.meta))
            yield msg

    async def SetClasses(
        self, request: teacher_pb2.SetClassesRequest, context: grpc.aio.ServicerContext
    ) -> teacher_pb2.SetClassesResponse:
        view = await self.views.set(
            request.experiment_id, list(request.class_names), list(request.templates)
        )
        log.info(
            "classes set",
            extra={"experiment_id": request.experiment_id, "classes": len(request.class_names),
                   "fingerprint": view.identity.fingerprint},
        )  # fmt: skip
        return teacher_pb2.SetClassesResponse(identity=identity_proto(view.identity))
