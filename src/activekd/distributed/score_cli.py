"""``activekd score-on-ray``: submit a pool-scoring job to a Ray cluster's Jobs API and follow it.

The job scores a ScorePool source with a teacher into a sharded pool of the pool store
(:mod:`activekd.distributed.ray_scoring`); this command prints one line per finished shard and
the pool at the end. ``--local`` runs the same job on a local Ray instance in this process
instead (token auth on), for a single machine with several GPUs or a try-out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from activekd.distributed.ray_scoring import (
    DEFAULT_SHARD_ROWS,
    ScoringJob,
    ScoringProgress,
    StoreSpec,
    score_on_ray,
)
from activekd.errors import InvalidArgument
from activekd.teacher.pool_job import SOURCE_KINDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="activekd score-on-ray",
        description="Submit a pool-scoring job to a Ray cluster's Jobs API and follow it: the job "
        "scores a ScorePool source with a teacher into a sharded pool of the pool store, one "
        "line per finished shard, the pool at the end. With --local the same job runs on a local "
        "Ray instance in this process (token auth on).",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--address",
        metavar="URL",
        help="the cluster's Jobs API, e.g. http://activekd-ray-head-svc:8265 (the token from "
        "RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH)",
    )
    where.add_argument("--local", action="store_true", help="run on a local Ray instance here")
    p.add_argument(
        "--source",
        required=True,
        metavar="KIND:REF",
        help=f"what to score, as ScorePool names it; KIND one of {', '.join(SOURCE_KINDS)} "
        "(e.g. array_uri:/var/lib/activekd/store/inputs/images.npy)",
    )
    p.add_argument(
        "--teacher",
        default='{"backend": "label-map"}',
        metavar="JSON",
        help="the teacher's TeacherConfig fields as JSON (default the label-map teacher)",
    )
    p.add_argument("--store-uri", default=os.environ.get("ACTIVEKD_STORE_URI", ""))
    p.add_argument(
        "--redis-url",
        default="",
        help="default: the job's ACTIVEKD_REDIS_URL (keeps a password off the command line)",
    )
    p.add_argument("--dataset", default="", help="dataset name in the pool id")
    p.add_argument("--pool-id", default="", help="output pool (default teacher/<fp>/<dataset>)")
    p.add_argument("--limit", type=int, default=0, help="score only the first N images")
    p.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS)
    p.add_argument("--concurrency", type=int, default=2, help="scoring actors (default 2)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (default 0)")
    p.add_argument("--force", action="store_true", help="score again even when cached")
    p.add_argument("--python", default="python", help="the interpreter on the cluster")
    p.add_argument("--data-roots", default=os.environ.get("ACTIVEKD_DATA_ROOTS", ""))
    p.add_argument(
        "--source-schemes",
        default=os.environ.get("ACTIVEKD_SOURCE_SCHEMES", "file"),
        help="URI schemes a source may use, comma-separated (default ACTIVEKD_SOURCE_SCHEMES, "
        "else file); e.g. file,s3 to score images in object storage",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds to follow the job")
    return p


def _show(event: dict[str, object]) -> None:
    if event.get("event") == "progress":
        print(f"scored {event['done']}/{event['total']} rows", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kind, sep, ref = args.source.partition(":")
    if not sep or kind not in SOURCE_KINDS:
        raise InvalidArgument(
            f"--source is KIND:REF with KIND one of {', '.join(SOURCE_KINDS)}", field="source"
        )
    if not args.store_uri:
        raise InvalidArgument("--store-uri (or ACTIVEKD_STORE_URI) is required", field="store")
    try:
        teacher = json.loads(args.teacher)
    except ValueError:
        teacher = None
    if not isinstance(teacher, dict):
        raise InvalidArgument("--teacher is a JSON object of TeacherConfig fields", field="teacher")
    job = ScoringJob(
        teacher, kind, ref, limit=args.limit, dataset=args.dataset, pool_id=args.pool_id,
        shard_rows=args.shard_rows, concurrency=args.concurrency, num_gpus=args.num_gpus,
        force=args.force, data_roots=args.data_roots, source_schemes=args.source_schemes,
    )  # fmt: skip
    store = StoreSpec(args.store_uri, args.redis_url)
    if args.local:
        from activekd.distributed.ray_kcenter import RayCluster

        with RayCluster():

            def show(p: ScoringProgress) -> None:
                _show({"event": "progress", **asdict(p)})

            res = score_on_ray(job, store, progress=show)
        done = {"pool_id": res.meta.pool_id, "rows": res.meta.num_items, "cached": res.cached}
    else:
        from activekd.distributed.ray_jobs import RayJobs

        jobs = RayJobs(args.address, python=args.python)
        job_id = jobs.submit(job, store)
        print(f"submitted Ray job {job_id}", file=sys.stderr, flush=True)
        done = {}
        for event in jobs.follow(job_id, timeout=args.timeout):
            _show(event)
            if event.get("event") == "done":
                done = {k: v for k, v in event.items() if k != "event"}
        done["job_id"] = job_id
    print(json.dumps(done))
    return 0


__all__ = ["build_parser", "main"]
