"""What Label Studio told the backend, kept in Redis so a restart loses nothing.

Keys (one hash tag per bound experiment, so a Redis Cluster keeps them on one slot)::

    akd:ls:{<experiment>}:records   hash: annotation id -> latest known AnnotationRecord (JSON);
                                    a deletion stays as a tombstone so a late retry of an older
                                    "created" webhook cannot bring the label back
    akd:ls:{<experiment>}:applied   hash: item id -> label last accepted by SubmitLabels
    akd:ls:{<experiment>}:imported  hash: round -> number of tasks imported for its picks
    akd:ls:{<experiment>}:rejected  hash: item id -> why SubmitLabels refused its label

Writes are idempotent: recording an annotation version older than (or equal to) the stored one
changes nothing, so webhook retries and full resyncs can be replayed in any order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from activekd.annotation.lifecycle import AnnotationRecord
from activekd.ids import check_experiment_id

_RECORD = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local o = cjson.decode(old)
  local n = cjson.decode(ARGV[2])
  local ot, nt = tonumber(o['updated_unix']), tonumber(n['updated_unix'])
  if nt < ot then return 0 end
  if nt == ot and (o['deleted'] or not n['deleted']) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class AnnotationLedger:
    """The annotation records, submitted labels and imported rounds of one experiment."""

    def __init__(self, client: redis.Redis, experiment_id: str) -> None:
        check_experiment_id(experiment_id)
        self.redis, self.experiment_id = client, experiment_id
        self._record = client.register_script(_RECORD)

    def _key(self, name: str) -> str:
        return f"akd:ls:{{{self.experiment_id}}}:{name}"

    # ---- annotations -------------------------------------------------------------------------
    def record(self, rec: AnnotationRecord) -> bool:
        """Store ``rec`` unless a newer version of that annotation is stored; True if stored."""
        raw = json.dumps(rec.to_dict(), sort_keys=True)
        return bool(self._record(keys=[self._key("records")], args=[rec.annotation_id, raw]))

    def delete(self, annotation_id: int, when: float) -> bool:
        """Tombstone an annotation (deleted in Label Studio at ``when``); True if changed."""
        old = self.get(annotation_id)
        base = old or AnnotationRecord(int(annotation_id), 0, "", None, when)
        if old is not None and old.deleted:
            return False
        tomb = AnnotationRecord(
            base.annotation_id,
            base.task_id,
            base.item_id,
            None,
            max(when, base.updated_unix),
            deleted=True,
        )
        return self.record(tomb)

    def get(self, annotation_id: int) -> AnnotationRecord | None:
        raw: Any = self.redis.hget(self._key("records"), str(int(annotation_id)))
        return None if raw is None else AnnotationRecord.from_dict(json.loads(raw))

    def records(self) -> list[AnnotationRecord]:
        raw: Any = self.redis.hgetall(self._key("records"))
        return [AnnotationRecord.from_dict(json.loads(v)) for v in raw.values()]

    def live_ids(self) -> set[int]:
        return {r.annotation_id for r in self.records() if not r.deleted}

    # ---- labels sent to the experiment -------------------------------------------------------
    def applied(self) -> dict[str, int]:
        raw: Any = self.redis.hgetall(self._key("applied"))
        return {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}

    def mark_applied(self, labels: Mapping[str, int], withdrawn: Iterable[str]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        if labels:
            pipe.hset(self._key("applied"), mapping={k: int(v) for k, v in labels.items()})
            pipe.hdel(self._key("rejected"), *labels)
        gone = list(withdrawn)
        if gone:
            pipe.hdel(self._key("applied"), *gone)
        pipe.execute()

    def reject(self, item_id: str, why: str) -> None:
        self.redis.hset(self._key("rejected"), item_id, why[:300])

    def rejected(self) -> dict[str, str]:
        raw: Any = self.redis.hgetall(self._key("rejected"))
        return {_text(k): _text(v) for k, v in raw.items()}

    # ---- rounds ------------------------------------------------------------------------------
    def imported(self, round_: int) -> int | None:
        raw: Any = self.redis.hget(self._key("imported"), str(int(round_)))
        return None if raw is None else int(raw)

    def mark_imported(self, round_: int, n_tasks: int) -> None:
        self.redis.hset(self._key("imported"), str(int(round_)), int(n_tasks))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = ["AnnotationLedger"]
