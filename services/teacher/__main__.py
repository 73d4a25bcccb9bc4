"""``python -m activekd_services.teacher``: serve TeacherService.

The teacher is configured by ``ACTIVEKD_TEACHER_<FIELD>`` variables / ``--teacher-<field>`` flags
(the fields of :class:`activekd.teacher.TeacherConfig`; others such as ``ACTIVEKD_TEACHER_TARGET``,
which the experiment service reads, are ignored here). A teacher that cannot be loaded (unknown
model, missing weights file) stops the process with exit code 2 and an ``error`` log line.
"""

from __future__ import annotations

import logging
import sys
import urllib.parse
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from activekd_services.teacher.servicer import TeacherServicer

from activekd.errors import ActiveKDError
from activekd.server import metrics
from activekd.server.bootstrap import Service, grpc_service, run
from activekd.server.config import ServerConfig
from activekd.server.stores import open_pool_store
from activekd.state.redis_conn import connect
from activekd.state.teacher_classes import TeacherClassStore
from activekd.teacher import BatchStats, DynamicBatcher, TeacherConfig, create_teacher, run_batch
from activekd.teacher.cache import TeacherCacheIndex, packaged_teacher_cache_dir
from activekd.teacher.class_views import ClassViews
from activekd.teacher.pool_job import PoolScorer
from activekd.teacher.sources import SourcePolicy
from activekd.v1 import teacher_pb2, teacher_pb2_grpc

log = logging.getLogger("activekd.teacher.service")

TEACHER_KEYS = tuple(f"teacher_{f.name}" for f in fields(TeacherConfig))
#: ScorePool on a Ray cluster (docs/scale-out.md): the Jobs API URL, the smallest source sent
#: there, rows per shard, actors, GPUs per actor, and the interpreter the job runs
RAY_JOBS_KEYS = (
    "ray_jobs_address",
    "ray_jobs_min_rows",
    "ray_jobs_shard_rows",
    "ray_jobs_concurrency",
    "ray_jobs_num_gpus",
    "ray_jobs_python",
)
EXTRA_KEYS = (
    "max_batch_size",
    "max_queue_delay_ms",
    "cache_dir",
    "score_pause_ms",
    *TEACHER_KEYS,
    *RAY_JOBS_KEYS,
)


def _number(config: ServerConfig, key: str, default: float, kind: type = float) -> float:
    raw = config.extra.get(key)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0 or (key == "max_batch_size" and value < 1):
        log.error("bad setting", extra={"setting": f"ACTIVEKD_{key.upper()}", "value": raw})
        raise SystemExit(f"ACTIVEKD_{key.upper()}={raw!r} must be a number >= 0 (batch size >= 1)")
    return value


