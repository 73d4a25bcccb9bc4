#!/usr/bin/env python
"""Train the tiny CLIP (``tiny-clip-32``) on Fashion-MNIST captions and save it as a test fixture.

The model is built by open_clip's own factory from ``src/activekd/teacher/model_configs/
tiny-clip-32.json`` and trained with open_clip's ``ClipLoss`` on 3,000 training images (300 per
class) paired with captions ``template.format(class name)``. Token-embedding rows no prompt uses
are zeroed first (prompts give identical outputs) so the compressed fixture stays under 2 MB.

    .venv/bin/python scripts/make_tiny_clip_fixture.py            # writes the fixture
    .venv/bin/python scripts/make_tiny_clip_fixture.py --out x.npz

tests/teacher/conftest.py imports :func:`train_tiny_clip` from here and re-trains when the
fixture file is missing. About 30 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "teacher" / "tiny_clip_fmnist.npz"
MODEL = "tiny-clip-32"
RECIPE: dict[str, Any] = {
    "model": MODEL,
    "train_per_class": 300,
    "train_seed": 0,
    "steps": 400,
    "batch_size": 128,
    "lr": 2e-3,
    "seed": 0,
}


def train_tiny_clip(recipe: dict[str, Any] | None = None, progress: bool = False) -> Any:
    """Build ``tiny-clip-32`` through ``open_clip.create_model_and_transforms`` and train it.

    Returns ``(model, meta)``; ``meta`` records the recipe, templates, classes and loss.
    """
    import open_clip

    from activekd.data.fashion_mnist import (
        FASHION_MNIST_CLASSES,
        balanced_subset,
        load_fashion_mnist,
    )
    from activekd.data.templates import FASHION_MNIST_TEMPLATES
    from activekd.teacher import register_model_configs
    from activekd.teacher.clip_train import (
        train_clip_contrastive,
        used_token_ids,
        zero_unused_token_rows,
    )

    register_model_configs()  # tiny-clip-32
    r = dict(RECIPE, **(recipe or {}))
    torch.manual_seed(r["seed"])
    model, _, _ = open_clip.create_model_and_transforms(r["model"])
    tokenizer = open_clip.get_tokenizer(r["model"])
    prompts = [t.format(c) for c in FASHION_MNIST_CLASSES for t in FASHION_MNIST_TEMPLATES]
    zero_unused_token_rows(model, used_token_ids(tokenizer, prompts))
    images, labels = load_fashion_mnist("train")
    rows = balanced_subset(labels, r["train_per_class"], seed=r["train_seed"])

    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress()
        bar.start()
        task = bar.add_task("training tiny CLIP", total=r["steps"])

    def report(step: int, loss: float) -> None:
        if bar is not None:
            bar.update(task, completed=step, description=f"training tiny CLIP loss={loss:.3f}")

    t0 = time.perf_counter()
    try:
        losses = train_clip_contrastive(
            model,
            tokenizer,
            images[rows],
            labels[rows],
            FASHION_MNIST_CLASSES,
            FASHION_MNIST_TEMPLATES,
            steps=r["steps"],
            batch_size=r["batch_size"],
            lr=r["lr"],
            seed=r["seed"],
            progress=report,
        )
    finally:
        if bar is not None:
            bar.stop()
    meta = {
        "recipe": r,
        "class_names": list(FASHION_MNIST_CLASSES),
        "templates": list(FASHION_MNIST_TEMPLATES),
        "train_rows": "balanced_subset(train labels, train_per_class, seed=train_seed)",
        "first_loss": losses[0],
        "last_loss": float(np.mean(losses[-20:])),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return model, meta


def main() -> int:
    """Train and write the fixture, then report its size and held-out zero-shot accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURE)
    parser.add_argument("--steps", type=int, default=RECIPE["steps"])
    args = parser.parse_args()

    from activekd.data.fashion_mnist import balanced_subset, load_fashion_mnist
    from activekd.teacher.clip_train import save_checkpoint, save_state_npz
    from activekd.teacher.evaluate import evaluate_teacher
    from activekd.teacher.open_clip_teacher import OpenClipTeacher

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, meta = train_tiny_clip({"steps": args.steps}, progress=True)
    save_state_npz(model, args.out, meta)
    ckpt = args.out.with_suffix(".pt.tmp")
    save_checkpoint(model, ckpt)
    try:
        teacher = OpenClipTeacher.load(
            MODEL,
            str(ckpt),
            class_names=meta["class_names"],
            templates=meta["templates"],
            device="cpu",
        )
    finally:
        ckpt.unlink()
    x, y = load_fashion_mnist("test")
    rows = balanced_subset(y, 100, seed=1)
    report = evaluate_teacher(teacher, x[rows], y[rows])
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) in {meta['train_seconds']} s training")
    print(f"held-out zero-shot top1 on 1000 balanced test images: {report.top1:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
