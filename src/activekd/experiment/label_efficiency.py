"""The label-efficiency benchmark: the paper's protocol on a dataset with its zero-shot teacher.

Datasets (``DATASETS``): ``fashion-mnist`` (the label-map teacher; CNN student on the images, or
an MLP student on the teacher's features for fast screening) and the text set of
``activekd.data.text`` (MiniLM teacher, MLP student on a pool-fitted text representation).

A curve is a :class:`RunSpec`, written ``strategy[:key=value,...]`` (``ce_only-<strategy>`` for
the CE-only student): ``probs=combined|ce|teacher`` and ``features=student|teacher`` say what the
strategy sees, ``adapt=clap`` turns on teacher adaptation, any other key is a strategy parameter
(``typiclust_pcoreset:switch_per_class=4``). Strategies that read features read the teacher's by
default when the teacher has features (``TEACHER_FEATURE_STRATEGIES``).

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

from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from activekd.devices import cuda_available
from activekd.errors import InvalidArgument
from activekd.experiment.loop import LoopConfig, run_active_learning
from activekd.selection.strategies import STRATEGY_INFO, probs_source

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
#: Strategies whose features default to the teacher's (label-free, exists before any label).
TEACHER_FEATURE_STRATEGIES = frozenset(n for n, i in STRATEGY_INFO.items() if i.teacher_features)
_OPTION_KEYS = {"probs": "selection_probs", "features": "selection_features",
                "adapt": "teacher_adaptation"}  # fmt: skip


@dataclass(frozen=True)
class RunSpec:
    """One curve: strategy, student kind and what the strategy sees (see the module doc)."""

    name: str
    strategy: str
    kd: bool = True
    selection_probs: str = "combined"
    selection_features: str = "student"
    teacher_adaptation: str = "none"
    params: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, spec: str, teacher_features: bool = True) -> RunSpec:
        """``"pcoreset:probs=ce"`` -> RunSpec (InvalidArgument naming the bad part)."""
        body = spec.strip()
        kd = not body.startswith("ce_only-")
        if not kd:
            body = body[len("ce_only-") :]
        strategy, _, rest = body.partition(":")
        opts: dict[str, str] = {
            "selection_features": "teacher"
            if strategy in TEACHER_FEATURE_STRATEGIES and teacher_features
            else "student",
            # the registry's probabilities (combined, or a named variant's teacher / ce)
            "selection_probs": probs_source(strategy),
        }
        params: list[tuple[str, float]] = []
        for part in filter(None, rest.split(",")):
            key, eq, value = part.partition("=")
            if not eq:
                raise InvalidArgument(f"config {spec!r}: {part!r} is not key=value")
            if key in _OPTION_KEYS:
                opts[_OPTION_KEYS[key]] = value
            else:
                try:
                    params.append((key, float(value)))
                except ValueError:
                    raise InvalidArgument(
                        f"config {spec!r}: strategy parameter {key} needs a number"
                    ) from None
        return cls(spec.strip(), strategy, kd, params=tuple(sorted(params)), **opts)

    def loop_config(self, grid: GridConfig, seed: int) -> LoopConfig:
        return LoopConfig(
            strategy=self.strategy,
            rounds=grid.rounds,
            budget=grid.budget,
            initial_per_class=grid.initial_per_class,
            seed=seed,
            student={**grid.student_settings(), "kd": self.kd},
            selection_probs=self.selection_probs,
            selection_features=self.selection_features,
            teacher_adaptation=self.teacher_adaptation,
            strategy_params=dict(self.params),
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
    #: more curves, as RunSpec strings (``"typiclust"``, ``"pcoreset:probs=ce"``, ...)
    extra_configs: list[str] = field(default_factory=list)
    dataset: str = "fashion-mnist"
    #: ``images`` (the dataset's own input: the CNN on Fashion-MNIST) or ``teacher_features``
    #: (an MLP student on the teacher's features: the fast screening protocol); text sets use
    #: ``text`` (their pool-fitted representation)
    student_input: str = "images"
    #: draw the pool from the first ``pool_rows`` train rows (0: the whole split), e.g. 20000
    #: where the teacher's features were extracted for those rows only
    pool_rows: int = 0

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
        """Folder name: everything that changes the curves (runs with other settings never mix).
        Fashion-MNIST with the CNN keeps the names of the earlier results."""
        st = self.student
        batch = f"{st.get('batch_size_labeled', 64)}+{st.get('batch_size_unlabeled', 128)}"
        prefix = ""
        if (self.dataset, self.student_input) != ("fashion-mnist", "images"):
            prefix = f"{self.dataset}-{self.student_input}-"
        if self.pool_rows:
            prefix += f"first{self.pool_rows}-"
        return (
            f"{prefix}pool{self.pool_size}-test{self.test_size}-r{self.rounds}-b{self.budget}"
            f"-k{self.initial_per_class}-steps{st.get('steps', 'd')}-batch{batch}"
        )

    def configs(self) -> list[RunSpec]:
        """Every curve: ``strategies`` (KD), ``ce_only_strategies``, then ``extra_configs``."""
        specs = list(self.strategies) + [f"ce_only-{s}" for s in self.ce_only_strategies]
        specs += self.extra_configs
        out: dict[str, RunSpec] = {}
        for spec in specs:
            run = RunSpec.parse(spec)
            out.setdefault(run.name, run)
        return list(out.values())

    def student_settings(self) -> dict[str, Any]:
        """``student`` plus what the student input implies (the MLP backbone for vectors)."""
        if self.student_input == "images":
            return dict(self.student)
        return {"backbone": "mlp", **self.student}


#: feature caches tried in order: the whole train split, then its first 10k rows
FASHION_FEATURES = (
    "fashion-mnist-label-map-224-features",
    "fashion-mnist-label-map-224-first10000-features",
)
FASHION_FEATURES_HINT = "scripts/build_teacher_cache.py --features (~35 min on 2 cores)"
STUDENT_INPUTS: tuple[str, ...] = ("images", "teacher_features", "text")


def _subset(n_have: int, n_want: int, rng: np.random.Generator, what: str) -> np.ndarray:
    if n_want > n_have:
        raise InvalidArgument(f"{what} size {n_want} > the {n_have} rows available")
    return (
        np.sort(rng.choice(n_have, n_want, replace=False)) if n_want < n_have else np.arange(n_have)
    )


def _needs_features(grid: GridConfig) -> bool:
    return grid.student_input == "teacher_features" or any(
        c.selection_features == "teacher" or c.teacher_adaptation != "none" for c in grid.configs()
    )


def load_data(grid: GridConfig, *, with_features: bool | None = None) -> dict[str, np.ndarray]:
    """Pool/test inputs, labels and teacher probabilities (subsets drawn with seed 12345), plus
    the teacher's features ``f_pool``/``f_test`` when a curve or the student needs them
    (``with_features`` None) or when asked."""
    if grid.student_input not in STUDENT_INPUTS:
        raise InvalidArgument(
            f"student_input {grid.student_input!r}: use one of {', '.join(STUDENT_INPUTS)}"
        )
    if grid.dataset != "fashion-mnist":
        return _load_text(grid)
    from activekd.teacher.cache import load_split_probs

    identity, probs = load_split_probs(grid.cache)
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    rng = np.random.default_rng(12345)
    # the cached rows are the first n of each split
    n_rows = min(grid.pool_rows, len(probs["train"])) if grid.pool_rows else len(probs["train"])
    pool = _subset(n_rows, grid.pool_size, rng, "pool")
    test = _subset(len(probs["test"]), grid.test_size, rng, "test")
    out = {
        "x_pool": np.ascontiguousarray(xtr[pool]),
        "y_pool": ytr[pool],
        "t_pool": probs["train"][pool],
        "x_test": np.ascontiguousarray(xte[test]),
        "y_test": yte[test],
        "t_test": probs["test"][test],
    }
    want = _needs_features(grid) if with_features is None else with_features
    if want or grid.student_input == "teacher_features":
        from activekd.data.feature_cache import feature_file, load_feature_file

        path = next(
            (feature_file(n) for n in FASHION_FEATURES if feature_file(n).is_file()),
            feature_file(FASHION_FEATURES[0]),
        )
        feats = load_feature_file(path, FASHION_FEATURES_HINT)
        n = len(feats["features"]["train"])
        if n < n_rows:
            raise InvalidArgument(
                f"the pool is drawn from {n_rows} train rows but {path.name} has features for "
                f"the first {n}: set pool_rows <= {n} or build the whole split"
            )
        fp = feats["identity"].get("fingerprint")
        if fp != identity.fingerprint:
            raise InvalidArgument(
                f"the feature cache was made by teacher {fp}, the probabilities by "
                f"{identity.fingerprint}: rebuild one of them"
            )
        out["f_pool"] = feats["features"]["train"][pool]
        out["f_test"] = feats["features"]["test"][test]
        if grid.student_input == "teacher_features":
            out["x_pool"], out["x_test"] = out["f_pool"], out["f_test"]
    return out


def _load_text(grid: GridConfig) -> dict[str, np.ndarray]:
    """A text set of ``activekd.data.text``: MiniLM teacher probabilities and features, the
    pool-fitted text representation as the student's input (``student_input='text'``)."""
    from activekd.data.text import load_text_cache

    cache = load_text_cache(grid.dataset)
    rng = np.random.default_rng(12345)
    n_rows = len(cache["train_labels"])
    pool = _subset(
        min(grid.pool_rows, n_rows) if grid.pool_rows else n_rows, grid.pool_size, rng, "pool"
    )
    test = _subset(len(cache["test_labels"]), grid.test_size, rng, "test")
    x_key = "student_x" if grid.student_input == "text" else "features"
    return {
        "x_pool": cache[f"train_{x_key}"][pool],
        "y_pool": cache["train_labels"][pool],
        "t_pool": cache["train_probs"][pool],
        "x_test": cache[f"test_{x_key}"][test],
        "y_test": cache["test_labels"][test],
        "t_test": cache["test_probs"][test],
        "f_pool": cache["train_features"][pool],
        "f_test": cache["test_features"][test],
        "prototypes": np.asarray(cache["prototypes"], np.float32),
        "logit_scale": np.asarray(cache["logit_scale"], np.float32),
    }


