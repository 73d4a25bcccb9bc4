"""SelectionLog: idempotent, atomic, never re-picks within an experiment (real Redis)."""

from __future__ import annotations

import threading

import pytest

from activekd.state.selections import Conflict, SelectionLog, SelectionRecord


def _rec(rid: str, ids: list[str], exp: str = "e1", round_: int = 0) -> SelectionRecord:
    return SelectionRecord(
        request_id=rid,
        strategy="random",
        item_ids=ids,
        scores=[0.0] * len(ids),
        rows=list(range(len(ids))),
        round=round_,
        experiment_id=exp,
    )


def test_record_replay_and_conflict(redis_client) -> None:  # type: ignore[no-untyped-def]
    log = SelectionLog(redis_client)
    stored, replayed = log.record(_rec("r1", ["a", "b"]), labeled_ids=["z"])
    assert not replayed and stored.item_ids == ["a", "b"]
    again, replayed = log.record(_rec("r1", ["c", "d"]), labeled_ids=[])
    assert replayed and again.item_ids == ["a", "b"]  # same request id -> same answer
    with pytest.raises(Conflict, match="b"):
        log.record(_rec("r2", ["b", "e"], round_=1), labeled_ids=[])
    assert log.selected_ids("e1") == {"a", "b"}  # the conflicting record changed nothing
    assert [r.request_id for r in log.records("e1")] == ["r1"]
    assert log.round_labeled("e1", 0) == {"z"}
    assert log.lookup("e1", "r1") is not None and log.lookup("e1", "nope") is None


def test_racing_writers_exactly_one_wins(redis_client) -> None:  # type: ignore[no-untyped-def]
    log = SelectionLog(redis_client)
    outcomes: list[str] = []

    def go(i: int) -> None:
        try:
            log.record(_rec(f"r{i}", ["same", f"own{i}"]), labeled_ids=[])
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
    assert len(log.records("e1")) == 1


def test_request_without_experiment_is_idempotent_with_ttl(redis_client) -> None:  # type: ignore[no-untyped-def]
    log = SelectionLog(redis_client)
    log.record(_rec("solo", ["a"], exp=""), labeled_ids=[])
    stored, replayed = log.record(_rec("solo", ["b"], exp=""), labeled_ids=[])
    assert replayed and stored.item_ids == ["a"]
    assert 0 < redis_client.ttl("akd:req:{solo}") <= 7 * 24 * 3600
