"""Fixtures for the experiment state machine tests: a store, a tiny labeled pool, a driver."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import redis

from activekd.experiment.oracle import SimulatedOracle, initial_labels
from activekd.state.experiment_spec import ExperimentSpec
from activekd.state.experiments import Experiment, ExperimentStore, RoundState

CLASSES = ["tshirt", "trouser", "pullover"]
POOL_IDS = [f"item-{i:02d}" for i in range(12)]
POOL_LABELS = [i % 3 for i in range(12)]


@pytest.fixture
def store(redis_client: redis.Redis) -> ExperimentStore:
    return ExperimentStore(redis_client)


@pytest.fixture
def oracle() -> SimulatedOracle:
    return SimulatedOracle(POOL_IDS, POOL_LABELS)


def _spec(budget: int, rounds: int) -> ExperimentSpec:
    return ExperimentSpec(
        pool_id="tiny",
        test_pool_id="tiny-test",
        dataset="tiny",
        class_names=list(CLASSES),
        teacher_config={"backend": "label-map"},
        student_config={"epochs": 1},
        strategy="random",
        initial_per_class=1,
        budget_per_round=budget,
        num_rounds=rounds,
        seed=7,
        simulated_oracle=True,
    )


@pytest.fixture
def make_experiment(store: ExperimentStore) -> Callable[..., Experiment]:
    """``make(exp_id, budget=2, rounds=3, pool_size=12)``: 1 label per class drawn with seed 7."""

    def make(
        exp_id: str = "e1",
        budget: int = 2,
        rounds: int = 3,
        pool_size: int | None = 12,
        target: ExperimentStore | None = None,
    ) -> Experiment:
        ids, labs = initial_labels(POOL_IDS, POOL_LABELS, per_class=1, seed=7)
        return (target or store).create(
            _spec(budget, rounds), exp_id, ids, labs, pool_size=pool_size
        )

    return make


def _pick(store: ExperimentStore, exp: Experiment, rng: np.random.Generator) -> list[str]:
    labeled = store.labels(exp.experiment_id)
    unlabeled = [i for i in POOL_IDS if i not in labeled]
    n = min(exp.spec.budget_per_round, len(unlabeled))
    return sorted(rng.choice(unlabeled, size=n, replace=False).tolist())


@pytest.fixture
def step(store: ExperimentStore, oracle: SimulatedOracle) -> Callable[..., Experiment]:
    """``step(exp_id, rng)``: do the one legal next thing (advance, or answer every pending label)
    the way a driver would, recording a made-up accuracy at STUDENT_TRAINED."""

    def do(
        exp_id: str, rng: np.random.Generator, target: ExperimentStore | None = None
    ) -> Experiment:
        st = target or store
        exp = st.get(exp_id)
        if exp.state is RoundState.AWAITING_LABELS:
            st.submit_labels(exp_id, oracle.label(st.pending_ids(exp_id)))
            return st.get(exp_id)
        (nxt,) = exp.allowed_next
        updates: dict[str, object] = {}
        if nxt is RoundState.STUDENT_TRAINED:
            updates = {
                "accuracy": exp.labeled_count / len(POOL_IDS),
                "student_pool_id": f"{exp_id}/round-{exp.current_round}/student",
                "timings": {"train_s": 0.5},
            }
        elif nxt is RoundState.SELECTED:
            updates = {"selected_item_ids": _pick(st, exp, rng)}
        return st.advance(exp_id, exp.state, nxt, expected_version=exp.version, updates=updates)

    return do


@pytest.fixture
def run_to(step: Callable[..., Experiment], store: ExperimentStore) -> Callable[..., Experiment]:
    """``run_to(exp_id, state, round=0)``: step until the experiment is in that state and round."""

    def go(exp_id: str, state: RoundState, round_: int = 0, seed: int = 0) -> Experiment:
        rng = np.random.default_rng(seed)
        exp = store.get(exp_id)
        for _ in range(200):
            if exp.state is state and exp.current_round == round_:
                return exp
            if exp.state is RoundState.FINISHED:
                break
            exp = step(exp_id, rng)
        raise AssertionError(f"never reached {state.name} of round {round_}")

    return go
