"""Client of ``activekd.v1.TeacherService``: predictions, per-experiment classes, pool scoring."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from activekd.v1 import teacher_pb2, teacher_pb2_grpc
from activekd.wire.channel import BaseClient
from activekd.wire.pool_records import PoolInfo
from activekd.wire.tensors import from_proto, to_proto


@dataclass(frozen=True)
class TeacherIdentity:
    """What produced a teacher output: backend, model, weights, classes, head; ``fingerprint``
    changes whenever any of them does."""

    backend: str
    model: str
    weights_hash: str
    class_names: list[str]
    templates: list[str]
    preprocessing: str
    fingerprint: str
    description: str
    head: str

    @classmethod
    def from_proto(cls, i: teacher_pb2.TeacherIdentity) -> TeacherIdentity:
        return cls(i.backend, i.model, i.weights_hash, list(i.class_names), list(i.templates),
                   i.preprocessing, i.fingerprint, i.description, i.head)  # fmt: skip


@dataclass(frozen=True)
class TeacherInfo:
    """Result of DescribeTeacher."""

    identity: TeacherIdentity
    device: str
    dtype: str
    num_classes: int
    feature_dim: int
    max_batch_size: int

    @property
    def fingerprint(self) -> str:
        return self.identity.fingerprint

    @property
    def class_names(self) -> list[str]:
        return list(self.identity.class_names)


@dataclass(frozen=True)
class TeacherPrediction:
    """One image's result: ``probs`` (C,) and ``features`` (D,), or ``error_code``/``message``."""

    item_id: str
    probs: np.ndarray | None = None
    features: np.ndarray | None = None
    error_code: str = ""
    error_message: str = ""

    @property
    def ok(self) -> bool:
        return not self.error_code

    @classmethod
    def from_proto(cls, p: teacher_pb2.ImagePrediction) -> TeacherPrediction:
        if p.HasField("error") and p.error.code:
            return cls(p.item_id, error_code=p.error.code, error_message=p.error.message)
        return cls(
            p.item_id,
            probs=from_proto(p.probs) if p.HasField("probs") else None,
            features=from_proto(p.features) if p.HasField("features") else None,
        )


@dataclass(frozen=True)
class PredictResult:
    """Predict's per-image results (iterable and indexable like a list) plus identity and timing."""

    predictions: list[TeacherPrediction]
    identity: TeacherIdentity
    queue_seconds: float
    compute_seconds: float
    total_seconds: float

    def __len__(self) -> int:
        return len(self.predictions)

    def __iter__(self) -> Iterator[TeacherPrediction]:
        return iter(self.predictions)

    def __getitem__(self, index: int) -> TeacherPrediction:
        return self.predictions[index]


@dataclass(frozen=True)
class ScorePoolProgress:
    """One ScorePool message; ``pool`` (the stored pool) is set on the last one."""

    done: int
    total: int
    cached: bool
    chunks_resumed: int
    identity: TeacherIdentity
    pool: PoolInfo | None = field(default=None)


ImageLike = np.ndarray | bytes


def image_proto(image: ImageLike, item_id: str = "") -> teacher_pb2.Image:
    """Encoded PNG/JPEG bytes or a uint8 array (H, W) / (H, W, 1|3) as an ``Image`` message."""
    if isinstance(image, bytes | bytearray | memoryview):
        return teacher_pb2.Image(item_id=item_id, encoded=bytes(image))
    return teacher_pb2.Image(item_id=item_id, pixels=to_proto(np.asarray(image)))


