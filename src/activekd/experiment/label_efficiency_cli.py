"""activekd bench label-efficiency (also bench/label_efficiency.py): the paper's label-efficiency
grid over strategies and seeds, resumable."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from activekd.experiment.label_efficiency import (
    GridConfig,
    class_names,
    load_data,
    run_grid,
    summarise,
    teacher_label,
)


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) the grid, then summarise it."""
    ap = argparse.ArgumentParser(prog="activekd bench label-efficiency", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small grid (minutes)")
    ap.add_argument("--out", default="bench/results/label_efficiency")
    ap.add_argument("--seeds", type=int, nargs="*", help="seeds to run (default 0..4, quick 0..1)")
    ap.add_argument("--strategies", nargs="*", help="KD strategies to run")
    ap.add_argument("--ce-only", nargs="*", help="strategies to run with the CE-only student")
    ap.add_argument(
        "--configs",
        nargs="*",
        help="more curves as strategy[:key=value,...], e.g. pcoreset:probs=ce typiclust "
        "random:adapt=clap (probs=combined|ce|teacher, features=student|teacher, adapt=clap, "
        "other keys: strategy parameters)",
    )
    ap.add_argument("--dataset", help="fashion-mnist (default) or a text set of activekd.data.text")
    ap.add_argument(
        "--student-input",
        choices=["images", "teacher_features", "text"],
        help="images (the CNN, default), teacher_features (MLP on the teacher's features: fast "
        "screening), text (MLP on the text set's pool-fitted representation)",
    )
    ap.add_argument("--pool-size", type=int)
    ap.add_argument("--test-size", type=int)
    ap.add_argument("--pool-rows", type=int, help="draw the pool from the first N train rows")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--steps", type=int, help="student training steps per round")
    ap.add_argument(
        "--batch", type=int, nargs=2, metavar=("LABELED", "UNLABELED"), help="student batch sizes"
    )
    ap.add_argument("--max-runs", type=int, help="stop after this many new runs")
    ap.add_argument("--time-budget", type=float, help="start no new run after this many seconds")
    ap.add_argument("--workers", type=int, default=1, help="runs at once (processes; GPU boxes)")
    ap.add_argument("--cache", help="teacher cache .npz (default: the shipped one)")
    ap.add_argument("--summarise-only", action="store_true")
    args = ap.parse_args(argv)
    grid = GridConfig.quick() if args.quick else GridConfig()
    if args.seeds is not None:
        grid.seeds = args.seeds
    if args.strategies is not None:
        grid.strategies = args.strategies
    if args.ce_only is not None:
        grid.ce_only_strategies = args.ce_only
    if args.configs is not None:
        grid.extra_configs = args.configs
    if args.dataset is not None:
        grid.dataset = args.dataset
        if args.student_input is None:
            grid.student_input = "text"
    if args.student_input is not None:
        grid.student_input = args.student_input
    if grid.dataset != "fashion-mnist":  # a text set: by default its whole train and test splits
        from activekd.data.text import load_text_cache

        cache = load_text_cache(grid.dataset)
        grid.pool_size, grid.test_size = len(cache["train_labels"]), len(cache["test_labels"])
    for name in ("pool_size", "test_size", "rounds", "pool_rows"):
        if getattr(args, name) is not None:
            setattr(grid, name, getattr(args, name))
    if args.steps is not None:
        grid.student = {**grid.student, "steps": args.steps}
    if args.batch is not None:
        grid.student = {
            **grid.student,
            "batch_size_labeled": args.batch[0],
            "batch_size_unlabeled": args.batch[1],
        }
    if args.cache is not None:
        grid.cache = args.cache
    out = Path(args.out)
    start = time.time()
    if not args.summarise_only:
        written = run_grid(
            grid, out, max_runs=args.max_runs, time_budget_s=args.time_budget, workers=args.workers
        )
        print(f"{len(written)} new run(s) in {time.time() - start:.0f} s")
    root = out / grid.tag
    data = load_data(grid, with_features=grid.student_input == "teacher_features")
    teacher = float((data["t_test"].argmax(1) == data["y_test"]).mean())
    md = summarise(
        root,
        teacher,
        pool_labels=data["y_pool"],
        teacher_name=teacher_label(grid),
        class_names=class_names(grid),
    )
    print(md)
    print(f"wrote {root}/results.csv, results.md, curves.png")
    (root / "summary.json").write_text(json.dumps({"teacher_accuracy": teacher}))
    return 0
