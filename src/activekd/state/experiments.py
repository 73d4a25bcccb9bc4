"""The experiment round state machine, stored in Redis.

One record per experiment and per round; every change is one atomic, versioned Lua script
(``activekd.state.experiment_scripts``) that also appends an event to the experiment's stream.

Round ``r`` (0-based) goes through::

    CREATED -> TEACHER_SCORED -> STUDENT_TRAINED -> POOL_SCORED -> SELECTED -> AWAITING_LABELS
            -> LABELS_COMPLETE -> (round r+1) CREATED ...

and in the last round (``r == num_rounds``) ``STUDENT_TRAINED -> FINISHED``: the student is
trained and evaluated on the final labeled set and nothing more is selected. An experiment thus
makes ``num_rounds`` selections and ``num_rounds + 1`` accuracy points.

Keys (hash tag ``{<id>}``: a Redis Cluster keeps one experiment on one slot)::

    akd:exp:{e}:meta              hash: spec json, state, round, version, budget, sizes, times
    akd:exp:{e}:labels            hash: item id -> label (initial set and every round)
    akd:exp:{e}:label_order       list: item ids in the order they were first labeled
    akd:exp:{e}:picked            set: every id selected through the machine (never re-selected)
    akd:exp:{e}:round:<r>:record  hash: the round's results (accuracy, pools, ids, timings...)
    akd:exp:{e}:round:<r>:pending set: ids selected in round r still waiting for a label
    akd:exp:{e}:corrections       hash: item id -> label ('-1' = withdraw) changed after the
                                  round closed; applied on entering AWAITING_LABELS or CREATED
    akd:exp:{e}:events            stream (MAXLEN ~ 10000): one entry per transition / submission

``activekd.state.selections.SelectionLog`` keeps its own keys under the same ``akd:exp:{e}:``
prefix; ``ExperimentStore.delete`` removes those too. The listing index ``akd:experiments`` (a
sorted set scored by creation time) lives on another slot, so it is written outside the
create script: ``ZADD NX`` first, then the script. A crash in between leaves an index entry
without an experiment, which ``list`` skips.

Crash safety: a driver records each finished step only through ``advance``; after a restart it
reads ``get()`` and resumes from the last completed transition. Labels are written by the same
script that checks them, and the ``picked`` set makes re-selecting an id impossible.

Version: starts at 1 and grows by one with every transition and every label submission that
changed something (a submission completing the round counts twice: labels, then the transition).
"""

from __future__ import annotations

