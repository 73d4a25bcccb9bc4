"""SelectionLog: idempotent, atomic, never re-picks within an experiment (real Redis)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from activekd.errors import Aborted, InvalidArgument
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


# --- select_once: the whole idempotent SelectBatch in state ---------------------------------------
@dataclass
class _Result:  # the shape of activekd.selection.SelectionResult that select_once reads
    indices: np.ndarray
    scores: np.ndarray
    strategy: str = "random"
    stats: dict[str, float] = field(default_factory=dict)
    elapsed_seconds: float = 0.25


POOL_IDS = np.asarray([f"item-{i}" for i in range(10)])


def _first_free(n: int, labeled: frozenset[str] = frozenset()) -> Any:
    """A compute step picking the ``n`` lowest rows not selected earlier nor labeled; records
    its calls."""
    calls: list[set[str]] = []

    def compute(earlier: set[str]) -> tuple[_Result, np.ndarray]:
        calls.append(set(earlier))
        rows = [i for i, v in enumerate(POOL_IDS.tolist()) if v not in earlier | labeled][:n]
        return _Result(np.asarray(rows), np.arange(n, dtype=np.float64), stats={"k": 1}), POOL_IDS

    compute.calls = calls  # type: ignore[attr-defined]
    return compute


def test_select_once_records_once_then_replays(redis_client) -> None:  # type: ignore[no-untyped-def]
    log = SelectionLog(redis_client)
    compute = _first_free(2)
    kw: dict[str, Any] = {"experiment_id": "e1", "request_id": "r1", "params_hash": "h"}
    rec, replayed = log.select_once(compute, labeled_ids=["item-9"], round_=2, **kw)
    assert not replayed and rec.item_ids == ["item-0", "item-1"] and rec.rows == [0, 1]
    assert rec.round == 2 and rec.strategy == "random" and rec.params_hash == "h"
    assert rec.stats == {"k": 1.0, "compute_seconds": 0.25}
    again, replayed = log.select_once(compute, labeled_ids=["item-9"], **kw)
    assert replayed and again == rec and len(compute.calls) == 1  # no second compute
    with pytest.raises(InvalidArgument, match="request_id 'r1' was already used") as err:
        log.select_once(compute, **{**kw, "params_hash": "other"})
    assert err.value.field == "request_id"
    # a new request of the experiment excludes earlier picks, but not its labeled ids
    compute2 = _first_free(2, frozenset({"item-0"}))
    rec2, _ = log.select_once(compute2, experiment_id="e1", request_id="r2", labeled_ids=["item-0"])
    assert compute2.calls == [{"item-1"}] and rec2.item_ids == ["item-2", "item-3"]
    assert log.round_labeled("e1", 2) == {"item-9"}


def test_select_once_recomputes_after_a_conflict(redis_client) -> None:  # type: ignore[no-untyped-def]
    log = SelectionLog(redis_client)
    inner = _first_free(2)
    raced: list[int] = []

    def compute(earlier: set[str]) -> tuple[_Result, np.ndarray]:
        out = inner(earlier)
        if not raced:  # a concurrent request takes item-1 between our read and our write
            raced.append(1)
            log.record(_rec("other", ["item-1"]), labeled_ids=[])
        return out

    rec, replayed = log.select_once(compute, experiment_id="e1", request_id="mine")
    assert not replayed and inner.calls == [set(), {"item-1"}]
    assert rec.item_ids == ["item-0", "item-2"]
    assert [r.request_id for r in log.records("e1")] == ["other", "mine"]


def test_select_once_gives_up_after_retries(redis_client) -> None:  # type: ignore[no-untyped-def]
    log = SelectionLog(redis_client)
    attempts: list[set[str]] = []

    def compute(earlier: set[str]) -> tuple[_Result, np.ndarray]:
        # every attempt, a concurrent request takes the row this one picks
        attempts.append(set(earlier))
        row = len(earlier)
        log.record(_rec(f"other{row}", [str(POOL_IDS[row])]), labeled_ids=[])
        return _Result(np.asarray([row]), np.zeros(1)), POOL_IDS

    with pytest.raises(Aborted, match="kept taking the same items"):
        log.select_once(compute, experiment_id="e1", request_id="r", retries=2)
    assert attempts == [set(), {"item-0"}, {"item-0", "item-1"}]
    assert log.lookup("e1", "r") is None


def test_select_once_redis_round_trips(redis_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    log = SelectionLog(redis_client)
    log.select_once(_first_free(1), experiment_id="e1", request_id="warm-up")  # loads the script
    trips = [0]
    execute_command = redis_client.execute_command
    make_pipeline = redis_client.pipeline

    def counted_command(*args: Any, **kwargs: Any) -> Any:
        trips[0] += 1
        return execute_command(*args, **kwargs)

    def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        execute = pipe.execute

        def counted_execute(*a: Any, **k: Any) -> Any:
            trips[0] += 1
            return execute(*a, **k)

        pipe.execute = counted_execute
        return pipe

    monkeypatch.setattr(redis_client, "execute_command", counted_command)
    monkeypatch.setattr(redis_client, "pipeline", counted_pipeline)
    log.select_once(_first_free(1), experiment_id="e1", request_id="r1")
    assert trips[0] == 2  # one read (stored answer + earlier picks), one atomic write
    log.select_once(_first_free(1), experiment_id="e1", request_id="r1")
    assert trips[0] == 3  # a replay is one read
    log.select_once(_first_free(1))
    assert trips[0] == 3  # no experiment, no request id: nothing to read or store
