"""gRPC SelectBatch on a registered pool vs the same selection in-process (overhead target <= 5%).

Starts a real redis-server and the selection service as processes on loopback, uploads a clustered
pool through UploadPool, then alternates in-process and gRPC calls on the same pool files.

    .venv/bin/python bench/bench_service.py            # N=100k, C=1000, 1000 labeled, budget 1000
    .venv/bin/python bench/bench_service.py --quick    # N=20k, C=100, budget 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activekd.client import SelectionClient  # noqa: E402
from activekd.selection import select_batch  # noqa: E402
from activekd.store import PoolStore  # noqa: E402
from bench.bench_selection import clustered_probs  # noqa: E402
from tests.procs import RedisProcess, ServiceProcess  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n, c, labeled_n, budget = (20_000, 100, 100, 100) if args.quick else (100_000, 1000, 1000, 1000)
    console = Console()
    probs = clustered_probs(n, c, k=50, seed=0)
    ids = [f"x{i}" for i in range(n)]
    rng = np.random.default_rng(1)
    labeled_rows = np.sort(rng.choice(n, labeled_n, replace=False))
    labeled_ids = [ids[i] for i in labeled_rows]
    with tempfile.TemporaryDirectory(prefix="akd-bench-") as tmp:
        redis_proc = RedisProcess(Path(tmp)).start()
        svc = ServiceProcess(
            "selection", redis_proc.url, f"{tmp}/store", env={"ACTIVEKD_LOG_LEVEL": "WARNING"}
        ).start()
        try:
            with SelectionClient(svc.target, timeout=3600) as client:
                client.wait_ready()
                t0 = time.perf_counter()
                client.upload_pool("bench/pool", item_ids=ids, arrays={"probs": probs})
                upload_s = time.perf_counter() - t0
                store = PoolStore(f"{tmp}/store", redis_proc.client())
                pool = store.open_array("bench/pool", "probs")
                inproc, remote, compute = [], [], []
                for rep in range(args.repeats):
                    t0 = time.perf_counter()
                    lib = select_batch("pcoreset", budget, probs=pool, labeled=labeled_rows, seed=0)
                    inproc.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    res = client.select_batch(
                        "pcoreset",
                        budget,
                        pool_id="bench/pool",
                        labeled=labeled_ids,
                        seed=0,
                        request_id=f"bench-{rep}",
                    )
                    remote.append(time.perf_counter() - t0)
                    compute.append(res.compute_seconds)
                    assert res.rows.tolist() == lib.indices.tolist(), (
                        "gRPC and in-process picks differ"
                    )
        finally:
            svc.stop()
            redis_proc.stop()
    med_in, med_rpc = statistics.median(inproc), statistics.median(remote)
    overhead = med_rpc / med_in - 1
    table = Table(title=f"SelectBatch pcoreset N={n:,} C={c} labeled={labeled_n} budget={budget}")
    for col in ("measure", "value"):
        table.add_column(col)
    table.add_row(
        "upload (UploadPool, 4 MiB chunks)",
        f"{upload_s:.2f} s ({probs.nbytes / upload_s / 1e6:.0f} MB/s)",
    )
    table.add_row(
        "in-process select_batch (median)", f"{med_in:.3f} s  {[round(x, 3) for x in inproc]}"
    )
    table.add_row(
        "gRPC SelectBatch, client wall (median)",
        f"{med_rpc:.3f} s  {[round(x, 3) for x in remote]}",
    )
    table.add_row("server compute inside the RPC (median)", f"{statistics.median(compute):.3f} s")
    table.add_row("gRPC overhead vs in-process", f"{overhead * 100:+.1f} % (target <= 5 %)")
    rpc_share = statistics.median((w - c) / c for w, c in zip(remote, compute, strict=True))
    table.add_row(
        "RPC cost beyond the server's compute (median)",
        f"{rpc_share * 100:+.2f} % of compute ({statistics.median(w - c for w, c in zip(remote, compute, strict=True)) * 1000:.0f} ms)",
    )
    console.print(table)
    out = {
        "n": n,
        "c": c,
        "labeled": labeled_n,
        "budget": budget,
        "upload_seconds": upload_s,
        "inprocess_seconds": inproc,
        "grpc_seconds": remote,
        "server_compute_seconds": compute,
        "overhead": overhead,
        "rpc_share_of_compute": rpc_share,
        "quick": args.quick,
    }
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / f"service{'-quick' if args.quick else ''}.json").write_text(
        json.dumps(out, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
