"""Selections recorded per experiment and round, atomically, in Redis.

Keys share the hash tag ``{<experiment>}`` so a Redis Cluster keeps one experiment on one slot:
- ``akd:exp:{e}:selected``       set of every item id selected in the experiment
- ``akd:exp:{e}:selections``     list of JSON records (round, request_id, strategy, ids, scores)
- ``akd:exp:{e}:req:<request>``  the stored answer of a request id (idempotency)
- ``akd:exp:{e}:round:<r>:labeled``  the labeled ids a round's selection was made with
Requests without an experiment keep only the idempotency key ``akd:req:{<request>}`` (with a TTL).

``record`` is one Lua script: it refuses to store a selection that overlaps earlier selections of
the experiment, and returns the stored answer when the request id is already known.
``select_once`` is the whole idempotent SelectBatch: one read (stored answer + earlier selections,
pipelined), the compute step the caller passes in, one ``record``; a conflict with a concurrent
selection reads and computes again, up to ``RETRIES_ON_CONFLICT`` times.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import redis

from activekd.errors import Aborted, InvalidArgument, shown
from activekd.ids import check_experiment_id, check_request_id

REQUEST_TTL_SECONDS = 7 * 24 * 3600

#: Times ``select_once`` recomputes after a concurrent selection took one of its picks.
RETRIES_ON_CONFLICT = 3

_RECORD = """
-- KEYS: 1 req key, 2 selected set, 3 records list, 4 round labeled set
-- ARGV: 1 record json, 2 ttl (0 = none), 3 n_labeled, then labeled ids, then picked ids
local existing = redis.call('GET', KEYS[1])
if existing then return {'replay', existing} end
local n_labeled = tonumber(ARGV[3])
local first_pick = 4 + n_labeled
if KEYS[2] ~= '' then
  for i = first_pick, #ARGV do
    if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 1 then return {'conflict', ARGV[i]} end
  end
  for i = first_pick, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
  redis.call('RPUSH', KEYS[3], ARGV[1])
  for i = 4, first_pick - 1 do redis.call('SADD', KEYS[4], ARGV[i]) end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return {'ok', ARGV[1]}
