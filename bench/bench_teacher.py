"""TeacherService throughput: the service vs the same model in-process, dynamic batching, GPU.

1. Service vs in-process on the same batches (label-map teacher, EfficientNet-Lite0 at 224 px):
   ``teacher.predict(batch)`` in this process vs ``Predict`` with the same batch (raw uint8
   pixels) and vs ``ScorePool`` over the same rows (from a ``.npy``), alternated; target: service
   >= 90 %.
2. Images/s of the label-map teacher and of open_clip ViT-B-32 (random weights: speed does not
   depend on them) in-process, with model FLOPs per image and achieved GFLOP/s.
3. Dynamic batching: 1, 8 and 32 concurrent clients each sending one image per Predict, against
   services that batch (max 32 or max 8, 5 ms window) and one that does not (max batch 1):
   images/s, latency p50/p95 and the mean executed batch (--quick: max 32 only, 1 and 32
   clients).
4. When ``src/activekd/data/teacher_cache/fashion-mnist-label-map-224*.npz`` exists: ScorePool of
   ``fashion-mnist:train`` (the rows the file holds) served from it without running the model.
5. GPU (only when ``torch.cuda.is_available()``): ViT-B-32 bf16 images/s vs the FLOP-bound limit.

    .venv/bin/python bench/bench_teacher.py            # full (3-4 min on 2 cores)
    .venv/bin/python bench/bench_teacher.py --quick    # smoke test (< 1 min)

Writes bench/results/teacher[-quick].json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from activekd.client import TeacherClient  # noqa: E402
from activekd.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from activekd.teacher import TeacherConfig, create_teacher  # noqa: E402
from bench.bench_gpu import flops_per_image, vit_b32_bf16  # noqa: E402
from tests.procs import RedisProcess, ServiceProcess  # noqa: E402

console = Console(width=120)
# In-process inference runs in a worker thread, as in the service: on this contended 2-core machine
# torch (libgomp) ran 2-3x slower in the main thread than in a worker thread (both measured below).
_worker = ThreadPoolExecutor(1, thread_name_prefix="bench-infer")
WARMUP = 2  # warm-up batches per path (1 with --quick)


def infer(teacher: Any, batch: np.ndarray) -> Any:
    """``teacher.predict(batch)`` on the worker thread."""
    return _worker.submit(teacher.predict, batch).result()


CACHE_DIR = ROOT / "src" / "activekd" / "data" / "teacher_cache"
CACHE_GLOB = "fashion-mnist-label-map-224*.npz"  # full file, or -first<N> of a --limit build


def cache_rows() -> tuple[str, int] | None:
    """(file name, train rows) of the largest precomputed label-map 224 px cache, if any."""
    best = None
    for path in sorted(CACHE_DIR.glob(CACHE_GLOB)):
        with np.load(path, allow_pickle=False) as z:
            if "train_probs" in z.files:
                rows = int(z["train_probs"].shape[0])
                if best is None or rows > best[1]:
                    best = (path.name, rows)
    return best


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (< 1 min)")
    p.add_argument("--batch", type=int, default=32, help="images per Predict / in-process batch")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="GPU bf16 peak (TFLOP/s)")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def metric(svc: ServiceProcess, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` with ``labels`` on the service's /metrics."""
    url = f"http://127.0.0.1:{svc.metrics_port}/metrics"
    text = urllib.request.urlopen(url).read().decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# ---------------------------------------------------------------------------------- section 1
