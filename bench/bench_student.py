"""Student (DHO) speed on this machine: one active-learning round on Fashion-MNIST, split into
training and pool scoring, plus small-CNN samples/s, and ResNet-18 at 224 px on a GPU when present.

The round is what a demo would run: pool = all 60,000 Fashion-MNIST train images, 1 label per class
(the paper's start), ``small_cnn``, 400 steps of 64 labeled + 128 pool images, then
``score_pool`` over the 60,000 images (probs, both heads' logits, features) and ``evaluate`` on
the 10,000 test images. The CE-only ablation is trained the same way for comparison.

Teacher: a synthetic nearest-centroid teacher on pixels (centroids of 100 images/class from train
rows 50,000-59,999, ``softmax(-d^2 / 8)``; ~68% accurate), the one tests/student use; speed does
not depend on it, the accuracies do. It is not a vision-language model.

    .venv/bin/python bench/bench_student.py            # full (~2-3 min on 2 cores)
    .venv/bin/python bench/bench_student.py --quick    # smoke test (< 1 min)

Writes bench/results/student.json (--quick: student-quick.json; or --out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from activekd.data.fashion_mnist import balanced_subset, load_fashion_mnist  # noqa: E402
from activekd.student import (  # noqa: E402
    StudentConfig,
    TrainEvent,
    build_student,
    evaluate,
    score_pool,
    train_round,
)

console = Console(width=120)


def centroid_teacher(x_fit: np.ndarray, y_fit: np.ndarray, tau: float = 8.0) -> Any:
    """``probs(images)`` of a nearest-centroid teacher fit on ``x_fit`` (100 images per class)."""
    rows = balanced_subset(y_fit, 100, seed=0)
    flat = x_fit[rows].reshape(len(rows), -1).astype(np.float32) / 255.0
    cents = np.stack([flat[y_fit[rows] == c].mean(axis=0) for c in range(10)]).astype(np.float32)
    c2 = (cents**2).sum(axis=1)

    def probs(images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), 10), np.float32)
        for lo in range(0, len(images), 8192):
            f = images[lo : lo + 8192].reshape(-1, 784).astype(np.float32) / 255.0
            z = -((f**2).sum(1)[:, None] - 2.0 * f @ cents.T + c2) / tau
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            out[lo : lo + 8192] = e / e.sum(axis=1, keepdims=True)
        return out

    return probs


def timed_round(
    cfg: StudentConfig,
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    t_pool: np.ndarray,
    rows: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    t_test: np.ndarray,
    score_rows: int,
    label: str,
    progress: Progress,
    device: str = "cpu",
) -> dict[str, Any]:
    task = progress.add_task(f"{label}: train", total=cfg.steps)

    def on_step(ev: TrainEvent) -> None:
        progress.update(task, completed=ev.step, description=f"{label}: train loss {ev.loss:.3f}")

    t0 = time.perf_counter()
    res = train_round(
        cfg, None, y_pool[rows], x_pool, t_pool, labeled_rows=rows, progress=on_step, device=device
    )
    t_train = time.perf_counter() - t0
    progress.update(task, description=f"{label}: score pool", total=score_rows, completed=0)
    t0 = time.perf_counter()
    scores = score_pool(
        res.model,
        x_pool[:score_rows],
        cfg.score_batch_size,
        progress=lambda d, n: progress.update(task, completed=d),
    )
    t_score = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate(res.model, x_test, y_test, t_test, batch_size=cfg.score_batch_size)
    t_eval = time.perf_counter() - t0
    progress.remove_task(task)
    assert np.isfinite(scores.probs).all()
    per_step = cfg.batch_size_labeled + (cfg.batch_size_unlabeled if cfg.kd else 0)
    return {
        "kd": cfg.kd,
        "steps": cfg.steps,
        "batch": [cfg.batch_size_labeled, cfg.batch_size_unlabeled if cfg.kd else 0],
        "train_seconds": t_train,
        "score_rows": score_rows,
        "score_seconds": t_score,
        "round_seconds": t_train + t_score,
        "eval_seconds": t_eval,
        "train_samples_per_s": cfg.steps * per_step / t_train,
        "score_samples_per_s": score_rows / t_score,
        "loss_first10": float(np.mean([h.loss for h in res.history[:10]])),
        "loss_last10": float(np.mean([h.loss for h in res.history[-10:]])),
        "test": ev,
    }


def cnn_throughput(x: np.ndarray, threads: int, quick: bool) -> dict[str, Any]:
    """small_cnn samples/s with ``threads`` torch threads: DHO train steps (64 + 128 images,
    through ``train_round``) and ``score_pool`` inference (auto batch: 128 on CPU)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        steps = 6 if quick else 30
        t = np.full((len(x), 10), 0.1, np.float32)
        cfg = StudentConfig(
            num_classes=10,
            steps=steps,
            batch_size_labeled=64,
            batch_size_unlabeled=128,
            log_every=1,
        )
        stamps: list[float] = []
        res = train_round(
            cfg,
            None,
            np.zeros(10, np.int64),
            x,
            t,
            labeled_rows=np.arange(10),
            progress=lambda e: stamps.append(e.elapsed_seconds),
            device="cpu",
        )
        # Steps after the first two (allocator and kernel warm-up) are timed.
        train_sps = (steps - 2) * 192 / (stamps[-1] - stamps[1])
        n = 2048 if quick else 10_240
        score_pool(res.model, x[:1024])
        t0 = time.perf_counter()
        score_pool(res.model, x[:n])
        infer_sps = n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(prev)
    return {"threads": threads, "train_samples_per_s": train_sps, "infer_samples_per_s": infer_sps}


