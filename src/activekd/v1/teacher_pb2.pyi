from activekd.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TeacherIdentity(_message.Message):
    __slots__ = ("backend", "model", "weights_hash", "class_names", "templates", "preprocessing", "fingerprint", "description", "head")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_HASH_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    backend: str
    model: str
    weights_hash: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    templates: _containers.RepeatedScalarFieldContainer[str]
    preprocessing: str
    fingerprint: str
    description: str
    head: str
    def __init__(self, backend: _Optional[str] = ..., model: _Optional[str] = ..., weights_hash: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., templates: _Optional[_Iterable[str]] = ..., preprocessing: _Optional[str] = ..., fingerprint: _Optional[str] = ..., description: _Optional[str] = ..., head: _Optional[str] = ...) -> None: ...

class DescribeTeacherRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class DescribeTeacherResponse(_message.Message):
    __slots__ = ("identity", "device", "dtype", "num_classes", "feature_dim", "max_batch_size")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    identity: TeacherIdentity
    device: str
    dtype: str
    num_classes: int
    feature_dim: int
    max_batch_size: int
    def __init__(self, identity: _Optional[_Union[TeacherIdentity, _Mapping]] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., num_classes: _Optional[int] = ..., feature_dim: _Optional[int] = ..., max_batch_size: _Optional[int] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("item_id", "encoded", "pixels")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    encoded: bytes
    pixels: _common_pb2.Tensor
    def __init__(self, item_id: _Optional[str] = ..., encoded: _Optional[bytes] = ..., pixels: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class ImagePrediction(_message.Message):
    __slots__ = ("item_id", "probs", "features", "error")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    PROBS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    probs: _common_pb2.Tensor
    features: _common_pb2.Tensor
    error: _common_pb2.ItemError
    def __init__(self, item_id: _Optional[str] = ..., probs: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., features: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("images", "experiment_id", "include_features")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    experiment_id: str
    include_features: bool
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., experiment_id: _Optional[str] = ..., include_features: _Optional[bool] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions", "identity", "timing")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[ImagePrediction]
    identity: TeacherIdentity
    timing: _common_pb2.Timing
    def __init__(self, predictions: _Optional[_Iterable[_Union[ImagePrediction, _Mapping]]] = ..., identity: _Optional[_Union[TeacherIdentity, _Mapping]] = ..., timing: _Optional[_Union[_common_pb2.Timing, _Mapping]] = ...) -> None: ...

class PredictStreamRequest(_message.Message):
    __slots__ = ("image", "experiment_id", "include_features")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    image: Image
    experiment_id: str
    include_features: bool
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., experiment_id: _Optional[str] = ..., include_features: _Optional[bool] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("prediction",)
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    prediction: ImagePrediction
    def __init__(self, prediction: _Optional[_Union[ImagePrediction, _Mapping]] = ...) -> None: ...

class ImageSource(_message.Message):
    __slots__ = ("folder", "file_list", "array_uri", "pool_id", "builtin")
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    FILE_LIST_FIELD_NUMBER: _ClassVar[int]
    ARRAY_URI_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    folder: str
    file_list: str
    array_uri: str
    pool_id: str
    builtin: str
    def __init__(self, folder: _Optional[str] = ..., file_list: _Optional[str] = ..., array_uri: _Optional[str] = ..., pool_id: _Optional[str] = ..., builtin: _Optional[str] = ...) -> None: ...

class ScorePoolRequest(_message.Message):
    __slots__ = ("source", "dataset", "output_pool_id", "chunk_size", "experiment_id", "force", "limit")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_POOL_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    source: ImageSource
    dataset: str
    output_pool_id: str
    chunk_size: int
    experiment_id: str
    force: bool
    limit: int
    def __init__(self, source: _Optional[_Union[ImageSource, _Mapping]] = ..., dataset: _Optional[str] = ..., output_pool_id: _Optional[str] = ..., chunk_size: _Optional[int] = ..., experiment_id: _Optional[str] = ..., force: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class ScorePoolResponse(_message.Message):
    __slots__ = ("done", "total", "cached", "chunks_resumed", "pool", "identity")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_RESUMED_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    cached: bool
    chunks_resumed: int
    pool: _common_pb2.PoolInfo
    identity: TeacherIdentity
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., cached: _Optional[bool] = ..., chunks_resumed: _Optional[int] = ..., pool: _Optional[_Union[_common_pb2.PoolInfo, _Mapping]] = ..., identity: _Optional[_Union[TeacherIdentity, _Mapping]] = ...) -> None: ...

class SetClassesRequest(_message.Message):
    __slots__ = ("experiment_id", "class_names", "templates")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    templates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, experiment_id: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., templates: _Optional[_Iterable[str]] = ...) -> None: ...

class SetClassesResponse(_message.Message):
    __slots__ = ("identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    identity: TeacherIdentity
    def __init__(self, identity: _Optional[_Union[TeacherIdentity, _Mapping]] = ...) -> None: ...
