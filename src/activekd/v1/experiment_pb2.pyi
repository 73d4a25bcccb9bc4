from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoundState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_STATE_UNSPECIFIED: _ClassVar[RoundState]
    ROUND_STATE_CREATED: _ClassVar[RoundState]
    ROUND_STATE_TEACHER_SCORED: _ClassVar[RoundState]
    ROUND_STATE_STUDENT_TRAINED: _ClassVar[RoundState]
    ROUND_STATE_POOL_SCORED: _ClassVar[RoundState]
    ROUND_STATE_SELECTED: _ClassVar[RoundState]
    ROUND_STATE_AWAITING_LABELS: _ClassVar[RoundState]
    ROUND_STATE_LABELS_COMPLETE: _ClassVar[RoundState]
    ROUND_STATE_FINISHED: _ClassVar[RoundState]
ROUND_STATE_UNSPECIFIED: RoundState
ROUND_STATE_CREATED: RoundState
ROUND_STATE_TEACHER_SCORED: RoundState
ROUND_STATE_STUDENT_TRAINED: RoundState
ROUND_STATE_POOL_SCORED: RoundState
ROUND_STATE_SELECTED: RoundState
ROUND_STATE_AWAITING_LABELS: RoundState
ROUND_STATE_LABELS_COMPLETE: RoundState
ROUND_STATE_FINISHED: RoundState

class ExperimentSpec(_message.Message):
    __slots__ = ("pool_id", "test_pool_id", "dataset", "class_names", "teacher_config", "student_config", "strategy", "initial_per_class", "initial_item_ids", "initial_labels", "budget_per_round", "num_rounds", "seed", "simulated_oracle", "stopping")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_POOL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    TEACHER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    STUDENT_CONFIG_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    INITIAL_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_LABELS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_PER_ROUND_FIELD_NUMBER: _ClassVar[int]
    NUM_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_ORACLE_FIELD_NUMBER: _ClassVar[int]
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    test_pool_id: str
    dataset: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    teacher_config: _struct_pb2.Struct
    student_config: _struct_pb2.Struct
    strategy: str
    initial_per_class: int
    initial_item_ids: _containers.RepeatedScalarFieldContainer[str]
    initial_labels: _containers.RepeatedScalarFieldContainer[int]
    budget_per_round: int
    num_rounds: int
    seed: int
    simulated_oracle: bool
    stopping: StoppingRule
    def __init__(self, pool_id: _Optional[str] = ..., test_pool_id: _Optional[str] = ..., dataset: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., teacher_config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., student_config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., strategy: _Optional[str] = ..., initial_per_class: _Optional[int] = ..., initial_item_ids: _Optional[_Iterable[str]] = ..., initial_labels: _Optional[_Iterable[int]] = ..., budget_per_round: _Optional[int] = ..., num_rounds: _Optional[int] = ..., seed: _Optional[int] = ..., simulated_oracle: _Optional[bool] = ..., stopping: _Optional[_Union[StoppingRule, _Mapping]] = ...) -> None: ...

class StoppingRule(_message.Message):
    __slots__ = ("min_stability", "patience", "stop_set_size")
    MIN_STABILITY_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    STOP_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    min_stability: float
    patience: int
    stop_set_size: int
    def __init__(self, min_stability: _Optional[float] = ..., patience: _Optional[int] = ..., stop_set_size: _Optional[int] = ...) -> None: ...

