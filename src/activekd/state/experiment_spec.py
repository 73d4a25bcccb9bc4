"""What an experiment is: the plain-Python mirror of ``activekd.v1.ExperimentSpec``.

No grpc import here; the service adapter converts the proto message to and from this dataclass
(``google.protobuf.Struct`` configs become plain ``dict``).
"""

from __future__ import annotations

import json
import numbers
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from activekd.defaults import DEFAULT_STRATEGY
from activekd.errors import InvalidArgument, shown
from activekd.ids import check_array_name

MAX_CLASSES = 100_000
MAX_SEED = 2**64 - 1  # proto uint64
#: ``teacher_config["adaptation"]``: ``none`` distils the zero-shot teacher; ``clap`` refits the
#: teacher's linear head on the labels collected so far every round and distils from that
#: (``activekd.teacher.adapt.TeacherAdapter``; needs the teacher pool's ``features`` array)
TEACHER_ADAPTATIONS: tuple[str, ...] = ("none", "clap")


#: most items a stop set may hold
MAX_STOP_SET_SIZE = 100_000


@dataclass
class StoppingRule:
    """When to finish early (Bloodgood and Vijay-Shanker 2009, "stabilizing predictions").

    The stop set is ``stop_set_size`` pool items drawn once with the experiment seed
    (``activekd.experiment.stopping.stop_set``); each round's *stability* is the share of it on
    which this round's student and the previous round's agree. The experiment stops once
    stability >= ``min_stability`` for ``patience`` rounds in a row; ``min_stability`` 0 never
    stops (the signal is still computed and reported).
    """

    min_stability: float = 0.0
    patience: int = 1
    stop_set_size: int = 2000

    @property
    def enabled(self) -> bool:
        return self.min_stability > 0

    def validate(self) -> StoppingRule:
        if isinstance(self.min_stability, bool) or not isinstance(self.min_stability, numbers.Real):
            raise InvalidArgument("stopping.min_stability must be a number", field="stopping")
        if not 0.0 <= float(self.min_stability) <= 1.0:
            raise InvalidArgument(
                f"stopping.min_stability {self.min_stability} must be in [0, 1] (0 = never stop)",
                field="stopping",
            )
        for name, low, high in (
            ("patience", 1, 1000),
            ("stop_set_size", 1, MAX_STOP_SET_SIZE),
        ):
            value = getattr(self, name)
            if not _is_int(value) or not low <= int(value) <= high:
                raise InvalidArgument(
                    f"stopping.{name} {shown(value)} must be an integer in {low}..{high}",
                    field="stopping",
                )
        return self


#: student_config's trainer-only key naming the pool array the student reads (not a StudentConfig
#: field), and the array read when it is absent
INPUT_ARRAY_KEY = "input_array"
DEFAULT_INPUT_ARRAY = "images"


