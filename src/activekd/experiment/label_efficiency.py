"""The label-efficiency benchmark: the paper's protocol on Fashion-MNIST with the label-map teacher.

Every (config, seed) run is saved as JSON as soon as it finishes and skipped when present, so
the grid can run in parts and resume. ``summarise`` turns the runs into a CSV, a markdown table
(mean +- 95% CI per round, mean over rounds, paired difference vs random) and a PNG plot.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from activekd.data.fashion_mnist import load_fashion_mnist
from activekd.devices import cuda_available
from activekd.errors import InvalidArgument
from activekd.experiment.loop import LoopConfig, run_active_learning

ALL_STRATEGIES = (
    "random",
    "entropy",
    "margin",
    "least_confidence",
    "coreset",
    "badge",
    "class_balanced",
    "pcoreset",
)
DEFAULT_CACHE = (
    Path(__file__).resolve().parents[1]
    / "data"
    / "teacher_cache"
    / "fashion-mnist-label-map-224.npz"
)


@dataclass
class GridConfig:
    """What to run: data sizes, protocol, student, configs and seeds."""

    pool_size: int = 60_000  # the whole train split
    test_size: int = 10_000
    rounds: int = 15
    budget: int = 10
    initial_per_class: int = 1
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    strategies: list[str] = field(default_factory=lambda: list(ALL_STRATEGIES))
    ce_only_strategies: list[str] = field(default_factory=lambda: ["random", "pcoreset"])
    student: dict[str, Any] = field(default_factory=lambda: {"steps": 300, "threads": 1})
    cache: str = str(DEFAULT_CACHE)

    @classmethod
    def quick(cls) -> GridConfig:
        """A small grid for CI and the demo (minutes, not hours)."""
        return cls(
            pool_size=5_000,
            test_size=2_000,
            rounds=4,
            seeds=[0, 1],
            strategies=["random", "pcoreset"],
            ce_only_strategies=["random"],
            student={"steps": 150, "threads": 1},
        )

    @property
    def tag(self) -> str:
        """Folder name: everything that changes the curves (runs with other settings never mix)."""
        st = self.student
        batch = f"{st.get('batch_size_labeled', 64)}+{st.get('batch_size_unlabeled', 128)}"
        return (
            f"pool{self.pool_size}-test{self.test_size}-r{self.rounds}-b{self.budget}"
            f"-k{self.initial_per_class}-steps{st.get('steps', 'd')}-batch{batch}"
        )

    def configs(self) -> list[tuple[str, str, bool]]:
        """(name, strategy, kd) for every curve."""
        out = [(s, s, True) for s in self.strategies]
        out += [(f"ce_only-{s}", s, False) for s in self.ce_only_strategies]
        return out


def load_data(grid: GridConfig) -> dict[str, np.ndarray]:
    """Pool/test images, labels and teacher probabilities (subsets drawn with seed 12345)."""
    from activekd.teacher.cache import load_split_probs

    _, probs = load_split_probs(grid.cache)
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    rng = np.random.default_rng(12345)
    n_cached = len(probs["train"])  # the cached rows are the first n_cached of the train split
    if grid.pool_size > n_cached:
        raise InvalidArgument(
            f"pool_size {grid.pool_size} > the {n_cached} train rows in {grid.cache}"
        )
    pool = (
        np.sort(rng.choice(n_cached, grid.pool_size, replace=False))
        if grid.pool_size < n_cached
        else np.arange(n_cached)
    )
    n_test = len(probs["test"])
    test = (
        np.sort(rng.choice(n_test, grid.test_size, replace=False))
        if grid.test_size < n_test
        else np.arange(n_test)
    )
    return {
        "x_pool": np.ascontiguousarray(xtr[pool]),
        "y_pool": ytr[pool],
        "t_pool": probs["train"][pool],
        "x_test": np.ascontiguousarray(xte[test]),
        "y_test": yte[test],
        "t_test": probs["test"][test],
    }


def _run_one(
    grid: GridConfig,
    data: dict[str, np.ndarray],
    root: Path,
    job: tuple[str, str, bool, int],
    progress: Any = None,
) -> Path:
    """Runs one (config, strategy, kd, seed) and saves it atomically as JSON."""
    name, strat, kd, seed = job
    cfg = LoopConfig(
        strategy=strat,
        rounds=grid.rounds,
        budget=grid.budget,
        initial_per_class=grid.initial_per_class,
        seed=seed,
        student={**grid.student, "kd": kd},
    )
    t0 = time.time()
    results = run_active_learning(
        cfg,
        data["x_pool"],
        data["y_pool"],
        data["t_pool"],
        data["x_test"],
        data["y_test"],
        data["t_test"],
        progress=progress,
    )
    path = root / name / f"seed-{seed}.json"
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps(
            {
                "config": name,
                "strategy": strat,
                "kd": kd,
                "seed": seed,
                "seconds": time.time() - t0,
                "device": _device_name(),
                "rounds": [r.to_dict() for r in results],
            }
        )
    )
    tmp.replace(path)
    return path


def _device_name() -> str:
    if not cuda_available():
        return "cpu"
    import torch

    return str(torch.cuda.get_device_name(0))


_WORKER: dict[str, Any] = {}


def _worker_init(grid: GridConfig, parent_pid: int) -> None:
    _WORKER["grid"] = grid
    _WORKER["parent"] = parent_pid
    _WORKER["data"] = load_data(grid)


def _exit_if_orphaned(_result: Any = None) -> None:
    """Called after every round: a worker whose grid process died (kill, Ctrl-C) stops its run
    instead of finishing it unsupervised."""
    if os.getppid() != _WORKER["parent"]:
        os._exit(3)


def _worker_run(root: str, job: tuple[str, str, bool, int]) -> str:
    grid, data = _WORKER["grid"], _WORKER["data"]
    return str(_run_one(grid, data, Path(root), job, progress=_exit_if_orphaned))


def run_grid(
    grid: GridConfig,
    out_dir: Path,
    *,
    max_runs: int | None = None,
    time_budget_s: float | None = None,
    workers: int = 1,
) -> list[Path]:
    """Runs every missing (config, seed); returns the files written. Shows rich progress.

    ``workers`` > 1 runs that many runs at once in spawned processes (each loads the data once);
    worth it on a many-core or GPU machine, where one run leaves most of the hardware idle.
    ``time_budget_s``: start no new run after this many seconds (runs in flight finish).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if workers < 1:
        raise InvalidArgument(f"workers must be >= 1, got {workers}")
    root = out_dir / grid.tag
    root.mkdir(parents=True, exist_ok=True)
    (root / "grid.json").write_text(json.dumps(grid.__dict__, indent=1))
    todo = [
        (name, strat, kd, seed)
        for seed in grid.seeds
        for name, strat, kd in grid.configs()
        if not (root / name / f"seed-{seed}.json").exists()
    ]
    if max_runs is not None:
        todo = todo[:max_runs]
    written: list[Path] = []
    if not todo:
        return written
    start = time.time()

    def out_of_time() -> bool:
        return time_budget_s is not None and time.time() - start > time_budget_s

    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())  # fmt: skip
    if workers == 1:
        data = load_data(grid)
        with Progress(*columns) as bar:
            runs = bar.add_task("runs", total=len(todo))
            rounds = bar.add_task("rounds", total=grid.rounds + 1)
            for job in todo:
                if out_of_time():
                    break
                bar.update(runs, description=f"{job[0]} seed {job[3]}")
                bar.reset(rounds)
                written.append(
                    _run_one(grid, data, root, job, progress=lambda _r: bar.advance(rounds))
                )
                bar.advance(runs)
        return written

    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    queue = list(todo)
    with (
        ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_worker_init, initargs=(grid, os.getpid())
        ) as pool,
        Progress(*columns) as bar,
    ):
        runs = bar.add_task(f"runs ({workers} workers)", total=len(todo))
        pending: set[Future[str]] = set()
        while queue or pending:
            while queue and len(pending) < workers and not out_of_time():
                pending.add(pool.submit(_worker_run, str(root), queue.pop(0)))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                written.append(Path(fut.result()))
                bar.advance(runs)
    return written