class RoundSummary(_message.Message):
    __slots__ = ("round", "state", "labeled_count", "accuracy", "selected_item_ids", "teacher_agreement", "stability", "stop_set_teacher_agreement", "corrections_applied", "teacher_pool_id", "student_pool_id")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LABELED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SELECTED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    STABILITY_FIELD_NUMBER: _ClassVar[int]
    STOP_SET_TEACHER_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    CORRECTIONS_APPLIED_FIELD_NUMBER: _ClassVar[int]
    TEACHER_POOL_ID_FIELD_NUMBER: _ClassVar[int]
    STUDENT_POOL_ID_FIELD_NUMBER: _ClassVar[int]
    round: int
    state: RoundState
    labeled_count: int
    accuracy: float
    selected_item_ids: _containers.RepeatedScalarFieldContainer[str]
    teacher_agreement: float
    stability: float
    stop_set_teacher_agreement: float
    corrections_applied: int
    teacher_pool_id: str
    student_pool_id: str
    def __init__(self, round: _Optional[int] = ..., state: _Optional[_Union[RoundState, str]] = ..., labeled_count: _Optional[int] = ..., accuracy: _Optional[float] = ..., selected_item_ids: _Optional[_Iterable[str]] = ..., teacher_agreement: _Optional[float] = ..., stability: _Optional[float] = ..., stop_set_teacher_agreement: _Optional[float] = ..., corrections_applied: _Optional[int] = ..., teacher_pool_id: _Optional[str] = ..., student_pool_id: _Optional[str] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("experiment_id", "spec", "current_round", "state", "version", "labeled_count", "rounds", "created_unix", "pending_corrections", "stop_reason")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ROUND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    PENDING_CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    spec: ExperimentSpec
    current_round: int
    state: RoundState
    version: int
    labeled_count: int
    rounds: _containers.RepeatedCompositeFieldContainer[RoundSummary]
    created_unix: float
    pending_corrections: int
    stop_reason: str
    def __init__(self, experiment_id: _Optional[str] = ..., spec: _Optional[_Union[ExperimentSpec, _Mapping]] = ..., current_round: _Optional[int] = ..., state: _Optional[_Union[RoundState, str]] = ..., version: _Optional[int] = ..., labeled_count: _Optional[int] = ..., rounds: _Optional[_Iterable[_Union[RoundSummary, _Mapping]]] = ..., created_unix: _Optional[float] = ..., pending_corrections: _Optional[int] = ..., stop_reason: _Optional[str] = ...) -> None: ...

class CreateExperimentRequest(_message.Message):
    __slots__ = ("experiment_id", "spec")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    spec: ExperimentSpec
    def __init__(self, experiment_id: _Optional[str] = ..., spec: _Optional[_Union[ExperimentSpec, _Mapping]] = ...) -> None: ...

class CreateExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class GetExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "next_page_token")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    next_page_token: str
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class DeleteExperimentResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class AdvanceRoundRequest(_message.Message):
    __slots__ = ("experiment_id", "expected_version")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    expected_version: int
    def __init__(self, experiment_id: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class AdvanceRoundResponse(_message.Message):
    __slots__ = ("experiment", "from_state", "to_state")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    from_state: RoundState
    to_state: RoundState
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ..., from_state: _Optional[_Union[RoundState, str]] = ..., to_state: _Optional[_Union[RoundState, str]] = ...) -> None: ...

class ItemLabel(_message.Message):
    __slots__ = ("item_id", "label")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    label: int
    def __init__(self, item_id: _Optional[str] = ..., label: _Optional[int] = ...) -> None: ...

class SubmitLabelsRequest(_message.Message):
    __slots__ = ("experiment_id", "labels", "overwrite", "withdraw_item_ids")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    WITHDRAW_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    labels: _containers.RepeatedCompositeFieldContainer[ItemLabel]
    overwrite: bool
    withdraw_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, experiment_id: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[ItemLabel, _Mapping]]] = ..., overwrite: _Optional[bool] = ..., withdraw_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitLabelsResponse(_message.Message):
    __slots__ = ("accepted", "unchanged", "remaining", "experiment", "withdrawn", "deferred")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    unchanged: int
    remaining: int
    experiment: Experiment
    withdrawn: int
    deferred: int
    def __init__(self, accepted: _Optional[int] = ..., unchanged: _Optional[int] = ..., remaining: _Optional[int] = ..., experiment: _Optional[_Union[Experiment, _Mapping]] = ..., withdrawn: _Optional[int] = ..., deferred: _Optional[int] = ...) -> None: ...

class WatchExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class RoundEvent(_message.Message):
    __slots__ = ("experiment_id", "round", "state", "version", "unix_time", "message")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNIX_TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    round: int
    state: RoundState
    version: int
    unix_time: float
    message: str
    def __init__(self, experiment_id: _Optional[str] = ..., round: _Optional[int] = ..., state: _Optional[_Union[RoundState, str]] = ..., version: _Optional[int] = ..., unix_time: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class WatchExperimentResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: RoundEvent
    def __init__(self, event: _Optional[_Union[RoundEvent, _Mapping]] = ...) -> None: ...
