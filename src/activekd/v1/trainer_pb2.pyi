from activekd.v1 import common_pb2 as _common_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainRoundRequest(_message.Message):
    __slots__ = ("experiment_id", "round", "student_config", "pool_id", "teacher_pool_id", "test_pool_id", "predict_pool", "teacher_test_pool_id", "seed", "write_teacher_targets")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STUDENT_CONFIG_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    TEACHER_POOL_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_POOL_ID_FIELD_NUMBER: _ClassVar[int]
    PREDICT_POOL_FIELD_NUMBER: _ClassVar[int]
    TEACHER_TEST_POOL_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WRITE_TEACHER_TARGETS_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    round: int
    student_config: _struct_pb2.Struct
    pool_id: str
    teacher_pool_id: str
    test_pool_id: str
    predict_pool: bool
    teacher_test_pool_id: str
    seed: int
    write_teacher_targets: bool
    def __init__(self, experiment_id: _Optional[str] = ..., round: _Optional[int] = ..., student_config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., pool_id: _Optional[str] = ..., teacher_pool_id: _Optional[str] = ..., test_pool_id: _Optional[str] = ..., predict_pool: _Optional[bool] = ..., teacher_test_pool_id: _Optional[str] = ..., seed: _Optional[int] = ..., write_teacher_targets: _Optional[bool] = ...) -> None: ...

class TrainProgress(_message.Message):
    __slots__ = ("step", "total_steps", "loss", "ce_loss", "kd_loss", "elapsed_seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    CE_LOSS_FIELD_NUMBER: _ClassVar[int]
    KD_LOSS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    loss: float
    ce_loss: float
    kd_loss: float
    elapsed_seconds: float
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., ce_loss: _Optional[float] = ..., kd_loss: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("accuracy", "ce_accuracy", "kd_accuracy", "teacher_agreement", "num_examples", "teacher_accuracy")
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CE_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    KD_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TEACHER_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TEACHER_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    accuracy: float
    ce_accuracy: float
    kd_accuracy: float
    teacher_agreement: float
    num_examples: int
    teacher_accuracy: float
    def __init__(self, accuracy: _Optional[float] = ..., ce_accuracy: _Optional[float] = ..., kd_accuracy: _Optional[float] = ..., teacher_agreement: _Optional[float] = ..., num_examples: _Optional[int] = ..., teacher_accuracy: _Optional[float] = ...) -> None: ...

class CheckpointInfo(_message.Message):
    __slots__ = ("checkpoint_id", "experiment_id", "round", "size_bytes", "sha256", "created_unix")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    experiment_id: str
    round: int
    size_bytes: int
    sha256: str
    created_unix: float
    def __init__(self, checkpoint_id: _Optional[str] = ..., experiment_id: _Optional[str] = ..., round: _Optional[int] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., created_unix: _Optional[float] = ...) -> None: ...

class TrainResult(_message.Message):
    __slots__ = ("checkpoint", "evaluation", "student_pool", "train_seconds", "predict_seconds", "num_labeled")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    STUDENT_POOL_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PREDICT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NUM_LABELED_FIELD_NUMBER: _ClassVar[int]
    checkpoint: CheckpointInfo
    evaluation: Evaluation
    student_pool: _common_pb2.PoolInfo
    train_seconds: float
    predict_seconds: float
    num_labeled: int
    def __init__(self, checkpoint: _Optional[_Union[CheckpointInfo, _Mapping]] = ..., evaluation: _Optional[_Union[Evaluation, _Mapping]] = ..., student_pool: _Optional[_Union[_common_pb2.PoolInfo, _Mapping]] = ..., train_seconds: _Optional[float] = ..., predict_seconds: _Optional[float] = ..., num_labeled: _Optional[int] = ...) -> None: ...

class TrainRoundResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: TrainProgress
    result: TrainResult
    def __init__(self, progress: _Optional[_Union[TrainProgress, _Mapping]] = ..., result: _Optional[_Union[TrainResult, _Mapping]] = ...) -> None: ...

class PredictPoolRequest(_message.Message):
    __slots__ = ("experiment_id", "round", "pool_id", "output_pool_id")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_POOL_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    round: int
    pool_id: str
    output_pool_id: str
    def __init__(self, experiment_id: _Optional[str] = ..., round: _Optional[int] = ..., pool_id: _Optional[str] = ..., output_pool_id: _Optional[str] = ...) -> None: ...

class PredictPoolResponse(_message.Message):
    __slots__ = ("pool", "timing")
    POOL_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    pool: _common_pb2.PoolInfo
    timing: _common_pb2.Timing
    def __init__(self, pool: _Optional[_Union[_common_pb2.PoolInfo, _Mapping]] = ..., timing: _Optional[_Union[_common_pb2.Timing, _Mapping]] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("experiment_id", "round", "test_pool_id", "teacher_test_pool_id")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TEST_POOL_ID_FIELD_NUMBER: _ClassVar[int]
    TEACHER_TEST_POOL_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    round: int
    test_pool_id: str
    teacher_test_pool_id: str
    def __init__(self, experiment_id: _Optional[str] = ..., round: _Optional[int] = ..., test_pool_id: _Optional[str] = ..., teacher_test_pool_id: _Optional[str] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("evaluation",)
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    evaluation: Evaluation
    def __init__(self, evaluation: _Optional[_Union[Evaluation, _Mapping]] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[CheckpointInfo]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[CheckpointInfo, _Mapping]]] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ("experiment_id", "round")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    round: int
    def __init__(self, experiment_id: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class GetCheckpointResponse(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: CheckpointInfo
    chunk: bytes
    def __init__(self, info: _Optional[_Union[CheckpointInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...
