"""The label lifecycle: withdraw while the round is open, corrections after it closed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from activekd.errors import FailedPrecondition, InvalidArgument
from activekd.experiment.oracle import SimulatedOracle
from activekd.state.experiments import Experiment, ExperimentStore, RoundState

S = RoundState


@pytest.fixture
def awaiting(
    store: ExperimentStore,
    make_experiment: Callable[..., Experiment],
    run_to: Callable[..., Experiment],
) -> Experiment:
    make_experiment("life", budget=3, rounds=2)
    return run_to("life", S.AWAITING_LABELS, 0)


def test_withdraw_in_open_round_reopens_the_pick(
    store: ExperimentStore, awaiting: Experiment, oracle: SimulatedOracle
) -> None:
    s1, s2, s3 = awaiting.rounds[0].selected_item_ids
    truth = oracle.label([s1, s2, s3])
    store.submit_labels("life", {s1: truth[s1], s2: truth[s2]})
    res = store.submit_labels("life", {}, withdraw=[s1])
    assert (res.withdrawn, res.remaining, res.state) == (1, 2, S.AWAITING_LABELS)
    assert s1 not in store.labels("life") and s1 not in store.labeled_ids("life")
    assert store.pending_ids("life") == sorted([s1, s3])
    again = store.submit_labels("life", {}, withdraw=[s1])  # retried delete: no-op
    assert (again.withdrawn, again.unchanged, again.version) == (0, 1, res.version)
    res = store.submit_labels("life", {s1: truth[s1], s3: truth[s3]})
    assert res.state is S.LABELS_COMPLETE and store.get("life").labeled_count == 6
    assert store.labeled_ids("life").count(s1) == 1


def test_withdraw_of_an_earlier_label_applies_at_once(
    store: ExperimentStore, awaiting: Experiment
) -> None:
    initial_id = store.labeled_ids("life")[0]
    res = store.submit_labels("life", {}, withdraw=[initial_id])
    assert res.withdrawn == 1 and res.remaining == 3  # not a pick of this round: no new pending
    assert initial_id not in store.labels("life")


def test_corrections_after_close_apply_when_the_next_round_starts(
    store: ExperimentStore,
    awaiting: Experiment,
    oracle: SimulatedOracle,
    run_to: Callable[..., Experiment],
) -> None:
    picks = awaiting.rounds[0].selected_item_ids
    truth = oracle.label(picks)
    store.submit_labels("life", truth)
    closed = store.get("life")
    assert closed.state is S.LABELS_COMPLETE
    s1, s2, s3 = picks
    changed = (truth[s1] + 1) % 3
    with pytest.raises(FailedPrecondition, match="overwrite"):
        store.submit_labels("life", {s1: changed})
    res = store.submit_labels("life", {s1: changed}, overwrite=True, withdraw=[s2])
    assert (res.accepted, res.deferred, res.state) == (0, 2, S.LABELS_COMPLETE)
    # nothing changed yet: the round's record and the label store are as they were
    labels = store.labels("life")
    assert labels[s1] == truth[s1] and labels[s2] == truth[s2]
    assert store.get("life").pending_corrections == 2
    # a retry is a no-op (the queued value already matches), and changing s3 back and forth
    # leaves no correction behind
    assert store.submit_labels("life", {s1: changed}, overwrite=True).deferred == 0
    store.submit_labels("life", {s3: (truth[s3] + 1) % 3}, overwrite=True)
    store.submit_labels("life", {s3: truth[s3]}, overwrite=True)
    assert store.get("life").pending_corrections == 2
    nxt = run_to("life", S.CREATED, 1)
    labels = store.labels("life")
    assert labels[s1] == changed and s2 not in labels and labels[s3] == truth[s3]
    assert s2 not in store.labeled_ids("life")
    assert nxt.pending_corrections == 0
    assert nxt.rounds[1].labeled_count == closed.labeled_count - 1
    assert nxt.rounds[1].extra["corrections_applied"] == 2
    assert "2 label correction(s) applied" in store.events("life")[-1].message


def test_same_id_labeled_and_withdrawn_is_refused(
    store: ExperimentStore, awaiting: Experiment
) -> None:
    s1 = awaiting.rounds[0].selected_item_ids[0]
    before = store.get("life").version
    with pytest.raises(InvalidArgument, match="both labeled and withdrawn"):
        store.submit_labels("life", {s1: 0}, withdraw=[s1])
    assert store.get("life").version == before
