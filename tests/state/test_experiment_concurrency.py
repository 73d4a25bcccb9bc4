"""Drivers racing on one experiment, each with its own Redis client: exactly one wins each step."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np

from activekd.errors import Aborted, FailedPrecondition
from activekd.experiment.oracle import SimulatedOracle
from activekd.state.experiment_spec import ExperimentSpec
from activekd.state.experiments import Experiment, ExperimentStore, RoundState
from tests.state.conftest import CLASSES, POOL_IDS, POOL_LABELS

S = RoundState
ORACLE = SimulatedOracle(POOL_IDS, POOL_LABELS)


def _spec() -> ExperimentSpec:
    return ExperimentSpec(
        pool_id="tiny",
        class_names=list(CLASSES),
        strategy="random",
        initial_item_ids=["item-00", "item-01", "item-02"],
        initial_labels=[0, 1, 2],
        budget_per_round=2,
        num_rounds=3,
    )


def _attempt(store: ExperimentStore, exp: Experiment, rng: np.random.Generator) -> str:
    """One driver step from the state ``exp`` shows: 'won' or 'lost'."""
    eid = exp.experiment_id
    try:
        if exp.state is S.AWAITING_LABELS:
            res = store.submit_labels(eid, ORACLE.label(exp.rounds[-1].selected_item_ids))
            return "won" if res.accepted else "lost"
        (nxt,) = exp.allowed_next
        updates: dict[str, object] = {}
        if nxt is S.SELECTED:  # each driver proposes its own random picks
            labeled = store.labels(eid)
            free = [i for i in POOL_IDS if i not in labeled]
            updates["selected_item_ids"] = rng.choice(free, size=2, replace=False).tolist()
        store.advance(eid, exp.state, nxt, updates=updates)
        return "won"
    except (Aborted, FailedPrecondition):
        return "lost"


def test_two_drivers_in_lockstep_exactly_one_wins_each_transition(redis_server) -> None:  # type: ignore[no-untyped-def]
    n_experiments, steps_per_exp = 8, 7 * 3 + 3  # 7 steps per selection round + 3 to finish
    clients = [redis_server.client() for _ in range(2)]
    stores = [ExperimentStore(c) for c in clients]
    for k in range(n_experiments):
        stores[0].create(_spec(), f"race-{k}", pool_size=len(POOL_IDS))
    barrier = threading.Barrier(2)
    results: list[list[str]] = [[], []]

    def driver(d: int) -> None:
        rng = np.random.default_rng(100 + d)
        for k in range(n_experiments):
            for _ in range(steps_per_exp):
                barrier.wait()
                exp = stores[d].get(f"race-{k}")  # both read the same state...
                barrier.wait()
                results[d].append(_attempt(stores[d], exp, rng))  # ...then race on it

    threads = [threading.Thread(target=driver, args=(d,)) for d in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    pairs = list(zip(results[0], results[1], strict=True))
    assert len(pairs) == n_experiments * steps_per_exp
    assert all(sorted(p) == ["lost", "won"] for p in pairs), Counter(pairs)
    for k in range(n_experiments):
        _check_finished(stores[0], f"race-{k}")
    for c in clients:
        c.close()


def test_free_running_drivers_never_double_apply(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Four drivers loop read-then-advance without coordination until the experiment finishes."""
    clients = [redis_server.client() for _ in range(4)]
    stores = [ExperimentStore(c) for c in clients]
    start = stores[0].create(_spec(), "free", pool_size=len(POOL_IDS))
    wins: list[list[int]] = [[] for _ in stores]

    def driver(d: int) -> None:
        rng = np.random.default_rng(d)
        while True:
            exp = stores[d].get("free")
            if exp.state is S.FINISHED:
                return
            if _attempt(stores[d], exp, rng) == "won":
                wins[d].append(exp.version)

    threads = [threading.Thread(target=driver, args=(d,)) for d in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    won_from = sorted(v for w in wins for v in w)
    assert len(won_from) == len(set(won_from))  # no version was advanced from twice
    assert len(won_from) == 7 * 3 + 3  # one win per step of the machine
    final = _check_finished(stores[0], "free")
    assert final.version == start.version + 7 * 3 + 3 + 3  # + one label event per round
    for c in clients:
        c.close()


def _check_finished(store: ExperimentStore, eid: str) -> Experiment:
    exp = store.get(eid)
    assert exp.state is S.FINISHED and exp.current_round == 3
    assert [r.labeled_count for r in exp.rounds] == [3, 5, 7, 9]
    labeled = store.labeled_ids(eid)
    assert len(labeled) == len(set(labeled)) == 9
    assert store.labels(eid) == ORACLE.label(labeled)
    versions = [e.version for e in store.events(eid, count=1000)]
    assert versions == list(range(1, exp.version + 1))  # one event per version, in order
    return exp
