"""Per-experiment teacher views: the shared teacher with an experiment's own classes/templates.

The class specs live in Redis (:class:`~activekd.state.teacher_classes.TeacherClassStore`), the
views in a small LRU; the shared teacher is never changed (views are ``with_classes`` copies
sharing its model). An experiment that never set classes gets the default teacher.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

from activekd.data.templates import validate_class_names, validate_templates
from activekd.errors import ActiveKDError, FailedPrecondition, InvalidArgument, shown
from activekd.ids import check_experiment_id
from activekd.state.teacher_classes import ClassSpec, TeacherClassStore
from activekd.teacher.base import BaseTeacher

MAX_VIEWS = 64


class ClassViews:
    """The teacher view of each experiment; building a view runs in a worker thread."""

    def __init__(
        self, teacher: BaseTeacher, specs: TeacherClassStore, *, capacity: int = MAX_VIEWS
    ) -> None:
        self.default, self.specs, self.capacity = teacher, specs, capacity
        self._views: OrderedDict[str, tuple[ClassSpec, BaseTeacher]] = OrderedDict()

    def _remember(self, experiment_id: str, spec: ClassSpec, view: BaseTeacher) -> None:
        self._views[experiment_id] = (spec, view)
        self._views.move_to_end(experiment_id)
        while len(self._views) > self.capacity:
            self._views.popitem(last=False)

    async def get(self, experiment_id: str) -> BaseTeacher:
        """The view for ``experiment_id`` (the default teacher when none was set)."""
        if not experiment_id:
            return self.default
        spec = self.specs.get(experiment_id)
        if spec is None:
            self._views.pop(experiment_id, None)
            return self.default
        known = self._views.get(experiment_id)
        if known is not None and known[0] == spec:
            self._views.move_to_end(experiment_id)
            return known[1]
        try:
            view = await asyncio.to_thread(
                self.default.with_classes, list(spec.class_names), list(spec.templates) or None
            )
        except ActiveKDError as exc:
            raise FailedPrecondition(
                f"the classes stored for experiment {shown(experiment_id)} do not fit this teacher "
                f"({exc}); call SetClasses again"
            ) from exc
        self._remember(experiment_id, spec, view)
        return view

    async def set(
        self, experiment_id: str, class_names: Sequence[str], templates: Sequence[str]
    ) -> BaseTeacher:
        """Validate, build the view, then store the spec (a rejected spec changes nothing)."""
        if not experiment_id:
            raise InvalidArgument(
                "experiment_id is required: classes are set per experiment", field="experiment_id"
            )
        check_experiment_id(experiment_id)
        if not class_names:
            raise InvalidArgument("class_names is empty; send at least one", field="class_names")
        names = validate_class_names(list(class_names))
        temps = validate_templates(list(templates)) if templates else ()
        view = await asyncio.to_thread(self.default.with_classes, names, temps or None)
        spec = self.specs.set(experiment_id, names, temps)
        self._remember(experiment_id, spec, view)
        return view
