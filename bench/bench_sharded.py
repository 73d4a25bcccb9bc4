"""Sharded k-center on Ray: 1, 2 and 4 shard actors on loopback vs the single-process engine.

A float32 pool is written as one ``.npy`` file that every actor memory-maps (each touches only
its rows). The per-worker memory budget (``--budget-mib``) is set below the pool's size, so one
worker cannot hold it: an actor's
pool memory is the resident memory it added after start (its shard's pages and the k-center
state), reported beside its whole RSS (interpreter and libraries included). On 2 cores this measures correctness, coordination cost and memory per
worker, not speed-up. Reported per worker count: wall time of the greedy phase, per-pick latency
split into the slowest shard's compute and coordination (messages, serialisation, the
coordinator), bytes exchanged per pick, the largest actor RSS vs the budget, and whether the
picks equal the single-process engine's and a float64 exact greedy's. The last section scales
the measured coordination cost to 100M x 1000 on 16 workers, on paper.

    .venv/bin/python bench/bench_sharded.py                  # 1M x 100, 1000 labeled, 300 picks
    .venv/bin/python bench/bench_sharded.py --quick          # smoke test (seconds)

Writes bench/results/sharded.json and sharded.md (``--quick``: sharded_quick.*).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from activekd.distributed.ray_kcenter import RayCluster, kcenter_on_ray  # noqa: E402
from activekd.selection.kcenter import kcenter_greedy  # noqa: E402


def make_pool(path: Path, n: int, d: int, seed: int) -> None:
    """Broad clusters (within-cluster spread comparable to the distance between clusters),
    written chunk by chunk into a float32 ``.npy``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, d)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for a in range(0, n, 200_000):
        b = min(n, a + 200_000)
        out[a:b] = centres[rng.integers(0, 50, b - a)] + rng.normal(size=(b - a, d))
    out.flush()
    del out


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="akd-sharded-")
    path = Path(tmp.name) / "pool.npy"
    make_pool(path, args.rows, args.dim, args.seed)
    pool_mib = args.rows * args.dim * 4 / 2**20
    x = np.load(path, mmap_mode="r")
    centres = np.random.default_rng(args.seed + 1).choice(args.rows, args.labeled, replace=False)
    print(f"pool {args.rows} x {args.dim} float32 = {pool_mib:.0f} MiB; budget/worker "
          f"{args.budget_mib} MiB; {args.labeled} labeled, {args.picks} picks", flush=True)  # fmt: skip
    t = time.perf_counter()
    one = kcenter_greedy(np.asarray(x), args.picks, centres=centres, threads=1)
    single_s = time.perf_counter() - t
    print(f"single process: {single_s:.2f} s", flush=True)
    t = time.perf_counter()
    ref = kcenter_greedy(np.asarray(x, dtype=np.float64), args.picks, centres=centres, threads=1)
    ref_s = time.perf_counter() - t
    print(f"float64 exact: {ref_s:.2f} s", flush=True)
    rows: list[dict[str, Any]] = []
    with RayCluster(num_cpus=2):
        for workers in args.workers:
            res = kcenter_on_ray(path, args.picks, workers, centres=centres,
                                 cpus_per_worker=2 / max(workers, 2))  # fmt: skip
            s = res.stats
            steps = max(1.0, s["steps"])
            rss = s["worker_rss_bytes_max"] / 2**20
            data = s["worker_data_bytes_max"] / 2**20
            row = {
                "workers": workers,
                "setup_s": round(s["setup_seconds"], 3),
                "seed_s": round(s["seed_seconds"], 3),
                "greedy_s": round(s["greedy_seconds"], 3),
                "per_pick_ms": round(1000 * s["step_wall_seconds"] / steps, 3),
                "per_pick_compute_ms": round(1000 * s["step_compute_seconds"] / steps, 3),
                "per_pick_coordination_ms": round(1000 * s["step_coordination_seconds"] / steps, 3),
                # to each worker: the centre (D floats) + row id + d2; back: d2, row, D floats
                "bytes_per_pick": int(workers * 2 * (args.dim * 4 + 16)),
                "worker_rss_max_mib": round(rss, 1),
                "worker_data_max_mib": round(data, 1),
                "within_budget": bool(data <= args.budget_mib),
                "picks_equal_single": res.indices.tolist() == one.indices.tolist(),
                "scores_equal_single": bool(np.array_equal(res.scores, one.scores)),
                "picks_equal_float64": res.indices.tolist() == ref.indices.tolist(),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    tmp.cleanup()
    coord = min(r["per_pick_coordination_ms"] for r in rows if r["workers"] > 1)
    return {
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": 2, "python": platform.python_version()},
        "config": vars(args) | {"workers": list(args.workers)},
        "pool_mib": round(pool_mib, 1),
        "single_process_s": round(single_s, 3),
        "float64_exact_s": round(ref_s, 3),
        "single_equal_float64": one.indices.tolist() == ref.indices.tolist(),
        "runs": rows,
        "paper": paper_estimate(coord),
    }


def paper_estimate(coord_ms: float) -> dict[str, Any]:
    """100M x 1000 float16 on 16 workers, from the measured per-pick coordination cost."""
    n, c, workers, picks = 100_000_000, 1000, 16, 1000
    shard_gb = n * c * 2 / workers / 1e9
    # the per-pick floor on each shard: one pass over the unpruned rows' bytes; assume 10 %
    # survive pruning (the bench's pools prune 80-99 %) at 2 TB/s (H100/H200 HBM)
    read_s = 0.1 * shard_gb / 2000
    return {
        "pool": "100M x 1000 float16 (200 GB)",
        "workers": workers,
        "shard_gb": round(shard_gb, 1),
        "per_pick_read_s_at_10pct_2TBps": round(read_s, 5),
        "measured_coordination_ms_per_pick": coord_ms,
        "picks": picks,
        "greedy_minutes": round(picks * (read_s + coord_ms / 1000) / 60, 2),
        "message_bytes_per_pick": workers * 2 * (c * 4 + 16),
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"pool {r['config']['rows']} x {r['config']['dim']} float32 ({r['pool_mib']} MiB), "
        f"{r['config']['labeled']} labeled, {r['config']['picks']} picks, per-worker budget "
        f"{r['config']['budget_mib']} MiB; single process {r['single_process_s']} s, float64 "
        f"exact {r['float64_exact_s']} s (same picks: {r['single_equal_float64']})",
        "",
        "| workers | greedy s | per pick ms | compute ms | coordination ms | bytes/pick | "
        "max worker RSS MiB | of it pool data + state MiB | within budget | = single | = float64 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for x in r["runs"]:
        lines.append(
            f"| {x['workers']} | {x['greedy_s']} | {x['per_pick_ms']} | "
            f"{x['per_pick_compute_ms']} | {x['per_pick_coordination_ms']} | "
            f"{x['bytes_per_pick']} | {x['worker_rss_max_mib']} | {x['worker_data_max_mib']} | "
            f"{x['within_budget']} | "
            f"{x['picks_equal_single'] and x['scores_equal_single']} | "
            f"{x['picks_equal_float64']} |"
        )
    p = r["paper"]
    lines += ["", f"On paper: {json.dumps(p)}"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--labeled", type=int, default=1000)
    ap.add_argument("--picks", type=int, default=300)
    ap.add_argument("--workers", type=lambda s: [int(v) for v in s.split(",")],
                    default=[1, 2, 4])  # fmt: skip
    ap.add_argument("--budget-mib", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.labeled, args.picks, args.budget_mib = 60_000, 100, 30, 20
    out = args.out or ROOT / "bench" / "results" / ("sharded_quick" if args.quick else "sharded")
    result = run(args)
    result["command"] = " ".join(["bench/bench_sharded.py", *sys.argv[1:]])
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    out.with_suffix(".md").write_text(md + "\n")
    print(md)
    ok = all(x["picks_equal_single"] and x["scores_equal_single"] for x in result["runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
