"""Chaos: SIGKILL random services at random points of a multi-round experiment, restart them, and
check the experiment ends exactly as an uninterrupted run with the same spec.

Starts Redis (AOF on, fsync every second, as deployed) and the selection, teacher (label-map),
trainer and experiment services as local processes, uploads a small Fashion-MNIST pool with the
shipped teacher cache as precomputed teacher pools (like the demo), runs one clean experiment,
then one experiment per seed under a seeded kill schedule over ``redis``, ``selection``,
``teacher``, ``trainer`` and ``experiment``. Each run must give the same selections per round,
labeled counts and labeled set as the clean run, no duplicate picks, and leave no temp file,
unreadable file or damaged committed pool in the store.

    .venv/bin/python bench/chaos.py --seeds 10             # seeds 0..9, 6 kills each
    .venv/bin/python bench/chaos.py --seeds 3 --first-seed 100 --kills 8 --rounds 3

The driver loop retries ``AdvanceRound`` (and ``GetExperiment``) on UNAVAILABLE and ABORTED:
``ExperimentClient.advance`` is deliberately never retried by the client (its retry policy only
covers reads and request-id calls), so a caller that wants to ride out a restart must do it, as
``activekd run`` users would. Any other status is a failure of the run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from activekd.client import ExperimentClient, SelectionClient  # noqa: E402
from activekd.orchestration.fashion_pools import FashionMnistPools, PoolIds  # noqa: E402
from activekd.orchestration.local_services import LocalServices  # noqa: E402
from activekd.state.experiments import ExperimentStore  # noqa: E402
from activekd.store.pool_store import PoolMeta  # noqa: E402
from activekd.student.checkpoint import load_checkpoint  # noqa: E402
from activekd.v1 import experiment_pb2  # noqa: E402

FINISHED = experiment_pb2.ROUND_STATE_FINISHED
ENV = {
    "ACTIVEKD_TEACHER_BACKEND": "label-map",
    "ACTIVEKD_TEACHER_IMAGE_SIZE": "64",
    "ACTIVEKD_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "ACTIVEKD_LOG_LEVEL": "WARNING",
}
TARGETS = ("redis", "selection", "teacher", "trainer", "experiment")
#: statuses after which the driver loop calls again (everything else fails the run)
RETRY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})
RETRY_FOR_SECONDS = 120.0
T = TypeVar("T")


@dataclass
class ChaosStack:
    """The running services plus the uploaded pool ids."""

    services: LocalServices
    ids: PoolIds

    def client(self, timeout: float = 300, retries: int = 3) -> ExperimentClient:
        return ExperimentClient(
            self.services.target("experiment"),
            timeout=timeout,
            retries=retries,
            credentials=self.services.credentials("admin"),
        )

    def spec(
        self, *, rounds: int = 2, seed: int = 7, strategy: str = "entropy", budget: int = 4
    ) -> experiment_pb2.ExperimentSpec:
        spec = experiment_pb2.ExperimentSpec(
            pool_id=self.ids.pool,
            test_pool_id=self.ids.test,
            dataset="fmnist-chaos",
            class_names=list(FashionMnistPools.class_names),
            strategy=strategy,
            initial_per_class=1,
            budget_per_round=budget,
            num_rounds=rounds,
            seed=seed,
            simulated_oracle=True,
        )
        spec.teacher_config.update(
            {"pool_id": self.ids.teacher_pool, "test_pool_id": self.ids.teacher_test}
        )
        spec.student_config.update(
            {"steps": 4, "batch_size_labeled": 16, "batch_size_unlabeled": 32}
        )
        return spec

    def stop(self) -> None:
        self.services.stop()


def start_stack(root: Path, pool_size: int = 120, test_size: int = 60) -> ChaosStack:
    """Redis with AOF + the four services in ``root``, with the chaos pools uploaded."""
    services = LocalServices(root, env=dict(ENV), redis_appendonly=True).start()
    try:
        data = FashionMnistPools(pool_size, test_size, seed=0)
        with SelectionClient(
            services.target("selection"), timeout=120, credentials=services.credentials("admin")
        ) as sel:
            ids = data.upload(sel, PoolIds.with_prefix("chaos"))
        time.sleep(1.1)  # one AOF fsync period: the uploads are on disk before any kill
    except BaseException:
        services.stop()
        raise
    return ChaosStack(services, ids)


# ---------------------------------------------------------------------------------------- runs
@dataclass
class RunResult:
    """What an experiment ended with, and what happened on the way."""

    experiment_id: str
    selections: list[list[str]]
    labeled_counts: list[int]
    labels: dict[str, int]
    label_order: list[str]
    codes: Counter[str] = field(default_factory=Counter)
    kills: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def comparable(self) -> dict[str, Any]:
        return {
            "selections": self.selections,
            "labeled_counts": self.labeled_counts,
            "labels": self.labels,
            "label_order": self.label_order,
        }


def retrying(call: Callable[[], T], codes: Counter[str], within: float = RETRY_FOR_SECONDS) -> T:
    """``call()`` again after a status in :data:`RETRY` (counted in ``codes``) for ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            return call()
        except grpc.RpcError as err:
            code = err.code()
            codes[code.name] += 1
            if code not in RETRY or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def restart(stack: ChaosStack, target: str) -> None:
    """Start a killed ``target`` again (same ports, auth and, for Redis, socket and AOF dir)."""
    if target == "redis":
        assert stack.services.redis is not None
        stack.services.redis.restart()
    else:
        stack.services.services[target].start()