class DynamicBatcherHook:
    """Records each executed online batch in the teacher metrics (dataset label ``online``)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def __call__(self, stats: BatchStats) -> None:
        metrics.observe_teacher_batch(
            self.backend, "online", stats.batch_size, stats.queue_ms_mean / 1000.0,
            stats.compute_ms / 1000.0,
        )  # fmt: skip


def source_policy(config: ServerConfig, store_root: Path) -> SourcePolicy:
    """Where ScorePool may read images: ``ACTIVEKD_DATA_ROOTS`` (default: the pool store and the
    shipped datasets), ``ACTIVEKD_SOURCE_SCHEMES`` (default: local files only) and at most
    ``ACTIVEKD_MAX_POOL_ROWS`` rows per source."""
    policy = SourcePolicy.from_settings(
        store_root, config.data_roots, config.source_schemes, config.max_pool_rows
    )
    log.info(
        "score sources",
        extra={"data_roots": [str(r) for r in policy.roots], "schemes": sorted(policy.schemes),
               "max_rows": policy.max_rows},
    )  # fmt: skip
    return policy


def teacher_config(config: ServerConfig) -> TeacherConfig:
    """TeacherConfig from the ``teacher_*`` settings; device defaults to ``ACTIVEKD_DEVICE`` and
    the open_clip weights cache to ``ACTIVEKD_CACHE_DIR``."""
    values = {k[len("teacher_") :]: v for k, v in config.extra.items() if k in TEACHER_KEYS}
    if not values.get("device"):
        values["device"] = config.device
    if not values.get("cache_dir") and config.extra.get("cache_dir"):
        values["cache_dir"] = config.extra["cache_dir"]
    return TeacherConfig.from_mapping(values)


def ray_offload(config: ServerConfig, tcfg: TeacherConfig) -> Any:
    """ScorePool's hand-off to a Ray cluster when ``ACTIVEKD_RAY_JOBS_ADDRESS`` is set."""
    address = config.extra.get("ray_jobs_address", "")
    if not address:
        return None
    from activekd.distributed.ray_jobs import RayJobs, RayScoringOffload, has_credentials
    from activekd.distributed.ray_scoring import StoreSpec

    redis_url = config.redis_url
    if has_credentials(redis_url):  # never in a job's command line
        redis_url = ""  # the cluster's ACTIVEKD_REDIS_URL
    root = config.store_uri  # the job's working folder differs: a local root must be absolute
    if "://" not in root or root.startswith("file://"):
        root = str(Path(root.removeprefix("file://")).expanduser().resolve())
    teacher = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(tcfg).items()} | {
        "device": "auto"
    }  # each actor picks its own device (a GPU when it has one)
    offload = RayScoringOffload(
        RayJobs(address, python=config.extra.get("ray_jobs_python") or "python"),
        teacher,
        # storage options (credentials possible) come from the cluster's ACTIVEKD_STORE_OPTIONS
        StoreSpec(root, redis_url, cache_dir=config.store_cache_dir),
        min_rows=int(_number(config, "ray_jobs_min_rows", 1_000_000, int)),
        shard_rows=int(_number(config, "ray_jobs_shard_rows", 16384, int)) or 16384,
        concurrency=max(1, int(_number(config, "ray_jobs_concurrency", 2, int))),
        num_gpus=_number(config, "ray_jobs_num_gpus", 0.0),
        data_roots=config.data_roots,
        source_schemes=config.source_schemes,
    )
    log.info(
        "ScorePool of large sources runs on Ray",
        extra={"jobs_api": urllib.parse.urlsplit(address).netloc, "min_rows": offload.min_rows,
               "shard_rows": offload.shard_rows, "actors": offload.concurrency},
    )  # fmt: skip
    return offload


async def build(config: ServerConfig) -> Service:
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    try:
        tcfg = teacher_config(config)
        teacher = create_teacher(tcfg)
    except ActiveKDError as exc:
        log.error(
            "teacher failed to load",
            extra={"error": str(exc), "code": exc.code, "field": exc.field,
                   "backend": config.extra.get("teacher_backend", "label-map"),
                   "model": config.extra.get("teacher_model", "")},
        )  # fmt: skip
        raise SystemExit(2) from None
    log.info(
        "teacher loaded",
        extra={"fingerprint": teacher.identity.fingerprint, "model": teacher.identity.model,
               "backend": teacher.identity.backend, "device": teacher.device},
    )  # fmt: skip
    client = connect(config.redis_url)
    client.ping()
    batcher = DynamicBatcher(
        run_batch,
        max_batch_size=int(_number(config, "max_batch_size", teacher.max_batch_size, int)),
        max_queue_delay_ms=_number(config, "max_queue_delay_ms", 5.0),
        on_batch=DynamicBatcherHook(teacher.identity.backend),
    )
    await batcher.start()
    cache_dirs = [packaged_teacher_cache_dir()]
    if config.extra.get("cache_dir"):
        cache_dirs.insert(0, Path(config.extra["cache_dir"]).expanduser())
    store = open_pool_store(config, client)
    scorer = PoolScorer(
        store,
        TeacherCacheIndex(cache_dirs),
        pause_s=_number(config, "score_pause_ms", 0.0) / 1000.0,
        on_chunk=lambda backend, dataset, n, s: metrics.observe_teacher_batch(
            backend, dataset, n, 0.0, s
        ),
        policy=source_policy(config, store.root),
        offload=ray_offload(config, tcfg),
    )
    servicer = TeacherServicer(ClassViews(teacher, TeacherClassStore(client)), batcher, scorer)

    async def close() -> None:
        await batcher.close()
        client.close()

    return grpc_service(
        teacher_pb2,
        "TeacherService",
        teacher_pb2_grpc.add_TeacherServiceServicer_to_server,
        servicer,
        close,
    )


if __name__ == "__main__":
    sys.exit(run("teacher", build, extra_keys=EXTRA_KEYS))
