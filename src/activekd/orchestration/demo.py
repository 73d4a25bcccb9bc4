"""``activekd demo``: the embedded default experiment end to end over the real services.

Starts Redis and the four services as local processes, registers a Fashion-MNIST pool and test
split (through UploadPool, see :mod:`activekd.orchestration.fashion_pools`), uses the shipped
teacher cache (EfficientNet-Lite0 ImageNet classifier with a label map: not a vision-language
model) after checking a random sample of cached rows against live teacher inference, then drives
three experiments (the default strategy with KD, random with KD, random with the CE-only student)
round by round through ExperimentService and prints the label-efficiency table and a PNG plot.
The default (``activekd.defaults.DEFAULT_STRATEGY``, typiclust) selects on the teacher's features,
which the shipped cache does not hold: the teacher service scores the pool live (the demo's
store is a temporary folder, so every run does), and all three experiments distil from that
live-scored pool.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from activekd.client import ExperimentClient, ExperimentStatus, SelectionClient, TeacherClient
from activekd.defaults import DEFAULT_STRATEGY
from activekd.orchestration.fashion_pools import (
    CACHE,
    DRIFT_ATOL,
    FashionMnistPools,
    PoolIds,
    find_cache,
)
from activekd.orchestration.local_services import LocalServices
from activekd.selection.strategies import STRATEGY_INFO
from activekd.state.experiment_spec import ExperimentSpec
from activekd.state.round_records import RoundState

DESCRIPTION = """\
End-to-end demo over the real services, on this machine.

Starts Redis and the selection, teacher, trainer and experiment services as local processes,
uploads a Fashion-MNIST pool and test split with the shipped teacher cache (EfficientNet-Lite0
label-map teacher, checked against live inference on a random sample), then runs three
experiments round by round: the default strategy (typiclust on the teacher's features, scored
live) with KD, random with KD, and random with the CE-only student. Prints the label-efficiency table and writes a PNG plot and a JSON file to --out.
Needs the 'all' extra, redis-server and the Debian dataset-fashion-mnist package (make setup).
"""


@dataclass
class DemoConfig:
    pool_size: int = 5_000
    test_size: int = 2_000
    rounds: int = 5
    budget: int = 10
    steps: int = 150
    batch_labeled: int = 32
    batch_unlabeled: int = 64
    seed: int = 0
    drift_sample: int = 16
    out: Path = Path("demo-output")


def _curves(experiments: dict[str, ExperimentStatus]) -> dict[str, list[tuple[int, float]]]:
    return {
        name: [(summary.labeled_count, summary.accuracy) for summary in experiment.rounds]
        for name, experiment in experiments.items()
    }


def _plot(curves: dict[str, list[tuple[int, float]]], teacher_acc: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, pts in curves.items():
        ax.plot(
            [p[0] for p in pts],
            [p[1] * 100 for p in pts],
            "--" if "ce_only" in name else "-",
            marker="o",
            label=name,
            lw=2.5 if name == DEFAULT_STRATEGY else 1.5,
        )
    ax.axhline(teacher_acc * 100, color="k", ls=":", label="teacher zero-shot (label map)")
    ax.set_xlabel("labeled examples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("activekd demo: Fashion-MNIST, small CNN student")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _progress(console: Console) -> Progress:
    """The demo's progress bars: description, bar, done/total, elapsed."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _score_live(teacher: TeacherClient, pool_id: str, cfg: DemoConfig, console: Console) -> str:
    """The teacher service scores the demo pool (probs and features) into its own pool; returns
    the scored pool's id."""
    dataset = f"fashion-mnist-demo-seed{cfg.seed}-pool{cfg.pool_size}"
    last = None
    with _progress(console) as bar:
        task = bar.add_task("teacher features of the pool (live)", total=cfg.pool_size)
        for last in teacher.score_pool(pool_id=pool_id, dataset=dataset, timeout=3600):
            bar.update(task, completed=last.done, total=last.total or cfg.pool_size)
    if last is None or last.pool is None:
        raise RuntimeError(f"teacher ScorePool of {pool_id!r} returned no pool")
    return last.pool.pool_id


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict[str, list[tuple[int, float]]]:
    """Run the demo; returns {experiment: [(labels, accuracy), ...]}."""
    console = console or Console()
    t_start = time.time()
    data = FashionMnistPools(cfg.pool_size, cfg.test_size, cfg.seed)
    console.print(
        f"[bold]activekd demo[/bold]: pool {cfg.pool_size} Fashion-MNIST train images, "
        f"test {cfg.test_size}, {cfg.rounds} rounds of {cfg.budget} labels, teacher cache "
        f"{data.cache.name} ({data.identity.description})"
    )
    cfg.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="activekd-demo-") as tmp,
        LocalServices(
            Path(tmp),
            env={
                "ACTIVEKD_LOG_LEVEL": "WARNING",
                "ACTIVEKD_THREADS": "1",
                "ACTIVEKD_TEACHER_BACKEND": "label-map",
            },
        ) as stack,
    ):
        with console.status("starting redis-server and the four services...") as status:
            stack.start(on_start=lambda name: status.update(f"starting the {name} service..."))
        console.print(
            f"services up in {time.time() - t_start:.0f} s: "
            + ", ".join(f"{name}={svc.target}" for name, svc in stack.services.items())
        )
        creds = stack.credentials("admin")  # the stack's own token, whatever the environment says
        sel = SelectionClient(stack.target("selection"), timeout=600, credentials=creds)
        teacher = TeacherClient(stack.target("teacher"), timeout=600, credentials=creds)
        exps = ExperimentClient(stack.target("experiment"), timeout=3600, credentials=creds)

        worst = data.check_teacher(teacher, cfg.drift_sample)
        console.print(
            f"cache check: {cfg.drift_sample} random rows match live teacher inference "
            f"(max abs diff {worst:.1e})"
        )
        ids = data.upload(sel, PoolIds.with_prefix("demo"))
        teacher_acc = data.teacher_accuracy
        teacher_pool = ids.teacher_pool
        if STRATEGY_INFO[DEFAULT_STRATEGY].teacher_features:
            teacher_pool = _score_live(teacher, ids.pool, cfg, console)

        runs = {
            DEFAULT_STRATEGY: (DEFAULT_STRATEGY, True),
            "random": ("random", True),
            "ce_only-random": ("random", False),
        }
        created: dict[str, str] = {}
        for name, (strategy, kd) in runs.items():
            spec = ExperimentSpec(
                pool_id=ids.pool,
                test_pool_id=ids.test,
                dataset=data.dataset,
                class_names=list(data.class_names),
                teacher_config={"pool_id": teacher_pool, "test_pool_id": ids.teacher_test},
                student_config={
                    "steps": cfg.steps,
                    "kd": kd,
                    "batch_size_labeled": cfg.batch_labeled,
                    "batch_size_unlabeled": cfg.batch_unlabeled,
                },
                strategy=strategy,
                initial_per_class=1,
                budget_per_round=cfg.budget,
                num_rounds=cfg.rounds,
                seed=cfg.seed,
                simulated_oracle=True,
            )
            created[name] = exps.create(
                spec, experiment_id=f"demo-{name}-{int(time.time())}"
            ).experiment_id

        steps_per_exp = 7 * cfg.rounds + 3
        final: dict[str, ExperimentStatus] = {}
        with _progress(console) as bar:
            tasks = {n: bar.add_task(n, total=steps_per_exp) for n in created}
            active = dict(created)
            while active:  # interleave the experiments round by round
                for name, exp_id in list(active.items()):
                    experiment = exps.advance(exp_id).experiment
                    bar.update(
                        tasks[name],
                        advance=1,
                        description=f"{name}: round {experiment.current_round} "
                        f"{experiment.state.name}",
                    )
                    if experiment.state is RoundState.FINISHED:
                        final[name] = experiment
                        del active[name]
        curves = _curves(final)
        table = Table(title="Label efficiency (test accuracy %, Fashion-MNIST)")
        table.add_column("labels")
        for name in curves:
            table.add_column(name)
        table.add_column("teacher zero-shot")
        for i, (labels, _) in enumerate(curves[DEFAULT_STRATEGY]):
            table.add_row(
                str(labels),
                *[f"{curves[n][i][1] * 100:.1f}" for n in curves],
                f"{teacher_acc * 100:.1f}",
            )
        console.print(table)
        _plot(curves, teacher_acc, cfg.out / "label_efficiency.png")
        (cfg.out / "label_efficiency.json").write_text(
            json.dumps(
                {
                    "curves": curves,
                    "teacher_accuracy": teacher_acc,
                    "config": {k: str(v) for k, v in cfg.__dict__.items()},
                    "seconds": time.time() - t_start,
                },
                indent=1,
            )
        )
        for client in (sel, teacher, exps):
            client.close()
    console.print(
        f"wrote {cfg.out}/label_efficiency.png and .json; total {time.time() - t_start:.0f} s; "
        "stopped every process the demo started"
    )
    return curves


