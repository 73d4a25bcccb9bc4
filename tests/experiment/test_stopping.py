"""The stopping signal (activekd.experiment.stopping) and its rule."""

from __future__ import annotations

import numpy as np
import pytest

from activekd.errors import InvalidArgument
from activekd.experiment.stopping import (
    agreement,
    first_stop,
    round_signal,
    should_stop,
    stop_reason,
    stop_set,
)
from activekd.state.experiment_spec import ExperimentSpec, StoppingRule


def _onehot(labels: list[int], c: int = 3) -> np.ndarray:
    return np.eye(c, dtype=np.float32)[labels]


def test_stop_set_is_fixed_by_the_seed_and_capped_by_the_pool() -> None:
    a, b = stop_set(1000, 7, 100), stop_set(1000, 7, 100)
    assert np.array_equal(a, b) and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, stop_set(1000, 8, 100))
    assert np.array_equal(stop_set(50, 7, 100), np.arange(50))
    with pytest.raises(InvalidArgument):
        stop_set(0, 7, 10)


def test_agreement_and_round_signal() -> None:
    cur = _onehot([0, 1, 2, 2])
    prev = _onehot([0, 1, 1, 1])
    teacher = _onehot([0, 0, 0, 2])
    assert agreement(cur, prev) == 0.5
    sig = round_signal(cur, prev, teacher, np.array([0, 1, 2, 3]))
    assert (sig.stability, sig.teacher_agreement) == (0.5, 0.5)
    sig = round_signal(cur, None, teacher, np.array([0, 3]))  # round 0: no previous student
    assert sig.stability is None and sig.teacher_agreement == 1.0
    with pytest.raises(InvalidArgument, match="equal"):
        agreement(cur, prev[:2])


def test_rule_needs_patience_consecutive_stable_rounds() -> None:
    rule = StoppingRule(min_stability=0.9, patience=2)
    assert not should_stop([None, 0.95], rule)
    assert not should_stop([None, 0.95, 0.85], rule)
    assert should_stop([None, 0.85, 0.95, 0.92], rule)
    assert first_stop([None, 0.95, 0.85, 0.95, 0.92, 0.99], rule) == 4
    assert first_stop([None, 0.5, 0.6], rule) is None
    assert not should_stop([None, 1.0, 1.0], StoppingRule())  # 0 = never stop
    assert "0.9500, 0.9200" in stop_reason([None, 0.85, 0.95, 0.92], rule)


@pytest.mark.parametrize(
    "rule",
    [
        StoppingRule(min_stability=1.5),
        StoppingRule(min_stability=-0.1),
        StoppingRule(patience=0),
        StoppingRule(stop_set_size=0),
        StoppingRule(stop_set_size=10**9),
    ],
)
def test_bad_rules_are_refused(rule: StoppingRule) -> None:
    with pytest.raises(InvalidArgument, match="stopping"):
        rule.validate()


def test_spec_round_trips_the_rule_and_reads_old_specs() -> None:
    spec = ExperimentSpec(
        pool_id="p",
        class_names=["a", "b"],
        initial_per_class=1,
        stopping=StoppingRule(min_stability=0.97, patience=3, stop_set_size=500),
    ).validate()
    back = ExperimentSpec.from_json(spec.to_json())
    assert back.stopping == spec.stopping
    old = spec.to_dict()
    del old["stopping"]  # stored before the field existed
    assert ExperimentSpec.from_dict(old).stopping == StoppingRule()
    with pytest.raises(InvalidArgument, match="unknown stopping fields"):
        ExperimentSpec.from_dict({**old, "stopping": {"min_stability": 0.9, "bogus": 1}})
