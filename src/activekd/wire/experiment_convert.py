"""Experiment records <-> ``activekd.v1`` experiment protos (used by the service and the client).

Struct configs become plain dicts; their numbers stay floats (the trainer's ``coerce_numbers``
turns them into ints where StudentConfig wants them). Round states travel as the proto enum and
come back as the library's :class:`~activekd.state.experiments.RoundState` (an IntEnum with the
same numbers, so it compares equal to the proto constants).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from activekd.state.experiment_spec import ExperimentSpec, StoppingRule
from activekd.state.round_records import Event, Experiment, RoundState
from activekd.v1 import experiment_pb2
from activekd.wire.structs import dict_to_struct, struct_to_dict


def spec_from_proto(msg: experiment_pb2.ExperimentSpec) -> ExperimentSpec:
    """Proto spec -> library spec."""
    return ExperimentSpec(
        pool_id=msg.pool_id,
        test_pool_id=msg.test_pool_id,
        dataset=msg.dataset,
        class_names=list(msg.class_names),
        teacher_config=struct_to_dict(msg.teacher_config, "spec.teacher_config"),
        student_config=struct_to_dict(msg.student_config, "spec.student_config"),
        strategy=msg.strategy,
        initial_per_class=msg.initial_per_class,
        initial_item_ids=list(msg.initial_item_ids),
        initial_labels=list(msg.initial_labels),
        budget_per_round=msg.budget_per_round,
        num_rounds=msg.num_rounds,
        seed=msg.seed,
        simulated_oracle=msg.simulated_oracle,
        stopping=StoppingRule(
            min_stability=msg.stopping.min_stability,
            patience=msg.stopping.patience or 1,
            stop_set_size=msg.stopping.stop_set_size or StoppingRule.stop_set_size,
        ),
    )


def spec_to_proto(spec: ExperimentSpec) -> experiment_pb2.ExperimentSpec:
    """Library spec -> proto spec."""
    return experiment_pb2.ExperimentSpec(
        pool_id=spec.pool_id,
        test_pool_id=spec.test_pool_id,
        dataset=spec.dataset,
        class_names=spec.class_names,
        teacher_config=dict_to_struct(spec.teacher_config),
        student_config=dict_to_struct(spec.student_config),
        strategy=spec.strategy,
        initial_per_class=spec.initial_per_class,
        initial_item_ids=spec.initial_item_ids,
        initial_labels=spec.initial_labels,
        budget_per_round=spec.budget_per_round,
        num_rounds=spec.num_rounds,
        seed=spec.seed,
        simulated_oracle=spec.simulated_oracle,
        stopping=experiment_pb2.StoppingRule(
            min_stability=spec.stopping.min_stability,
            patience=spec.stopping.patience,
            stop_set_size=spec.stopping.stop_set_size,
        ),
    )


def _state_to_proto(state: RoundState) -> experiment_pb2.RoundState:
    return experiment_pb2.RoundState.Value(f"ROUND_STATE_{state.name}")  # type: ignore[return-value]


def experiment_to_proto(exp: Experiment) -> experiment_pb2.Experiment:
    """Stored experiment -> proto (rounds as summaries)."""
    return experiment_pb2.Experiment(
        experiment_id=exp.experiment_id,
        spec=spec_to_proto(exp.spec),
        current_round=exp.current_round,
        state=_state_to_proto(exp.state),
        version=exp.version,
        labeled_count=exp.labeled_count,
        created_unix=exp.created_unix,
        pending_corrections=exp.pending_corrections,
        stop_reason=exp.stop_reason,
        rounds=[
            experiment_pb2.RoundSummary(
                round=r.round,
                state=_state_to_proto(r.state),
                labeled_count=r.labeled_count,
                accuracy=r.accuracy or 0.0,
                teacher_agreement=r.teacher_agreement or 0.0,
                selected_item_ids=r.selected_item_ids,
                stability=r.stability,
                stop_set_teacher_agreement=r.stop_set_teacher_agreement,
                corrections_applied=int(r.extra.get("corrections_applied", 0)),
                teacher_pool_id=r.teacher_pool_id,
                student_pool_id=r.student_pool_id,
            )
            for r in exp.rounds
        ],
    )


def event_to_proto(ev: Event) -> experiment_pb2.RoundEvent:
    """Stored round event -> proto."""
    return experiment_pb2.RoundEvent(
        experiment_id=ev.experiment_id,
        round=ev.round,
        state=_state_to_proto(ev.state),
        version=ev.version,
        unix_time=ev.unix_time,
        message=ev.message,
    )


@dataclass(frozen=True)
class RoundSummary:
    """One round as the service reports it (accuracy 0.0 until the round is evaluated)."""

    round: int
    state: RoundState
    labeled_count: int
    accuracy: float
    selected_item_ids: list[str]
    teacher_agreement: float
    #: agreement with the previous round's student on the stop set (None: not computed)
    stability: float | None = None
    stop_set_teacher_agreement: float | None = None
    corrections_applied: int = 0
    teacher_pool_id: str = ""
    student_pool_id: str = ""


@dataclass(frozen=True)
class ExperimentStatus:
    """An experiment as the service reports it: spec, current round and state, round summaries."""

    experiment_id: str
    spec: ExperimentSpec
    current_round: int
    state: RoundState
    version: int
    labeled_count: int
    rounds: list[RoundSummary] = field(default_factory=list)
    created_unix: float = 0.0
    pending_corrections: int = 0
    stop_reason: str = ""

    @classmethod
    def from_proto(cls, e: experiment_pb2.Experiment) -> ExperimentStatus:
        rounds = [
            RoundSummary(
                r.round,
                RoundState(r.state),
                r.labeled_count,
                r.accuracy,
                list(r.selected_item_ids),
                r.teacher_agreement,
                r.stability if r.HasField("stability") else None,
                r.stop_set_teacher_agreement if r.HasField("stop_set_teacher_agreement") else None,
                r.corrections_applied,
                r.teacher_pool_id,
                r.student_pool_id,
            )
            for r in e.rounds
        ]
        return cls(e.experiment_id, spec_from_proto(e.spec), e.current_round,
                   RoundState(e.state), e.version, e.labeled_count, rounds,
                   e.created_unix, e.pending_corrections, e.stop_reason)  # fmt: skip


@dataclass(frozen=True)
class RoundEvent:
    """One entry of an experiment's event stream as WatchExperiment reports it."""

    experiment_id: str
    round: int
    state: RoundState
    version: int
    unix_time: float
    message: str

    @classmethod
    def from_proto(cls, ev: experiment_pb2.RoundEvent) -> RoundEvent:
        return cls(ev.experiment_id, ev.round, RoundState(ev.state), ev.version, ev.unix_time,
                   ev.message)  # fmt: skip
