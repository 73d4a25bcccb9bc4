"""Knowing when to stop (#14): the stabilizing-predictions rule on long label-efficiency runs.

The rule (``activekd.experiment.stopping``): stop once the stop-set agreement of consecutive
rounds' students ("stability") reaches ``min_stability`` for ``patience`` rounds in a row. It
reads only past rounds, so applying it to a recorded trajectory gives exactly what an experiment
with the rule on would have done up to its stop (same seeds, same picks); one long run per seed
thus evaluates every threshold at once.

Runs come from ``bench/label_efficiency.py`` with a horizon longer than 15 rounds, e.g.::

    .venv/bin/python bench/label_efficiency.py --pool-rows 10000 --pool-size 10000 \\
        --test-size 10000 --student-input teacher_features --rounds 30 --seeds $(seq 300 305) \\
        --strategies typiclust random --ce-only --workers 2 --out bench/results/stopping
    .venv/bin/python bench/stopping.py bench/results/stopping/<grid dir>

For every strategy x threshold x patience it reports how many runs stopped, the labels at the
stop and saved against the full horizon, and the accuracy given up (final accuracy minus the
accuracy at the stop; a run that never stops saves nothing and gives up nothing). It also
reports, per run, the labels an oracle would have needed (the first round within 1 point of the
final accuracy) for comparison. Writes ``stopping.{md,json,png}`` into the grid directory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from activekd.experiment.stopping import first_stop
from activekd.state.experiment_spec import StoppingRule

THRESHOLDS = (0.85, 0.90, 0.93, 0.95, 0.97, 0.98, 0.99)
PATIENCE = (1, 2, 3)


def load_runs(grid: Path) -> dict[str, list[dict[str, Any]]]:
    """strategy -> the runs (seed JSONs) of that configuration."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(grid.glob("*/seed-*.json")):
        run = json.loads(path.read_text())
        if not run["rounds"] or "stability" not in run["rounds"][-1]:
            raise SystemExit(f"{path}: no stability per round (run with this version's loop)")
        out.setdefault(path.parent.name, []).append(run)
    if not out:
        raise SystemExit(f"no seed-*.json under {grid}")
    return out


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {sd:.2f}"


def evaluate(runs: list[dict[str, Any]], rule: StoppingRule) -> dict[str, Any]:
    """The rule on each run: stop round, labels at stop / saved, accuracy given up."""
    rows = []
    for run in runs:
        rounds = run["rounds"]
        stab = [r["stability"] for r in rounds]
        stop = first_stop(stab, rule)
        final = rounds[-1]
        at = rounds[stop] if stop is not None else final
        rows.append(
            {
                "seed": run["seed"],
                "stopped": stop is not None,
                "stop_round": stop,
                "labels": at["labeled"],
                "saved": final["labeled"] - at["labeled"],
                "given_up_points": 100 * (final["accuracy"] - at["accuracy"]),
            }
        )
    fired = [r for r in rows if r["stopped"]]
    return {
        "min_stability": rule.min_stability,
        "patience": rule.patience,
        "runs": len(rows),
        "stopped": len(fired),
        "labels": [r["labels"] for r in rows],
        "saved": [r["saved"] for r in rows],
        "given_up_points": [r["given_up_points"] for r in rows],
        "per_run": rows,
    }


def oracle_labels(run: dict[str, Any], within_points: float = 1.0) -> int:
    """Labels at the first round whose accuracy is within ``within_points`` of the final one."""
    final = run["rounds"][-1]["accuracy"]
    for r in run["rounds"]:
        if 100 * (final - r["accuracy"]) <= within_points:
            return int(r["labeled"])
    return int(run["rounds"][-1]["labeled"])  # pragma: no cover - the last round qualifies


