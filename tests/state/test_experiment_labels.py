"""SubmitLabels semantics: partial, all-or-nothing, no-op resubmits, overwrite, completion."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from activekd.errors import FailedPrecondition, InvalidArgument, NotFound
from activekd.experiment.oracle import SimulatedOracle
from activekd.state.experiments import Experiment, ExperimentStore, RoundState
from tests.state.conftest import POOL_IDS

S = RoundState


@pytest.fixture
def awaiting(
    store: ExperimentStore,
    make_experiment: Callable[..., Experiment],
    run_to: Callable[..., Experiment],
) -> Experiment:
    """Experiment ``lab`` waiting for labels of 3 selected ids (budget 3)."""
    make_experiment("lab", budget=3, rounds=2)
    exp = run_to("lab", S.AWAITING_LABELS, 0)
    assert len(exp.rounds[0].selected_item_ids) == 3 and exp.pending_labels == 3
    return exp


def _snapshot(store: ExperimentStore) -> tuple[dict[str, int], list[str], int, int]:
    exp = store.get("lab")
    return store.labels("lab"), store.labeled_ids("lab"), exp.version, len(store.events("lab"))


def test_partial_then_complete(
    store: ExperimentStore, awaiting: Experiment, oracle: SimulatedOracle
) -> None:
    s1, s2, s3 = awaiting.rounds[0].selected_item_ids
    truth = oracle.label([s1, s2, s3])
    res = store.submit_labels("lab", {s1: truth[s1]})
    assert (res.accepted, res.unchanged, res.remaining) == (1, 0, 2)
    assert res.state is S.AWAITING_LABELS and res.version == awaiting.version + 1
    assert store.pending_ids("lab") == sorted([s2, s3])
    res = store.submit_labels("lab", {s2: truth[s2], s1: truth[s1]})  # s1 again: no-op
    assert (res.accepted, res.unchanged, res.remaining) == (1, 1, 1)
    res = store.submit_labels("lab", {s3: np.int64(truth[s3])})  # numpy ints are fine
    assert (res.accepted, res.remaining, res.state) == (1, 0, S.LABELS_COMPLETE)
    assert res.version == awaiting.version + 4  # three submissions + the transition
    exp = store.get("lab")
    assert exp.state is S.LABELS_COMPLETE and exp.version == res.version
    assert exp.rounds[0].state is S.LABELS_COMPLETE and exp.labeled_count == 6
    assert store.labeled_ids("lab")[-3:] == [s1, s2, s3]  # order of labelling
    events = store.events("lab")
    assert [e.kind for e in events[-4:]] == ["labels", "labels", "labels", "transition"]
    assert events[-1].state is S.LABELS_COMPLETE and events[-1].from_state is S.AWAITING_LABELS
    # the round closed: a retried submission of the same labels is a safe no-op ...
    res = store.submit_labels("lab", {s1: truth[s1]})
    assert (res.accepted, res.unchanged, res.deferred, res.version) == (0, 1, 0, exp.version)
    # ... and a label for an id nobody selected is still refused
    outsider = next(i for i in POOL_IDS if i not in store.labels("lab"))
    with pytest.raises(FailedPrecondition, match=r"is in LABELS_COMPLETE.*only in AWAITING_LABELS"):
        store.submit_labels("lab", {outsider: 0})


def test_unknown_unselected_and_out_of_range_store_nothing(
    store: ExperimentStore, awaiting: Experiment
) -> None:
    s1 = awaiting.rounds[0].selected_item_ids[0]
    unselected = next(
        i
        for i in POOL_IDS
        if i not in store.labels("lab") and i not in awaiting.rounds[0].selected_item_ids
    )
    before = _snapshot(store)
    with pytest.raises(InvalidArgument, match=r"not selected in this round.*ghost.*nothing"):
        store.submit_labels("lab", {s1: 0, "ghost": 1})
    with pytest.raises(InvalidArgument, match=f"not selected in this round.*{unselected}"):
        store.submit_labels("lab", {unselected: 0, s1: 0})
    for bad in (-1, 3):
        with pytest.raises(InvalidArgument, match=rf"outside \[0, 3\): {s1}={bad}"):
            store.submit_labels("lab", {s1: bad})
    with pytest.raises(InvalidArgument, match="not an integer"):
        store.submit_labels("lab", {s1: True})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match="not an integer"):
        store.submit_labels("lab", {s1: 1.0})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match="no labels"):
        store.submit_labels("lab", {})
    assert _snapshot(store) == before  # all or nothing: no label, no version bump, no event
    with pytest.raises(NotFound):
        store.submit_labels("ghost-exp", {s1: 0})


def test_different_label_needs_overwrite(store: ExperimentStore, awaiting: Experiment) -> None:
    s1, s2, _ = awaiting.rounds[0].selected_item_ids
    store.submit_labels("lab", {s1: 0})
    before = _snapshot(store)
    with pytest.raises(FailedPrecondition, match=f"different label.*{s1}=0.*overwrite=True"):
        store.submit_labels("lab", {s1: 2, s2: 1})
    assert _snapshot(store) == before  # s2 was not stored either
    res = store.submit_labels("lab", {s1: 2, s2: 1}, overwrite=True)
    assert (res.accepted, res.unchanged, res.remaining) == (2, 0, 1)
    labels, order, _, _ = _snapshot(store)
    assert labels[s1] == 2 and labels[s2] == 1
    assert order.count(s1) == 1  # a changed label does not relabel the item in the order


def test_initial_and_earlier_labels_change_only_with_overwrite(
    store: ExperimentStore, awaiting: Experiment
) -> None:
    initial_id = store.labeled_ids("lab")[0]
    old = store.labels("lab")[initial_id]
    res = store.submit_labels("lab", {initial_id: old})
    assert (res.accepted, res.unchanged) == (0, 1)
    assert res.version == awaiting.version  # a pure no-op changes nothing
    new = (old + 1) % 3
    with pytest.raises(FailedPrecondition, match=initial_id):
        store.submit_labels("lab", {initial_id: new})
    res = store.submit_labels("lab", {initial_id: new}, overwrite=True)
    assert res.accepted == 1 and res.remaining == 3 and store.labels("lab")[initial_id] == new
    assert store.get("lab").labeled_count == awaiting.labeled_count  # corrected, not added


def test_labels_only_while_awaiting(
    store: ExperimentStore,
    make_experiment: Callable[..., Experiment],
    run_to: Callable[..., Experiment],
) -> None:
    make_experiment("early")
    exp = run_to("early", S.SELECTED, 0)
    selected = exp.rounds[0].selected_item_ids[0]
    with pytest.raises(FailedPrecondition, match="is in SELECTED"):
        store.submit_labels("early", {selected: 0})
    assert store.get("early").version == exp.version
    # changing an existing label while the round is closed is queued, not refused
    # (tests/state/test_label_lifecycle.py)
    initial_id = store.labeled_ids("early")[0]
    new = (store.labels("early")[initial_id] + 1) % 3
    res = store.submit_labels("early", {initial_id: new}, overwrite=True)
    assert (res.accepted, res.deferred) == (0, 1)
    assert store.labels("early")[initial_id] != new and store.get("early").pending_corrections == 1
