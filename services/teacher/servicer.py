"""TeacherService: protos <-> ``activekd.teacher`` + dynamic batching + pool store.

- ``Predict`` / ``PredictStream`` items go through one :class:`~activekd.teacher.DynamicBatcher`,
  so concurrent callers share forward passes (up to ``max_batch_size`` items, waiting at most
  ``max_queue_delay_ms``); inference runs in a worker thread, never on the event loop. Decoding
  and validation happen per item: a bad image fails its item, not the call or the stream.
- ``SetClasses`` keeps a ``with_classes`` view per experiment (the shared teacher is never
  changed); the class spec is stored in Redis, so views come back after a restart.
  An experiment without classes set uses the service's default classes; the returned identity
  says which classes were used.
- ``ScorePool`` runs :class:`~activekd.teacher.pool_job.PoolScorer` (chunked, resumable,
  cached by teacher fingerprint and source).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import redis

from activekd.data.templates import validate_class_names, validate_templates
from activekd.errors import ActiveKDError, FailedPrecondition, InvalidArgument, ResourceExhausted
from activekd.server import metrics
from activekd.server.pools import pool_info
from activekd.server.tensors import from_proto, to_proto
from activekd.teacher import BatchStats, DynamicBatcher, ItemPrediction, TeacherIdentity
from activekd.teacher.base import BaseTeacher
from activekd.teacher.images import decode_image, validate_image_array
from activekd.teacher.pool_job import (
    DEFAULT_CHUNK_SIZE,
    PoolScorer,
    check_dataset_name,
    default_output_pool,
    resolve_source,
)
from activekd.v1 import common_pb2, teacher_pb2, teacher_pb2_grpc

log = logging.getLogger("activekd.teacher.service")

MAX_PREDICT_IMAGES = 1024
STREAM_IN_FLIGHT = 256
MAX_VIEWS = 64


def identity_proto(identity: TeacherIdentity) -> teacher_pb2.TeacherIdentity:
    """TeacherIdentity -> proto (fingerprint included)."""
    return teacher_pb2.TeacherIdentity(
        backend=identity.backend,
        model=identity.model,
        weights_hash=identity.weights_hash,
        class_names=list(identity.class_names),
        templates=list(identity.templates),
        preprocessing=identity.preprocessing,
        fingerprint=identity.fingerprint,
        description=identity.description,
        head=identity.head,
    )


class ClassViews:
    """Per-experiment teacher views with their own classes/templates.

    Specs live in Redis (``<prefix>:teacher:classes:{<experiment>}``), views in a small LRU; the
    default teacher serves experiments that never called SetClasses.
    """

    def __init__(
        self,
        teacher: BaseTeacher,
        client: redis.Redis,
        *,
        prefix: str = "akd",
        capacity: int = MAX_VIEWS,
    ) -> None:
        self.default, self.redis, self.prefix, self.capacity = teacher, client, prefix, capacity
        self._views: OrderedDict[str, tuple[str, BaseTeacher]] = OrderedDict()

    def _key(self, experiment_id: str) -> str:
        return f"{self.prefix}:teacher:classes:{{{experiment_id}}}"

    def _remember(self, experiment_id: str, spec: str, view: BaseTeacher) -> None:
        self._views[experiment_id] = (spec, view)
        self._views.move_to_end(experiment_id)
        while len(self._views) > self.capacity:
            self._views.popitem(last=False)

    async def get(self, experiment_id: str) -> BaseTeacher:
        """The view for ``experiment_id`` (the default teacher when none was set)."""
        if not experiment_id:
            return self.default
        raw = self.redis.get(self._key(experiment_id))
        if raw is None:
            self._views.pop(experiment_id, None)
            return self.default
        spec = raw.decode() if isinstance(raw, bytes) else str(raw)
        known = self._views.get(experiment_id)
        if known is not None and known[0] == spec:
            self._views.move_to_end(experiment_id)
            return known[1]
        data = json.loads(spec)
        try:
            view = await asyncio.to_thread(
                self.default.with_classes, data["class_names"], data["templates"] or None
            )
        except ActiveKDError as exc:
            raise FailedPrecondition(
                f"the classes stored for experiment {experiment_id!r} do not fit this teacher "
                f"({exc}); call SetClasses again"
            ) from exc
        self._remember(experiment_id, spec, view)
        return view

    async def set(
        self, experiment_id: str, class_names: Sequence[str], templates: Sequence[str]
    ) -> BaseTeacher:
        """Validate, build the view, then store the spec (a rejected spec changes nothing)."""
        if not experiment_id:
            raise InvalidArgument(
                "experiment_id is required: classes are set per experiment", field="experiment_id"
            )
        if not class_names:
            raise InvalidArgument("class_names is empty; send at least one", field="class_names")
        names = validate_class_names(list(class_names))
        temps = validate_templates(list(templates)) if templates else ()
        view = await asyncio.to_thread(self.default.with_classes, names, temps or None)
        spec = json.dumps({"class_names": list(names), "templates": list(temps)})
        self.redis.set(self._key(experiment_id), spec)
        self._remember(experiment_id, spec, view)
        return view


@dataclass
class _Item:
    teacher: BaseTeacher
    image: teacher_pb2.Image


def decode_item(image: teacher_pb2.Image) -> np.ndarray:
    """An ``Image`` message -> validated uint8 (H, W) or (H, W, 3)."""
    which = image.WhichOneof("source")
    if which == "encoded":
        return decode_image(image.encoded)
    if which == "pixels":
        return validate_image_array(from_proto(image.pixels, "pixels"))
    raise InvalidArgument("image has neither encoded bytes nor pixels", field="source")


def run_batch(items: list[_Item]) -> list[ItemPrediction]:
    """The batcher's function: decode each item, group by (teacher view, shape), predict.
    Never raises: decode and inference failures become the affected items' errors."""
    results = [ItemPrediction(index=i) for i in range(len(items))]
    groups: dict[tuple[int, tuple[int, ...]], list[tuple[int, np.ndarray]]] = {}
    teachers: dict[int, BaseTeacher] = {}
    for i, item in enumerate(items):
        try:
            arr = decode_item(item.image)
        except ActiveKDError as exc:
            results[i].error = exc
            continue
        teachers[id(item.teacher)] = item.teacher
        groups.setdefault((id(item.teacher), arr.shape), []).append((i, arr))
    for (tid, _), members in groups.items():
        try:
            out = teachers[tid].predict(np.stack([a for _, a in members]))
        except ActiveKDError as exc:
            for i, _ in members:
                results[i].error = exc
            continue
        except Exception as exc:
            log.exception("teacher inference failed")
            err = ActiveKDError(f"inference failed: {type(exc).__name__}: {exc}")
            for i, _ in members:
                results[i].error = err
            continue
        for row, (i, _) in enumerate(members):
            results[i].probs, results[i].features = out.probs[row], out.features[row]
    return results


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