@dataclass(kw_only=True)
class ExperimentSpec:
    """One active-learning experiment; fields and meaning follow ``ExperimentSpec`` in the proto.

    Initial labels come either from ``initial_per_class`` (k per class, drawn with ``seed`` from
    the pool's ground truth by the caller, see ``activekd.experiment.oracle.initial_labels``) or
    from explicit ``initial_item_ids`` + ``initial_labels``; exactly one of the two is given.
    """

    pool_id: str
    test_pool_id: str = ""
    dataset: str = ""
    class_names: list[str] = field(default_factory=list)
    teacher_config: dict[str, Any] = field(default_factory=dict)
    student_config: dict[str, Any] = field(default_factory=dict)
    strategy: str = DEFAULT_STRATEGY
    initial_per_class: int = 0
    initial_item_ids: list[str] = field(default_factory=list)
    initial_labels: list[int] = field(default_factory=list)
    budget_per_round: int = 1
    num_rounds: int = 0
    seed: int = 0
    simulated_oracle: bool = False
    stopping: StoppingRule = field(default_factory=StoppingRule)

    @property
    def num_classes(self) -> int:
        """C: labels are in ``[0, C)``."""
        return len(self.class_names)

    @property
    def input_array(self) -> str:
        """The pool array the student reads (``student_config.input_array``, else ``images``)."""
        return str(self.student_config.get(INPUT_ARRAY_KEY, DEFAULT_INPUT_ARRAY))

    def validate(self, valid_strategies: set[str] | frozenset[str] | None = None) -> ExperimentSpec:
        """Raise ``InvalidArgument`` (with ``field`` set) on the first problem; return ``self``.

        ``valid_strategies``: names the selection service knows; ``None`` skips the name check
        (the strategy must still be non-empty).
        """
        _check_str(self.pool_id, "pool_id", required=True)
        _check_str(self.test_pool_id, "test_pool_id")
        _check_str(self.dataset, "dataset")
        if not isinstance(self.class_names, list) or not self.class_names:
            raise InvalidArgument(
                "class_names is empty: give the C class names", field="class_names"
            )
        if len(self.class_names) > MAX_CLASSES:
            raise InvalidArgument(
                f"{len(self.class_names)} class names is over the limit of {MAX_CLASSES}",
                field="class_names",
            )
        for i, name in enumerate(self.class_names):
            if not isinstance(name, str) or not name.strip():
                raise InvalidArgument(f"class_names[{i}] is empty", field="class_names")
        dup_names = sorted(n for n, c in Counter(self.class_names).items() if c > 1)
        if dup_names:
            raise InvalidArgument(
                f"class_names repeats {', '.join(map(repr, dup_names[:5]))}", field="class_names"
            )
        for name in ("teacher_config", "student_config"):
            cfg = getattr(self, name)
            if not isinstance(cfg, dict):
                raise InvalidArgument(f"{name} must be a mapping", field=name)
            try:
                json.dumps(cfg, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(
                    f"{name} must hold JSON values only: {exc}", field=name
                ) from exc
        if INPUT_ARRAY_KEY in self.student_config:
            name = self.student_config[INPUT_ARRAY_KEY]
            try:
                check_array_name(name)
            except InvalidArgument:
                raise InvalidArgument(
                    f"student_config.{INPUT_ARRAY_KEY} {shown(name)} is not an array name: name "
                    "the pool array the student reads (a letter, then up to 63 letters, digits, "
                    f"'_'), or leave it out for {DEFAULT_INPUT_ARRAY!r}",
                    field=f"student_config.{INPUT_ARRAY_KEY}",
                ) from None
        adaptation = self.teacher_config.get("adaptation", "none")
        if adaptation not in TEACHER_ADAPTATIONS:
            raise InvalidArgument(
                f"teacher_config.adaptation {shown(adaptation)}: use one of "
                f"{', '.join(TEACHER_ADAPTATIONS)}",
                field="teacher_config",
            )
        _check_str(self.strategy, "strategy", required=True)
        if valid_strategies is not None and self.strategy not in valid_strategies:
            raise InvalidArgument(
                f"unknown strategy {shown(self.strategy)}; known: {', '.join(sorted(valid_strategies))}",
                field="strategy",
            )
        _check_int(self.budget_per_round, "budget_per_round")
        if self.budget_per_round <= 0:
            raise InvalidArgument(
                f"budget_per_round {self.budget_per_round} must be at least 1",
                field="budget_per_round",
            )
        _check_int(self.num_rounds, "num_rounds")
        if self.num_rounds < 0:
            raise InvalidArgument(
                f"num_rounds {self.num_rounds} must be 0 or more", field="num_rounds"
            )
        _check_int(self.seed, "seed")
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidArgument(f"seed {self.seed} must be in 0..2^64-1", field="seed")
        if not isinstance(self.simulated_oracle, bool):
            raise InvalidArgument("simulated_oracle must be a bool", field="simulated_oracle")
        if not isinstance(self.stopping, StoppingRule):
            raise InvalidArgument("stopping must be a StoppingRule", field="stopping")
        self.stopping.validate()
        _check_int(self.initial_per_class, "initial_per_class")
        if self.initial_per_class < 0:
            raise InvalidArgument(
                f"initial_per_class {self.initial_per_class} must be 0 or more",
                field="initial_per_class",
            )
        if self.initial_per_class and (self.initial_item_ids or self.initial_labels):
            raise InvalidArgument(
                "give initial_per_class or initial_item_ids/initial_labels, not both",
                field="initial_per_class",
            )
        if not self.initial_per_class and not self.initial_item_ids:
            raise InvalidArgument(
                "no initial labels: set initial_per_class (k per class, drawn with the seed) "
                "or give initial_item_ids with initial_labels",
                field="initial_per_class",
            )
        validate_labeled_items(self.initial_item_ids, self.initial_labels, self.num_classes)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (the form stored in Redis); numpy integers become ``int``."""
        data = asdict(self)
        data["initial_labels"] = [int(x) for x in self.initial_labels]
        for name in ("initial_per_class", "budget_per_round", "num_rounds", "seed"):
            data[name] = int(data[name])
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentSpec:
        """Inverse of ``to_dict``; unknown keys are an ``InvalidArgument``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(f"unknown experiment spec fields: {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("stopping"), dict):
            rule = values["stopping"]
            extra = sorted(set(rule) - {f.name for f in fields(StoppingRule)})
            if extra:
                raise InvalidArgument(f"unknown stopping fields: {', '.join(extra)}")
            values["stopping"] = StoppingRule(**rule)
        return cls(**values)

    @classmethod
    def from_json(cls, raw: str | bytes) -> ExperimentSpec:
        return cls.from_dict(json.loads(raw))


def validate_labeled_items(
    item_ids: list[str], labels: list[int], num_classes: int, *, what: str = "initial"
) -> None:
    """Check parallel id/label lists: same length, non-empty unique ids, labels in ``[0, C)``."""
    ids_field, labels_field = f"{what}_item_ids", f"{what}_labels"
    if len(item_ids) != len(labels):
        raise InvalidArgument(
            f"{ids_field} has {len(item_ids)} entries but {labels_field} has {len(labels)}; "
            "they must be parallel lists",
            field=labels_field,
        )
    for i, item in enumerate(item_ids):
        if not isinstance(item, str) or not item:
            raise InvalidArgument(f"{ids_field}[{i}] must be a non-empty string", field=ids_field)
    dups = sorted(x for x, c in Counter(item_ids).items() if c > 1)
    if dups:
        raise InvalidArgument(
            f"{ids_field} repeats {len(dups)} id(s): {', '.join(map(repr, dups[:5]))}",
            field=ids_field,
        )
    for i, lab in enumerate(labels):
        if not _is_int(lab):
            raise InvalidArgument(
                f"{labels_field}[{i}]={shown(lab)} is not an integer", field=labels_field
            )
        if not 0 <= int(lab) < num_classes:
            raise InvalidArgument(
                f"{labels_field}[{i}]={lab} for {shown(item_ids[i])} is outside [0, {num_classes})",
                field=labels_field,
            )


def _is_int(x: Any) -> bool:
    """Python or numpy integer (not bool, not float)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_int(value: Any, name: str) -> None:
    if not _is_int(value):
        raise InvalidArgument(f"{name} must be an integer, got {shown(value)}", field=name)


def _check_str(value: Any, name: str, *, required: bool = False) -> None:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, got {type(value).__name__}", field=name)
    if required and not value.strip():
        raise InvalidArgument(f"{name} is empty", field=name)