"""


class Picks(Protocol):
    """What a compute step returns (``activekd.selection.SelectionResult`` is one)."""

    indices: Any  # pool row ids in pick order
    scores: Any  # one float per pick
    strategy: str
    stats: dict[str, float]
    elapsed_seconds: float


#: ``compute(earlier_ids) -> (result, pool item ids by row)``: ``earlier_ids`` are the items
#: selected earlier in the experiment (labeled ones left out), to exclude from the picks.
ComputeFn = Callable[[set[str]], tuple[Picks, Sequence[str] | np.ndarray]]


@dataclass
class SelectionRecord:
    """One stored selection."""

    request_id: str
    strategy: str
    item_ids: list[str]
    scores: list[float]
    rows: list[int]
    round: int = 0
    experiment_id: str = ""
    created_unix: float = field(default_factory=time.time)
    stats: dict[str, float] = field(default_factory=dict)
    params_hash: str = ""

    @classmethod
    def from_result(
        cls,
        result: Picks,
        pool_item_ids: Sequence[str] | np.ndarray,
        *,
        request_id: str = "",
        experiment_id: str = "",
        round_: int = 0,
        params_hash: str = "",
    ) -> SelectionRecord:
        """The stored form of a selection result; ``pool_item_ids`` names the pool's rows.

        ``stats`` gets ``compute_seconds`` = the result's ``elapsed_seconds``.
        """
        rows = [int(i) for i in result.indices]
        stats = {k: float(v) for k, v in (result.stats or {}).items()}
        stats["compute_seconds"] = float(result.elapsed_seconds)
        return cls(
            request_id=request_id,
            strategy=result.strategy,
            item_ids=[str(pool_item_ids[i]) for i in rows],
            scores=[float(s) for s in result.scores],
            rows=rows,
            round=round_,
            experiment_id=experiment_id,
            stats=stats,
            params_hash=params_hash,
        )


class Conflict(Exception):
    """The selection overlaps one recorded concurrently; recompute with the new exclusions."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class SelectionLog:
    """Reads and writes selection records."""

    def __init__(self, client: redis.Redis, prefix: str = "akd") -> None:
        self.redis = client
        self.prefix = prefix
        self._record = client.register_script(_RECORD)

    def _exp(self, experiment_id: str) -> str:
        """The key prefix of an experiment; the id must pass :func:`activekd.ids.check_experiment_id`."""
        return f"{self.prefix}:exp:{{{check_experiment_id(experiment_id)}}}"

    def _req_key(self, experiment_id: str, request_id: str) -> str:
        if request_id:
            check_request_id(request_id)
        if experiment_id:
            return f"{self._exp(experiment_id)}:req:{request_id}"
        return f"{self.prefix}:req:{{{request_id}}}"

    @staticmethod
    def _check_ids(experiment_id: str, request_id: str) -> None:
        """Validate the ids a request names (empty means "none" and is left to the caller)."""
        if experiment_id:
            check_experiment_id(experiment_id)
        if request_id:
            check_request_id(request_id)

    def lookup(self, experiment_id: str, request_id: str) -> SelectionRecord | None:
        """The stored answer for a request id, if any."""
        if not request_id:
            return None
        raw = self.redis.get(self._req_key(experiment_id, request_id))
        return SelectionRecord(**json.loads(raw)) if raw else None

    def selected_ids(self, experiment_id: str) -> set[str]:
        """Every item id selected so far in the experiment."""
        if not experiment_id:
            return set()
        return {_text(m) for m in self.redis.smembers(f"{self._exp(experiment_id)}:selected")}

    def records(self, experiment_id: str) -> list[SelectionRecord]:
        """All selections of an experiment, oldest first."""
        raw = self.redis.lrange(f"{self._exp(experiment_id)}:selections", 0, -1)
        return [SelectionRecord(**json.loads(r)) for r in raw]

    def record(self, rec: SelectionRecord, labeled_ids: list[str]) -> tuple[SelectionRecord, bool]:
        """Store ``rec`` atomically. Returns (stored record, replayed).

        Raises Conflict when another selection of the experiment took one of the ids meanwhile.
        """
        if len(set(rec.item_ids)) != len(rec.item_ids):
            raise InvalidArgument("a selection cannot contain an item twice")
        if rec.experiment_id:
            exp = self._exp(rec.experiment_id)
            keys = [
                self._req_key(rec.experiment_id, rec.request_id),
                f"{exp}:selected",
                f"{exp}:selections",
                f"{exp}:round:{rec.round}:labeled",
            ]
            ttl = 0
        else:
            keys = [self._req_key("", rec.request_id), "", "", ""]
            ttl = REQUEST_TTL_SECONDS
            if not rec.request_id:
                return rec, False
        args: list[str | int] = [
            json.dumps(asdict(rec)),
            ttl,
            len(labeled_ids),
            *labeled_ids,
            *rec.item_ids,
        ]
        status, payload = self._record(keys=keys, args=args)
        status = status.decode() if isinstance(status, bytes) else status
        if status == "conflict":
            raise Conflict(payload.decode() if isinstance(payload, bytes) else payload)
        stored = SelectionRecord(**json.loads(payload))
        return stored, status == "replay"

    def select_once(
        self,
        compute: ComputeFn,
        *,
        experiment_id: str = "",
        request_id: str = "",
        labeled_ids: Sequence[str] = (),
        round_: int = 0,
        params_hash: str = "",
        retries: int = RETRIES_ON_CONFLICT,
    ) -> tuple[SelectionRecord, bool]:
        """The selection of ``request_id``, computed and recorded at most once. Returns
        (stored record, replayed).

        A known request id returns its stored answer without computing (InvalidArgument when
        it was stored with another ``params_hash``). Otherwise ``compute`` runs on the ids
        selected earlier in the experiment and the result is recorded; when a concurrent
        selection took one of its picks meanwhile, it reads and computes again (Aborted after
        ``retries`` retries). Redis round trips: one read, plus one write when not replayed.
        """
        self._check_ids(experiment_id, request_id)
        labeled = list(labeled_ids)
        for _attempt in range(retries + 1):
            stored, earlier = self._read(experiment_id, request_id)
            replayed = stored is not None
            if stored is None:
                result, pool_item_ids = compute(earlier - set(labeled))
                rec = SelectionRecord.from_result(
                    result,
                    pool_item_ids,
                    request_id=request_id,
                    experiment_id=experiment_id,
                    round_=round_,
                    params_hash=params_hash,
                )
                try:
                    stored, replayed = self.record(rec, labeled)
                except Conflict:
                    continue
            if replayed and stored.params_hash and stored.params_hash != params_hash:
                raise InvalidArgument(
                    f"request_id {shown(request_id)} was already used for a different request",
                    field="request_id",
                )
            return stored, replayed
        raise Aborted("concurrent selections in this experiment kept taking the same items; retry")

    def _read(self, experiment_id: str, request_id: str) -> tuple[SelectionRecord | None, set[str]]:
        """(stored answer of ``request_id``, ids selected in the experiment) in one round trip."""
        if not request_id and not experiment_id:
            return None, set()
        pipe = self.redis.pipeline(transaction=False)
        if request_id:
            pipe.get(self._req_key(experiment_id, request_id))
        if experiment_id:
            pipe.smembers(f"{self._exp(experiment_id)}:selected")
        replies = pipe.execute()
        raw = replies[0] if request_id else None
        members = replies[-1] if experiment_id else ()
        stored = SelectionRecord(**json.loads(raw)) if raw else None
        return stored, {_text(m) for m in members}

    def round_labeled(self, experiment_id: str, round_: int) -> set[str]:
        """The labeled ids a round's selection was made with."""
        key = f"{self._exp(experiment_id)}:round:{round_}:labeled"
        return {_text(m) for m in self.redis.smembers(key)}
