"""Typed Python client for every activekd RPC: numpy in/out, deadlines, retries on UNAVAILABLE.

Retries use gRPC's own retry policy (service config) and apply only to idempotent methods:
reads, and calls made idempotent by a request id (``select_batch`` always sends one).

    from activekd.client import SelectionClient
    sel = SelectionClient("localhost:50051")
    sel.upload_pool("pool", item_ids=ids, arrays={"probs": P, "features": F})
    res = sel.select_batch("pcoreset", 10, pool_id="pool", labeled=["id3", "id7"])
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import grpc
import numpy as np
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from activekd.server.tensors import from_proto, to_proto
from activekd.v1 import (
    common_pb2,
    experiment_pb2,
    experiment_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
    teacher_pb2,
    teacher_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)

DEFAULT_TIMEOUT = 60.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHUNK_BYTES = 4 * 1024 * 1024

IDEMPOTENT: dict[str, list[str]] = {
    "activekd.v1.SelectionService": [
        "SelectBatch",
        "DescribePool",
        "ListPools",
        "ListStrategies",
        "GetSelections",
        "DeletePool",
    ],
    "activekd.v1.TeacherService": ["DescribeTeacher", "Predict", "SetClasses"],
    "activekd.v1.TrainerService": ["PredictPool", "Evaluate", "ListCheckpoints"],
    "activekd.v1.ExperimentService": ["GetExperiment", "ListExperiments", "DeleteExperiment"],
    "grpc.health.v1.Health": ["Check"],
}


def _service_config(retries: int) -> str:
    methods = [{"service": s, "method": m} for s, ms in IDEMPOTENT.items() for m in ms]
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": methods,
                    "retryPolicy": {
                        "maxAttempts": max(2, min(retries + 1, 5)),
                        "initialBackoff": "0.2s",
                        "maxBackoff": "5s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def make_channel(target: str, retries: int = 3) -> grpc.Channel:
    """An insecure channel with large message limits, keepalive and the retry policy above."""
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _service_config(retries)),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )


def to_struct(values: dict[str, Any] | None) -> struct_pb2.Struct:
    """A dict as a google.protobuf.Struct."""
    out = struct_pb2.Struct()
    if values:
        out.update(values)
    return out


class _Client:
    def __init__(self, target: str, *, timeout: float = DEFAULT_TIMEOUT, retries: int = 3) -> None:
        self.target, self.timeout = target, timeout
        self.channel = make_channel(target, retries)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def wait_ready(self, timeout: float = 30.0, service: str = "") -> None:
        """Block until the server's health says SERVING (raises grpc.RpcError / TimeoutError)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)
        resp = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        if resp.status != health_pb2.HealthCheckResponse.SERVING:
            raise TimeoutError(
                f"{self.target} is {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
            )

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _t(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout


@dataclass
class Selection:
    """Result of SelectBatch."""

    item_ids: list[str]
    rows: np.ndarray
    scores: np.ndarray
    strategy: str
    request_id: str
    replayed: bool
    compute_seconds: float
    total_seconds: float
    stats: dict[str, float] = field(default_factory=dict)


class SelectionClient(_Client):
    """SelectionService: pools and SelectBatch."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self.stub = selection_pb2_grpc.SelectionServiceStub(self.channel)

    def select_batch(
        self,
        strategy: str,
        budget: int,
        *,
        pool_id: str | None = None,
        probs: np.ndarray | None = None,
        features: np.ndarray | None = None,
        item_ids: Sequence[str] | None = None,
        labeled: Sequence[str] = (),
        labels: Sequence[int] | None = None,
        seed: int = 0,
        request_id: str | None = None,
        experiment_id: str = "",
        round: int = 0,
        prune: bool = True,
        device: str = "",
        probs_array: str = "",
        features_array: str = "",
        timeout: float | None = None,
    ) -> Selection:
        """Pick ``budget`` items; pass ``pool_id`` (registered pool) or ``probs``/``features`` inline."""
        req = selection_pb2.SelectBatchRequest(
            strategy=strategy,
            budget=budget,
            seed=seed,
            request_id=request_id or uuid.uuid4().hex,
            labeled_item_ids=list(labeled),
            experiment_id=experiment_id,
            round=round,
            labels=list(labels or []),
            options=selection_pb2.SelectionOptions(disable_pruning=not prune, device=device),
        )
        if pool_id is not None:
            req.pool_ref.CopyFrom(
                selection_pb2.PoolReference(
                    pool_id=pool_id, probs_array=probs_array, features_array=features_array
                )
            )
        else:
            inline = req.inline_pool
            if probs is not None:
                inline.probs.CopyFrom(to_proto(probs))
            if features is not None:
                inline.features.CopyFrom(to_proto(features))
            inline.item_ids.extend(list(item_ids or []))
        resp = self.stub.SelectBatch(req, timeout=self._t(timeout))
        return Selection(
            item_ids=list(resp.item_ids),
            rows=np.asarray(resp.rows, dtype=np.int64),
            scores=np.asarray(resp.scores),
            strategy=resp.strategy,
            request_id=resp.request_id,
            replayed=resp.replayed,
            compute_seconds=resp.timing.compute_seconds,
            total_seconds=resp.timing.total_seconds,
            stats=dict(resp.stats),
        )

    def upload_pool(
        self,
        pool_id: str,
        *,
        arrays: dict[str, np.ndarray],
        item_ids: Sequence[str] | None = None,
        overwrite: bool = False,
        metadata: dict[str, str] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        timeout: float | None = None,
    ) -> common_pb2.PoolInfo:
        """Client-streaming upload in chunks of about ``chunk_bytes``."""
        n = len(next(iter(arrays.values()))) if arrays else len(item_ids or [])
        row_bytes = sum(a[:1].nbytes for a in arrays.values()) + 32
        rows_per_chunk = max(1, chunk_bytes // max(row_bytes, 1))

        def messages() -> Iterator[selection_pb2.UploadPoolRequest]:
            yield selection_pb2.UploadPoolRequest(
                header=selection_pb2.UploadPoolHeader(
                    pool_id=pool_id, num_items=n, overwrite=overwrite, metadata=metadata or {}
                )
            )
            for start in range(0, n, rows_per_chunk):
                end = min(n, start + rows_per_chunk)
                chunk = selection_pb2.UploadPoolChunk(offset=start)
                if item_ids is not None:
                    chunk.item_ids.extend(str(i) for i in item_ids[start:end])
                for name, arr in arrays.items():
                    chunk.arrays[name].CopyFrom(to_proto(np.asarray(arr[start:end])))
                yield selection_pb2.UploadPoolRequest(chunk=chunk)

        return self.stub.UploadPool(messages(), timeout=self._t(timeout)).pool

    def describe_pool(self, pool_id: str, timeout: float | None = None) -> common_pb2.PoolInfo:
        return self.stub.DescribePool(
            selection_pb2.DescribePoolRequest(pool_id=pool_id), timeout=self._t(timeout)
        ).pool

    def list_pools(self, page_size: int = 100) -> Iterator[common_pb2.PoolInfo]:
        """Every pool, fetching pages as needed."""
        token = ""
        while True:
            resp = self.stub.ListPools(
                selection_pb2.ListPoolsRequest(page_size=page_size, page_token=token),
                timeout=self.timeout,
            )
            yield from resp.pools
            token = resp.next_page_token
            if not token:
                return

    def delete_pool(self, pool_id: str) -> bool:
        return self.stub.DeletePool(
            selection_pb2.DeletePoolRequest(pool_id=pool_id), timeout=self.timeout
        ).deleted

    def list_strategies(self) -> list[selection_pb2.StrategyInfo]:
        return list(
            self.stub.ListStrategies(
                selection_pb2.ListStrategiesRequest(), timeout=self.timeout
            ).strategies
        )

    def get_selections(self, experiment_id: str) -> list[selection_pb2.SelectionRecord]:
        return list(
            self.stub.GetSelections(
                selection_pb2.GetSelectionsRequest(experiment_id=experiment_id),
                timeout=self.timeout,
            ).records
        )


@dataclass
class TeacherInfo:
    """Result of DescribeTeacher."""

    identity: teacher_pb2.TeacherIdentity
    device: str
    dtype: str
    num_classes: int
    feature_dim: int
    max_batch_size: int

    @property
    def fingerprint(self) -> str:
        return str(self.identity.fingerprint)

    @property
    def class_names(self) -> list[str]:
        return list(self.identity.class_names)


@dataclass
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


@dataclass
class PredictResult:
    """Predict's per-image results (iterable and indexable like a list) plus identity and timing."""

    predictions: list[TeacherPrediction]
    identity: teacher_pb2.TeacherIdentity
    queue_seconds: float
    compute_seconds: float
    total_seconds: float

    def __len__(self) -> int:
        return len(self.predictions)

    def __iter__(self) -> Iterator[TeacherPrediction]:
        return iter(self.predictions)

    def __getitem__(self, index: int) -> TeacherPrediction:
        return self.predictions[index]


@dataclass
class ScorePoolProgress:
    """One ScorePool message; ``pool`` (the stored PoolInfo) is set on the last one."""

    done: int
    total: int
    cached: bool
    chunks_resumed: int
    identity: teacher_pb2.TeacherIdentity
    pool: common_pb2.PoolInfo | None = None


ImageLike = np.ndarray | bytes


def image_proto(image: ImageLike, item_id: str = "") -> teacher_pb2.Image:
    """Encoded PNG/JPEG bytes or a uint8 array (H, W) / (H, W, 1|3) as an ``Image`` message."""
    if isinstance(image, bytes | bytearray | memoryview):
        return teacher_pb2.Image(item_id=item_id, encoded=bytes(image))
    return teacher_pb2.Image(item_id=item_id, pixels=to_proto(np.asarray(image)))


class TeacherClient(_Client):
    """TeacherService: predictions, per-experiment classes, pool scoring."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self.stub = teacher_pb2_grpc.TeacherServiceStub(self.channel)

    def describe(self, experiment_id: str = "", timeout: float | None = None) -> TeacherInfo:
        """The teacher (or the experiment's class view): identity, device, dtype, sizes."""
        r = self.stub.DescribeTeacher(
            teacher_pb2.DescribeTeacherRequest(experiment_id=experiment_id),
            timeout=self._t(timeout),
        )
        return TeacherInfo(
            r.identity, r.device, r.dtype, r.num_classes, r.feature_dim, r.max_batch_size
        )

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
        r = self.stub.Predict(req, timeout=self._t(timeout))
        return PredictResult(
            [TeacherPrediction.from_proto(p) for p in r.predictions],
            r.identity,
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

        for r in self.stub.PredictStream(requests(), timeout=self._t(timeout)):
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
        for r in self.stub.ScorePool(req, timeout=self._t(timeout)):
            yield ScorePoolProgress(
                r.done,
                r.total,
                r.cached,
                r.chunks_resumed,
                r.identity,
                r.pool if r.HasField("pool") else None,
            )

    def set_classes(
        self,
        experiment_id: str,
        class_names: Sequence[str],
        templates: Sequence[str] = (),
        timeout: float | None = None,
    ) -> teacher_pb2.TeacherIdentity:
        """Classes (and prompt templates, each with one "{}") for one experiment's view."""
        return self.stub.SetClasses(
            teacher_pb2.SetClassesRequest(
                experiment_id=experiment_id,
                class_names=list(class_names),
                templates=list(templates),
            ),
            timeout=self._t(timeout),
        ).identity


class ExperimentClient(_Client):
    """ExperimentService: create and drive experiments, submit labels, watch round events."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self.stub = experiment_pb2_grpc.ExperimentServiceStub(self.channel)

    def create(
        self,
        spec: experiment_pb2.ExperimentSpec,
        experiment_id: str = "",
        timeout: float | None = None,
    ) -> experiment_pb2.Experiment:
        return self.stub.CreateExperiment(
            experiment_pb2.CreateExperimentRequest(experiment_id=experiment_id, spec=spec),
            timeout=self._t(timeout),
        ).experiment

    def get(self, experiment_id: str) -> experiment_pb2.Experiment:
        return self.stub.GetExperiment(
            experiment_pb2.GetExperimentRequest(experiment_id=experiment_id), timeout=self.timeout
        ).experiment

    def list(self, page_size: int = 50) -> Iterator[experiment_pb2.Experiment]:
        """Every experiment, fetching pages as needed."""
        token = ""
        while True:
            resp = self.stub.ListExperiments(
                experiment_pb2.ListExperimentsRequest(page_size=page_size, page_token=token),
                timeout=self.timeout,
            )
            yield from resp.experiments
            token = resp.next_page_token
            if not token:
                return

    def delete(self, experiment_id: str) -> bool:
        return self.stub.DeleteExperiment(
            experiment_pb2.DeleteExperimentRequest(experiment_id=experiment_id),
            timeout=self.timeout,
        ).deleted

    def advance(
        self, experiment_id: str, expected_version: int = 0, timeout: float | None = None
    ) -> experiment_pb2.AdvanceRoundResponse:
        """One transition (not retried: the server's work is idempotent, but ask explicitly)."""
        return self.stub.AdvanceRound(
            experiment_pb2.AdvanceRoundRequest(
                experiment_id=experiment_id, expected_version=expected_version
            ),
            timeout=self._t(timeout),
        )

    def submit_labels(
        self, experiment_id: str, labels: dict[str, int], overwrite: bool = False
    ) -> experiment_pb2.SubmitLabelsResponse:
        return self.stub.SubmitLabels(
            experiment_pb2.SubmitLabelsRequest(
                experiment_id=experiment_id,
                overwrite=overwrite,
                labels=[
                    experiment_pb2.ItemLabel(item_id=k, label=int(v)) for k, v in labels.items()
                ],
            ),
            timeout=self.timeout,
        )

    def watch(
        self, experiment_id: str, timeout: float | None = None
    ) -> Iterator[experiment_pb2.RoundEvent]:
        """Round events from the start of the experiment until it finishes."""
        for msg in self.stub.WatchExperiment(
            experiment_pb2.WatchExperimentRequest(experiment_id=experiment_id),
            timeout=self._t(timeout),
        ):
            yield msg.event


TRAIN_TIMEOUT = 6 * 3600.0


@dataclass
class TrainProgress:
    """One TrainRound progress event (1-based ``step`` of ``total_steps``)."""

    step: int
    total_steps: int
    loss: float
    ce_loss: float
    kd_loss: float
    elapsed_seconds: float


@dataclass
class CheckpointInfo:
    """A stored student checkpoint; ``sha256`` is of the whole file (what get_checkpoint returns)."""

    checkpoint_id: str
    experiment_id: str
    round: int
    size_bytes: int
    sha256: str
    created_unix: float

    @classmethod
    def from_proto(cls, c: trainer_pb2.CheckpointInfo) -> CheckpointInfo:
        return cls(c.checkpoint_id, c.experiment_id, c.round, c.size_bytes, c.sha256,
                   c.created_unix)  # fmt: skip


@dataclass
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

        return cls(
            e.accuracy,
            e.ce_accuracy,
            opt("kd_accuracy"),
            e.num_examples,
            opt("teacher_accuracy"),
            opt("teacher_agreement"),
        )


@dataclass
class TrainRoundResult:
    """The last TrainRound message: checkpoint, optional evaluation and student pool, timings."""

    checkpoint: CheckpointInfo
    evaluation: StudentEvaluation | None
    student_pool: common_pb2.PoolInfo | None
    train_seconds: float
    predict_seconds: float
    num_labeled: int


@dataclass
class PredictPoolResult:
    """PredictPool: the stored student pool and timings."""

    pool: common_pb2.PoolInfo
    compute_seconds: float
    total_seconds: float


class TrainerClient(_Client):
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
        pool_id: str = "",
        teacher_pool_id: str = "",
        test_pool_id: str = "",
        teacher_test_pool_id: str = "",
        predict_pool: bool = False,
        timeout: float | None = None,
    ) -> Iterator[TrainProgress | TrainRoundResult]:
        """Train one round: yields :class:`TrainProgress` events, then one
        :class:`TrainRoundResult`. Empty ids default to the experiment spec's on the server.
        ``timeout`` defaults to :data:`TRAIN_TIMEOUT`; stopping the iteration early cancels the
        call (the server stops training at its next progress event)."""
        req = trainer_pb2.TrainRoundRequest(
            experiment_id=experiment_id,
            round=round,
            student_config=to_struct(student_config),
            pool_id=pool_id,
            teacher_pool_id=teacher_pool_id,
            test_pool_id=test_pool_id,
            teacher_test_pool_id=teacher_test_pool_id,
            predict_pool=predict_pool,
        )
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
                        checkpoint=CheckpointInfo.from_proto(r.checkpoint),
                        evaluation=StudentEvaluation.from_proto(r.evaluation)
                        if r.HasField("evaluation")
                        else None,
                        student_pool=r.student_pool if r.HasField("student_pool") else None,
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
            timeout=self._t(timeout),
        )  # fmt: skip
        return PredictPoolResult(r.pool, r.timing.compute_seconds, r.timing.total_seconds)

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
            timeout=self._t(timeout),
        )  # fmt: skip
        return StudentEvaluation.from_proto(r.evaluation)

    def list_checkpoints(
        self, experiment_id: str, timeout: float | None = None
    ) -> list[CheckpointInfo]:
        r = self.stub.ListCheckpoints(
            trainer_pb2.ListCheckpointsRequest(experiment_id=experiment_id),
            timeout=self._t(timeout),
        )
        return [CheckpointInfo.from_proto(c) for c in r.checkpoints]

    def get_checkpoint(self, experiment_id: str, round: int, timeout: float | None = None) -> bytes:
        """The checkpoint file's bytes, checked against the size and SHA-256 the server sent
        (``OSError`` on a mismatch). ``activekd.student.loads_checkpoint`` parses them."""
        info: CheckpointInfo | None = None
        parts: list[bytes] = []
        for msg in self.stub.GetCheckpoint(
            trainer_pb2.GetCheckpointRequest(experiment_id=experiment_id, round=round),
            timeout=self._t(timeout),
        ):
            if msg.HasField("info"):
                info = CheckpointInfo.from_proto(msg.info)
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


__all__ = [
    "CheckpointInfo",
    "ExperimentClient",
    "PredictPoolResult",
    "PredictResult",
    "ScorePoolProgress",
    "Selection",
    "SelectionClient",
    "StudentEvaluation",
    "TeacherClient",
    "TeacherInfo",
    "TeacherPrediction",
    "TrainProgress",
    "TrainRoundResult",
    "TrainerClient",
    "experiment_pb2",
    "experiment_pb2_grpc",
    "from_proto",
    "make_channel",
    "teacher_pb2",
    "teacher_pb2_grpc",
    "to_struct",
    "trainer_pb2",
    "trainer_pb2_grpc",
]
