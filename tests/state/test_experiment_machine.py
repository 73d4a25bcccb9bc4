"""The round state machine end to end on real Redis: transitions, CAS, selection checks, resume."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from activekd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from activekd.experiment.oracle import SimulatedOracle
from activekd.state.experiments import (
    Experiment,
    ExperimentStore,
    RoundState,
    TransitionAborted,
    allowed_next,
)
from activekd.state.selections import SelectionLog, SelectionRecord
from tests.state.conftest import POOL_IDS

S = RoundState
Make = Callable[..., Experiment]


def test_full_machine_three_rounds_budget_two(
    store: ExperimentStore,
    make_experiment: Make,
    step: Callable[..., Experiment],
    oracle: SimulatedOracle,
) -> None:
    exp = make_experiment("full", budget=2, rounds=3)
    assert (exp.state, exp.current_round, exp.version, exp.labeled_count) == (S.CREATED, 0, 1, 3)
    initial = store.labeled_ids("full")
    rng = np.random.default_rng(1)
    seen: list[tuple[int, RoundState]] = [(0, S.CREATED)]
    versions = [exp.version]
    while exp.state is not S.FINISHED:
        exp = step("full", rng)
        seen.append((exp.current_round, exp.state))
        versions.append(exp.version)
    # every round walks the whole machine; the last one trains and finishes without selecting
    per_round = [
        S.CREATED,
        S.TEACHER_SCORED,
        S.STUDENT_TRAINED,
        S.POOL_SCORED,
        S.SELECTED,
        S.AWAITING_LABELS,
        S.LABELS_COMPLETE,
    ]
    expected = [(r, s) for r in range(3) for s in per_round]
    expected += [(3, S.CREATED), (3, S.TEACHER_SCORED), (3, S.STUDENT_TRAINED), (3, S.FINISHED)]
    assert seen == expected
    assert versions == sorted(set(versions))  # strictly increasing
    assert exp.current_round == 3 and len(exp.rounds) == 4  # 3 selections, 4 accuracy points
    assert [r.labeled_count for r in exp.rounds] == [3, 5, 7, 9]  # grows by the budget
    assert [r.accuracy for r in exp.rounds] == [c / len(POOL_IDS) for c in (3, 5, 7, 9)]
    assert [r.state for r in exp.rounds] == [S.LABELS_COMPLETE] * 3 + [S.FINISHED]
    picks = [r.selected_item_ids for r in exp.rounds]
    assert [len(p) for p in picks] == [2, 2, 2, 0]
    labeled = store.labeled_ids("full")
    assert labeled == initial + picks[0] + picks[1] + picks[2]  # order of labelling
    assert len(set(labeled)) == len(labeled) == 9  # no duplicates
    assert store.labels("full") == oracle.label(labeled)
    assert exp.rounds[3].student_pool_id == "full/round-3/student"
    assert exp.rounds[1].timings == {"train_s": 0.5}
    assert set(exp.rounds[0].state_times) == {s.name for s in per_round}
    assert exp.allowed_next == ()
    with pytest.raises(FailedPrecondition, match=r"FINISHED.*allowed next: none"):
        store.advance("full", S.FINISHED, S.CREATED)


def test_illegal_transitions_name_current_and_allowed(
    store: ExperimentStore, make_experiment: Make, run_to: Callable[..., Experiment]
) -> None:
    exp = make_experiment("ill", rounds=1)
    with pytest.raises(FailedPrecondition, match=r"in CREATED .*allowed next: TEACHER_SCORED"):
        store.advance("ill", S.CREATED, S.STUDENT_TRAINED)
    exp = run_to("ill", S.STUDENT_TRAINED, 0)
    with pytest.raises(FailedPrecondition, match=r"STUDENT_TRAINED \(round 0 of 1\).*POOL_SCORED"):
        store.advance("ill", S.STUDENT_TRAINED, S.FINISHED)  # selection rounds remain
    with pytest.raises(FailedPrecondition, match="cannot move to SELECTED; allowed next: POOL"):
        store.advance(
            "ill", S.STUDENT_TRAINED, S.SELECTED, updates={"selected_item_ids": ["item-00"]}
        )
    after = store.get("ill")
    assert (after.state, after.version) == (exp.state, exp.version)  # rejected: nothing changed
    exp = run_to("ill", S.STUDENT_TRAINED, 1)  # last round: only FINISHED is next
    with pytest.raises(FailedPrecondition, match="allowed next: FINISHED"):
        store.advance("ill", S.STUDENT_TRAINED, S.POOL_SCORED)
    assert store.advance("ill", S.STUDENT_TRAINED, S.FINISHED).state is S.FINISHED
    with pytest.raises(InvalidArgument, match="not a round state"):
        store.advance("ill", "BOGUS", S.CREATED)
    with pytest.raises(NotFound):
        store.advance("nope", S.CREATED, S.TEACHER_SCORED)
    assert allowed_next(S.STUDENT_TRAINED, 0, 0) == (S.FINISHED,)  # num_rounds 0: train only


def test_versioned_compare_and_set(store: ExperimentStore, make_experiment: Make) -> None:
    exp = make_experiment("cas")
    with pytest.raises(TransitionAborted) as info:
        store.advance("cas", S.CREATED, S.TEACHER_SCORED, expected_version=exp.version + 5)
    assert (info.value.state, info.value.version, info.value.round) == (S.CREATED, exp.version, 0)
    assert store.get("cas").version == exp.version
    moved = store.advance("cas", S.CREATED, S.TEACHER_SCORED, expected_version=exp.version)
    assert moved.version == exp.version + 1 and moved.state is S.TEACHER_SCORED
    # a second driver replaying the same transition finds the state moved on
    with pytest.raises(TransitionAborted) as info:
        store.advance("cas", S.CREATED, S.TEACHER_SCORED)
    assert info.value.state is S.TEACHER_SCORED and info.value.version == moved.version
    assert info.value.code == "ABORTED"


def test_selection_checks(
    store: ExperimentStore, make_experiment: Make, run_to: Callable[..., Experiment]
) -> None:
    make_experiment("sel", budget=2, rounds=2)
    run_to("sel", S.POOL_SCORED, 0)
    labeled = store.labeled_ids("sel")
    unlabeled = [i for i in POOL_IDS if i not in labeled]
    with pytest.raises(InvalidArgument, match="needs updates"):
        store.advance("sel", S.POOL_SCORED, S.SELECTED)
    with pytest.raises(InvalidArgument, match="repeats"):
        store.advance(
            "sel",
            S.POOL_SCORED,
            S.SELECTED,
            updates={"selected_item_ids": [unlabeled[0], unlabeled[0]]},
        )
    with pytest.raises(FailedPrecondition, match=f"labeled or selected earlier.*{labeled[0]}"):
        store.advance(
            "sel",
            S.POOL_SCORED,
            S.SELECTED,
            updates={"selected_item_ids": [unlabeled[0], labeled[0]]},
        )
    with pytest.raises(FailedPrecondition, match="needs exactly 2"):
        store.advance(
            "sel", S.POOL_SCORED, S.SELECTED, updates={"selected_item_ids": unlabeled[:1]}
        )
    with pytest.raises(FailedPrecondition, match="budget per round is 2"):
        store.advance(
            "sel", S.POOL_SCORED, S.SELECTED, updates={"selected_item_ids": unlabeled[:3]}
        )
    with pytest.raises(InvalidArgument, match="only be recorded when moving to SELECTED"):
        store.advance("sel", S.POOL_SCORED, S.CREATED, updates={"selected_item_ids": unlabeled[:2]})
    assert store.get("sel").state is S.POOL_SCORED  # every rejection left the state alone
    exp = store.advance(
        "sel",
        S.POOL_SCORED,
        S.SELECTED,
        updates={"selected_item_ids": unlabeled[:2], "selection_request_id": "r0"},
    )
    assert exp.rounds[0].selected_item_ids == unlabeled[:2]
    assert exp.rounds[0].selection_request_id == "r0"
    store.advance("sel", S.SELECTED, S.AWAITING_LABELS)
    assert store.pending_ids("sel") == sorted(unlabeled[:2])
    with pytest.raises(FailedPrecondition, match=r"2 selected item.*still wait"):
        store.advance("sel", S.AWAITING_LABELS, S.LABELS_COMPLETE)


def _walk(store: ExperimentStore, exp_id: str, *path: RoundState) -> Experiment:
    exp = store.get(exp_id)
    for nxt in path:
        exp = store.advance(exp_id, exp.state, nxt)
    return exp


def test_pool_running_out_allows_fewer_then_none(
    store: ExperimentStore, make_experiment: Make
) -> None:
    spec = make_experiment("template").spec
    spec.budget_per_round, spec.num_rounds = 3, 2
    pool = POOL_IDS[:5]  # 3 labeled at start, 2 left for a budget of 3
    store.create(spec, "small", pool[:3], [0, 1, 2], pool_size=len(pool))
    _walk(store, "small", S.TEACHER_SCORED, S.STUDENT_TRAINED, S.POOL_SCORED)
    with pytest.raises(FailedPrecondition, match=r"needs exactly 2 .*2 unlabeled items remain"):
        store.advance("small", S.POOL_SCORED, S.SELECTED, updates={"selected_item_ids": pool[3:4]})
    store.advance("small", S.POOL_SCORED, S.SELECTED, updates={"selected_item_ids": pool[3:]})
    store.advance("small", S.SELECTED, S.AWAITING_LABELS)
    assert store.submit_labels("small", {"item-03": 0, "item-04": 1}).state is S.LABELS_COMPLETE
    _walk(store, "small", S.CREATED, S.TEACHER_SCORED, S.STUDENT_TRAINED, S.POOL_SCORED)
    assert store.get("small").labeled_count == 5
    with pytest.raises(FailedPrecondition, match="needs exactly 0"):
        store.advance("small", S.POOL_SCORED, S.SELECTED, updates={"selected_item_ids": ["x"]})
    store.advance("small", S.POOL_SCORED, S.SELECTED, updates={"selected_item_ids": []})
    store.advance("small", S.SELECTED, S.AWAITING_LABELS)
    exp = store.advance("small", S.AWAITING_LABELS, S.LABELS_COMPLETE)  # nothing pending
    assert exp.state is S.LABELS_COMPLETE and exp.rounds[1].selected_item_ids == []
    exp = _walk(store, "small", S.CREATED, S.TEACHER_SCORED, S.STUDENT_TRAINED, S.FINISHED)
    assert [r.labeled_count for r in exp.rounds] == [3, 5, 5]


def test_without_pool_size_only_the_budget_bounds_a_selection(
    store: ExperimentStore, make_experiment: Make, run_to: Callable[..., Experiment]
) -> None:
    make_experiment("nosize", budget=3, rounds=1, pool_size=None)
    assert store.get("nosize").pool_size is None
    run_to("nosize", S.POOL_SCORED, 0)
    with pytest.raises(FailedPrecondition, match="budget per round is 3"):
        store.advance(
            "nosize", S.POOL_SCORED, S.SELECTED, updates={"selected_item_ids": ["a", "b", "c", "d"]}
        )
    exp = store.advance("nosize", S.POOL_SCORED, S.SELECTED, updates={"selected_item_ids": ["a"]})
    assert exp.rounds[0].selected_item_ids == ["a"]


def test_updates_are_validated_and_round_trip(
    store: ExperimentStore, make_experiment: Make
) -> None:
    make_experiment("upd")
    bad: list[dict[str, object]] = [
        {"acuracy": 0.5},
        {"accuracy": 1.5},
        {"accuracy": float("nan")},
        {"accuracy": "high"},
        {"teacher_pool_id": 3},
        {"timings": {"train": -1.0}},
        {"timings": {"bad name": 1.0}},
        {"extra": {"k": object()}},
    ]
    for updates in bad:
        with pytest.raises(InvalidArgument):
            store.advance("upd", S.CREATED, S.TEACHER_SCORED, updates=updates)
    assert store.get("upd").version == 1
    exp = store.advance(
        "upd",
        S.CREATED,
        S.TEACHER_SCORED,
        message="cached",
        updates={
            "teacher_pool_id": "teacher/abc/tiny",
            "teacher_agreement": 0.25,
            "timings": {"teacher_s": 3.5},
            "extra": {"cache_hit": True, "n": [1, 2]},
        },
    )
    rec = store.round_record("upd", 0)
    assert rec == exp.rounds[0]
    assert (rec.teacher_pool_id, rec.teacher_agreement) == ("teacher/abc/tiny", 0.25)
    assert rec.timings == {"teacher_s": 3.5} and rec.extra == {"cache_hit": True, "n": [1, 2]}
    assert store.events("upd")[-1].message == "CREATED -> TEACHER_SCORED: cached"
    with pytest.raises(NotFound, match="no round 1"):
        store.round_record("upd", 1)


def test_create_validation_and_ids(store: ExperimentStore, make_experiment: Make) -> None:
    exp = make_experiment("dup")
    with pytest.raises(AlreadyExists, match="dup"):
        make_experiment("dup")
    assert store.get("dup").version == exp.version  # untouched
    with pytest.raises(InvalidArgument, match="experiment id"):
        make_experiment("bad id{x}")
    spec = exp.spec
    with pytest.raises(InvalidArgument, match="needs the drawn labels"):
        store.create(spec, "e2")
    with pytest.raises(InvalidArgument, match=r"1 item.*of every class"):
        store.create(spec, "e2", ["item-00", "item-03", "item-01"], [0, 0, 1])
    with pytest.raises(InvalidArgument, match=r"outside \[0, 3\)"):
        store.create(spec, "e2", ["item-00", "item-01", "item-02"], [0, 1, 3])
    with pytest.raises(InvalidArgument, match="pool_size 2 is smaller"):
        store.create(spec, "e2", ["item-00", "item-01", "item-02"], [0, 1, 2], pool_size=2)
    with pytest.raises(InvalidArgument, match="unknown strategy"):
        ExperimentStore(store.redis, valid_strategies={"pcoreset"}).create(
            spec, "e2", ["item-00", "item-01", "item-02"], [0, 1, 2]
        )
    auto = store.create(spec, None, ["item-00", "item-01", "item-02"], [0, 1, 2])
    assert auto.experiment_id.startswith("exp-") and store.get(auto.experiment_id).spec == spec
    with pytest.raises(NotFound):
        store.get("missing")


def test_restarted_driver_resumes_without_losing_or_repeating(
    redis_server,
    make_experiment: Make,
    step: Callable[..., Experiment],  # type: ignore[no-untyped-def]
) -> None:
    """Driver A dies after recording its selection in the SelectionLog but before ``advance``;
    driver B (fresh client and store) reads the state, replays the logged selection and goes on."""
    client_a, client_b = redis_server.client(), redis_server.client()
    a, b = ExperimentStore(client_a), ExperimentStore(client_b)
    make_experiment("crash", target=a, rounds=2)
    rng = np.random.default_rng(3)
    while a.get("crash").state is not S.POOL_SCORED:
        step("crash", rng, target=a)
    labeled = a.labeled_ids("crash")
    picks = [i for i in POOL_IDS if i not in labeled][:2]
    rec = SelectionRecord(
        request_id="crash-r0",
        strategy="random",
        item_ids=picks,
        scores=[0.0, 0.0],
        rows=[0, 1],
        round=0,
        experiment_id="crash",
    )
    SelectionLog(client_a).record(rec, labeled_ids=labeled)
    client_a.close()  # A is gone

    exp = b.get("crash")
    assert (exp.state, exp.current_round) == (S.POOL_SCORED, 0)
    stored, replayed = SelectionLog(client_b).record(
        SelectionRecord(
            request_id="crash-r0",
            strategy="random",
            item_ids=["other"],
            scores=[0.0],
            rows=[5],
            round=0,
            experiment_id="crash",
        ),
        labeled_ids=labeled,
    )
    assert replayed and stored.item_ids == picks  # same request id -> same picks
    exp = b.advance(
        "crash",
        S.POOL_SCORED,
        S.SELECTED,
        expected_version=exp.version,
        updates={"selected_item_ids": stored.item_ids},
    )
    # a stale replay of an older step by a zombie driver is refused
    with pytest.raises(TransitionAborted):
        b.advance("crash", S.STUDENT_TRAINED, S.POOL_SCORED)
    while b.get("crash").state is not S.FINISHED:
        step("crash", rng, target=b)
    final = b.labeled_ids("crash")
    assert final[: len(labeled) + 2] == labeled + picks
    assert len(final) == len(set(final)) == 3 + 2 * 2
    client_b.close()


def test_labels_of_unknown_experiment_raise_not_found(store: ExperimentStore) -> None:
    for call in (store.labels, store.labeled_ids, store.events, store.get):
        with pytest.raises(NotFound):
            call("ghost")
