"""The ``activekd`` command: `select` on local arrays, help of every command, one-line errors
(a missing install extra, an unreachable service) and `status` without rich."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from activekd.cli import STRATEGY_NAMES, build_parser, main
from activekd.selection import available_strategies, select_batch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fashion_mnist_pcoreset.yaml"

#: prepended to a ``python -c`` script: the named top-level modules become uninstalled (the path
#: finder stops seeing them, so activekd's missing-extra hook answers, as after a light install)
HIDE = """
import sys
from importlib.machinery import PathFinder
HIDDEN = set({hidden!r})
class Hide:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return PathFinder.find_spec(name, path, target)
    @classmethod
    def invalidate_caches(cls):
        PathFinder.invalidate_caches()
sys.meta_path[sys.meta_path.index(PathFinder)] = Hide
for name in list(sys.modules):
    if name.partition(".")[0] in HIDDEN:
        del sys.modules[name]
"""


#: what the light client (`pip install activekd`, no extras) lacks
NOT_IN_LIGHT_CLIENT = ("rich", "yaml", "torch", "faiss", "redis", "matplotlib", "grpc_reflection")


def _python(
    code: str, hidden: tuple[str, ...] = (), timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    script = HIDE.format(hidden=sorted(hidden)) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


# ---------------------------------------------------------------------------------- select
def test_select_on_local_arrays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(5), size=200).astype(np.float32)
    np.save(tmp_path / "p.npy", probs)
    out = tmp_path / "picks.json"
    assert (
        main(
            [
                "select",
                "--strategy",
                "pcoreset",
                "--probs",
                str(tmp_path / "p.npy"),
                "--budget",
                "7",
                "--labeled",
                "1,5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    got = json.loads(out.read_text())
    want = select_batch("pcoreset", 7, probs=probs, labeled=np.array([1, 5]))
    assert got["indices"] == want.indices.tolist()
    assert json.loads(capsys.readouterr().out)["strategy"] == "pcoreset"


def test_unknown_arguments_are_an_error() -> None:
    with pytest.raises(SystemExit):
        main(["select", "--budget", "3", "--bogus"])


def test_select_offers_exactly_the_library_strategies() -> None:
    assert sorted(STRATEGY_NAMES) == available_strategies()


# ---------------------------------------------------------------------------------- help
def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path (``("teacher",)``, ``("teacher", "eval")``, ...) below ``parser``."""
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                assert helps.get(name), f"'activekd {' '.join((*path, name))}' has no one-line help"
                found.append((*path, name))
                found.extend(_commands(child, (*path, name)))
    return found


def _help(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*args, "--help"])
    assert exc.value.code == 0, args
    return capsys.readouterr().out


