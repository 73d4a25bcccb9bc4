"""Event stream replay and blocking reads, delete of every key, list pagination."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import redis

from activekd.errors import InvalidArgument, NotFound
from activekd.state import experiments as experiments_mod
from activekd.state.experiments import Event, Experiment, ExperimentStore, RoundState
from activekd.state.selections import SelectionLog, SelectionRecord

S = RoundState
Make = Callable[..., Experiment]


def test_events_replay_in_order_and_resume_after_an_id(
    store: ExperimentStore, make_experiment: Make, run_to: Callable[..., Experiment]
) -> None:
    make_experiment("ev", rounds=1)
    exp = run_to("ev", S.LABELS_COMPLETE, 0)
    events = store.events("ev")
    assert [e.version for e in events] == list(range(1, exp.version + 1))
    assert [e.event_id for e in events] == sorted(
        (e.event_id for e in events), key=lambda i: tuple(map(int, i.split("-")))
    )
    assert events[0].kind == "created" and events[0].from_state is None
    transitions = [(e.from_state, e.state) for e in events if e.kind == "transition"]
    assert transitions == [
        (S.CREATED, S.TEACHER_SCORED),
        (S.TEACHER_SCORED, S.STUDENT_TRAINED),
        (S.STUDENT_TRAINED, S.POOL_SCORED),
        (S.POOL_SCORED, S.SELECTED),
        (S.SELECTED, S.AWAITING_LABELS),
        (S.AWAITING_LABELS, S.LABELS_COMPLETE),
    ]
    assert all(e.experiment_id == "ev" and e.round == 0 for e in events)
    assert all(a.unix_time <= b.unix_time for a, b in itertools.pairwise(events))
    assert store.events("ev", after=events[3].event_id) == events[4:]
    assert store.events("ev", count=2) == events[:2]
    assert store.events("ev", after=events[-1].event_id, block_ms=50) == []  # timed out


def test_blocking_read_wakes_on_a_new_event(redis_server, make_experiment: Make) -> None:  # type: ignore[no-untyped-def]
    exp = make_experiment("wake")
    last = ExperimentStore(redis_server.client()).events("wake")[-1].event_id
    got: list[list[Event]] = []
    waited: list[float] = []

    def watch() -> None:
        watcher = ExperimentStore(redis_server.client())  # its own connection, as a gRPC stream
        t0 = time.monotonic()
        got.append(watcher.events("wake", after=last, block_ms=5000))
        waited.append(time.monotonic() - t0)

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.2)  # let the watcher block first
    writer = ExperimentStore(redis_server.client())
    writer.advance("wake", S.CREATED, S.TEACHER_SCORED)
    t.join(10)
    assert len(got[0]) == 1 and got[0][0].state is S.TEACHER_SCORED
    assert got[0][0].version == exp.version + 1
    assert waited[0] < 4.0  # woke on the event (measured ~0.2 s), not at the 5 s timeout


def _keys(client: redis.Redis, pattern: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=pattern, count=1000)}


def test_delete_removes_every_key_of_one_experiment(
    store: ExperimentStore, make_experiment: Make, run_to: Callable[..., Experiment]
) -> None:
    make_experiment("gone", rounds=2)
    make_experiment("kept", rounds=2)
    run_to("gone", S.AWAITING_LABELS, 1)  # round records, pending set, picked set, events...
    run_to("kept", S.SELECTED, 0)
    log = SelectionLog(store.redis)  # the selection service's keys share the prefix
    log.record(
        SelectionRecord(
            request_id="q1",
            strategy="random",
            item_ids=["item-11"],
            scores=[1.0],
            rows=[11],
            round=1,
            experiment_id="gone",
        ),
        labeled_ids=["item-00"],
    )
    gone_keys = _keys(store.redis, "akd:exp:{gone}:*")
    assert {
        "akd:exp:{gone}:meta",
        "akd:exp:{gone}:events",
        "akd:exp:{gone}:round:1:pending",
        "akd:exp:{gone}:selections",
        "akd:exp:{gone}:req:q1",
    } <= gone_keys
    kept_keys = _keys(store.redis, "akd:exp:{kept}:*")
    removed = store.delete("gone")
    assert removed == len(gone_keys)
    assert _keys(store.redis, "*{gone}*") == set()  # nothing of it is left anywhere
    assert _keys(store.redis, "akd:exp:{kept}:*") == kept_keys
    assert _keys(store.redis, "*") == kept_keys | {"akd:experiments"}
    assert [e.experiment_id for e in store.list()[0]] == ["kept"]
    with pytest.raises(NotFound):
        store.get("gone")
    with pytest.raises(NotFound):
        store.delete("gone")
    assert store.get("kept").state is S.SELECTED


def test_list_pages_in_creation_order(store: ExperimentStore, make_experiment: Make) -> None:
    ids = [f"L{i}" for i in range(7)]
    for eid in ids:
        make_experiment(eid)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page, token = store.list(page_size=3, page_token=token)
        seen += [e.experiment_id for e in page]
        pages += 1
        if not token:
            break
        if pages == 1:
            store.delete("L4")  # deleting between pages neither breaks nor repeats
    assert seen == [i for i in ids if i != "L4"] and pages == 2
    assert [e.experiment_id for e in store.list()[0]] == seen  # default page size holds all
    assert store.list(page_size=6)[1] == ""  # exactly full last page: no empty extra page
    with pytest.raises(InvalidArgument, match="page_token"):
        store.list(page_token="not-a-token")
    with pytest.raises(InvalidArgument, match="page_size"):
        store.list(page_size=-1)


def test_list_breaks_creation_time_ties_by_id(
    store: ExperimentStore, make_experiment: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(experiments_mod, "time", SimpleNamespace(time=lambda: 1000.0))
    for eid in ("c", "a", "d", "b"):
        make_experiment(eid)
    first, token = store.list(page_size=2)
    second, end = store.list(page_size=2, page_token=token)
    assert [e.experiment_id for e in first + second] == ["a", "b", "c", "d"] and end == ""
    store.redis.zadd("akd:experiments", {"half-created": 999.0})  # index entry, no experiment
    assert [e.experiment_id for e in store.list(page_size=1)[0]] == ["a"]