def make_adapter(data: dict[str, np.ndarray], seed: int) -> Any:
    """The teacher adapter of a run: from the teacher's own text head when it has one (MiniLM
    prompts), else a head first fitted to the zero-shot probabilities (the label-map teacher)."""
    from activekd.teacher.adapt import TeacherAdapter

    if "prototypes" in data:
        return TeacherAdapter(data["prototypes"], float(data["logit_scale"]), seed=seed)
    return TeacherAdapter.from_zero_shot(data["f_pool"], data["t_pool"], seed=seed)


def _run_one(
    grid: GridConfig,
    data: dict[str, np.ndarray],
    root: Path,
    job: tuple[RunSpec, int],
    progress: Any = None,
) -> Path:
    """Runs one (config, seed) and saves it atomically as JSON."""
    spec, seed = job
    name, strat, kd = spec.name, spec.strategy, spec.kd
    cfg = spec.loop_config(grid, seed)
    t0 = time.time()
    results = run_active_learning(
        cfg,
        data["x_pool"],
        data["y_pool"],
        data["t_pool"],
        data["x_test"],
        data["y_test"],
        data["t_test"],
        teacher_features_pool=data.get("f_pool"),
        teacher_features_test=data.get("f_test"),
        adapter=make_adapter(data, seed) if spec.teacher_adaptation != "none" else None,
        progress=progress,
    )
    path = root / _folder(name) / f"seed-{seed}.json"
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps(
            {
                "config": name,
                "strategy": strat,
                "kd": kd,
                "selection_probs": spec.selection_probs,
                "selection_features": spec.selection_features,
                "teacher_adaptation": spec.teacher_adaptation,
                "params": dict(spec.params),
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


def _folder(name: str) -> str:
    """A config's folder name (``:`` and ``,`` are awkward in paths)."""
    return name.replace(":", "@").replace(",", "+")


def _worker_run(root: str, job: tuple[RunSpec, int]) -> str:
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
        (spec, seed)
        for seed in grid.seeds
        for spec in grid.configs()
        if not (root / _folder(spec.name) / f"seed-{seed}.json").exists()
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
                bar.update(runs, description=f"{job[0].name} seed {job[1]}")
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


def devices_note(root: Path) -> str:
    """Which device ran how many of the runs under ``root``, and the seeds whose configs ran on
    more than one (their pairs compare across devices: float noise, no bias)."""
    count: dict[str, int] = {}
    per_seed: dict[int, set[str]] = {}
    for f in sorted(root.glob("*/seed-*.json")):
        run = json.loads(f.read_text())
        device = str(run.get("device", "unknown"))
        count[device] = count.get(device, 0) + 1
        per_seed.setdefault(int(run["seed"]), set()).add(device)
    if not count:
        return ""
    note = "\nRuns by device: " + ", ".join(f"{d} ({n})" for d, n in sorted(count.items())) + "."
    mixed = sorted(s for s, d in per_seed.items() if len(d) > 1)
    if mixed:
        note += (
            " Seeds whose configs ran on more than one device (paired across devices): "
            + ", ".join(map(str, mixed))
            + "."
        )
    return note + "\n"


def class_names(grid: GridConfig) -> list[str]:
    """The class names of the grid's dataset (for the per-class tables)."""
    if grid.dataset == "fashion-mnist":
        return list(FASHION_MNIST_CLASSES)
    from activekd.data.text import TEXT_DATASETS

    return list(TEXT_DATASETS[grid.dataset].class_names)


def teacher_label(grid: GridConfig) -> str:
    """How the summary names the zero-shot teacher's row."""
    if grid.dataset == "fashion-mnist":
        return "teacher (zero-shot, label map)"
    return "teacher (zero-shot, MiniLM prompts)"


def summarise(
    root: Path,
    teacher_accuracy: float | None = None,
    *,
    pool_labels: np.ndarray | None = None,
    teacher_name: str = "teacher (zero-shot, label map)",
    class_names: list[str] | None = None,
) -> str:
    """Writes results.csv, results.md and curves.png under ``root``; returns the markdown.

    Beyond the accuracy table: per-round paired differences to ``random``, the adapted teacher's
    accuracy per round (configs with teacher adaptation) and, given the pool's labels, the labels
    picked per class (mean over seeds)."""
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
            f"| {teacher_name} | — | "
            + " | ".join(f"{teacher_accuracy * 100:.1f}" for _ in range(n_rounds))
            + f" | {teacher_accuracy * 100:.2f} | — |"
        )
    md = (
        "Accuracy (%) on the test split vs number of labels; mean ± 95% CI over seeds.\n\n"
        + "\n".join(lines)
        + "\n"
        + _paired_rounds_table(runs, order, n_rounds, labeled)
        + _adaptation_table(runs, order, n_rounds, labeled)
        + _teacher_rounds_table(runs, order, n_rounds, labeled)
        + (_picks_table(runs, order, pool_labels, class_names) if pool_labels is not None else "")
        + devices_note(root)
    )
    (root / "results.md").write_text(md)
    _plot(root, runs, n_rounds, teacher_accuracy)
    return md


def _complete(
    runs: dict[str, dict[int, list[dict[str, Any]]]], name: str, n: int
) -> dict[int, Any]:
    return {s: r for s, r in runs.get(name, {}).items() if len(r) == n}


def _paired_rounds_table(
    runs: dict[str, dict[int, list[dict[str, Any]]]],
    order: list[str],
    n_rounds: int,
    labeled: list[dict[str, Any]],
) -> str:
    """Per-round paired difference to random (points, mean ± 95% CI over the shared seeds)."""
    base = _complete(runs, "random", n_rounds)
    rows = []
    for name in order:
        if name == "random":
            continue
        seeds = [s for s in _complete(runs, name, n_rounds) if s in base]
        if len(seeds) < 2:
            continue
        cells = []
        for i in range(n_rounds):
            d = [(runs[name][s][i]["accuracy"] - base[s][i]["accuracy"]) * 100 for s in seeds]
            m, h = _ci(d)
            cells.append(f"{m:+.1f} ± {h:.1f}")
        rows.append(f"| {name} | {len(seeds)} | " + " | ".join(cells) + " |")
    return _per_round_table(
        "Paired difference to random per round (points, mean ± 95% CI over shared seeds):",
        rows,
        labeled,
    )


def zero_shot_twin(name: str) -> str | None:
    """The config that differs from ``name`` only by distilling from the zero-shot teacher
    (``typiclust:adapt=clap`` -> ``typiclust``); None when ``name`` does not adapt."""
    body, _, rest = name.partition(":")
    parts = [p for p in rest.split(",") if p]
    kept = [p for p in parts if not p.startswith("adapt=")]
    if len(kept) == len(parts) or "adapt=none" in parts:
        return None
    return body + (":" + ",".join(kept) if kept else "")


def _adaptation_table(
    runs: dict[str, dict[int, list[dict[str, Any]]]],
    order: list[str],
    n_rounds: int,
    labeled: list[dict[str, Any]],
) -> str:
    """Each config with teacher adaptation against its zero-shot twin, paired by seed: the mean
    over rounds and the last round (points, mean ± 95% CI over the shared seeds)."""
    rows = []
    for name in order:
        twin = zero_shot_twin(name)
        if twin is None or twin not in runs:
            continue
        base = _complete(runs, twin, n_rounds)
        mine = _complete(runs, name, n_rounds)
        seeds = [s for s in mine if s in base]
        if len(seeds) < 2:
            continue
        over = [
            np.mean([x["accuracy"] - y["accuracy"] for x, y in zip(mine[s], base[s], strict=True)])
            * 100
            for s in seeds
        ]
        last = [(mine[s][-1]["accuracy"] - base[s][-1]["accuracy"]) * 100 for s in seeds]
        (om, oh), (lm, lh) = _ci(over), _ci(last)
        wins = sum(d > 0 for d in last)
        rows.append(
            f"| {name} − {twin} | {len(seeds)} | {om:+.2f} ± {oh:.2f} | {lm:+.2f} ± {lh:.2f} "
            f"| {wins}/{len(seeds)} |"
        )
    if not rows:
        return ""
    last_labels = labeled[-1]["labeled"]
    head = (
        f"| configs | seeds | mean over rounds | at {last_labels} labels "
        f"| seeds better at {last_labels} |"
    )
    return (
        "\nTeacher adaptation against the same strategy with the zero-shot teacher (points, paired"
        " by seed, mean ± 95% CI):\n\n" + "\n".join([head, "|---|---|---|---|---|", *rows]) + "\n"
    )


def _per_round_table(title: str, rows: list[str], labeled: list[dict[str, Any]]) -> str:
    """A markdown table of per-round ``rows`` (one column per round) under ``title``; "" if none."""
    if not rows:
        return ""
    head = "| config | seeds | " + " | ".join(str(r["labeled"]) for r in labeled) + " |"
    return f"\n{title}\n\n" + "\n".join([head, "|" + "---|" * (len(labeled) + 2), *rows]) + "\n"


def _teacher_rounds_table(
    runs: dict[str, dict[int, list[dict[str, Any]]]],
    order: list[str],
    n_rounds: int,
    labeled: list[dict[str, Any]],
) -> str:
    """The (adapted) teacher's test accuracy per round, for configs where it changes."""
    rows = []
    for name in order:
        seeds = _complete(runs, name, n_rounds)
        accs = [[x.get("teacher_accuracy") for x in r] for r in seeds.values()]
        if not accs or any(a is None for row in accs for a in row):
            continue
        arr = np.asarray(accs, dtype=float) * 100
        if np.allclose(arr, arr[:, :1]):
            continue  # a fixed (zero-shot) teacher
        cells = []
        for i in range(n_rounds):
            m, h = _ci(list(arr[:, i]))
            cells.append(f"{m:.1f}" + ("" if math.isnan(h) else f" ± {h:.1f}"))
        rows.append(f"| {name} | {len(seeds)} | " + " | ".join(cells) + " |")
    return _per_round_table("The adapted teacher's own test accuracy per round (%):", rows, labeled)


def _picks_table(
    runs: dict[str, dict[int, list[dict[str, Any]]]],
    order: list[str],
    pool_labels: np.ndarray,
    class_names: list[str] | None,
) -> str:
    """Labels picked per class after the initial ones (mean over seeds)."""
    c = int(pool_labels.max()) + 1
    names = class_names or [str(i) for i in range(c)]
    rows = []
    for name in order:
        per_seed = []
        for r in runs[name].values():
            picked = [i for x in r for i in x["selected"]]
            per_seed.append(
                np.bincount(pool_labels[np.asarray(picked, dtype=np.int64)], minlength=c)
            )
        if not per_seed:
            continue
        mean = np.mean(per_seed, axis=0)
        rows.append(
            f"| {name} (n={len(per_seed)}) | " + " | ".join(f"{v:.1f}" for v in mean) + " |"
        )
    head = "| config | " + " | ".join(names) + " |"
    return (
        "\nLabels picked per class after the initial ones (mean over seeds):\n\n"
        + "\n".join([head, "|" + "---|" * (c + 1), *rows])
        + "\n"
    )


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
    ax.set_title(f"ActiveKD label efficiency: {root.name}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(root / "curves.png")
    plt.close(fig)


def teacher_test_accuracy(grid: GridConfig) -> float:
    """The teacher's zero-shot top-1 on the benchmark's test subset."""
    data = load_data(grid, with_features=False)
    return float((data["t_test"].argmax(1) == data["y_test"]).mean())
