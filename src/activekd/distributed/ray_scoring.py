"""Teacher scoring as a Ray Data job: a pool of images scored shard by shard by a pool of actors,
each holding one teacher, into a sharded pool of the pool store.

The job is ScorePool's, spread out: the same sources (:func:`~activekd.teacher.pool_job.resolve_source`
under the same :class:`~activekd.teacher.sources.SourcePolicy`: data roots and URI schemes), the
same output pool id (``teacher/<fingerprint>/<dataset>``), the same metadata and so the same
cache rule (:func:`~activekd.teacher.pool_job.cached_pool`: a complete pool of this teacher for
this source costs nothing). The rows are cut into shards of ``shard_rows``; Ray Data runs
``map_batches`` with a callable class (each actor loads the teacher once; ``concurrency``
actors, ``num_gpus`` each), one shard per call, and the driver writes every finished shard
through a :class:`~activekd.store.PoolWriter` opened with ``resume=True``. The store records
each written shard in Redis, so a rerun after a killed job scores only the missing shards; a
worker that dies mid-job is restarted by Ray Data and its shard scored again.

Each shard is one ``predict_rows`` call, as a ScorePool chunk is: with ``chunk_size ==
shard_rows`` on the same device the outputs are bitwise those of ScorePool.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from activekd.errors import FailedPrecondition, InvalidArgument
from activekd.store import PoolMeta, PoolStore
from activekd.store.pool_store import MAX_SHARDS, shard_ranges
from activekd.teacher.sources import SourcePolicy

log = logging.getLogger("activekd.distributed.ray_scoring")

#: rows per shard when the job does not say (the unit of work, of resume and of storage)
DEFAULT_SHARD_ROWS = 16384


@dataclass(frozen=True)
class StoreSpec:
    """How a process reaches the pool store (sent to the actors, which open it themselves).
    ``redis_url`` empty: the process's ``ACTIVEKD_REDIS_URL``; ``storage_options`` None: its
    ``ACTIVEKD_STORE_OPTIONS``; so that credentials never travel in a job's command line."""

    root: str
    redis_url: str = ""
    prefix: str = "akd"
    cache_dir: str = ""
    storage_options: dict[str, Any] | None = None

    def open(self) -> PoolStore:
        from activekd.state.redis_conn import connect

        url = self.redis_url or os.environ.get("ACTIVEKD_REDIS_URL", "")
        if not url:
            raise InvalidArgument(
                "no Redis URL: give the store's redis_url or set ACTIVEKD_REDIS_URL",
                field="redis_url",
            )
        options = self.storage_options
        if options is None and os.environ.get("ACTIVEKD_STORE_OPTIONS", "").strip():
            options = json.loads(os.environ["ACTIVEKD_STORE_OPTIONS"])
        return PoolStore(
            self.root,
            connect(url),
            self.prefix,
            cache_dir=self.cache_dir or None,
            storage_options=options,
        )


@dataclass(frozen=True)
class ScoringJob:
    """One pool-scoring job: the teacher (``TeacherConfig`` fields, as data), the source
    (ScorePool's ``kind``/``ref``/``limit``), where it goes and how it is spread out."""

    teacher: dict[str, Any]
    kind: str
    ref: str
    limit: int = 0
    dataset: str = ""
    pool_id: str = ""
    shard_rows: int = DEFAULT_SHARD_ROWS
    concurrency: int = 2
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    force: bool = False
    #: the roots and schemes request-named sources must stay under (empty: the store's default)
    data_roots: str = ""
    source_schemes: str = "file"
    extra_metadata: dict[str, str] = field(default_factory=dict)
    #: the teacher fingerprint the caller expects (ScorePool's own teacher); another one fails
    #: the job before it writes anything
    expected_fingerprint: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> ScoringJob:
        return cls(**json.loads(raw))

    def policy(self, store_root: Any) -> SourcePolicy:
        return SourcePolicy.from_settings(store_root, self.data_roots, self.source_schemes)


@dataclass(frozen=True)
class ScoringProgress:
    """After each shard: rows done (resumed included), the total, shards resumed, this shard."""

    done: int
    total: int
    shards_resumed: int
    shard: tuple[int, int] = (0, 0)
    worker_pid: int = 0


@dataclass(frozen=True)
class ScoringResult:
    """The committed pool; ``cached`` when it was already complete (nothing computed)."""

    meta: PoolMeta
    cached: bool
    shards_scored: int
    shards_resumed: int
    seconds: float


