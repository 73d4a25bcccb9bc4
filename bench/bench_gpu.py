"""GPU vs CPU on one machine, side by side: what the CUDA paths buy and whether they agree.

    python bench/bench_gpu.py --out bench/results/gpu     # needs CUDA; ~3 minutes on an H100

Every ratio is measured in the same run on the same machine (its CPU cores against its GPU):

1. teacher: label-map EfficientNet-Lite0 on Fashion-MNIST at 224 px, images/s on CPU fp32, GPU
   fp32 (TF32 off) and GPU bf16 autocast; max |p_gpu - p_cpu| and top-1 agreement with the CPU.
2. open_clip ViT-B-32 (random weights: speed does not depend on them) bf16 images/s against
   the FLOP-bound limit of the card.
3. student: one ActiveKD round (small CNN, 300 steps of 64 labeled + 128 pool images, then score
   the pool) on CPU vs GPU; ResNet-18 at 224 px bf16 training and inference samples/s.
4. selection: PCoreSet k-center on 1M x 10 probabilities and coreset on 200k x 512 features,
   budget 100, torch on CUDA vs the CPU kernels (faiss / numpy); picks compared.

Writes ``gpu.json`` and ``gpu.md`` under ``--out``. Exits 2 without CUDA (nothing to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

console = Console(width=120)

# Dense bf16 tensor-core peaks (TFLOP/s) by device-name substring; --peak-tflops overrides.
GPU_PEAK_BF16 = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                 "A10": 125.0, "4090": 165.0, "3090": 71.0, "V100": 125.0, "T4": 65.0}  # fmt: skip


def flops_per_image(model: Any, forward: Any, size: int) -> float:
    """Model FLOPs for one image (torch's FlopCounterMode: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        forward(x)
    return float(counter.get_total_flops())


def vit_b32_bf16(peak_tflops: float, quick: bool) -> dict[str, Any]:
    """open_clip ViT-B-32 image tower, bf16, batch 256: images/s and the FLOP-bound limit."""
    import open_clip

    name = torch.cuda.get_device_name(0)
    peak = peak_tflops or next((v for k, v in GPU_PEAK_BF16.items() if k in name), 0.0)
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32")
    model.eval()
    flops = flops_per_image(model.visual, model.visual, 224)  # counted on CPU
    model = model.cuda().to(torch.bfloat16)
    batch = 256
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    iters = 10 if quick else 50
    with torch.inference_mode():
        for _ in range(3):
            model.encode_image(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            model.encode_image(x)
        torch.cuda.synchronize()
    ips = batch * iters / (time.perf_counter() - t0)
    bound = peak * 1e12 / flops if peak else 0.0
    return {"gpu": name, "images_per_s": ips, "gflops_per_image": flops / 1e9,
            "peak_tflops": peak, "flop_bound_images_per_s": bound}  # fmt: skip


def _timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def teacher_section(quick: bool) -> dict[str, Any]:
    from activekd.data.fashion_mnist import load_fashion_mnist
    from activekd.teacher import TeacherConfig, create_teacher

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    x, y = load_fashion_mnist("test")
    n_cpu, n_gpu = (256, 2048) if quick else (1024, 10_000)
    out: dict[str, Any] = {}
    ref = None
    for label, device, precision, n, batch in (
        ("cpu_fp32", "cpu", "fp32", n_cpu, 64),
        ("gpu_fp32", "cuda", "fp32", n_gpu, 512),
        ("gpu_bf16", "cuda", "bf16", n_gpu, 512),
    ):
        t = create_teacher(
            TeacherConfig(backend="label-map", device=device, precision=precision, batch_size=batch)
        )
        t.predict(x[:batch])  # warm-up (cuDNN autotune, allocator)
        res, secs = _timed(t.predict, x[:n])
        probs = res.probs
        row: dict[str, Any] = {"images": n, "images_per_s": n / secs,
                               "top1": float((probs.argmax(1) == y[:n]).mean())}  # fmt: skip
        if ref is None:
            ref = probs
        else:
            m = len(ref)
            row["max_abs_diff_vs_cpu"] = float(np.abs(probs[:m] - ref).max())
            row["top1_agreement_vs_cpu"] = float((probs[:m].argmax(1) == ref.argmax(1)).mean())
        out[label] = row
        console.print(f"teacher {label}: {row}")
        del t
    out["gpu_fp32_vs_cpu_speedup"] = (
        out["gpu_fp32"]["images_per_s"] / out["cpu_fp32"]["images_per_s"]
    )
    out["gpu_bf16_vs_cpu_speedup"] = (
        out["gpu_bf16"]["images_per_s"] / out["cpu_fp32"]["images_per_s"]
    )
    return out


def student_section(quick: bool) -> dict[str, Any]:
    from rich.progress import Progress

    from activekd.data.fashion_mnist import load_fashion_mnist
    from activekd.student import StudentConfig
    from bench.bench_student import gpu_resnet18, timed_round

    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    rng = np.random.default_rng(0)
    t_pool = rng.dirichlet(np.ones(10), len(xtr)).astype(np.float32)  # speed only
    t_test = rng.dirichlet(np.ones(10), len(xte)).astype(np.float32)
    rows = np.sort(rng.choice(len(xtr), 100, replace=False))
    steps = 60 if quick else 300
    out: dict[str, Any] = {}
    with Progress(console=console) as prog:
        for device in ("cpu", "cuda"):
            cfg = StudentConfig(num_classes=10, steps=steps, threads=0)
            out[f"round_{device}"] = timed_round(cfg, xtr, ytr, t_pool, rows, xte, yte, t_test,
                                                 len(xtr), f"round {device}", prog, device)  # fmt: skip
            console.print(
                f"AL round on {device}: train {out[f'round_{device}']['train_seconds']:.1f} s, "
                f"score 60k {out[f'round_{device}']['score_seconds']:.2f} s"
            )
    out["round_speedup"] = out["round_cpu"]["round_seconds"] / out["round_cuda"]["round_seconds"]
    out["resnet18_224_bf16"] = gpu_resnet18(quick)
    console.print(f"ResNet-18 224 bf16: {out['resnet18_224_bf16']}")
    return out


def selection_section(quick: bool) -> dict[str, Any]:
    from activekd.selection import select_batch

    rng = np.random.default_rng(0)
    n_p, n_f = (100_000, 20_000) if quick else (1_000_000, 200_000)
    centres = rng.dirichlet(np.full(10, 0.3), 50)
    probs = centres[rng.integers(0, 50, n_p)] + rng.dirichlet(np.ones(10), n_p) * 0.05
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    feats = rng.standard_normal((n_f, 512)).astype(np.float32)
    out: dict[str, Any] = {}
    for name, strategy, kw in (
        ("pcoreset", "pcoreset", {"probs": probs, "labeled": np.arange(10)}),
        ("coreset", "coreset", {"features": feats, "labeled": np.arange(10)}),
    ):
        row: dict[str, Any] = {"rows": len(kw.get("probs", kw.get("features"))), "budget": 100}
        picks = {}
        for label, device, backend in (
            ("cpu_auto", "cpu", "auto"),
            ("cpu_numpy", "cpu", "numpy"),
            ("cuda_torch", "cuda", "torch"),
        ):
            if label == "cuda_torch":  # warm-up: CUDA context and kernels
                select_batch(strategy, 5, device=device, backend=backend, **kw)
            res, secs = _timed(select_batch, strategy, 100, device=device, backend=backend, **kw)
            picks[label] = [int(i) for i in res.indices]
            row[label] = {"seconds": secs, "backend": res.backend}
        row["speedup_vs_cpu_auto"] = row["cpu_auto"]["seconds"] / row["cuda_torch"]["seconds"]
        row["same_picks_as_numpy"] = picks["cuda_torch"] == picks["cpu_numpy"]
        row["common_prefix_vs_numpy"] = next(
            (i for i, (a, b) in enumerate(zip(picks["cuda_torch"], picks["cpu_numpy"], strict=True))
             if a != b), 100)  # fmt: skip
        out[name] = row
        console.print(f"selection {name}: {row}")
    return out


def markdown(r: dict[str, Any]) -> str:
    t, s, sel, v = r["teacher"], r["student"], r["selection"], r["vit_b32"]
    lines = [
        f"Device: {r['meta']['gpu']} vs its own {r['meta']['cpu_count']} CPU cores; torch "
        f"{r['meta']['torch']}; {r['meta']['date']}; total {r['meta']['seconds']:.0f} s.",
        "",
        "| what | CPU | GPU | GPU / CPU | agreement |",
        "|---|---|---|---|---|",
        f"| label-map teacher, images/s (fp32) | {t['cpu_fp32']['images_per_s']:,.0f} | "
        f"{t['gpu_fp32']['images_per_s']:,.0f} | {t['gpu_fp32_vs_cpu_speedup']:.1f}x | "
        f"max abs diff {t['gpu_fp32']['max_abs_diff_vs_cpu']:.1e}, top-1 agree "
        f"{100 * t['gpu_fp32']['top1_agreement_vs_cpu']:.2f} % |",
        f"| label-map teacher, images/s (GPU bf16) | {t['cpu_fp32']['images_per_s']:,.0f} | "
        f"{t['gpu_bf16']['images_per_s']:,.0f} | {t['gpu_bf16_vs_cpu_speedup']:.1f}x | "
        f"max abs diff {t['gpu_bf16']['max_abs_diff_vs_cpu']:.1e}, top-1 agree "
        f"{100 * t['gpu_bf16']['top1_agreement_vs_cpu']:.2f} % |",
        f"| AL round: small CNN 300 steps + score 60k, s | {s['round_cpu']['round_seconds']:.1f} | "
        f"{s['round_cuda']['round_seconds']:.1f} | {s['round_speedup']:.1f}x | test acc "
        f"{100 * s['round_cpu']['test']['accuracy']:.1f} vs "
        f"{100 * s['round_cuda']['test']['accuracy']:.1f} % |",
    ]
    for name in ("pcoreset", "coreset"):
        x = sel[name]
        lines.append(
            f"| {name} k-center {x['rows']:,} rows, budget {x['budget']}, s | "
            f"{x['cpu_auto']['seconds']:.2f} ({x['cpu_auto']['backend']}) | "
            f"{x['cuda_torch']['seconds']:.2f} | {x['speedup_vs_cpu_auto']:.1f}x | "
            f"same picks as numpy: {x['same_picks_as_numpy']} "
            f"(first {x['common_prefix_vs_numpy']} equal) |"
        )
    rn = s["resnet18_224_bf16"]
    lines += [
        "",
        f"ResNet-18 student at 224 px, bf16 autocast, channels_last: "
        f"{rn['train_samples_per_s']:,.0f} training samples/s (batch {rn['batch_train']}), "
        f"{rn['infer_samples_per_s']:,.0f} inference samples/s.",
        f"open_clip ViT-B-32 bf16, batch 256: {v['images_per_s']:,.0f} images/s = "
        f"{100 * v['images_per_s'] / v['flop_bound_images_per_s']:.0f} % of the FLOP-bound "
        f"{v['flop_bound_images_per_s']:,.0f} images/s ({v['gflops_per_image']:.1f} GFLOP/image "
        f"at {v['peak_tflops']:g} TFLOP/s dense bf16).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (~1 minute)")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="GPU bf16 dense peak")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu")
    names = ["teacher", "vit_b32", "student", "selection"]
    ap.add_argument("--sections", nargs="*", choices=names, default=names)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        console.print("no CUDA device (torch.cuda.is_available() is False): nothing to compare")
        return 2
    t0 = time.time()
    r: dict[str, Any] = {
        "meta": {
            "gpu": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
            "quick": args.quick,
        }
    }
    runners = {
        "teacher": lambda: teacher_section(args.quick),
        "vit_b32": lambda: vit_b32_bf16(args.peak_tflops, args.quick),
        "student": lambda: student_section(args.quick),
        "selection": lambda: selection_section(args.quick),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for key, fn in runners.items():
        if key not in args.sections:
            continue
        console.rule(key)
        try:
            r[key] = fn()
        except Exception as exc:  # report the section's failure, keep the others
            console.print_exception()
            r[key] = {"error": f"{type(exc).__name__}: {exc}"}
        (args.out / "gpu.json").write_text(json.dumps(r, indent=1, default=str))
    r["meta"]["seconds"] = time.time() - t0
    (args.out / "gpu.json").write_text(json.dumps(r, indent=1, default=str))
    failed = [k for k, v in r.items() if isinstance(v, dict) and "error" in v]
    if not failed and set(args.sections) == set(names):
        md = markdown(r)
        (args.out / "gpu.md").write_text(md)
        console.print(md)
    console.print(f"wrote {args.out}/gpu.json" + (f"; FAILED sections: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