import base64
import builtins
import json
import math
import numbers
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from activekd.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    shown,
)
from activekd.state import experiment_scripts as scripts
from activekd.state.experiment_spec import ExperimentSpec, validate_labeled_items
from activekd.state.round_records import (
    Event,
    Experiment,
    RoundRecord,
    RoundState,
    SubmitResult,
    TransitionAborted,
    _state,
    allowed_next,
    check_experiment_id,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


# ---- round-record encoding: one hash field per value --------------------------------------------
_STR_FIELDS = (
    "teacher_pool_id",
    "student_pool_id",
    "checkpoint_id",
    "selection_request_id",
    "stop_reason",
)
_FLOAT01_FIELDS = ("accuracy", "teacher_agreement", "stability", "stop_set_teacher_agreement")
UPDATE_FIELDS = frozenset((*_STR_FIELDS, *_FLOAT01_FIELDS, "selected_item_ids", "timings", "extra"))


def _encode_updates(updates: Mapping[str, Any]) -> tuple[list[str], list[str] | None]:
    """Validate ``updates``; return (flat field/value list, selected ids or None)."""
    unknown = sorted(set(updates) - UPDATE_FIELDS)
    if unknown:
        raise InvalidArgument(
            f"unknown round update field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(UPDATE_FIELDS))}",
            field="updates",
        )
    flat: list[str] = []
    selected: list[str] | None = None
    for key, value in updates.items():
        if key in _STR_FIELDS:
            if not isinstance(value, str):
                raise InvalidArgument(f"{key} must be a string", field=key)
            flat += [key, value]
        elif key in _FLOAT01_FIELDS:
            num = _finite(value, key)
            if not 0.0 <= num <= 1.0:
                raise InvalidArgument(f"{key} {num} must be in [0, 1]", field=key)
            flat += [key, repr(num)]
        elif key == "selected_item_ids":
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise InvalidArgument("selected_item_ids must be a list of ids", field=key)
            selected = [str(v) for v in value]
            if any(not s for s in selected):
                raise InvalidArgument("selected_item_ids holds an empty id", field=key)
            if len(set(selected)) != len(selected):
                raise InvalidArgument("selected_item_ids repeats an id", field=key)
            flat += [key, json.dumps(selected)]
        elif key == "timings":
            if not isinstance(value, Mapping):
                raise InvalidArgument("timings must map names to seconds", field=key)
            for name, seconds in value.items():
                if not isinstance(name, str) or not _NAME.match(name):
                    raise InvalidArgument(f"timing name {shown(name)} must match {_NAME.pattern}")
                num = _finite(seconds, f"timings[{name}]")
                if num < 0:
                    raise InvalidArgument(f"timings[{name}] {num} must be >= 0", field=key)
                flat += [f"timings.{name}", repr(num)]
        else:  # extra
            if not isinstance(value, Mapping):
                raise InvalidArgument("extra must be a mapping", field=key)
            for name, item in value.items():
                if not isinstance(name, str) or not _NAME.match(name):
                    raise InvalidArgument(f"extra key {shown(name)} must match {_NAME.pattern}")
                try:
                    flat += [f"extra.{name}", json.dumps(item, allow_nan=False)]
                except (TypeError, ValueError) as exc:
                    raise InvalidArgument(f"extra[{name}] is not JSON: {exc}") from exc
    return flat, selected


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(f"{name} must be a number, got {shown(value)}", field=name)
    num = float(value)
    if not math.isfinite(num):
        raise InvalidArgument(f"{name} must be finite, got {num}", field=name)
    return num


def _decode_record(raw: Mapping[Any, Any]) -> RoundRecord:
    fields = {_text(key): _text(value) for key, value in raw.items()}
    record = RoundRecord(round=int(fields["round"]), state=RoundState[fields["state"]])
    record.labeled_count = int(fields.get("labeled_count", "0"))
    for key in _FLOAT01_FIELDS:
        if key in fields:
            setattr(record, key, float(fields[key]))
    for key in _STR_FIELDS:
        setattr(record, key, fields.get(key, ""))
    if "selected_item_ids" in fields:
        record.selected_item_ids = json.loads(fields["selected_item_ids"])
    for key, value in fields.items():
        group, _, name = key.partition(".")
        if not name:
            continue
        if group == "timings":
            record.timings[name] = float(value)
        elif group == "state_times":
            record.state_times[name] = float(value)
        elif group == "extra":
            record.extra[name] = json.loads(value)
    return record


def _text(value: Any) -> str:
    """A Redis reply (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


class ExperimentStore:
    """Experiments and their round state in Redis; safe for concurrent drivers and processes.

    ``valid_strategies``: when given, ``create`` rejects specs naming another strategy.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "akd",
        valid_strategies: set[str] | frozenset[str] | None = None,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.valid_strategies = valid_strategies
        self.index_key = f"{prefix}:experiments"
        self._create = client.register_script(scripts.CREATE)
        self._advance = client.register_script(scripts.ADVANCE)
        self._submit = client.register_script(scripts.SUBMIT_LABELS)

    # ---- keys --------------------------------------------------------------------------------
    def key_prefix(self, experiment_id: str) -> str:
        """``akd:exp:{<id>}``: every key of the experiment starts with this plus ``:``."""
        return f"{self.prefix}:exp:{{{experiment_id}}}"

    def _key(self, experiment_id: str, name: str) -> str:
        return f"{self.key_prefix(experiment_id)}:{name}"

    def _round_key(self, experiment_id: str, round_: int, name: str) -> str:
        return f"{self.key_prefix(experiment_id)}:round:{round_}:{name}"

    # ---- create / read -----------------------------------------------------------------------
    def create(
        self,
        spec: ExperimentSpec,
        experiment_id: str | None = None,
        initial_item_ids: Sequence[str] | None = None,
        initial_labels: Sequence[int] | None = None,
        *,
        pool_size: int | None = None,
    ) -> Experiment:
        """Store a new experiment in round 0, state CREATED, version 1, with its initial labels.

        Initial labels are ``initial_item_ids``/``initial_labels`` when given (e.g. drawn by
        ``activekd.experiment.oracle.initial_labels`` for ``spec.initial_per_class``), else the
        spec's explicit lists. With ``initial_per_class`` set, the given labels must hold exactly
        that many items of every class. ``pool_size`` (rows of the pool) lets ``advance`` demand
        exactly ``min(budget, unlabeled)`` ids per selection; without it only ``<= budget`` is
        checked. ``AlreadyExists`` when the id is taken; ids are generated when not given.
        """
        spec.validate(self.valid_strategies)
        exp_id = (
            check_experiment_id(experiment_id) if experiment_id else f"exp-{uuid.uuid4().hex[:16]}"
        )
        if initial_item_ids is None and initial_labels is None:
            if spec.initial_per_class:
                raise InvalidArgument(
                    "spec.initial_per_class needs the drawn labels: pass initial_item_ids and "
                    "initial_labels (see activekd.experiment.oracle.initial_labels)",
                    field="initial_item_ids",
                )
            ids, labels = list(spec.initial_item_ids), list(spec.initial_labels)
        else:
            ids, labels = list(initial_item_ids or []), list(initial_labels or [])
        validate_labeled_items(ids, labels, spec.num_classes)
        if not ids:
            raise InvalidArgument("an experiment needs at least one initial label")
        if spec.initial_per_class:
            counts = [0] * spec.num_classes
            for lab in labels:
                counts[int(lab)] += 1
            wrong = [c for c, n in enumerate(counts) if n != spec.initial_per_class]
            if wrong:
                raise InvalidArgument(
                    f"initial labels must hold {spec.initial_per_class} item(s) of every class; "
                    f"class {wrong[0]} has {counts[wrong[0]]}",
                    field="initial_labels",
                )
        if pool_size is not None:
            if isinstance(pool_size, bool) or not isinstance(pool_size, numbers.Integral):
                raise InvalidArgument(f"pool_size {shown(pool_size)} must be a positive integer")
            pool_size = int(pool_size)
            if pool_size < 1:
                raise InvalidArgument(f"pool_size {pool_size} must be a positive integer")
            if pool_size < len(ids):
                raise InvalidArgument(
                    f"pool_size {pool_size} is smaller than the {len(ids)} initial labels"
                )
        created = time.time()
        self.redis.zadd(self.index_key, {exp_id: created}, nx=True)
        keys = [self._key(exp_id, n) for n in ("meta", "labels", "label_order", "picked")]
        keys += [self._round_key(exp_id, 0, "record"), self._round_key(exp_id, 0, "pending")]
        keys.append(self._key(exp_id, "events"))
        args: list[Any] = [
            exp_id,
            spec.to_json(),
            spec.num_rounds,
            spec.budget_per_round,
            spec.num_classes,
            pool_size or 0,
            repr(created),
            f"created with {len(ids)} initial labels, {spec.num_rounds} rounds",
            len(ids),
            *ids,
            *[str(int(x)) for x in labels],
        ]
        res = self._create(keys=keys, args=args)
        if _text(res[0]) == "exists":
            raise AlreadyExists(f"experiment {shown(exp_id)} already exists", field="experiment_id")
        return self.get(exp_id)

    def get(self, experiment_id: str) -> Experiment:
        """A consistent snapshot (one MULTI/EXEC) of the experiment; ``NotFound`` if absent."""
        check_experiment_id(experiment_id)
        meta_key = self._key(experiment_id, "meta")
        for _ in range(10):
            seen = self.redis.hget(meta_key, "round")
            if seen is None:
                raise NotFound(
                    f"experiment {shown(experiment_id)} not found", field="experiment_id"
                )
            n_rounds = int(seen) + 1
            pipe = self.redis.pipeline(transaction=True)
            pipe.hgetall(meta_key)
            pipe.hlen(self._key(experiment_id, "labels"))
            pipe.scard(self._round_key(experiment_id, int(seen), "pending"))
            pipe.hlen(self._key(experiment_id, "corrections"))
            for r in range(n_rounds):
                pipe.hgetall(self._round_key(experiment_id, r, "record"))
            out = pipe.execute()
            raw_meta = {k.decode(): v.decode() for k, v in out[0].items()}
            if not raw_meta:
                raise NotFound(
                    f"experiment {shown(experiment_id)} not found", field="experiment_id"
                )
            if int(raw_meta["round"]) + 1 != n_rounds:
                continue  # a round began between the two reads; read again
            rounds = [_decode_record(r) for r in out[4:] if r]
            return Experiment(
                experiment_id=experiment_id,
                spec=ExperimentSpec.from_json(raw_meta["spec"]),
                state=RoundState[raw_meta["state"]],
                current_round=int(raw_meta["round"]),
                version=int(raw_meta["version"]),
                labeled_count=int(out[1]),
                pending_labels=int(out[2]),
                pending_corrections=int(out[3]),
                pool_size=int(raw_meta["pool_size"]) or None,
                created_unix=float(raw_meta["created_unix"]),
                updated_unix=float(raw_meta["updated_unix"]),
                rounds=rounds,
                stop_reason=rounds[-1].stop_reason if rounds else "",
            )
        raise Aborted(f"experiment {shown(experiment_id)} kept changing while being read; retry")

    def round_record(self, experiment_id: str, round_: int) -> RoundRecord:
        """The record of round ``round_``; ``NotFound`` if that round has not begun."""
        check_experiment_id(experiment_id)
        raw: Any = self.redis.hgetall(self._round_key(experiment_id, round_, "record"))
        if not raw:
            raise NotFound(
                f"experiment {shown(experiment_id)} has no round {round_}", field="round"
            )
        return _decode_record(raw)

    def labels(self, experiment_id: str) -> dict[str, int]:
        """Every label of the experiment (initial set and all rounds)."""
        self._require(experiment_id)
        raw: Any = self.redis.hgetall(self._key(experiment_id, "labels"))
        return {_text(k): int(v) for k, v in raw.items()}

    def labeled_ids(self, experiment_id: str) -> builtins.list[str]:
        """Labeled item ids in the order they were first labeled (initial set first)."""
        self._require(experiment_id)
        return [_text(m) for m in self.redis.lrange(self._key(experiment_id, "label_order"), 0, -1)]

    def pending_ids(self, experiment_id: str) -> builtins.list[str]:
        """Ids selected in the current round that still wait for a label (sorted)."""
        exp = self.get(experiment_id)
        key = self._round_key(experiment_id, exp.current_round, "pending")
        return sorted(_text(m) for m in self.redis.smembers(key))

    def _require(self, experiment_id: str) -> None:
        check_experiment_id(experiment_id)
        if not self.redis.exists(self._key(experiment_id, "meta")):
            raise NotFound(f"experiment {shown(experiment_id)} not found", field="experiment_id")

    # ---- transitions -------------------------------------------------------------------------
    def advance(
        self,
        experiment_id: str,
        from_state: RoundState | int | str,
        to_state: RoundState | int | str,
        *,
        expected_version: int | None = None,
        updates: Mapping[str, Any] | None = None,
        message: str = "",
    ) -> Experiment:
        """Move the experiment ``from_state`` -> ``to_state`` atomically (compare-and-set).

        Raises ``TransitionAborted`` (an ``Aborted``) when the experiment is not in
        ``from_state`` of the round the caller read, or its version differs from
        ``expected_version``; ``FailedPrecondition`` naming the allowed next states when the
        transition is not legal, when moving to SELECTED with ids that were labeled or selected
        before or the wrong number of them, and when completing labels that are still pending.
        ``updates`` (keys in ``UPDATE_FIELDS``) are written into the round record: for
        LABELS_COMPLETE -> CREATED that is the new round's record. SELECTED requires
        ``updates["selected_item_ids"]``. POOL_SCORED -> FINISHED (stopping early) is legal
        only with ``updates["stop_reason"]``, and then it is the only legal move.
        """
        check_experiment_id(experiment_id)
        src, dst = _state(from_state, "from_state"), _state(to_state, "to_state")
        flat, selected = _encode_updates(updates or {})
        if dst is RoundState.SELECTED and selected is None:
            raise InvalidArgument(
                "moving to SELECTED needs updates['selected_item_ids']", field="selected_item_ids"
            )
        if dst is not RoundState.SELECTED and selected is not None:
            raise InvalidArgument(
                f"selected_item_ids can only be recorded when moving to SELECTED, not {dst.name}",
                field="selected_item_ids",
            )
        meta: Any = self.redis.hmget(
            self._key(experiment_id, "meta"), ["state", "round", "version", "num_rounds", "budget"]
        )
        if meta[0] is None:
            raise NotFound(f"experiment {shown(experiment_id)} not found", field="experiment_id")
        cur = RoundState[_text(meta[0])]
        round_, version, num_rounds, budget = (int(m) for m in meta[1:])
        if cur is not src:
            raise self._aborted(
                experiment_id, f"is in {cur.name}, not {src.name}", cur, round_, version
            )
        if expected_version is not None and expected_version != version:
            raise self._aborted(
                experiment_id,
                f"is at version {version}, not {expected_version}",
                cur,
                round_,
                version,
            )
        legal = allowed_next(cur, round_, num_rounds)
        if cur is RoundState.POOL_SCORED and (updates or {}).get("stop_reason"):
            legal = (RoundState.FINISHED,)  # the stopping rule fired (ExperimentSpec.stopping)
        if dst not in legal:
            allowed = ", ".join(s.name for s in legal) or "none (the experiment is finished)"
            raise FailedPrecondition(
                f"experiment {shown(experiment_id)} is in {cur.name} (round {round_} of {num_rounds}); "
                f"it cannot move to {dst.name}; allowed next: {allowed}"
            )
        if selected is not None and len(selected) > budget:
            raise FailedPrecondition(
                f"{len(selected)} ids selected but the budget per round is {budget}",
                field="selected_item_ids",
            )
        keys = [
            self._key(experiment_id, "meta"),
            self._key(experiment_id, "labels"),
            self._key(experiment_id, "picked"),
            self._round_key(experiment_id, round_, "record"),
            self._round_key(experiment_id, round_, "pending"),
            self._key(experiment_id, "events"),
            self._round_key(experiment_id, round_ + 1, "record"),
            self._round_key(experiment_id, round_ + 1, "pending"),
            self._key(experiment_id, "corrections"),
            self._key(experiment_id, "label_order"),
        ]
        msg = f"{src.name} -> {dst.name}" + (f": {message}" if message else "")
        sel = selected or []
        args: list[Any] = [
            experiment_id,
            round_,
            src.name,
            dst.name,
            "" if expected_version is None else expected_version,
            msg,
            len(flat) // 2,
            *flat,
            len(sel),
            *sel,
        ]
        res = [_text(x) for x in self._advance(keys=keys, args=args)]
        status = res[0]
        if status == "ok":
            return self.get(experiment_id)
        if status == "not_found":
            raise NotFound(f"experiment {shown(experiment_id)} not found", field="experiment_id")
        if status in ("aborted", "version"):
            found, f_round, f_version = RoundState[res[1]], int(res[2]), int(res[3])
            why = (
                f"is at version {f_version}, not {expected_version}"
                if status == "version"
                else f"changed concurrently (now {found.name}, round {f_round})"
            )
            raise self._aborted(experiment_id, why, found, f_round, f_version)
        if status == "reselect":
            again = [str(i) for i in json.loads(res[2]) or []]
            listed = ", ".join(i if len(i) <= 32 else shown(i, 32) for i in again[:5])
            more = f" and {len(again) - 5} more" if len(again) > 5 else ""
            raise FailedPrecondition(
                f"{res[1]} selected id(s) were labeled or selected earlier in experiment "
                f"{shown(experiment_id)}: {listed}{more}",
                field="selected_item_ids",
            )
        if status == "count":
            need, unlabeled = int(res[1]), int(res[2])
            left = f"{unlabeled} unlabeled items remain" if unlabeled >= 0 else "pool size unknown"
            raise FailedPrecondition(
                f"{len(sel)} ids selected; round {round_} needs exactly {need} "
                f"(budget {budget}, {left})",
                field="selected_item_ids",
            )
        if status == "pending":
            raise FailedPrecondition(
                f"{res[1]} selected item(s) of round {round_} still wait for a label; "
                "submit them before LABELS_COMPLETE"
            )
        raise RuntimeError(f"unexpected script answer {shown(res)}")  # pragma: no cover

    def _aborted(
        self, experiment_id: str, why: str, state: RoundState, round_: int, version: int
    ) -> TransitionAborted:
        return TransitionAborted(
            f"experiment {shown(experiment_id)} {why} (state {state.name}, round {round_}, "
            f"version {version}); re-read it and retry",
            state=state,
            round_=round_,
            version=version,
        )

    # ---- labels ------------------------------------------------------------------------------
    def submit_labels(
        self,
        experiment_id: str,
        labels: Mapping[str, int],
        overwrite: bool = False,
        withdraw: Iterable[str] = (),
    ) -> SubmitResult:
        """Store, change or withdraw labels; all or nothing (the label lifecycle).

        While the round is AWAITING_LABELS: labels for this round's pending picks are stored;
        ids neither selected this round nor labeled before, and labels outside ``[0, C)``, are
        an ``InvalidArgument`` listing them. The same label again is a no-op (``unchanged``). A
        different label for a labeled id (initial set, earlier rounds, or this round) is a
        ``FailedPrecondition`` unless ``overwrite``, and then applies at once; ``withdraw``
        removes labels at once, and a withdrawn pick of this round waits for a label again.
        When the last pending id is labeled the round moves to LABELS_COMPLETE in the same
        script.

        In any other state (the round closed): new labels are a ``FailedPrecondition``; changes
        to existing labels (``overwrite``, ``withdraw``) are recorded as *corrections*
        (``deferred``), applied when the experiment next enters AWAITING_LABELS or CREATED
        (the next round trains on them); a change back to the stored label cancels a queued
        correction. Withdrawing an id that has no label is ``unchanged``, so retries are safe.
        """
        withdraw_ids = [w for w in withdraw]
        for item in withdraw_ids:
            if not isinstance(item, str) or not item:
                raise InvalidArgument(f"item id {shown(item)} must be a non-empty string")
        both = sorted(set(withdraw_ids) & set(labels))
        if both:
            raise InvalidArgument(
                f"{len(both)} id(s) are both labeled and withdrawn in one request: "
                + ", ".join(shown(b, 32) for b in both[:5]),
                field="withdraw_item_ids",
            )
        withdraw_ids = list(dict.fromkeys(withdraw_ids))
        check_experiment_id(experiment_id)
        if not labels and not withdraw_ids:
            raise InvalidArgument("no labels given", field="labels")
        flat: list[str] = []
        for item, lab in labels.items():
            if not isinstance(item, str) or not item:
                raise InvalidArgument(f"item id {shown(item)} must be a non-empty string")
            if isinstance(lab, bool) or not isinstance(lab, numbers.Integral):
                raise InvalidArgument(f"label {shown(lab)} for {shown(item)} is not an integer")
            flat += [item, str(int(lab))]
        meta_key = self._key(experiment_id, "meta")
        for _ in range(10):
            seen = self.redis.hget(meta_key, "round")
            if seen is None:
                raise NotFound(
                    f"experiment {shown(experiment_id)} not found", field="experiment_id"
                )
            r = int(seen)
            keys = [
                meta_key,
                self._key(experiment_id, "labels"),
                self._key(experiment_id, "label_order"),
                self._round_key(experiment_id, r, "pending"),
                self._round_key(experiment_id, r, "record"),
                self._key(experiment_id, "events"),
                self._key(experiment_id, "corrections"),
            ]
            args: list[Any] = [
                experiment_id,
                r,
                int(overwrite),
                len(withdraw_ids),
                *withdraw_ids,
                *flat,
            ]
            res = [_text(x) for x in self._submit(keys=keys, args=args)]
            if res[0] != "stale":
                break
        else:
            raise Aborted(f"experiment {shown(experiment_id)} kept changing rounds; retry")
        status = res[0]
        if status == "ok":
            return SubmitResult(
                accepted=int(res[1]),
                unchanged=int(res[2]),
                remaining=int(res[3]),
                state=RoundState[res[4]],
                version=int(res[5]),
                withdrawn=int(res[6]),
                deferred=int(res[7]),
            )
        if status == "not_found":
            raise NotFound(f"experiment {shown(experiment_id)} not found", field="experiment_id")
        if status == "state":
            raise FailedPrecondition(
                f"experiment {shown(experiment_id)} is in {res[1]} (round {res[2]}, version {res[3]}); "
                "new labels are accepted only in AWAITING_LABELS (changes to existing labels, "
                "with overwrite or withdraw, are queued as corrections)"
            )
        if status == "invalid":
            parts = []
            if int(res[1]):
                parts.append(
                    f"{res[1]} id(s) not selected in this round and not labeled before: "
                    + ", ".join(json.loads(res[2]) or [])
                )
            if int(res[3]):
                parts.append(
                    f"{res[3]} label(s) outside [0, {res[5]}): "
                    + ", ".join(json.loads(res[4]) or [])
                )
            raise InvalidArgument("; ".join(parts) + "; nothing was stored", field="labels")
        if status == "conflict":
            raise FailedPrecondition(
                f"{res[1]} id(s) already have a different label (id=current): "
                + ", ".join(json.loads(res[2]) or [])
                + "; pass overwrite=True to change them; nothing was stored",
                field="labels",
            )
        raise RuntimeError(f"unexpected script answer {shown(res)}")  # pragma: no cover

    # ---- events ------------------------------------------------------------------------------
    def events(
        self,
        experiment_id: str,
        after: str = "0-0",
        block_ms: int | None = None,
        count: int = 100,
    ) -> builtins.list[Event]:
        """Events with stream id greater than ``after``, oldest first (XREAD).

        ``after="0-0"`` replays history; pass the last ``event_id`` to continue, or ``"$"`` for
        only new ones. With ``block_ms`` the call waits up to that long for a first event
        (0 = forever; keep it below the client's socket timeout) and returns ``[]`` on timeout.
        """
        self._require(experiment_id)
        key = self._key(experiment_id, "events")
        reply: Any = self.redis.xread({key: after}, count=count, block=block_ms)
        out: builtins.list[Event] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                f = {_text(k): _text(v) for k, v in fields.items()}
                out.append(
                    Event(
                        event_id=_text(entry_id),
                        experiment_id=f["experiment_id"],
                        round=int(f["round"]),
                        state=RoundState[f["state"]],
                        version=int(f["version"]),
                        unix_time=float(f["unix_time"]),
                        message=f["message"],
                        kind=f["kind"],
                        from_state=RoundState[f["from_state"]] if f["from_state"] else None,
                    )
                )
        return out

    # ---- delete / list -----------------------------------------------------------------------
    def delete(self, experiment_id: str) -> int:
        """Remove every key under ``akd:exp:{<id>}:`` (found with SCAN) and the index entry.

        Returns the number of keys removed; ``NotFound`` when the experiment did not exist
        (stray keys under its prefix are removed anyway).
        """
        check_experiment_id(experiment_id)
        existed = int(self.redis.delete(self._key(experiment_id, "meta")))
        removed = existed
        pattern = _glob_escape(self.key_prefix(experiment_id)) + ":*"
        batch: builtins.list[bytes] = []
        for key in self.redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                removed += int(self.redis.unlink(*batch))
                batch = []
        if batch:
            removed += int(self.redis.unlink(*batch))
        self.redis.zrem(self.index_key, experiment_id)
        if not existed:
            raise NotFound(f"experiment {shown(experiment_id)} not found", field="experiment_id")
        return removed

    def list(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[builtins.list[Experiment], str]:
        """A page of experiments, oldest first (creation time, then id); ``("", ...)`` at the end.

        ``page_size`` 0 means 50; it is capped at 500. The token is opaque.
        """
        if page_size < 0:
            raise InvalidArgument(f"page_size {page_size} must be >= 0", field="page_size")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(page_token) if page_token else None
        lo: float | str = after[0] if after else "-inf"
        found: builtins.list[tuple[float, str, Experiment]] = []
        offset = 0
        while len(found) <= size:
            batch: Any = self.redis.zrangebyscore(
                self.index_key, lo, "+inf", start=offset, num=size + 1, withscores=True
            )
            if not batch:
                break
            offset += len(batch)
            for member, score in batch:
                exp_id = _text(member)
                if after and (score, exp_id) <= after:
                    continue
                try:
                    exp = self.get(exp_id)
                except NotFound:
                    continue  # index entry of a half-created or half-deleted experiment
                found.append((score, exp_id, exp))
                if len(found) > size:
                    break
        token = ""
        if len(found) > size:
            found = found[:size]
            token = _encode_token(found[-1][0], found[-1][1])
        return [f[2] for f in found], token


def _encode_token(score: float, exp_id: str) -> str:
    raw = json.dumps([score, exp_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        score, exp_id = json.loads(raw)
        return float(score), str(exp_id)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(
            f"page_token {shown(token)} is not one this server issued", field="page_token"
        ) from exc


def labels_by_item(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """``(item_id, label)`` pairs as a dict; an id given twice with different labels is an
    InvalidArgument (twice with the same label is fine)."""
    labels: dict[str, int] = {}
    for item_id, label in pairs:
        if item_id in labels and labels[item_id] != label:
            raise InvalidArgument(
                f"item {shown(item_id)} appears twice with different labels", field="labels"
            )
        labels[item_id] = int(label)
    return labels


__all__ = [
    "UPDATE_FIELDS",
    "Event",
    "Experiment",
    "ExperimentStore",
    "RoundRecord",
    "RoundState",
    "SubmitResult",
    "TransitionAborted",
    "allowed_next",
    "check_experiment_id",
    "labels_by_item",
]