def kill(stack: ChaosStack, target: str) -> None:
    """SIGKILL ``target``."""
    if target == "redis":
        assert stack.services.redis is not None
        stack.services.redis.kill()
    else:
        stack.services.services[target].kill()


def result_of(stack: ChaosStack, experiment_id: str, codes: Counter[str]) -> RunResult:
    with stack.client() as client:
        exp = retrying(lambda: client.get(experiment_id), codes)
    assert stack.services.redis is not None
    store = ExperimentStore(stack.services.redis.client())
    return RunResult(
        experiment_id,
        [list(r.selected_item_ids) for r in exp.rounds],
        [int(r.labeled_count) for r in exp.rounds],
        store.labels(experiment_id),
        store.labeled_ids(experiment_id),
        codes,
    )


def run_clean(stack: ChaosStack, experiment_id: str, **spec: Any) -> RunResult:
    """An uninterrupted run (advance until FINISHED)."""
    start, codes = time.monotonic(), Counter[str]()
    with stack.client() as client:
        client.create(stack.spec(**spec), experiment_id=experiment_id)
        exp = client.get(experiment_id)
        while exp.state != FINISHED:
            exp = client.advance(experiment_id).experiment
    out = result_of(stack, experiment_id, codes)
    out.seconds = time.monotonic() - start
    return out


#: latest point of a kill, in seconds after its advance started
MAX_KILL_DELAY = 0.15


#: the round state each driver step starts from (7 per selecting round, 3 in the last)
_ROUND_STEPS = ("CREATED", "TEACHER_SCORED", "STUDENT_TRAINED", "POOL_SCORED", "SELECTED",
                "AWAITING_LABELS", "LABELS_COMPLETE")  # fmt: skip
#: which services a step from that state calls (Redis and the experiment service: every step)
USED_BY_STEP = {
    "teacher": {"CREATED"},
    "trainer": {"TEACHER_SCORED", "STUDENT_TRAINED"},
    "selection": {"POOL_SCORED"},
}


def step_state(step: int) -> str:
    """The state the experiment is in before driver step ``step``."""
    return _ROUND_STEPS[step % len(_ROUND_STEPS)]


