"""``activekd run``: start (or reach) the services, upload the data, drive one experiment.

:func:`run_experiment` takes a validated :class:`~activekd.orchestration.run_config.RunConfig`.
With ``services.local`` it starts Redis and the four services on this machine in a temporary
folder (as ``activekd demo`` does) and stops them when the run ends, whether it succeeded or not.
Local services get their own tokens; running ones are called with the given credentials (None:
the ``ACTIVEKD_CLIENT_*`` settings).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from activekd.client import ExperimentClient, ExperimentStatus, SelectionClient, TeacherClient
from activekd.orchestration.builtin_datasets import BuiltinPools, builtin_dataset
from activekd.orchestration.run_config import RunConfig, ServicesConfig
from activekd.state.round_records import RoundState
from activekd.wire.channel import ClientCredentials

Report = Callable[[str], None]


@dataclass(frozen=True)
class Targets:
    """Addresses of the services one run talks to ("" where it needs none)."""

    experiment: str
    selection: str = ""
    teacher: str = ""
    credentials: ClientCredentials | None = None


@contextlib.contextmanager
def reach_services(
    cfg: ServicesConfig, report: Report, credentials: ClientCredentials | None = None
) -> Iterator[Targets]:
    """The configured targets (called with ``credentials``), or local services started for the
    duration of the block (called with their own admin token)."""
    if not cfg.local:
        yield Targets(cfg.target, cfg.selection_target, cfg.teacher_target, credentials)
        return
    from activekd.orchestration.local_services import LocalServices

    env = {
        "ACTIVEKD_LOG_LEVEL": "WARNING",
        "ACTIVEKD_THREADS": str(cfg.threads),
        "ACTIVEKD_TEACHER_BACKEND": "label-map",  # the teacher the shipped cache was made with
        **cfg.env,
    }
    start = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="activekd-run-") as tmp,
        LocalServices(Path(tmp), env=env) as stack,
    ):
        report("starting redis-server and the four services...")
        stack.start(on_start=lambda name: report(f"starting the {name} service..."))
        report(f"services up in {time.monotonic() - start:.0f} s")
        yield Targets(
            stack.target("experiment"),
            stack.target("selection"),
            stack.target("teacher"),
            stack.credentials("admin"),
        )
        report("stopping the services...")


def run_experiment(
    cfg: RunConfig,
    report: Report = lambda _: None,
    *,
    credentials: ClientCredentials | None = None,
) -> ExperimentStatus:
    """Run the config to the end; returns the finished experiment.

    ``credentials`` are for running services (None: ``ACTIVEKD_CLIENT_*``).

    The built-in dataset is read before any service starts (a missing dataset fails first).
    """
    data: BuiltinPools | None = None
    if cfg.dataset is not None:
        report(f"loading {cfg.dataset.builtin} and the teacher cache...")
        entry = builtin_dataset(cfg.dataset.builtin)
        data = entry.load(cfg.dataset.pool_size, cfg.dataset.test_size, cfg.dataset.seed)
        kind = "zero-shot" if entry.live_teacher else "zero-shot, precomputed"
        report(f"teacher ({kind}) accuracy on the test rows: {data.teacher_accuracy * 100:.1f}%")
    with reach_services(cfg.services, report, credentials) as targets:
        creds = targets.credentials
        if data is not None and cfg.dataset is not None:
            if cfg.dataset.check_teacher_rows:
                report(f"checking {cfg.dataset.check_teacher_rows} cached teacher rows...")
                with TeacherClient(targets.teacher, timeout=600, credentials=creds) as teacher:
                    worst = data.check_teacher(teacher, cfg.dataset.check_teacher_rows)
                report(f"teacher cache matches live inference (max abs diff {worst:.1e})")
            report(f"uploading {cfg.dataset.pool_size} pool and {cfg.dataset.test_size} test rows")
            with SelectionClient(targets.selection, timeout=600, credentials=creds) as sel:
                data.upload(sel, cfg.dataset.pool_ids)
        with ExperimentClient(targets.experiment, timeout=3600, credentials=creds) as client:
            exp = client.create(cfg.experiment, experiment_id=cfg.experiment_id)
            start = time.monotonic()
            report(f"{exp.experiment_id}: created, {exp.labeled_count} initial labels")
            while exp.state != RoundState.FINISHED:
                exp = client.advance(exp.experiment_id).experiment
                report(
                    f"{exp.experiment_id}: round {exp.current_round}/{exp.spec.num_rounds} "
                    f"{exp.state.name} ({time.monotonic() - start:.0f} s)"
                )
    return exp


def round_table(exp: ExperimentStatus) -> list[str]:
    """One line per round: labels and test accuracy (and teacher agreement where measured)."""
    lines = []
    for r in exp.rounds:
        line = f"round {r.round:2d}  labels={r.labeled_count:5d}  accuracy={r.accuracy * 100:5.1f}%"
        if r.teacher_agreement:
            line += f"  teacher agreement={r.teacher_agreement * 100:5.1f}%"
        lines.append(line)
    return lines


__all__ = [
    "Targets",
    "reach_services",
    "round_table",
    "run_experiment",
]
