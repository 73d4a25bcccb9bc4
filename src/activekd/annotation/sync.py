"""The worker between Label Studio and the experiment service.

Webhooks only *record* (:meth:`AnnotationSync.ingest`); :meth:`AnnotationSync.sync_once` does
the rest, in this order, and is safe to repeat at any time (after a crash, twice in a row, from
a timer):

1. resolve every recorded annotation to one label per item (``lifecycle.resolve``) and send the
   difference to what was last accepted (``lifecycle.plan``) with one ``SubmitLabels``
   (``overwrite`` + ``withdraw_item_ids``); labels the service refuses are set aside with the
   reason (``ledger.rejected``) so one bad annotation cannot block the others;
2. when the round's labels are complete, advance the experiment (training, scoring, selecting)
   until it waits for labels again or finishes;
3. import the waiting round's picks as tasks (skipping items the project already has), with
   predictions ranked in pick order.

:meth:`AnnotationSync.resync` pulls every annotation from Label Studio (at start and on a
timer) and tombstones recorded ones that no longer exist, so a webhook missed while the backend
was down is not lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from activekd.annotation.classes import ClassMap
from activekd.annotation.ledger import AnnotationLedger
from activekd.annotation.lifecycle import plan, record_from_annotation, resolve
from activekd.annotation.tasks import model_version, rank_score, round_tasks
from activekd.errors import ActiveKDError, InvalidArgument, shown
from activekd.state.round_records import RoundState
from activekd.store import PoolStore

log = logging.getLogger("activekd.annotation")

#: states in which the worker advances the experiment (labels are complete or not yet asked)
_ADVANCE = {
    RoundState.CREATED,
    RoundState.TEACHER_SCORED,
    RoundState.STUDENT_TRAINED,
    RoundState.POOL_SCORED,
    RoundState.SELECTED,
    RoundState.LABELS_COMPLETE,
}


class Project(Protocol):
    """What the worker needs of Label Studio (``labelstudio.LabelStudioProject``)."""

    def label_config(self) -> str: ...
    def tasks(self) -> Any: ...
    def import_tasks(self, tasks: Any) -> list[int]: ...
    def annotations(self) -> Any: ...


@dataclass
class SyncReport:
    """What one :meth:`AnnotationSync.sync_once` did."""

    submitted: int = 0
    withdrawn: int = 0
    deferred: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    transitions: list[str] = field(default_factory=list)
    imported: int = 0
    state: str = ""
    round: int = 0


class AnnotationSync:
    """Keeps one experiment and one Label Studio project in step (see the module doc)."""

    def __init__(
        self,
        experiments: Any,  # activekd.client.ExperimentClient
        pools: PoolStore,
        ledger: AnnotationLedger,
        project: Project,
        experiment_id: str,
        auto_advance: bool = True,
    ) -> None:
        self.experiments, self.pools, self.ledger = experiments, pools, ledger
        self.project, self.experiment_id, self.auto_advance = project, experiment_id, auto_advance
        self._classes: ClassMap | None = None
        self._missing: set[int] = set()  # recorded, but not listed by the last resync

    # ---- setup -------------------------------------------------------------------------------
    @property
    def classes(self) -> ClassMap:
        """The project's choices checked against the experiment's classes (cached)."""
        if self._classes is None:
            exp = self.experiments.get(self.experiment_id)
            self._classes = ClassMap.from_config(self.project.label_config(), exp.spec.class_names)
        return self._classes

    # ---- recording ---------------------------------------------------------------------------
    def ingest(self, payload: Mapping[str, Any]) -> int:
        """Record one webhook payload; returns how many annotation versions changed."""
        action = payload.get("action")
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            ann, task = payload.get("annotation"), payload.get("task")
            if not isinstance(ann, Mapping) or not isinstance(task, Mapping):
                raise InvalidArgument(f"{action} needs 'annotation' and 'task' objects")
            if task.get("project") not in (None, *self._project_ids()):
                raise InvalidArgument("the webhook names another project")
            return int(self.ledger.record(record_from_annotation(ann, task, self.classes)))
        if action == "ANNOTATIONS_DELETED":
            gone = payload.get("annotations")
            if not isinstance(gone, list):
                raise InvalidArgument("ANNOTATIONS_DELETED needs an 'annotations' list")
            now = time.time()
            changed = 0
            for ann in gone:
                if not isinstance(ann, Mapping) or not isinstance(ann.get("id"), int):
                    raise InvalidArgument("each deleted annotation needs an integer id")
                changed += int(self.ledger.delete(int(ann["id"]), now))
            return changed
        return 0  # other actions are not ours; answered 200 so Label Studio does not retry

    def _project_ids(self) -> tuple[int, ...]:
        pid = getattr(self.project, "project_id", None)
        return () if pid is None else (int(pid),)

    def resync(self) -> int:
        """Pull every annotation from Label Studio; tombstone the ones that disappeared.

        A recorded annotation is tombstoned only when it was recorded before this pull started
        and is missing from two pulls in a row: a webhook can record an annotation that a pull
        running at the same moment does not list yet, and a single miss must not delete it
        (deletions normally arrive at once through ANNOTATIONS_DELETED)."""
        before = self.ledger.live_ids()
        seen: set[int] = set()
        changed = 0
        for ann, task in self.project.annotations():
            try:
                rec = record_from_annotation(ann, task, self.classes)
            except InvalidArgument as exc:
                log.warning(
                    "annotation skipped", extra={"annotation": ann.get("id"), "why": str(exc)}
                )
                continue
            seen.add(rec.annotation_id)
            changed += int(self.ledger.record(rec))
        missing = before - seen
        now = time.time()
        for gone in missing & self._missing:
            changed += int(self.ledger.delete(gone, now))
        self._missing = missing - self._missing
        return changed

    # ---- the loop ----------------------------------------------------------------------------
    def sync_once(self) -> SyncReport:
        """Labels -> advance -> import, once (module doc)."""
        report = SyncReport()
        self._submit(report)
        exp = self.experiments.get(self.experiment_id)
        while self.auto_advance and exp.state in _ADVANCE:
            res = self.experiments.advance(self.experiment_id)
            report.transitions.append(f"{res.from_state.name}->{res.to_state.name}")
            exp = res.experiment
        if exp.state is RoundState.AWAITING_LABELS:
            report.imported = self._import_round(exp)
        report.state, report.round = exp.state.name, exp.current_round
        return report

    def _submit(self, report: SyncReport) -> None:
        desired = resolve(self.ledger.records())
        labels, withdraw = plan(desired, self.ledger.applied())
        if not labels and not withdraw:
            return
        try:
            self._send(labels, withdraw, report)
        except ActiveKDError:
            raise
        except Exception as exc:  # a refusal of the batch: find the items to blame, one by one
            if not _is_client_mistake(exc):
                raise
            for item, lab in labels.items():
                self._send_one({item: lab}, [], report)
            for item in withdraw:
                self._send_one({}, [item], report)

    def _send(self, labels: dict[str, int], withdraw: list[str], report: SyncReport) -> None:
        res = self.experiments.submit_labels(
            self.experiment_id, labels, overwrite=True, withdraw=withdraw
        )
        self.ledger.mark_applied(labels, withdraw)
        report.submitted += res.accepted
        report.withdrawn += res.withdrawn
        report.deferred += res.deferred

    def _send_one(self, labels: dict[str, int], withdraw: list[str], report: SyncReport) -> None:
        try:
            self._send(labels, withdraw, report)
        except Exception as exc:
            if not _is_client_mistake(exc):
                raise
            why = _details(exc)
            for item in [*labels, *withdraw]:
                self.ledger.reject(item, why)
                report.rejected[item] = why
                log.warning("label refused", extra={"item": shown(item, 64), "why": why})

    # ---- tasks -------------------------------------------------------------------------------
    def predicted_classes(self, exp: Any, items: list[str]) -> dict[str, int]:
        """The current model's class for each item: this round's student, else the teacher."""
        r = exp.rounds[exp.current_round] if exp.rounds else None
        for pool_id in (
            getattr(r, "student_pool_id", ""),
            getattr(r, "teacher_pool_id", ""),
            exp.rounds[0].teacher_pool_id if exp.rounds else "",
        ):
            if pool_id and "probs" in self.pools.describe(pool_id).arrays:
                rows = self.pools.row_index(pool_id)
                probs = self.pools.open_array(pool_id, "probs")
                return {i: int(np.argmax(probs[rows[i]])) for i in items if i in rows}
        return {}

    def _import_round(self, exp: Any) -> int:
        r = exp.current_round
        if self.ledger.imported(r) is not None:
            return 0
        picks = list(exp.rounds[r].selected_item_ids)
        have = {str((t.get("data") or {}).get("item_id")) for t in self.project.tasks()}
        new = [p for p in picks if p not in have]
        rows = self.pools.row_index(exp.spec.pool_id)
        images = self.pools.open_array(exp.spec.pool_id, "images")
        tasks = round_tasks(
            self.experiment_id,
            r,
            picks,
            {p: np.asarray(images[rows[p]]) for p in new},
            self.predicted_classes(exp, picks),
            self.classes,
        )
        ids = self.project.import_tasks([t for t in tasks if t["data"]["item_id"] in new])
        self.ledger.mark_imported(r, len(picks))
        log.info("round imported", extra={"round": r, "tasks": len(ids), "picks": len(picks)})
        return len(ids)

    # ---- predictions (/predict) --------------------------------------------------------------
    def predict(self, tasks: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One Label Studio prediction per task (same order): the current model's class, the
        pick rank as the score (``tasks.rank_score``; 0 for tasks that are not picks)."""
        from activekd.annotation.tasks import prediction

        exp = self.experiments.get(self.experiment_id)
        items = [str((t.get("data") or {}).get("item_id", "")) for t in tasks]
        predicted = self.predicted_classes(exp, items)
        out: list[dict[str, Any]] = []
        for task, item in zip(tasks, items, strict=True):
            data = task.get("data") or {}
            rnd, rank = data.get("round"), data.get("rank")
            score, version = 0.0, model_version(self.experiment_id, exp.current_round)
            if isinstance(rnd, int) and isinstance(rank, int) and 0 <= rnd < len(exp.rounds):
                n = len(exp.rounds[rnd].selected_item_ids)
                if 0 <= rank < n:
                    score, version = rank_score(rank, n), model_version(self.experiment_id, rnd)
            if item in predicted:
                out.append(prediction(self.classes, predicted[item], score, version))
            else:
                out.append({"model_version": version, "score": score, "result": []})
        return out


def _is_client_mistake(exc: Exception) -> bool:
    code = getattr(exc, "code", None)
    name = code().name if callable(code) else ""
    return name in ("INVALID_ARGUMENT", "FAILED_PRECONDITION")


def _details(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    return str(details() if callable(details) else exc)[:300]


__all__ = ["AnnotationSync", "SyncReport"]
