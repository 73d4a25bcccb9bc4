"""ExperimentSpec validation and the simulated oracle (no Redis needed)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from activekd.errors import InvalidArgument, NotFound
from activekd.experiment.oracle import SimulatedOracle, initial_labels
from activekd.state.experiment_spec import ExperimentSpec


def _spec(**kw: Any) -> ExperimentSpec:
    base: dict[str, Any] = dict(
        pool_id="p",
        class_names=["a", "b", "c"],
        strategy="pcoreset",
        initial_item_ids=["x", "y"],
        initial_labels=[0, 2],
        budget_per_round=3,
        num_rounds=2,
    )
    base.update(kw)
    return ExperimentSpec(**base)


@pytest.mark.parametrize(
    ("changes", "field", "pattern"),
    [
        ({"budget_per_round": 0}, "budget_per_round", "at least 1"),
        ({"budget_per_round": -2}, "budget_per_round", "at least 1"),
        ({"num_rounds": -1}, "num_rounds", "0 or more"),
        ({"class_names": []}, "class_names", "empty"),
        ({"class_names": ["a", "a", "b"]}, "class_names", "repeats 'a'"),
        ({"class_names": ["a", " "]}, "class_names", r"class_names\[1\] is empty"),
        (
            {"initial_labels": [0, 3]},
            "initial_labels",
            r"initial_labels\[1\]=3 .* outside \[0, 3\)",
        ),
        ({"initial_labels": [0, -1]}, "initial_labels", "outside"),
        ({"initial_labels": [0]}, "initial_labels", "2 entries but initial_labels has 1"),
        ({"initial_item_ids": ["x", "x"]}, "initial_item_ids", "repeats 1 id"),
        ({"initial_item_ids": [], "initial_labels": []}, "initial_per_class", "no initial labels"),
        ({"initial_per_class": 1}, "initial_per_class", "not both"),
        (
            {"initial_per_class": -1, "initial_item_ids": [], "initial_labels": []},
            "initial_per_class",
            "0 or more",
        ),
        ({"pool_id": ""}, "pool_id", "pool_id is empty"),
        ({"strategy": ""}, "strategy", "strategy is empty"),
        ({"seed": -1}, "seed", "2\\^64"),
        ({"teacher_config": {"x": float("nan")}}, "teacher_config", "JSON"),
        ({"budget_per_round": 2.5}, "budget_per_round", "integer"),
        ({"initial_labels": [0, 1.0]}, "initial_labels", "not an integer"),
        (
            {"student_config": {"input_array": ""}},
            "student_config.input_array",
            r"input_array '' is not an array name: .* or leave it out for 'images'",
        ),
        ({"student_config": {"input_array": "a/b"}}, "student_config.input_array", "'a/b'"),
    ],
)
def test_spec_rejects(changes: dict[str, Any], field: str, pattern: str) -> None:
    with pytest.raises(InvalidArgument, match=pattern) as info:
        _spec(**changes).validate()
    assert info.value.field == field


def test_spec_strategy_check_and_round_trip() -> None:
    spec = _spec(
        teacher_config={"model": "RN50", "templates": ["a photo of a {}."]},
        initial_labels=[np.int64(0), 2],
    )
    assert spec.validate({"pcoreset", "random"}) is spec
    with pytest.raises(InvalidArgument, match="unknown strategy 'pcoreset'; known: badge, random"):
        spec.validate({"random", "badge"})
    spec = replace(spec, initial_labels=[0, 2])
    assert ExperimentSpec.from_json(spec.to_json()) == spec
    assert spec.num_classes == 3
    ok = _spec(initial_per_class=2, initial_item_ids=[], initial_labels=[], num_rounds=0)
    assert ok.validate() is ok  # k per class instead of explicit ids; 0 rounds = train once
    with pytest.raises(InvalidArgument, match="unknown experiment spec fields: bogus"):
        ExperimentSpec.from_dict({**spec.to_dict(), "bogus": 1})


def _pool(n_per_class: int, n_classes: int) -> tuple[list[str], np.ndarray]:
    labels = np.repeat(np.arange(n_classes), n_per_class)
    order = np.random.default_rng(0).permutation(labels.size)
    return [f"img-{i:04d}" for i in range(labels.size)], labels[order]


def test_initial_labels_deterministic_sorted_k_per_class() -> None:
    ids, labels = _pool(50, 10)
    a = initial_labels(ids, labels, per_class=2, seed=5)
    assert a == initial_labels(ids, labels, per_class=2, seed=5)
    assert a == initial_labels(ids, labels.tolist(), per_class=2, seed=5)  # list or array
    draws = {tuple(initial_labels(ids, labels, per_class=2, seed=s)[0]) for s in range(5)}
    assert len(draws) == 5  # the seed matters
    got_ids, got_labels = a
    assert got_ids == sorted(got_ids) and len(got_ids) == 20
    truth = dict(zip(ids, labels.tolist(), strict=True))
    assert got_labels == [truth[i] for i in got_ids]
    assert np.bincount(got_labels, minlength=10).tolist() == [2] * 10


def test_initial_labels_rejects_short_classes() -> None:
    ids, labels = _pool(3, 4)
    with pytest.raises(InvalidArgument, match="cannot draw 4 per class: class 0 has 3"):
        initial_labels(ids, labels, per_class=4, seed=0)
    with pytest.raises(InvalidArgument, match="class 4 has 0"):
        initial_labels(ids, labels, per_class=1, seed=0, num_classes=5)
    with pytest.raises(InvalidArgument, match="per_class"):
        initial_labels(ids, labels, per_class=0, seed=0)
    with pytest.raises(InvalidArgument, match="one label per id"):
        initial_labels(ids, labels[:-1], per_class=1, seed=0)


def test_oracle_answers_ground_truth() -> None:
    ids, labels = _pool(5, 3)
    oracle = SimulatedOracle(ids, labels)
    asked = [ids[7], ids[0], ids[11]]
    assert oracle.label(asked) == {i: int(labels[ids.index(i)]) for i in asked}
    assert list(oracle(asked)) == asked and len(oracle) == 15 and ids[3] in oracle
    with pytest.raises(NotFound, match=r"no label for 2 id.*'nope'"):
        oracle.label([ids[0], "nope", "nada"])
    with pytest.raises(InvalidArgument, match="repeat"):
        SimulatedOracle(["a", "a"], [0, 1])
    with pytest.raises(InvalidArgument, match="integers"):
        SimulatedOracle(["a", "b"], [0.5, 1.0])