def report(grid: Path) -> tuple[str, dict[str, Any]]:
    runs = load_runs(grid)
    lines = [f"# Stopping rule on {grid.name}", ""]
    data: dict[str, Any] = {"grid": grid.name, "strategies": {}}
    for strategy, items in runs.items():
        horizon = items[0]["rounds"][-1]["labeled"]
        oracle = [oracle_labels(r) for r in items]
        stab_all = [[r["stability"] for r in run["rounds"]] for run in items]
        lines += [
            f"## {strategy} ({len(items)} seeds: {', '.join(str(r['seed']) for r in items)}; "
            f"horizon {len(items[0]['rounds']) - 1} rounds, {horizon} labels)",
            "",
            f"Final accuracy {_mean_sd([100 * r['rounds'][-1]['accuracy'] for r in items])} %; "
            f"labels an oracle needs to be within 1 point of it: {_mean_sd([float(o) for o in oracle])}.",
            "Stability per round (mean over seeds): "
            + ", ".join(
                "-" if col[0] is None else f"{statistics.fmean(col):.3f}"
                for col in zip(*stab_all, strict=True)
            ),
            "",
            "| min_stability | patience | stopped | labels at stop | labels saved | accuracy given up (points) | worst given up |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        evals = []
        for threshold in THRESHOLDS:
            for patience in PATIENCE:
                ev = evaluate(items, StoppingRule(min_stability=threshold, patience=patience))
                evals.append(ev)
                lines.append(
                    f"| {threshold:.2f} | {patience} | {ev['stopped']}/{ev['runs']} | "
                    f"{_mean_sd([float(v) for v in ev['labels']])} | "
                    f"{_mean_sd([float(v) for v in ev['saved']])} | "
                    f"{_mean_sd(ev['given_up_points'])} | {max(ev['given_up_points']):.2f} |"
                )
        lines.append("")
        data["strategies"][strategy] = {"horizon_labels": horizon, "oracle_labels": oracle,
                                        "evaluations": evals}  # fmt: skip
    return "\n".join(lines), data


def plot(grid: Path, rule: StoppingRule) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(grid)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for color, (strategy, items) in zip(("C0", "C1", "C2", "C3"), runs.items(), strict=False):
        for i, run in enumerate(items):
            rounds = run["rounds"]
            labels = [r["labeled"] for r in rounds]
            stab = [r["stability"] for r in rounds]
            agree = [r["stop_set_teacher_agreement"] for r in rounds]
            lab = strategy if i == 0 else None
            axes[0].plot(labels[1:], stab[1:], color=color, alpha=0.6, lw=1, label=lab)
            axes[0].plot(labels, agree, color=color, alpha=0.35, lw=1, ls=":")
            axes[1].plot(labels, [100 * r["accuracy"] for r in rounds], color=color, alpha=0.6,
                         lw=1, label=lab)  # fmt: skip
            stop = first_stop(stab, rule)
            if stop is not None:
                axes[1].plot(labels[stop], 100 * rounds[stop]["accuracy"], "o", color=color)
    axes[0].axhline(rule.min_stability, color="k", lw=0.8, ls="--")
    axes[0].set(xlabel="labels", ylabel="agreement on the stop set",
                title="stability (solid) and teacher agreement (dotted)")  # fmt: skip
    axes[1].set(xlabel="labels", ylabel="test accuracy (%)",
                title=f"accuracy; dots: stop at min_stability {rule.min_stability}, "
                f"patience {rule.patience}")  # fmt: skip
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = grid / "stopping.png"
    fig.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("grid", type=Path, help="a bench/label_efficiency.py grid directory")
    ap.add_argument("--plot-threshold", type=float, default=0.95)
    ap.add_argument("--plot-patience", type=int, default=2)
    args = ap.parse_args(argv)
    text, data = report(args.grid)
    (args.grid / "stopping.md").write_text(text + "\n")
    (args.grid / "stopping.json").write_text(json.dumps(data, indent=1))
    png = plot(args.grid, StoppingRule(min_stability=args.plot_threshold,
                                       patience=args.plot_patience))  # fmt: skip
    print(text)
    print(f"wrote {args.grid / 'stopping.md'}, stopping.json, {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