def _description(text: str) -> str:
    """The paragraph after the usage block of an argparse help text."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    assert paragraphs[0].startswith("usage:"), text[:200]
    second = paragraphs[1].strip() if len(paragraphs) > 1 else ""
    heading = second.splitlines()[0] if second else ""
    return "" if heading.endswith(":") else second


def test_top_level_help_reads_as_help(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([], capsys)
    assert "``" not in text
    assert _description(text).startswith("Active learning with knowledge distillation")
    for name in ("demo", "run", "status", "select", "teacher", "bench", "serve"):
        assert f"\n    {name} " in text, name
    examples = text.split("examples:\n", 1)[1]
    assert examples.count("  activekd ") >= 2
    assert "activekd run examples/fashion_mnist_pcoreset.yaml" in examples
    assert EXAMPLE.is_file()


def test_every_command_has_help_without_rest_markup(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`activekd <cmd> --help` for every command, forwarded ones (demo, teacher eval, bench
    label-efficiency, serve NAME) printing their own parser's help."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # `serve` sets sys.argv for the service
    paths = _commands(build_parser())
    assert {
        ("demo",),
        ("teacher", "eval"),
        ("bench", "label-efficiency"),
        ("serve", "trainer"),
    } <= set(paths)
    for path in paths:
        text = _help(list(path), capsys)
        assert "``" not in text, f"activekd {' '.join(path)} --help:\n{text}"
        assert _description(text), f"activekd {' '.join(path)} --help has no description:\n{text}"
    forwarded = {
        ("demo",): "--pool-size",
        ("teacher", "eval"): "--teacher",
        ("bench", "label-efficiency"): "--quick",
        ("serve", "selection"): "--grpc-port",
    }
    for path, flag in forwarded.items():
        assert flag in _help(list(path), capsys), path


def test_help_needs_no_extra_beyond_the_light_client() -> None:
    proc = _python(
        """
        from activekd.cli import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0
        """,
        hidden=NOT_IN_LIGHT_CLIENT,
    )
    assert proc.returncode == 0 and "usage: activekd" in proc.stdout, proc.stderr


# ---------------------------------------------------------------------------------- errors
def test_a_missing_extra_is_one_line_and_exit_2() -> None:
    """yaml missing: `run` names the 'cli' extra; rich missing: `demo` names 'all'."""
    proc = _python(
        f"""
        from activekd.cli import main
        raise SystemExit(main(["run", {str(EXAMPLE)!r}]))
        """,
        hidden=("yaml",),
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "activekd.cli needs the 'cli' extra (No module named 'yaml'): pip install 'activekd[cli]'"
    ], proc.stderr
    proc = _python(
        """
        from activekd.cli import main
        raise SystemExit(main(["demo", "--rounds", "1"]))
        """,
        hidden=("rich",),
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "'rich'" in line and line.endswith("pip install 'activekd[all]'"), line


def test_run_with_local_services_checks_their_packages_before_starting_anything() -> None:
    proc = _python(
        f"""
        from activekd.cli import main
        raise SystemExit(main(["run", {str(EXAMPLE)!r}]))
        """,
        hidden=("torch",),
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "services.local needs the 'all' extra (No module named 'torch'): pip install 'activekd[all]'"
    ], proc.stderr


def test_an_unreachable_service_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    from activekd.orchestration.local_services import free_port

    assert main(["status", "--target", f"127.0.0.1:{free_port()}"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("activekd status: UNAVAILABLE"), line


# ---------------------------------------------------------------------------------- status
STATUS_SCRIPT = """
from concurrent import futures
import grpc
from activekd.v1 import experiment_pb2, experiment_pb2_grpc

class Fake(experiment_pb2_grpc.ExperimentServiceServicer):
    def ListExperiments(self, request, context):
        exp = experiment_pb2.Experiment(
            experiment_id="exp-one", current_round=2, version=9, labeled_count=30,
            state=experiment_pb2.ROUND_STATE_FINISHED,
            spec=experiment_pb2.ExperimentSpec(pool_id="p", strategy="pcoreset"),
            rounds=[experiment_pb2.RoundSummary(round=0, labeled_count=10, accuracy=0.4),
                    experiment_pb2.RoundSummary(round=1, labeled_count=20, accuracy=0.5125)],
        )
        return experiment_pb2.ListExperimentsResponse(experiments=[exp])

server = grpc.server(futures.ThreadPoolExecutor(2))
experiment_pb2_grpc.add_ExperimentServiceServicer_to_server(Fake(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
from activekd.cli import main
code = main(["status", "--target", f"127.0.0.1:{port}"])
server.stop(0)
print("rich imported:", sys.modules.get("rich") is not None)
raise SystemExit(code)
"""


@pytest.mark.parametrize("how", ["hidden", "none-in-sys-modules"])
def test_status_prints_plain_text_without_rich(how: str) -> None:
    if how == "hidden":
        proc = _python(STATUS_SCRIPT, hidden=NOT_IN_LIGHT_CLIENT)
    else:
        proc = _python("sys.modules['rich'] = None\n" + STATUS_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("experiments at 127.0.0.1:")
    assert lines[1].split() == [
        "experiment", "strategy", "round", "state", "labeled", "last", "accuracy", "version"
    ]  # fmt: skip
    assert lines[2].split() == ["exp-one", "pcoreset", "2", "FINISHED", "30", "51.2%", "9"]
    assert lines[-1] == "rich imported: False"
