#!/usr/bin/env python
"""Precompute the label-map teacher's Fashion-MNIST probabilities into one ``.npz``.

The label-map teacher is EfficientNet-Lite0 (an ImageNet-1k classifier) with a label map from
Fashion-MNIST classes to ImageNet classes: not a vision-language model. Output (default
``src/activekd/data/teacher_cache/fashion-mnist-label-map-<size>.npz``):

- ``<split>_probs``: float16 (N, 10) probabilities, rows in dataset order
- ``identity``: the teacher identity JSON (fingerprint included), ``meta``: JSON (sizes, top1)

Resumable: chunks are written under ``--work-dir`` as they finish (a
:class:`~activekd.teacher.DirectoryChunkSink`); rerunning the same command skips finished chunks.
The whole 70k images take ~35 CPU-minutes at 224 px on 2 cores.

With ``--features`` the same pass also keeps the teacher's 1280-d pooled features
(``<split>_features``, float16) and writes to this machine's feature cache instead
(``activekd.data.feature_cache``: ``$ACTIVEKD_CACHE_DIR``, else ``~/.cache/activekd``), as
``fashion-mnist-label-map-<size>-features.npz`` (~180 MB, too large for git). The typiclust /
probcover strategies and teacher adaptation read it.

    .venv/bin/python scripts/build_teacher_cache.py --limit 256        # quick check
    .venv/bin/python scripts/build_teacher_cache.py                    # train + test, all rows
    .venv/bin/python scripts/build_teacher_cache.py --features         # + features, ~35 min
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "src" / "activekd" / "data" / "teacher_cache"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    p.add_argument("--limit", type=int, default=0, help="first N rows of each split (0 = all)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--chunk-size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="fp32 (default) keeps a GPU-built cache within float16 rounding of CPU inference",
    )
    p.add_argument(
        "--features",
        action="store_true",
        help="also keep the pooled features; output goes to the per-machine feature cache",
    )
    p.add_argument("--out", type=Path, default=None, help="output .npz (default: see above)")
    p.add_argument("--work-dir", type=Path, default=None, help="resumable chunks (<out>.parts)")
    p.add_argument("--keep-parts", action="store_true", help="keep the chunk folder afterwards")
    return p.parse_args(argv)


def _show_progress(bar: Any, task: Any, split: str, seen: list[Any]) -> Callable[[Any], None]:
    """A ``score_pool`` progress callback: remembers each step and moves the bar."""

    def show(p: Any) -> None:
        seen.append(p)
        bar.update(task, completed=p.done, description=f"{split} (resumed {p.chunks_resumed})")

    return show


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from activekd.data.fashion_mnist import load_fashion_mnist
    from activekd.errors import ActiveKDError
    from activekd.teacher import (
        DirectoryChunkSink,
        ScoreProgress,
        TeacherConfig,
        create_teacher,
        evaluate_probs,
        score_pool,
    )

    # TF32 (on by default for cuDNN convolutions) trades fp32 accuracy for speed; with it off an
    # H100 build matched CPU inference within 2.5e-6 (docs/benchmarks.md, GPU)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    console = Console(stderr=True)
    from activekd.data.feature_cache import feature_cache_dir

    suffix = f"-first{args.limit}" if args.limit else ""
    if args.features:
        suffix += "-features"
    folder = feature_cache_dir() if args.features else DEFAULT_DIR
    out = args.out or folder / f"fashion-mnist-label-map-{args.image_size}{suffix}.npz"
    work = args.work_dir or out.with_suffix(".parts")
    try:
        teacher = create_teacher(
            TeacherConfig(
                backend="label-map",
                image_size=args.image_size,
                batch_size=args.batch_size,
                device=args.device,
                precision=args.precision,
            )
        )
    except ActiveKDError as exc:
        console.print(f"[red]error[/red]: {escape(str(exc))}")
        return 2
    ident = teacher.identity
    console.print(escape(f"teacher: {ident.description} [{ident.fingerprint}]"))

    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, object] = {
        "image_size": args.image_size,
        "features": bool(args.features),
        "limit": args.limit,
        "device": teacher.device,
        "dtype": teacher.dtype,
        "splits": {},
    }
    for split in args.splits:
        images, labels = load_fashion_mnist(split)
        total = min(args.limit, len(images)) if args.limit else len(images)
        sink = DirectoryChunkSink(
            work / split,
            ident,
            total,
            args.chunk_size,
            store_features=args.features,
            probs_dtype="float16",
        )
        t0 = time.perf_counter()
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(f"{split}", total=total)
            seen: list[ScoreProgress] = []
            scored = score_pool(
                teacher, images, total=total, chunk_size=args.chunk_size, sink=sink,
                progress=_show_progress(bar, task, split, seen),
            )  # fmt: skip
        probs = scored.probs
        resumed = seen[-1].chunks_resumed if seen else 0
        report = evaluate_probs(probs, labels[:total], ident.class_names)
        arrays[f"{split}_probs"] = probs.astype(np.float16)
        if args.features:
            arrays[f"{split}_features"] = scored.features.astype(np.float16)
        meta["splits"][split] = {  # type: ignore[index]
            "rows": total,
            "top1": round(report.top1, 4),
            "chunks_resumed": resumed,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        console.print(f"{split}: {total} rows, top1={report.top1:.3f}, resumed {resumed} chunks")

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        payload: dict[str, Any] = {
            "identity": np.array(ident.to_json()),
            "meta": np.array(json.dumps(meta, sort_keys=True)),
            **arrays,
        }
        np.savez_compressed(tmp, **payload)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if not args.keep_parts:
        for split in args.splits:
            for f in (work / split).glob("*"):
                f.unlink()
            (work / split).rmdir()
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()
    print(f"wrote {out} ({out.stat().st_size / 1e3:.1f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
