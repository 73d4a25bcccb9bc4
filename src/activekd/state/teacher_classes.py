"""The classes (and prompt templates) each experiment asked the teacher for, in Redis.

One key per experiment, ``<prefix>:teacher:classes:{<experiment>}`` (the hash tag keeps an
experiment on one Redis Cluster slot), holding the JSON spec
``{"class_names": [...], "templates": [...]}`` that ``SetClasses`` stored. The teacher service
keeps its per-experiment views (:class:`~activekd.teacher.class_views.ClassViews`) on top of it,
so the views come back after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from activekd.ids import check_experiment_id


@dataclass(frozen=True)
class ClassSpec:
    """An experiment's class names and templates (empty: the teacher's defaults)."""

    class_names: tuple[str, ...]
    templates: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {"class_names": list(self.class_names), "templates": list(self.templates)}
        )

    @classmethod
    def from_json(cls, text: str) -> ClassSpec:
        data = json.loads(text)
        return cls(tuple(data["class_names"]), tuple(data["templates"] or ()))


class TeacherClassStore:
    """Reads and writes :class:`ClassSpec` per experiment (class names are validated by the
    caller; the experiment id here, by :func:`activekd.ids.check_experiment_id`)."""

    def __init__(self, client: redis.Redis, *, prefix: str = "akd") -> None:
        self.redis, self.prefix = client, prefix

    def key(self, experiment_id: str) -> str:
        """The Redis key of an experiment's spec (InvalidArgument for an invalid id)."""
        return f"{self.prefix}:teacher:classes:{{{check_experiment_id(experiment_id)}}}"

    def get(self, experiment_id: str) -> ClassSpec | None:
        """The stored spec, or None when the experiment never set classes."""
        raw = self.redis.get(self.key(experiment_id))
        if raw is None:
            return None
        return ClassSpec.from_json(raw.decode() if isinstance(raw, bytes) else str(raw))

    def set(
        self, experiment_id: str, class_names: Sequence[str], templates: Sequence[str] = ()
    ) -> ClassSpec:
        """Store (replace) the experiment's spec."""
        spec = ClassSpec(tuple(class_names), tuple(templates))
        self.redis.set(self.key(experiment_id), spec.to_json())
        return spec