class TeacherClient(BaseClient):
    """TeacherService: predictions, per-experiment classes, pool scoring."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self.stub = teacher_pb2_grpc.TeacherServiceStub(self.channel)

    def describe(self, experiment_id: str = "", timeout: float | None = None) -> TeacherInfo:
        """The teacher (or the experiment's class view): identity, device, dtype, sizes."""
        r = self.stub.DescribeTeacher(
            teacher_pb2.DescribeTeacherRequest(experiment_id=experiment_id),
            timeout=self._deadline(timeout),
        )
        return TeacherInfo(TeacherIdentity.from_proto(r.identity), r.device, r.dtype,
                           r.num_classes, r.feature_dim, r.max_batch_size)  # fmt: skip

    def predict(
        self,
        images: Sequence[ImageLike],
        *,
        include_features: bool = False,
        experiment_id: str = "",
        item_ids: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> PredictResult:
        """Predict a small batch; a bad image gets its own ``error_code``, the rest succeed.
        Item ids default to the position ("0", "1", ...)."""
        ids = list(item_ids) if item_ids is not None else [str(i) for i in range(len(images))]
        if len(ids) != len(images):
            raise ValueError(f"{len(ids)} item ids for {len(images)} images")
        req = teacher_pb2.PredictRequest(
            images=[image_proto(img, i) for img, i in zip(images, ids, strict=True)],
            experiment_id=experiment_id,
            include_features=include_features,
        )
        r = self.stub.Predict(req, timeout=self._deadline(timeout))
        return PredictResult(
            [TeacherPrediction.from_proto(p) for p in r.predictions],
            TeacherIdentity.from_proto(r.identity),
            r.timing.queue_seconds,
            r.timing.compute_seconds,
            r.timing.total_seconds,
        )

    def predict_stream(
        self,
        images: Iterable[ImageLike | tuple[str, ImageLike]],
        *,
        include_features: bool = False,
        experiment_id: str = "",
        timeout: float | None = None,
    ) -> Iterator[TeacherPrediction]:
        """Stream images (or ``(item_id, image)`` pairs) in, predictions out in the same order;
        a bad item yields an error result and the stream goes on."""

        def requests() -> Iterator[teacher_pb2.PredictStreamRequest]:
            for i, entry in enumerate(images):
                item_id, img = entry if isinstance(entry, tuple) else (str(i), entry)
                yield teacher_pb2.PredictStreamRequest(
                    image=image_proto(img, item_id),
                    experiment_id=experiment_id,
                    include_features=include_features,
                )

        for r in self.stub.PredictStream(requests(), timeout=self._deadline(timeout)):
            yield TeacherPrediction.from_proto(r.prediction)

    def score_pool(
        self,
        *,
        builtin: str | None = None,
        folder: str | None = None,
        file_list: str | None = None,
        array_uri: str | None = None,
        pool_id: str | None = None,
        dataset: str = "",
        output_pool_id: str = "",
        chunk_size: int = 0,
        experiment_id: str = "",
        force: bool = False,
        limit: int = 0,
        timeout: float | None = None,
    ) -> Iterator[ScorePoolProgress]:
        """Score a pool of images (exactly one source) into the pool store; yields progress per
        chunk, the last message carrying the stored ``pool``. Long jobs: pass a big ``timeout``."""
        sources = {"builtin": builtin, "folder": folder, "file_list": file_list,
                   "array_uri": array_uri, "pool_id": pool_id}  # fmt: skip
        given = {k: v for k, v in sources.items() if v is not None}
        if len(given) != 1:
            raise ValueError(f"give exactly one image source, got {sorted(given) or 'none'}")
        req = teacher_pb2.ScorePoolRequest(
            source=teacher_pb2.ImageSource(**given),
            dataset=dataset,
            output_pool_id=output_pool_id,
            chunk_size=chunk_size,
            experiment_id=experiment_id,
            force=force,
            limit=limit,
        )
        for r in self.stub.ScorePool(req, timeout=self._deadline(timeout)):
            yield ScorePoolProgress(
                r.done,
                r.total,
                r.cached,
                r.chunks_resumed,
                TeacherIdentity.from_proto(r.identity),
                PoolInfo.from_proto(r.pool) if r.HasField("pool") else None,
            )

    def set_classes(
        self,
        experiment_id: str,
        class_names: Sequence[str],
        templates: Sequence[str] = (),
        timeout: float | None = None,
    ) -> TeacherIdentity:
        """Classes (and prompt templates, each with one "{}") for one experiment's view."""
        resp = self.stub.SetClasses(
            teacher_pb2.SetClassesRequest(
                experiment_id=experiment_id,
                class_names=list(class_names),
                templates=list(templates),
            ),
            timeout=self._deadline(timeout),
        )
        return TeacherIdentity.from_proto(resp.identity)