def schedule(seed: int, kills: int, steps: int) -> list[tuple[int, str, float]]:
    """(driver step, target, seconds into that step's advance) for ``kills`` kills: every target
    once (in a seeded order) when ``kills >= len(TARGETS)``, the rest drawn at random. Each kill
    lands on a step that calls its target (the teacher while scoring, the trainer while training
    or predicting, selection while selecting; Redis and the experiment service on any step), so
    the kill hits a service at work rather than an idle one, when such a step is still free."""
    rng = random.Random(seed)
    targets = list(TARGETS) if kills >= len(TARGETS) else []
    rng.shuffle(targets)
    targets += [rng.choice(TARGETS) for _ in range(kills - len(targets))]
    free = set(range(steps))
    plan: list[tuple[int, str, float]] = []
    # the services with few working steps choose first
    for target in sorted(targets, key=lambda t: len(USED_BY_STEP.get(t, _ROUND_STEPS))):
        if not free:
            break
        uses = USED_BY_STEP.get(target)
        working = sorted(s for s in free if uses is None or step_state(s) in uses)
        step = rng.choice(working or sorted(free))
        free.discard(step)
        # an advance of the small CI workload takes ~0.05-0.5 s: kill early so most land mid-call
        plan.append((step, target, round(rng.uniform(0.0, MAX_KILL_DELAY), 3)))
    return sorted(plan)


def run_chaos(
    stack: ChaosStack,
    experiment_id: str,
    seed: int,
    kills: int = 5,
    *,
    redis_down_seconds: float = 0.3,
    **spec: Any,
) -> RunResult:
    """Drive ``experiment_id`` to the end, killing per :func:`schedule` during advances and
    restarting each killed process once the advance it hit has returned."""
    start, codes = time.monotonic(), Counter[str]()
    rounds = spec.get("rounds", 2)
    plan = {s: (t, d) for s, t, d in schedule(seed, kills, 7 * rounds + 3)}
    with stack.client() as client:
        client.create(stack.spec(**spec), experiment_id=experiment_id)
    done: list[dict[str, Any]] = []
    killed: set[int] = set()
    while True:
        with stack.client() as client:
            exp = retrying(lambda c=client: c.get(experiment_id), codes)  # type: ignore[misc]
            if exp.state == FINISHED:
                break
            # the step follows the experiment's state, so a killed (failed) advance is retried
            # as the same step, without a second kill
            name = experiment_pb2.RoundState.Name(exp.state).removeprefix("ROUND_STATE_")
            step = len(_ROUND_STEPS) * exp.current_round + _ROUND_STEPS.index(name)
            if step not in plan or step in killed:
                retrying(lambda c=client: c.advance(experiment_id), codes)  # type: ignore[misc]
                continue
            killed.add(step)
            target, delay = plan[step]
            outcome: list[str] = []

            def advance(c: ExperimentClient = client, outcome: list[str] = outcome) -> None:
                try:
                    c.advance(experiment_id)
                    outcome.append("OK")
                except grpc.RpcError as err:
                    outcome.append(err.code().name)

            thread = threading.Thread(target=advance, daemon=True)
            thread.start()
            time.sleep(delay)
            state = experiment_pb2.RoundState.Name(exp.state).removeprefix("ROUND_STATE_")
            kill(stack, target)
            if target == "redis":
                time.sleep(redis_down_seconds)
            thread.join(RETRY_FOR_SECONDS)
            if thread.is_alive():
                raise AssertionError(f"advance hung after killing {target} (seed {seed})")
            restart(stack, target)
            codes[outcome[0]] += 1
            done.append({"step": step, "target": target, "after_s": delay, "state": state,
                         "advance": outcome[0]})  # fmt: skip
    out = result_of(stack, experiment_id, codes)
    out.kills, out.seconds = done, time.monotonic() - start
    return out


# ------------------------------------------------------------------------------------ the store
@dataclass
class StoreScan:
    """Files in the store that a crash must not leave behind or damage."""

    temp_files: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    damaged_pools: list[str] = field(default_factory=list)
    committed_pools: int = 0
    checkpoints: int = 0
    #: uncommitted version dirs (invisible to readers): still listed as being written in Redis
    writing_dirs: list[str] = field(default_factory=list)
    #: uncommitted version dirs Redis knows nothing about (a leak on disk, never visible)
    untracked_dirs: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.temp_files or self.unreadable or self.damaged_pools)


