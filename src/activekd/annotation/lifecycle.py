"""The label lifecycle: Label Studio annotations -> one label per pool item.

Rules (docs/annotation.md):

- **Tasks.** Each round's picks are imported as tasks when the round starts waiting for labels
  (not the whole pool): every task is a pick, and its data carries ``item_id``, ``round`` and
  ``rank``.
- **Skipped** (``was_cancelled``): the annotation gives no label. The item counts as unlabeled
  and its round keeps waiting for it (a skip never frees the slot: the pick was chosen for a
  reason, and another annotator can label it).
- **Several annotations on one task**: a ground-truth annotation wins; otherwise the most
  recently updated one; ties go to the higher annotation id. Cancelled and deleted annotations
  take no part.
- **Changed or deleted** annotations: the item's label becomes what the remaining annotations
  resolve to (possibly none: the label is withdrawn). While the round is open that applies at
  once (a withdrawn pick waits for a label again); after it closed, the experiment records it as
  a correction applied when the next round starts (``ExperimentStore.submit_labels``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from activekd.annotation.classes import ClassMap
from activekd.errors import InvalidArgument, shown


@dataclass(frozen=True)
class AnnotationRecord:
    """What one Label Studio annotation says about one item (its latest known version)."""

    annotation_id: int
    task_id: int
    item_id: str
    label: int | None  # None: no choice (or a skip)
    updated_unix: float
    cancelled: bool = False
    ground_truth: bool = False
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnnotationRecord:
        return cls(**dict(data))

    def newer_than(self, other: AnnotationRecord) -> bool:
        """Whether this version supersedes ``other`` (a deletion supersedes any same-time one)."""
        return (self.updated_unix, self.deleted) > (other.updated_unix, other.deleted)


def _unix(value: Any) -> float:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise InvalidArgument(f"annotation time {shown(value)} is not an ISO 8601 time")


def task_item_id(task: Mapping[str, Any]) -> str:
    """The pool item id a task stands for (``task.data.item_id``)."""
    data = task.get("data") or {}
    item = data.get("item_id") if isinstance(data, Mapping) else None
    if not isinstance(item, str) or not item:
        raise InvalidArgument(
            f"task {shown(task.get('id'))} has no data.item_id: import tasks through activekd"
        )
    return item


def record_from_annotation(
    annotation: Mapping[str, Any], task: Mapping[str, Any], classes: ClassMap
) -> AnnotationRecord:
    """An annotation (Label Studio JSON) of ``task`` as a record; the choice of the configured
    ``<Choices>`` control becomes the class index."""
    try:
        ann_id, task_id = int(annotation["id"]), int(task["id"])
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument("annotation and task need integer ids") from None
    label: int | None = None
    cancelled = bool(annotation.get("was_cancelled", False))
    if not cancelled:
        for region in annotation.get("result") or []:
            if not isinstance(region, Mapping) or region.get("type") != "choices":
                continue
            if region.get("from_name") != classes.control.from_name:
                continue
            chosen = (region.get("value") or {}).get("choices") or []
            if len(chosen) != 1:
                raise InvalidArgument(
                    f"annotation {ann_id} chose {len(chosen)} classes; single choice expected"
                )
            label = classes.index(str(chosen[0]))
    when = annotation.get("updated_at") or annotation.get("created_at")
    return AnnotationRecord(
        annotation_id=ann_id,
        task_id=task_id,
        item_id=task_item_id(task),
        label=label,
        updated_unix=_unix(when),
        cancelled=cancelled,
        ground_truth=bool(annotation.get("ground_truth", False)),
    )


def resolve(records: Iterable[AnnotationRecord]) -> dict[str, int]:
    """Item id -> label by the rules above (items whose annotations give none are absent)."""
    best: dict[str, AnnotationRecord] = {}
    for rec in records:
        if rec.deleted or rec.cancelled or rec.label is None:
            continue
        cur = best.get(rec.item_id)
        key = (rec.ground_truth, rec.updated_unix, rec.annotation_id)
        if cur is None or key > (cur.ground_truth, cur.updated_unix, cur.annotation_id):
            best[rec.item_id] = rec
    return {item: int(rec.label) for item, rec in best.items() if rec.label is not None}


def plan(
    desired: Mapping[str, int], applied: Mapping[str, int]
) -> tuple[dict[str, int], list[str]]:
    """What to send so the experiment holds ``desired``: labels to (over)write and item ids to
    withdraw, given what was last sent (``applied``). Items never sent are not withdrawn."""
    labels = {i: int(lab) for i, lab in desired.items() if applied.get(i) != lab}
    withdraw = sorted(i for i in applied if i not in desired)
    return labels, withdraw


__all__ = ["AnnotationRecord", "plan", "record_from_annotation", "resolve", "task_item_id"]