def _t975(df: int) -> float:
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:  # pragma: no cover - scipy comes with the bench extra
        return 1.96


def _ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan with one value)."""
    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        return float(arr.mean()), math.nan
    return float(arr.mean()), _t975(arr.size - 1) * float(arr.std(ddof=1)) / math.sqrt(arr.size)


def load_runs(root: Path) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """{config: {seed: rounds}} for every finished run under ``root``."""
    out: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for f in sorted(root.glob("*/seed-*.json")):
        run = json.loads(f.read_text())
        out.setdefault(run["config"], {})[int(run["seed"])] = run["rounds"]
    return out


def summarise(root: Path, teacher_accuracy: float | None = None) -> str:
    """Writes results.csv, results.md and curves.png under ``root``; returns the markdown."""
    runs = load_runs(root)
    with open(root / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["config", "seed", "round", "labeled", "accuracy", "accuracy_ce", "accuracy_kd"])
        for name, seeds in sorted(runs.items()):
            for seed, rounds in sorted(seeds.items()):
                for r in rounds:
                    w.writerow(
                        [
                            name,
                            seed,
                            r["round"],
                            r["labeled"],
                            r["accuracy"],
                            r["accuracy_ce"],
                            r["accuracy_kd"],
                        ]
                    )
    if not runs:
        return "no finished runs"
    n_rounds = max(len(r) for s in runs.values() for r in s.values())
    labeled = next(r for s in runs.values() for r in s.values() if len(r) == n_rounds)
    header = (
        "| config | seeds | "
        + " | ".join(str(r["labeled"]) for r in labeled)
        + " | mean over rounds | paired diff vs random |"
    )
    lines = [header, "|" + "---|" * (n_rounds + 4)]
    base = runs.get("random", {})
    order = sorted(runs, key=lambda n: (n.startswith("ce_only"), n))
    for name in order:
        seeds = {s: r for s, r in runs[name].items() if len(r) == n_rounds}
        if not seeds:
            continue
        cells = []
        for i in range(n_rounds):
            m, h = _ci([r[i]["accuracy"] * 100 for r in seeds.values()])
            cells.append(f"{m:.1f}" + ("" if math.isnan(h) else f" ± {h:.1f}"))
        m, h = _ci([np.mean([x["accuracy"] for x in r]) * 100 for r in seeds.values()])
        auc = f"{m:.2f}" + ("" if math.isnan(h) else f" ± {h:.2f}")
        paired = [
            np.mean([x["accuracy"] - y["accuracy"] for x, y in zip(r, base[s], strict=True)]) * 100
            for s, r in seeds.items()
            if s in base and len(base[s]) == n_rounds
        ]
        if name == "random" or not paired:
            diff = "—"
        else:
            dm, dh = _ci(paired)
            diff = f"{dm:+.2f}" + ("" if math.isnan(dh) else f" ± {dh:.2f}") + f" (n={len(paired)})"
        lines.append(f"| {name} | {len(seeds)} | " + " | ".join(cells) + f" | {auc} | {diff} |")
    if teacher_accuracy is not None:
        lines.append(
            "| teacher (zero-shot, label map) | — | "
            + " | ".join(f"{teacher_accuracy * 100:.1f}" for _ in range(n_rounds))
            + f" | {teacher_accuracy * 100:.2f} | — |"
        )
    md = (
        "Accuracy (%) on the test split vs number of labels; mean ± 95% CI over seeds.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    (root / "results.md").write_text(md)
    _plot(root, runs, n_rounds, teacher_accuracy)
    return md


def _plot(
    root: Path,
    runs: dict[str, dict[int, list[dict[str, Any]]]],
    n_rounds: int,
    teacher_accuracy: float | None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for name in sorted(runs):
        seeds = [r for r in runs[name].values() if len(r) == n_rounds]
        if not seeds:
            continue
        x = [r["labeled"] for r in seeds[0]]
        acc = np.array([[r["accuracy"] * 100 for r in s] for s in seeds])
        mean = acc.mean(0)
        style = "--" if name.startswith("ce_only") else "-"
        width = 2.5 if name == "pcoreset" else 1.4
        ax.plot(x, mean, style, lw=width, marker="o", ms=3, label=f"{name} (n={len(seeds)})")
        if len(seeds) > 1:
            half = np.array([_ci(list(acc[:, i]))[1] for i in range(acc.shape[1])])
            ax.fill_between(x, mean - half, mean + half, alpha=0.12)
    if teacher_accuracy is not None:
        ax.axhline(teacher_accuracy * 100, color="k", ls=":", lw=1, label="teacher zero-shot")
    ax.set_xlabel("labeled examples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("ActiveKD label efficiency, Fashion-MNIST, label-map teacher")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(root / "curves.png")
    plt.close(fig)


def teacher_test_accuracy(grid: GridConfig) -> float:
    """The teacher's zero-shot top-1 on the benchmark's test subset."""
    data = load_data(grid)
    return float((data["t_test"].argmax(1) == data["y_test"]).mean())