@dataclass(frozen=True)
class ActorCheck:
    """What the driver resolved and recorded: every actor must see the same source and load the
    same teacher, or its rows would land under the driver's ids and cache key."""

    source_signature: str
    total: int
    teacher_fingerprint: str


class ShardScorer:
    """The ``map_batches`` callable class: one teacher and one resolved source per actor; each
    call scores the shards (rows ``start..stop``) of its batch. ``check``: the driver's view,
    which the actor's must equal (FailedPrecondition otherwise, before it scores a row)."""

    def __init__(self, job: ScoringJob, store: StoreSpec, check: ActorCheck | None = None) -> None:
        from activekd.teacher import create_teacher
        from activekd.teacher.pool_job import resolve_source

        self.teacher = create_teacher(job.teacher)
        pools = store.open()
        self.source = resolve_source(job.kind, job.ref, job.limit, pools, job.policy(pools.root))
        self.features = self.teacher.feature_dim > 0
        if check is not None:
            mine = ActorCheck(
                self.source.signature, self.source.total, self.teacher.identity.fingerprint
            )
            if mine != check:
                teacher = mine.teacher_fingerprint != check.teacher_fingerprint
                raise FailedPrecondition(
                    "a scoring actor loads another "
                    + ("teacher (fingerprint" if teacher else "source (signature or row count")
                    + " differs) than the job's driver: give every node the same files and "
                    "teacher settings, then rerun"
                )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from activekd.teacher.scoring import predict_rows

        starts, probs, feats = [], [], []
        for a, b in zip(batch["start"].tolist(), batch["stop"].tolist(), strict=True):
            out = predict_rows(self.teacher, self.source.load(int(a), int(b)))
            starts.append(a)
            probs.append(np.ascontiguousarray(out.probs, dtype=np.float32))
            feats.append(np.ascontiguousarray(out.features, dtype=np.float32))
        n = len(starts)
        return {
            "start": np.asarray(starts, dtype=np.int64),
            "probs": _ragged(probs),
            "features": _ragged(feats),
            "pid": np.full(n, os.getpid(), dtype=np.int64),
        }


def _ragged(parts: list[np.ndarray]) -> np.ndarray:
    """One row per shard: a stacked tensor when the shards have one shape, else objects."""
    if len({p.shape for p in parts}) == 1:
        return np.stack(parts)
    out = np.empty(len(parts), dtype=object)
    out[:] = parts
    return out


def _ray() -> Any:
    import ray  # without the extra: MissingExtraError naming 'ray'

    return ray


def _check(job: ScoringJob) -> None:
    """InvalidArgument on settings that cannot work."""
    if job.shard_rows <= 0:
        raise InvalidArgument(f"shard_rows {job.shard_rows} must be positive", field="shard_rows")
    if job.concurrency < 1:
        raise InvalidArgument(
            f"concurrency {job.concurrency} must be >= 1 (actors)", field="concurrency"
        )
    if job.num_gpus < 0 or job.num_cpus < 0:
        raise InvalidArgument("num_gpus and num_cpus must be >= 0", field="num_gpus")


