"""The ``activekd`` command: demo, run, select, teacher eval, serve, status, bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _cmd_select(args: argparse.Namespace) -> int:
    from activekd.selection import select_batch

    probs = np.load(args.probs, mmap_mode="r") if args.probs else None
    feats = np.load(args.features, mmap_mode="r") if args.features else None
    labeled = np.asarray(
        [int(x) for x in args.labeled.split(",") if x] if args.labeled else [], dtype=np.int64
    )
    if args.labeled_file:
        labeled = np.loadtxt(args.labeled_file, dtype=np.int64, ndmin=1)
    res = select_batch(
        args.strategy,
        args.budget,
        probs=probs,
        features=feats,
        labeled=labeled,
        seed=args.seed,
        prune=not args.no_prune,
    )
    out = {
        "strategy": args.strategy,
        "indices": res.indices.tolist(),
        "scores": [float(s) for s in res.scores],
        "seconds": res.elapsed_seconds,
    }
    text = json.dumps(out)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


def _cmd_teacher(args: argparse.Namespace, rest: list[str]) -> int:
    if args.teacher_cmd == "eval":
        from activekd.teacher.eval_cli import teacher_eval_main

        return teacher_eval_main(rest)
    raise SystemExit(f"unknown teacher command {args.teacher_cmd!r}")


def _cmd_serve(args: argparse.Namespace, rest: list[str]) -> int:
    import runpy

    sys.argv = [f"activekd-{args.service}", *rest]
    runpy.run_module(f"activekd_services.{args.service}", run_name="__main__")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from activekd.client import ExperimentClient

    table = Table(title=f"experiments at {args.target}")
    for col in ("experiment", "strategy", "round", "state", "labeled", "last accuracy", "version"):
        table.add_column(col)
    with ExperimentClient(args.target, timeout=30) as client:
        for e in client.list():
            accs = [r.accuracy for r in e.rounds if r.accuracy]
            table.add_row(
                e.experiment_id,
                e.spec.strategy,
                str(e.current_round),
                e.state.name,
                str(e.labeled_count),
                f"{accs[-1] * 100:.1f}%" if accs else "-",
                str(e.version),
            )
    Console().print(table)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """Create the experiment a YAML/JSON config describes and drive it to the end."""
    import dataclasses

    import yaml
    from rich.console import Console

    from activekd.client import ExperimentClient
    from activekd.state.experiment_spec import ExperimentSpec
    from activekd.state.experiments import RoundState

    config = yaml.safe_load(Path(args.config).read_text())
    fields = {f.name for f in dataclasses.fields(ExperimentSpec)}
    unknown = sorted(set(config["experiment"]) - fields)
    if unknown:
        raise SystemExit(
            f"{args.config}: unknown experiment field(s) {unknown}; valid: {sorted(fields)}"
        )
    spec = ExperimentSpec(**config["experiment"])
    target = args.target or config.get("experiment_target", "localhost:50054")
    console = Console()
    with ExperimentClient(target, timeout=3600) as client:
        exp = client.create(spec, experiment_id=config.get("experiment_id", ""))
        with console.status(f"running {exp.experiment_id}") as status:
            while exp.state != RoundState.FINISHED:
                exp = client.advance(exp.experiment_id).experiment
                status.update(f"{exp.experiment_id}: round {exp.current_round} {exp.state.name}")
    for r in exp.rounds:
        console.print(f"labels={r.labeled_count:5d} accuracy={r.accuracy * 100:5.1f}%")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    p = argparse.ArgumentParser(prog="activekd", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("select", help="run a selection strategy on local .npy arrays")
    s.add_argument("--strategy", default="pcoreset")
    s.add_argument("--budget", type=int, required=True)
    s.add_argument("--probs", help="(N, C) probabilities .npy")
    s.add_argument("--features", help="(N, D) features .npy")
    s.add_argument("--labeled", default="", help="comma-separated labeled row indices")
    s.add_argument("--labeled-file", help="text file of labeled row indices")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-prune", action="store_true")
    s.add_argument("--out", help="also write the JSON result here")

    t = sub.add_parser("teacher", help="teacher tools: `activekd teacher eval --help`")
    t.add_argument("teacher_cmd", choices=["eval"])

    sub.add_parser("demo", help="end-to-end demo over the real services (`activekd demo --help`)")
    b = sub.add_parser("bench", help="benchmarks: `activekd bench label-efficiency --help`")
    b.add_argument("bench_name", choices=["label-efficiency"])
    st = sub.add_parser("status", help="list experiments and their round state")
    st.add_argument("--target", default="localhost:50054", help="ExperimentService address")
    r = sub.add_parser("run", help="create an experiment from a YAML/JSON config and drive it")
    r.add_argument("config")
    r.add_argument("--target", help="ExperimentService address (default: the config's)")

    sv = sub.add_parser("serve", help="run one service in the foreground")
    sv.add_argument("service", choices=["selection", "teacher", "trainer", "experiment"])
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``activekd`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.cmd == "teacher":
        return _cmd_teacher(args, rest)
    if args.cmd == "serve":
        return _cmd_serve(args, rest)
    if args.cmd == "demo":
        from activekd.orchestration.demo import demo_main

        return demo_main(rest)
    if args.cmd == "bench":
        from activekd.experiment.label_efficiency_cli import main as bench_main

        return bench_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return {"select": _cmd_select, "status": _cmd_status, "run": _cmd_run}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