class TeacherServicer(teacher_pb2_grpc.TeacherServiceServicer):
    """Adapts TeacherService to the teacher library, the batcher and the pool scorer."""

    def __init__(
        self,
        views: ClassViews,
        batcher: DynamicBatcher[_Item, ItemPrediction],
        scorer: PoolScorer,
        *,
        max_predict_images: int = MAX_PREDICT_IMAGES,
    ) -> None:
        self.views, self.batcher, self.scorer = views, batcher, scorer
        self.max_predict_images = max_predict_images

    async def DescribeTeacher(
        self, request: teacher_pb2.DescribeTeacherRequest, context: grpc.aio.ServicerContext
    ) -> teacher_pb2.DescribeTeacherResponse:
        d = (await self.views.get(request.experiment_id)).describe()
        return teacher_pb2.DescribeTeacherResponse(
            identity=identity_proto(d.identity),
            device=d.device,
            dtype=d.dtype,
            num_classes=d.num_classes,
            feature_dim=d.feature_dim,
            max_batch_size=self.batcher.max_batch_size,
        )

    async def Predict(
        self, request: teacher_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> teacher_pb2.PredictResponse:
        start = time.perf_counter()
        n = len(request.images)
        if n == 0:
            raise InvalidArgument("images is empty; send at least one image", field="images")
        if n > self.max_predict_images:
            raise ResourceExhausted(
                f"{n} images in one Predict; send at most {self.max_predict_images} "
                "(use PredictStream or ScorePool for more)",
                field="images",
            )
        teacher = await self.views.get(request.experiment_id)
        results, stats = await self.batcher.submit_with_stats(
            [_Item(teacher, img) for img in request.images]
        )
        return teacher_pb2.PredictResponse(
            predictions=[
                prediction_proto(img.item_id or str(i), r, request.include_features)
                for i, (img, r) in enumerate(zip(request.images, results, strict=True))
            ],
            identity=identity_proto(teacher.identity),
            timing=_timing(stats, time.perf_counter() - start),
        )

    async def PredictStream(
        self,
        request_iterator: AsyncIterator[teacher_pb2.PredictStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[teacher_pb2.PredictStreamResponse]:
        """Responses come in request order; up to STREAM_IN_FLIGHT items are batched at once."""
        pending: asyncio.Queue[asyncio.Task[teacher_pb2.ImagePrediction] | BaseException | None]
        pending = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)
        counter = 0

        async def one(
            req: teacher_pb2.PredictStreamRequest, index: int
        ) -> teacher_pb2.ImagePrediction:
            item_id = req.image.item_id or str(index)
            try:
                teacher = await self.views.get(req.experiment_id)
            except ActiveKDError as exc:
                return prediction_proto(item_id, ItemPrediction(index, error=exc), False)
            result = await self.batcher.submit_one(_Item(teacher, req.image))
            return prediction_proto(item_id, result, req.include_features)

        async def reader() -> None:
            nonlocal counter
            try:
                async for req in request_iterator:
                    await slots.acquire()
                    pending.put_nowait(asyncio.ensure_future(one(req, counter)))
                    counter += 1
                pending.put_nowait(None)
            except BaseException as exc:
                pending.put_nowait(exc)

        read_task = asyncio.create_task(reader())
        try:
            while True:
                got = await pending.get()
                if got is None:
                    break
                if isinstance(got, BaseException):
                    raise got
                try:
                    prediction = await got
                finally:
                    slots.release()
                yield teacher_pb2.PredictStreamResponse(prediction=prediction)
        finally:
            read_task.cancel()
            while not pending.empty():
                left = pending.get_nowait()
                if isinstance(left, asyncio.Task):
                    left.cancel()

    async def ScorePool(
        self, request: teacher_pb2.ScorePoolRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[teacher_pb2.ScorePoolResponse]:
        kind = request.source.WhichOneof("source")
        if kind is None:
            raise InvalidArgument(
                "source is required: folder, file_list, array_uri, pool_id or builtin",
                field="source",
            )
        if request.chunk_size < 0:
            raise InvalidArgument(
                f"chunk_size {request.chunk_size} must be >= 0", field="chunk_size"
            )
        teacher = await self.views.get(request.experiment_id)
        source = await asyncio.to_thread(
            resolve_source, kind, getattr(request.source, kind), request.limit, self.scorer.store
        )
        dataset = check_dataset_name(request.dataset) if request.dataset else source.dataset
        pool_id = request.output_pool_id or default_output_pool(
            teacher.identity.fingerprint, dataset
        )
        ident = identity_proto(teacher.identity)
        async for update in self.scorer.run(
            teacher,
            source,
            pool_id=pool_id,
            dataset=dataset,
            chunk_size=int(request.chunk_size) or DEFAULT_CHUNK_SIZE,
            force=request.force,
        ):
            msg = teacher_pb2.ScorePoolResponse(
                done=update.done,
                total=update.total,
                cached=update.cached,
                chunks_resumed=update.chunks_resumed,
                identity=ident,
            )
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


class DynamicBatcherHook:
    """Records each executed online batch in the teacher metrics (dataset label ``online``)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def __call__(self, stats: BatchStats) -> None:
        metrics.observe_teacher_batch(
            self.backend, "online", stats.batch_size, stats.queue_ms_mean / 1000.0,
            stats.compute_ms / 1000.0,
        )  # fmt: skip


def _timing(stats: Sequence[BatchStats], total: float) -> common_pb2.Timing:
    return common_pb2.Timing(
        queue_seconds=max((s.queue_ms_max for s in stats), default=0.0) / 1000.0,
        compute_seconds=sum(s.compute_ms for s in stats) / 1000.0,
        total_seconds=total,
    )