def service_vs_inprocess(
    teacher: Any,
    svc: ServiceProcess,
    images: np.ndarray,
    batch: int,
    reps: int,
    progress: Progress,
    workdir: Path,
) -> dict[str, Any]:
    """Alternate in-process predict, Predict and ScorePool over the same rows; img/s each.
    ScorePool reads the rows from a ``.npy`` (a builtin source could be served by a precomputed
    cache file without running the model)."""
    n = images.shape[0]
    npy = workdir / "bench-images.npy"
    np.save(npy, images)
    batches = [images[i : i + batch] for i in range(0, n, batch)]
    res: dict[str, list[float]] = {"inprocess": [], "predict": [], "score_pool": [], "main": []}
    task = progress.add_task("service vs in-process", total=reps * 4)
    with TeacherClient(svc.target, timeout=600) as c:
        c.wait_ready()
        for _ in range(WARMUP):  # first calls at a new batch shape are slow (kernel selection)
            c.predict(list(batches[0]))
            infer(teacher, batches[0])
            teacher.predict(batches[0])
        list(c.score_pool(array_uri=str(npy), limit=batch, chunk_size=batch, dataset="bench-warm"))
        for rep in range(reps):
            t0 = time.perf_counter()
            local = [infer(teacher, b).probs for b in batches]
            res["inprocess"].append(n / (time.perf_counter() - t0))
            progress.advance(task)
            t0 = time.perf_counter()
            for b in batches:
                teacher.predict(b)
            res["main"].append(n / (time.perf_counter() - t0))
            progress.advance(task)
            t0 = time.perf_counter()
            remote = [np.stack([np.asarray(p.probs) for p in c.predict(list(b))]) for b in batches]
            res["predict"].append(n / (time.perf_counter() - t0))
            progress.advance(task)
            err = float(np.abs(np.concatenate(local) - np.concatenate(remote)).max())
            assert err < 1e-4, f"service and in-process outputs differ by {err}"
            t0 = time.perf_counter()
            last = list(c.score_pool(array_uri=str(npy), chunk_size=batch, force=True,
                                     dataset=f"bench-{rep}"))[-1]  # fmt: skip
            assert last.pool is not None and last.pool.metadata["probs_source"] == "model"
            res["score_pool"].append(n / (time.perf_counter() - t0))
            assert last.pool is not None and last.pool.num_items == n
            progress.advance(task)
    med = {k: statistics.median(v) for k, v in res.items()}
    return {
        "images": n, "batch": batch, "reps": reps, "images_per_s": res, "median": med,
        "predict_ratio": med["predict"] / med["inprocess"],
        "score_pool_ratio": med["score_pool"] / med["inprocess"],
    }  # fmt: skip


# ---------------------------------------------------------------------------------- section 2
def inprocess_speed(
    name: str, teacher: Any, images: np.ndarray, batch: int, flops: float, seconds: float
) -> dict[str, Any]:
    """Images/s of ``teacher.predict`` on batches of ``batch``, after WARMUP warm-up batches, for
    about ``seconds`` (at least two batches)."""
    for _ in range(WARMUP):
        infer(teacher, images[:batch])
    n, i = 0, 0
    t0 = time.perf_counter()
    while n < 2 * batch or time.perf_counter() - t0 < seconds:
        infer(teacher, images[i : i + batch])
        n += batch
        i = (i + batch) % max(1, images.shape[0] - batch)
    ips = n / (time.perf_counter() - t0)
    return {"teacher": name, "batch": batch, "images_per_s": ips,
            "gflops_per_image": flops / 1e9, "achieved_gflops": ips * flops / 1e9}  # fmt: skip