_FLAGS: dict[str, str] = {
    "pool_size": "unlabeled pool: Fashion-MNIST train images drawn with --seed",
    "test_size": "test images the student is evaluated on after every round",
    "rounds": "selection rounds per experiment",
    "budget": "labels bought per round",
    "steps": "student training steps per round",
    "batch_labeled": "labeled rows per training step",
    "batch_unlabeled": "unlabeled (KD) rows per training step",
    "seed": "seed of the pool sample, the initial labels and the student",
    "drift_sample": "cached teacher rows checked against live inference",
}


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``activekd demo``: one per :class:`DemoConfig` field."""
    ap = argparse.ArgumentParser(
        prog="activekd demo",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = DemoConfig()
    for name, text in _FLAGS.items():
        ap.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=getattr(defaults, name),
            metavar="N",
            help=f"{text} (default {getattr(defaults, name)})",
        )
    ap.add_argument(
        "--out",
        type=Path,
        default=defaults.out,
        metavar="DIR",
        help=f"folder for label_efficiency.png and .json (default {defaults.out})",
    )
    return ap


def demo_main(argv: list[str] | None = None) -> int:
    """``activekd demo [--rounds N] [--pool-size N] ...``"""
    args = build_parser().parse_args(argv)
    run_demo(DemoConfig(**{name: getattr(args, name) for name in (*_FLAGS, "out")}))
    return 0


__all__ = [
    "CACHE",
    "DRIFT_ATOL",
    "DemoConfig",
    "build_parser",
    "demo_main",
    "find_cache",
    "run_demo",
]