def scan_store(store_root: Path, redis_client: Any, prefix: str = "akd") -> StoreScan:
    """Check every file under ``store_root``: no temp files, every ``.npy`` and checkpoint
    loads, every committed pool's files match its metadata; sort uncommitted version dirs."""
    scan = StoreScan()
    for path in sorted(store_root.rglob("*")):
        rel = str(path.relative_to(store_root))
        if path.is_file() and (path.name.endswith(".tmp") or path.name.startswith(".")):
            scan.temp_files.append(rel)
        elif path.is_file() and path.suffix == ".npy":
            try:
                np.load(path, mmap_mode="r")
            except Exception as exc:
                scan.unreadable.append(f"{rel}: {type(exc).__name__}")
        elif path.is_file() and path.suffix == ".ckpt":
            scan.checkpoints += 1
            try:
                load_checkpoint(path)
            except Exception as exc:
                scan.unreadable.append(f"{rel}: {type(exc).__name__}")
    committed: set[Path] = set()
    writing: set[Path] = set()
    for key in redis_client.scan_iter(match=f"{prefix}:pool:{{*}}"):
        name = key.decode()
        pool_id = name[len(f"{prefix}:pool:{{") :].split("}", 1)[0]
        if name.endswith(":writing"):
            for version in redis_client.hkeys(name):
                writing.add(store_root / pool_id / f"v-{version.decode()}")
            continue
        if ":ranges:" in name:
            continue
        meta = PoolMeta.from_json(redis_client.get(name))
        scan.committed_pools += 1
        vdir = store_root / pool_id / f"v-{meta.version}"
        committed.add(vdir)
        try:
            ids = np.load(vdir / "item_ids.npy")
            ok = len(ids) == meta.num_items
            for arr_name, arr_meta in meta.arrays.items():
                arr = np.load(vdir / f"{arr_name}.npy", mmap_mode="r")
                ok = ok and list(arr.shape) == arr_meta.shape and arr.dtype.name == arr_meta.dtype
        except Exception:
            ok = False
        if not ok:
            scan.damaged_pools.append(pool_id)
    for vdir in sorted(store_root.rglob("v-*")):
        if not vdir.is_dir() or vdir in committed:
            continue
        rel = str(vdir.relative_to(store_root))
        (scan.writing_dirs if vdir in writing else scan.untracked_dirs).append(rel)
    return scan


# ----------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="how many kill schedules")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--kills", type=int, default=6, help="kills per run (>=5: each target)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pool", type=int, default=120, help="pool size")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    failures, rows = 0, []
    with tempfile.TemporaryDirectory(prefix="akd-chaos-") as tmp:
        t0 = time.monotonic()
        stack = start_stack(Path(tmp), pool_size=args.pool)
        print(f"stack up in {time.monotonic() - t0:.1f} s")
        try:
            clean = run_clean(stack, "clean", rounds=args.rounds)
            print(f"clean run: {clean.seconds:.1f} s, labeled {clean.labeled_counts}")
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                run = run_chaos(stack, f"chaos-{seed}", seed, args.kills, rounds=args.rounds)
                dupes = len(run.label_order) - len(set(run.label_order))
                same = run.comparable() == clean.comparable()
                ok = same and dupes == 0
                failures += not ok
                row = {"seed": seed, "ok": ok, "same": same, "duplicates": dupes,
                       "seconds": round(run.seconds, 1), "codes": dict(run.codes),
                       "kills": run.kills}  # fmt: skip
                rows.append(row)
                print(json.dumps(row))
            assert stack.services.redis is not None
            scan = scan_store(Path(tmp) / "store", stack.services.redis.client())
            print(f"store: {scan}")
            failures += not scan.clean
        finally:
            stack.stop()
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "failures": failures}, indent=2))
    print(f"{len(rows)} seeds, {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