# ---------------------------------------------------------------------------------- section 3
def concurrent_load(
    svc: ServiceProcess, images: np.ndarray, clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` threads, each its own channel, sending single-image Predicts for ``seconds``."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]
    conns = [TeacherClient(svc.target, timeout=600) for _ in range(clients)]
    for c in conns:
        c.wait_ready()

    def run(k: int) -> None:
        c = conns[k]
        i = k
        barrier.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            c.predict([images[i % images.shape[0]]])
            lat[k].append(time.perf_counter() - t0)
            i += clients

    b0 = metric(svc, "activekd_teacher_batch_size_count")
    s0 = metric(svc, "activekd_teacher_batch_size_sum")
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    stop_at[0] = start + seconds
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for c in conns:
        c.close()
    batches = metric(svc, "activekd_teacher_batch_size_count") - b0
    imgs = metric(svc, "activekd_teacher_batch_size_sum") - s0
    all_lat = sorted(x for xs in lat for x in xs)
    return {
        "clients": clients, "images": len(all_lat), "images_per_s": len(all_lat) / wall,
        "latency_p50_ms": 1000 * all_lat[len(all_lat) // 2],
        "latency_p95_ms": 1000 * all_lat[min(len(all_lat) - 1, int(0.95 * len(all_lat)))],
        "mean_batch": imgs / batches if batches else 0.0,
    }  # fmt: skip


# ---------------------------------------------------------------------------------- section 5
def gpu_section(peak_tflops: float, quick: bool) -> dict[str, Any]:
    if not torch.cuda.is_available():
        console.print("[bold]GPU[/bold]: no GPU (torch.cuda.is_available() is False); skipped")
        return {"gpu": None}
    r = vit_b32_bf16(peak_tflops, quick)
    ips, bound, peak, name = (
        r["images_per_s"],
        r["flop_bound_images_per_s"],
        r["peak_tflops"],
        r["gpu"],
    )
    limit = (
        f"FLOP-bound limit {bound:,.0f} images/s at {peak:g} TFLOP/s ({100 * ips / bound:.0f} %)"
        if bound
        else "peak unknown: pass --peak-tflops"
    )
    console.print(
        f"[bold]GPU[/bold] {name}: ViT-B-32 bf16, batch 256: {ips:,.0f} images/s; {limit}"
    )
    return r


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    quick = args.quick
    global WARMUP
    WARMUP = 1 if quick else 2
    n_same = 64 if quick else 256
    reps = 1 if quick else 3
    seconds = 1.5 if quick else 8.0
    x, _ = load_fashion_mnist("test")
    out: dict[str, Any] = {}
    marks: dict[str, float] = {}

    tmp = Path(tempfile.mkdtemp(prefix="akd-bench-teacher-"))
    redis_proc = RedisProcess(tmp).start()
    # ScorePool reads tmp/bench-images.npy: the temp folder is the teacher's data root
    env_lm = {"ACTIVEKD_TEACHER_BACKEND": "label-map", "ACTIVEKD_DEVICE": "cpu",
              "ACTIVEKD_MAX_BATCH_SIZE": "32", "ACTIVEKD_MAX_QUEUE_DELAY_MS": "5",
              "ACTIVEKD_DATA_ROOTS": str(tmp)}  # fmt: skip
    store = str(tmp / "store")
    batching = ServiceProcess("teacher", redis_proc.url, store, env=env_lm)
    configs = [("batching (max 32, 5 ms)", batching)]
    for label, size in (("batching (max 8, 5 ms)", "8"), ("off (max 1)", "1")):
        if quick:  # smoke test: one batching service only
            continue
        env = {**env_lm, "ACTIVEKD_MAX_BATCH_SIZE": size}
        configs.append((label, ServiceProcess("teacher", redis_proc.url, store, env=env)))
    services = [svc for _, svc in configs]
    try:
        with Progress(console=console, transient=True) as progress:
            boot = progress.add_task("starting label-map services, loading teachers", total=None)
            starters = [threading.Thread(target=s.start) for s in services]
            for t in starters:
                t.start()
            lm: Any = create_teacher(TeacherConfig(backend="label-map", device="cpu"))
            for t in starters:
                t.join()
            progress.remove_task(boot)
            marks = {"startup": time.perf_counter() - t_start}

            # 1. service vs in-process --------------------------------------------------------
            same = service_vs_inprocess(lm, batching, x[:n_same], args.batch, reps, progress, tmp)
            out["service_vs_inprocess"] = same
            marks["service_vs_inprocess"] = time.perf_counter() - t_start

            # 2. images/s in-process -----------------------------------------------------------
            task = progress.add_task("in-process images/s (label-map, ViT-B-32)", total=4)
            lm_flops = flops_per_image(lm._bb.model, lm._bb.model, 224)
            speeds = []
            for b in (1, 8, args.batch):
                speeds.append(inprocess_speed("label-map EfficientNet-Lite0 224px", lm, x[:2000],
                                              b, lm_flops, 1.0 if quick else 6.0))  # fmt: skip
                progress.advance(task)
            vit: Any = create_teacher(TeacherConfig(backend="open_clip", model="ViT-B-32",
                                               pretrained="random", device="cpu"))  # fmt: skip
            vit_flops = flops_per_image(vit._bb.model.visual, vit._bb.model.visual, 224)
            speeds.append(inprocess_speed("open_clip ViT-B-32 (random weights) 224px", vit,
                                          x[:2000], 8 if quick else args.batch, vit_flops, 1.0 if quick else 8.0))  # fmt: skip
            progress.advance(task)
            out["inprocess"] = speeds
            del vit
            marks["inprocess"] = time.perf_counter() - t_start

            # 3. dynamic batching --------------------------------------------------------------
            rows = []
            client_counts = (1, 32) if quick else (1, 8, 32)
            task = progress.add_task("dynamic batching", total=len(client_counts) * len(configs))
            for clients in client_counts:
                for label, svc in configs:
                    r = concurrent_load(svc, x[1000:2000], clients, seconds)
                    r["service"] = label
                    rows.append(r)
                    progress.advance(task)
            out["batching"] = rows
            marks["batching"] = time.perf_counter() - t_start

            # 4. precomputed cache -------------------------------------------------------------
            found = cache_rows()
            out["precomputed"] = None
            if found is not None:
                with TeacherClient(batching.target, timeout=600) as c:
                    t0 = time.perf_counter()
                    msgs = list(c.score_pool(builtin="fashion-mnist:train", limit=found[1],
                                             chunk_size=4096))  # fmt: skip
                    took = time.perf_counter() - t0
                last = msgs[-1]
                assert last.pool is not None
                out["precomputed"] = {"file": found[0], "rows": last.pool.num_items,
                                      "seconds": took,
                                      "probs_source": last.pool.metadata.get("probs_source")}  # fmt: skip
    finally:
        for svc in services:
            svc.stop()
        redis_proc.stop()

    # report -------------------------------------------------------------------------------------
    s = out["service_vs_inprocess"]
    table = Table(title=f"label-map teacher, {s['images']} Fashion-MNIST images, batches of {s['batch']}"
                    f" (median of {s['reps']})")  # fmt: skip
    for col in ("path", "images/s", "vs in-process"):
        table.add_column(col)
    table.add_row("in-process teacher.predict (worker thread, as the service)",
              f"{s['median']['inprocess']:.1f}", "100 %")  # fmt: skip
    table.add_row("in-process teacher.predict (main thread)", f"{s['median']['main']:.1f}",
              f"{100 * s['median']['main'] / s['median']['inprocess']:.1f} %")  # fmt: skip
    table.add_row("gRPC Predict (raw uint8, one client)", f"{s['median']['predict']:.1f}",
              f"{100 * s['predict_ratio']:.1f} % (target >= 90 %)")  # fmt: skip
    table.add_row("gRPC ScorePool (into the pool store)", f"{s['median']['score_pool']:.1f}",
              f"{100 * s['score_pool_ratio']:.1f} % (target >= 90 %)")  # fmt: skip
    console.print(table)
    table = Table(title="in-process images/s on this CPU")
    for col in ("teacher", "batch", "images/s", "GFLOP/image", "achieved GFLOP/s"):
        table.add_column(col)
    for r in out["inprocess"]:
        table.add_row(r["teacher"], str(r["batch"]), f"{r['images_per_s']:.1f}",
                  f"{r['gflops_per_image']:.2f}", f"{r['achieved_gflops']:.0f}")  # fmt: skip
    console.print(table)
    table = Table(title=f"dynamic batching: single-image Predicts, {seconds:g} s per row")
    for col in ("clients", "service", "images/s", "p50 ms", "p95 ms", "mean batch"):
        table.add_column(col)
    for r in out["batching"]:
        table.add_row(str(r["clients"]), r["service"], f"{r['images_per_s']:.1f}",
                  f"{r['latency_p50_ms']:.0f}", f"{r['latency_p95_ms']:.0f}",
                  f"{r['mean_batch']:.1f}")  # fmt: skip
    console.print(table)
    pre = out["precomputed"]
    if pre:
        console.print(f"ScorePool fashion-mnist:train with {pre['file']} present: {pre['rows']} "
                      f"rows in {pre['seconds']:.1f} s (probs_source={pre['probs_source']})")  # fmt: skip
    else:
        console.print(f"no precomputed cache {CACHE_GLOB} yet: section 4 skipped")
    out["gpu"] = gpu_section(args.peak_tflops, quick)
    out["meta"] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/bench_teacher.py", *(argv or sys.argv[1:])]),
        "quick": quick, "cpus": os.cpu_count(), "machine": platform.machine(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "total_seconds": time.perf_counter() - t_start, "seconds_at_end_of": marks,
    }  # fmt: skip
    path = args.out or ROOT / "bench" / "results" / f"teacher{'-quick' if quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    console.print(f"total {out['meta']['total_seconds']:.0f} s; load average at start "
                  f"{load_start[0]:.1f}, at end {out['meta']['load_average_end'][0]:.1f}; "
                  f"wrote {path.relative_to(ROOT)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
