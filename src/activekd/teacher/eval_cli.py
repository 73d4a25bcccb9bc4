"""``activekd teacher eval``: per-class and overall top-1 of a teacher on a dataset split.

The last line printed is exactly ``top1=0.xxx``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from activekd.errors import ActiveKDError, InvalidArgument

DATASETS = ("fashion-mnist",)


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``activekd teacher eval``."""
    p = argparse.ArgumentParser(
        prog="activekd teacher eval",
        description="Top-1 accuracy of a teacher (overall and per class) on a dataset split.",
    )
    p.add_argument("--teacher", default="label-map", help="label-map | open_clip | precomputed")
    p.add_argument("--model", default="", help="model (backend default when empty)")
    p.add_argument("--pretrained", default=None, help="open_clip tag, checkpoint path or 'random'")
    p.add_argument("--weights", default=None, help="label-map: classifier state-dict file")
    p.add_argument("--label-map", default="fashion-mnist", help="built-in name or JSON path")
    p.add_argument("--image-size", type=int, default=None, help="label-map input size (224)")
    p.add_argument("--no-invert", action="store_true", help="label-map: do not invert images")
    p.add_argument("--template", action="append", default=None, help="open_clip prompt template")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--probs", default=None, help="precomputed: (N, C) .npy for the whole split")
    p.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--limit", type=int, default=0, help="evaluate this many images (0 = all)")
    p.add_argument(
        "--sampling",
        default="balanced",
        choices=("balanced", "first"),
        help="with --limit: limit//classes per class (seeded) or the first rows",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="output cache (default $ACTIVEKD_CACHE_DIR)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    return p


def _rows(labels: np.ndarray, limit: int, sampling: str, seed: int) -> np.ndarray:
    from activekd.data.fashion_mnist import balanced_subset

    n = labels.shape[0]
    if limit < 0:
        raise InvalidArgument(f"--limit {limit} must be >= 0")
    if limit == 0 or limit >= n:
        return np.arange(n, dtype=np.int64)
    num_classes = int(np.unique(labels).size)
    if sampling == "balanced" and limit >= num_classes:
        return balanced_subset(labels, limit // num_classes, seed=seed)
    return np.arange(limit, dtype=np.int64)


def teacher_eval_main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0 ok, 2 bad input or missing data)."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    from rich.console import Console

    err = Console(stderr=True)
    try:
        return _run(args, err)
    except ActiveKDError as exc:
        err.print(f"[red]error[/red] ({exc.code}): {exc}")
        return 2


def _run(args: argparse.Namespace, err: object) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
    from rich.table import Table

    from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
    from activekd.teacher.cache import TeacherOutputCache
    from activekd.teacher.config import TeacherConfig, create_teacher
    from activekd.teacher.evaluate import evaluate_teacher

    assert isinstance(err, Console)
    images_all, labels_all = load_fashion_mnist(args.split)
    rows = _rows(labels_all, args.limit, args.sampling, args.seed)
    images, labels = images_all[rows], labels_all[rows]
    cfg = TeacherConfig(
        backend=args.teacher,
        model=args.model,
        pretrained=args.pretrained,
        weights=args.weights,
        label_map=args.label_map,
        class_names=FASHION_MNIST_CLASSES if args.teacher != "label-map" else None,
        templates=tuple(args.template) if args.template else None,
        image_size=args.image_size,
        invert=False if args.no_invert else None,
        temperature=args.temperature,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        probs=args.probs,
        images=images_all if args.probs else None,
        name=Path(args.probs).stem if args.probs else "precomputed",
    )
    with err.status("loading teacher"):
        teacher = create_teacher(cfg)
    err.print(escape(f"teacher: {teacher.identity.description} [{teacher.identity.fingerprint}]"))
    cache = None if args.no_cache else TeacherOutputCache(args.cache_dir)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{args.dataset}:{args.split}", total=len(rows))
        report = evaluate_teacher(
            teacher,
            images,
            labels,
            FASHION_MNIST_CLASSES,
            cache=cache,
            cache_key=(args.dataset, args.split, rows) if cache else None,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    out = Console(highlight=False)
    table = Table(title=f"{args.dataset} {args.split}: {report.num_images} images")
    table.add_column("class")
    table.add_column("n", justify="right")
    table.add_column("top1", justify="right")
    for name in report.class_names:
        acc = report.per_class_top1.get(name)
        table.add_row(name, str(report.per_class_count[name]), "-" if acc is None else f"{acc:.3f}")
    out.print(table)
    if report.cached:
        out.print("(outputs from the cache)")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    sys.stdout.flush()
    print(f"top1={report.top1:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(teacher_eval_main())
