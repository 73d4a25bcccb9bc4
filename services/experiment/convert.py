"""Experiment dataclasses <-> activekd.v1 experiment protos."""

from __future__ import annotations

from google.protobuf import json_format

from activekd.experiment.spec import ExperimentSpec
from activekd.state.experiments import Event, Experiment
from activekd.v1 import experiment_pb2


def spec_from_proto(msg: experiment_pb2.ExperimentSpec) -> ExperimentSpec:
    """Proto spec -> library spec. Struct configs become plain dicts (numbers stay floats: the
    trainer's ``coerce_numbers`` turns them into ints where StudentConfig wants them)."""

    def struct(s: object) -> dict:  # type: ignore[type-arg]
        return json_format.MessageToDict(s)  # type: ignore[arg-type]

    return ExperimentSpec(
        pool_id=msg.pool_id,
        test_pool_id=msg.test_pool_id,
        dataset=msg.dataset,
        class_names=list(msg.class_names),
        teacher_config=struct(msg.teacher_config),
        student_config=struct(msg.student_config),
        strategy=msg.strategy,
        initial_per_class=msg.initial_per_class,
        initial_item_ids=list(msg.initial_item_ids),
        initial_labels=list(msg.initial_labels),
        budget_per_round=msg.budget_per_round,
        num_rounds=msg.num_rounds,
        seed=msg.seed,
        simulated_oracle=msg.simulated_oracle,
    )


def spec_to_proto(spec: ExperimentSpec) -> experiment_pb2.ExperimentSpec:
    msg = experiment_pb2.ExperimentSpec(
        pool_id=spec.pool_id,
        test_pool_id=spec.test_pool_id,
        dataset=spec.dataset,
        class_names=spec.class_names,
        strategy=spec.strategy,
        initial_per_class=spec.initial_per_class,
        initial_item_ids=spec.initial_item_ids,
        initial_labels=spec.initial_labels,
        budget_per_round=spec.budget_per_round,
        num_rounds=spec.num_rounds,
        seed=spec.seed,
        simulated_oracle=spec.simulated_oracle,
    )
    msg.teacher_config.update(spec.teacher_config)
    msg.student_config.update(spec.student_config)
    return msg


def experiment_to_proto(exp: Experiment) -> experiment_pb2.Experiment:
    return experiment_pb2.Experiment(
        experiment_id=exp.experiment_id,
        spec=spec_to_proto(exp.spec),
        current_round=exp.current_round,
        state=f"ROUND_STATE_{exp.state.name}",
        version=exp.version,
        labeled_count=exp.labeled_count,
        created_unix=exp.created_unix,
        rounds=[
            experiment_pb2.RoundSummary(
                round=r.round,
                state=f"ROUND_STATE_{r.state.name}",
                labeled_count=r.labeled_count,
                accuracy=r.accuracy or 0.0,
                teacher_agreement=r.teacher_agreement or 0.0,
                selected_item_ids=r.selected_item_ids,
            )
            for r in exp.rounds
        ],
    )


def event_to_proto(ev: Event) -> experiment_pb2.RoundEvent:
    return experiment_pb2.RoundEvent(
        experiment_id=ev.experiment_id,
        round=ev.round,
        state=f"ROUND_STATE_{ev.state.name}",
        version=ev.version,
        unix_time=ev.unix_time,
        message=ev.message,
    )