def score_on_ray(
    job: ScoringJob,
    store: StoreSpec,
    *,
    progress: Callable[[ScoringProgress], None] | None = None,
) -> ScoringResult:
    """Run ``job`` on the connected Ray cluster (``ray.init`` / :class:`RayCluster` first) and
    commit the sharded pool; returns at once with the pool when it is already complete."""
    from activekd.teacher import create_teacher
    from activekd.teacher.head_pool import teacher_head
    from activekd.teacher.pool_job import (
        begin_scoring,
        cached_pool,
        check_dataset_name,
        commit_scoring,
        default_output_pool,
        output_arrays,
        resolve_source,
        teacher_output_metadata,
        written_ranges,
    )

    t0 = time.perf_counter()
    _check(job)
    pools = store.open()
    source = resolve_source(job.kind, job.ref, job.limit, pools, job.policy(pools.root))
    teacher = create_teacher(job.teacher)  # identity, class names, feature width
    dataset = check_dataset_name(job.dataset) if job.dataset else source.dataset
    fingerprint = teacher.identity.fingerprint
    if job.expected_fingerprint and fingerprint != job.expected_fingerprint:
        raise FailedPrecondition(
            f"this cluster's teacher has fingerprint {fingerprint}, the caller's "
            f"{job.expected_fingerprint}: give both the same teacher settings and files"
        )
    pool_id = job.pool_id or default_output_pool(fingerprint, dataset)
    total = source.total
    shard_rows = max(job.shard_rows, -(-total // MAX_SHARDS))  # at most MAX_SHARDS files
    hit = None if job.force else cached_pool(pools, pool_id, fingerprint, source)
    if hit is not None:
        return ScoringResult(hit, True, 0, 0, time.perf_counter() - t0)
    store_features = teacher.feature_dim > 0
    metadata = teacher_output_metadata(
        teacher,
        source,
        dataset,
        shard_rows=str(shard_rows),
        features="true" if store_features else "false",
        probs_source="model",
        scorer="ray-data",
        **job.extra_metadata,
    )
    head = teacher_head(teacher)  # open_clip's text head, stored beside the pool
    del teacher  # the actors hold their own
    writer = begin_scoring(pools, pool_id, total, metadata, job.force, shard_rows, head)
    done = written_ranges(writer, output_arrays(store_features, source.item_ids is not None))
    shards = shard_ranges(total, writer.shard_rows)
    missing = [s for s in shards if s not in done]
    resumed = len(shards) - len(missing)
    rows_done = sum(b - a for a, b in shards if (a, b) in done)
    log.info(
        "scoring on ray",
        extra={"pool_id": pool_id, "rows": total, "shards": len(shards), "resumed": resumed},
    )
    if progress is not None:
        progress(ScoringProgress(rows_done, total, resumed))
    bounds = dict(missing)
    check = ActorCheck(source.signature, total, fingerprint)
    for start, probs, feats, pid in _scored(job, store, missing, check):
        stop = bounds[start]
        arrays = {"probs": probs}
        if store_features:
            arrays["features"] = feats
        ids = source.item_ids(start, stop) if source.item_ids is not None else None
        writer.write(start, item_ids=ids, arrays=arrays)
        rows_done += stop - start
        if progress is not None:
            progress(ScoringProgress(rows_done, total, resumed, (start, stop), pid))
    meta = commit_scoring(pools, writer, pool_id, head)
    seconds = time.perf_counter() - t0
    log.info(
        "scored pool on ray",
        extra={"pool_id": pool_id, "rows": total, "seconds": round(seconds, 3)},
    )
    return ScoringResult(meta, False, len(missing), resumed, seconds)


def _scored(
    job: ScoringJob, store: StoreSpec, shards: list[tuple[int, int]], check: ActorCheck
) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
    """(start, probs, features, worker pid) of every shard, as the actors finish them."""
    if not shards:
        return
    ray = _ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # progress is ours (one event per shard), not Ray's bars
    ctx.execution_options.verbose_progress = False
    items = [{"start": a, "stop": b} for a, b in shards]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        ShardScorer,
        fn_constructor_args=(job, store, check),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=job.concurrency),
        num_gpus=job.num_gpus or None,
        num_cpus=job.num_cpus,
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i, start in enumerate(batch["start"].tolist()):
            yield (
                int(start),
                np.asarray(batch["probs"][i], dtype=np.float32),
                np.asarray(batch["features"][i], dtype=np.float32),
                int(batch["pid"][i]),
            )


def main(argv: list[str] | None = None) -> int:
    """``python -m activekd.distributed.ray_scoring --job JSON --store JSON``: the Ray Jobs
    entrypoint (joins the cluster it runs on; one JSON line per shard on stdout)."""
    ap = argparse.ArgumentParser(prog="python -m activekd.distributed.ray_scoring")
    ap.add_argument("--job", required=True, help="ScoringJob as JSON")
    ap.add_argument("--store", required=True, help="StoreSpec as JSON")
    ap.add_argument("--address", default="auto", help="Ray address (default: the job's cluster)")
    args = ap.parse_args(argv)
    job = ScoringJob.from_json(args.job)
    store = StoreSpec(**json.loads(args.store))
    ray = _ray()
    ray.init(address=args.address, log_to_driver=False)

    def show(p: ScoringProgress) -> None:
        print(json.dumps({"event": "progress", **asdict(p)}), flush=True)

    res = score_on_ray(job, store, progress=show)
    print(
        json.dumps(
            {
                "event": "done",
                "pool_id": res.meta.pool_id,
                "rows": res.meta.num_items,
                "shard_rows": res.meta.shard_rows,
                "cached": res.cached,
                "shards_scored": res.shards_scored,
                "shards_resumed": res.shards_resumed,
                "seconds": res.seconds,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "DEFAULT_SHARD_ROWS",
    "ScoringJob",
    "ScoringProgress",
    "ScoringResult",
    "ShardScorer",
    "StoreSpec",
    "score_on_ray",
]
