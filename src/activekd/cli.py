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
    res = select_batch(args.strategy, args.budget, probs=probs, features=feats, labeled=labeled,
                       seed=args.seed, prune=not args.no_prune)
    out = {"strategy": args.strategy, "indices": res.indices.tolist(),
           "scores": [float(s) for s in res.scores], "seconds": res.elapsed_seconds}
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
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return {"select": _cmd_select}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