def gpu_resnet18(quick: bool) -> dict[str, Any]:
    """ResNet-18 student (DHO heads) at 224 px, bf16 autocast, channels_last: samples/s."""
    if not torch.cuda.is_available():
        return {"available": False}
    dev = torch.device("cuda")
    cfg = StudentConfig(
        num_classes=10, backbone="resnet18", batch_size_labeled=64, batch_size_unlabeled=128
    )
    model = build_student(cfg).to(dev).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = cfg.batch_size_labeled + cfg.batch_size_unlabeled
    x = torch.rand(b, 3, 224, 224, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (b,), device=dev)
    steps, warm = (10, 3) if quick else (50, 10)
    for i in range(warm + steps):
        if i == warm:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
            assert out.kd_logits is not None
            uniform = torch.full_like(out.kd_logits, 0.1).float()
            kd = F.kl_div(
                F.log_softmax(out.kd_logits.float() / 2, -1), uniform, reduction="batchmean"
            )
            loss = F.cross_entropy(out.ce_logits.float(), y) + kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    train_sps = steps * b / (time.perf_counter() - t0)
    model.eval()
    xi = torch.rand(512, 3, 224, 224, device=dev).to(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(2):
            model(xi)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        reps = 3 if quick else 10
        for _ in range(reps):
            model(xi)
        torch.cuda.synchronize()
    infer_sps = reps * 512 / (time.perf_counter() - t0)
    return {
        "available": True,
        "name": torch.cuda.get_device_name(0),
        "batch_train": b,
        "train_samples_per_s": train_sps,
        "infer_samples_per_s": infer_sps,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="15 steps, score 5k rows, no CE-only ablation"
    )
    ap.add_argument("--steps", type=int, default=None, help="override training steps")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out_path = args.out or ROOT / "bench" / "results" / (
        "student-quick.json" if args.quick else "student.json"
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = os.getloadavg()

    x_tr, y_tr = load_fashion_mnist("train")
    x_te, y_te = load_fashion_mnist("test")
    teacher = centroid_teacher(x_tr[50_000:], y_tr[50_000:])
    t0 = time.perf_counter()
    t_pool, t_test = teacher(x_tr), teacher(x_te)
    teacher_seconds = time.perf_counter() - t0
    steps = args.steps or (15 if args.quick else 400)
    score_rows = 5_000 if args.quick else len(x_tr)
    rows = balanced_subset(y_tr, 1, seed=0)
    base = StudentConfig(
        num_classes=10,
        backbone="small_cnn",
        steps=steps,
        batch_size_labeled=64,
        batch_size_unlabeled=128,
        seed=0,
    )

    results: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        results["round_kd"] = timed_round(
            base, x_tr, y_tr, t_pool, rows, x_te, y_te, t_test, score_rows, "DHO round", progress
        )
        if not args.quick:
            results["round_ce_only"] = timed_round(
                base.replace(kd=False),
                x_tr,
                y_tr,
                t_pool,
                rows,
                x_te,
                y_te,
                t_test,
                score_rows,
                "CE-only round",
                progress,
            )
    results["small_cnn_by_threads"] = [
        cnn_throughput(x_tr, th, args.quick) for th in sorted({1, os.cpu_count() or 1})
    ]
    results["gpu_resnet18_224"] = gpu_resnet18(args.quick)

    teacher_acc = float((t_test.argmax(1) == y_te).mean())
    table = Table(
        title=f"student round on Fashion-MNIST (pool {len(x_tr):,}, 1 label/class), "
        f"{torch.get_num_threads()} CPU threads"
    )
    for col in (
        "run",
        "train s",
        "score s",
        "round s",
        "train samp/s",
        "score samp/s",
        "test acc",
        "ce head",
        "kd head",
        "loss first->last",
    ):
        table.add_column(col, justify="right")
    for name, r in results.items():
        if not name.startswith("round"):
            continue
        ev = r["test"]
        table.add_row(
            name,
            f"{r['train_seconds']:.1f}",
            f"{r['score_seconds']:.1f}",
            f"{r['round_seconds']:.1f}",
            f"{r['train_samples_per_s']:,.0f}",
            f"{r['score_samples_per_s']:,.0f}",
            f"{ev['accuracy']:.3f}",
            f"{ev['accuracy_ce']:.3f}",
            "-" if ev["accuracy_kd"] is None else f"{ev['accuracy_kd']:.3f}",
            f"{r['loss_first10']:.2f}->{r['loss_last10']:.3f}",
        )
    console.print(table)
    tt = Table(title="small_cnn samples/s (train: 64+128 per step; inference: auto batch)")
    for col in ("torch threads", "train samples/s", "inference samples/s"):
        tt.add_column(col, justify="right")
    for r in results["small_cnn_by_threads"]:
        tt.add_row(
            str(r["threads"]),
            f"{r['train_samples_per_s']:,.0f}",
            f"{r['infer_samples_per_s']:,.0f}",
        )
    console.print(tt)
    console.print(
        f"teacher (synthetic nearest-centroid) test accuracy: {teacher_acc:.3f}; "
        f"teacher probs for 70k images: {teacher_seconds:.1f} s"
    )
    g = results["gpu_resnet18_224"]
    if g["available"]:
        console.print(
            f"GPU {g['name']}: ResNet-18 DHO @224 px bf16: train "
            f"{g['train_samples_per_s']:,.0f} samples/s, inference "
            f"{g['infer_samples_per_s']:,.0f} samples/s"
        )
    else:
        console.print("ResNet-18 @224 px: no GPU")

    out = {
        "meta": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python", "bench/bench_student.py", *sys.argv[1:]]),
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "torch": torch.__version__,
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
            "total_seconds": time.perf_counter() - t_start,
        },
        "config": base.to_dict(),
        "teacher": {
            "kind": "synthetic nearest-centroid",
            "test_accuracy": teacher_acc,
            "seconds_70k": teacher_seconds,
        },
        **results,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    console.print(
        f"wrote {out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
