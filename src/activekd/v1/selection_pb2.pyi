from activekd.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InlinePool(_message.Message):
    __slots__ = ("probs", "features", "item_ids")
    PROBS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    probs: _common_pb2.Tensor
    features: _common_pb2.Tensor
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, probs: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., features: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PoolReference(_message.Message):
    __slots__ = ("pool_id", "probs_array", "features_array", "features_pool_id")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    PROBS_ARRAY_FIELD_NUMBER: _ClassVar[int]
    FEATURES_ARRAY_FIELD_NUMBER: _ClassVar[int]
    FEATURES_POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    probs_array: str
    features_array: str
    features_pool_id: str
    def __init__(self, pool_id: _Optional[str] = ..., probs_array: _Optional[str] = ..., features_array: _Optional[str] = ..., features_pool_id: _Optional[str] = ...) -> None: ...

class SelectionOptions(_message.Message):
    __slots__ = ("disable_pruning", "device", "threads", "strategy_params")
    class StrategyParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DISABLE_PRUNING_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_PARAMS_FIELD_NUMBER: _ClassVar[int]
    disable_pruning: bool
    device: str
    threads: int
    strategy_params: _containers.ScalarMap[str, float]
    def __init__(self, disable_pruning: _Optional[bool] = ..., device: _Optional[str] = ..., threads: _Optional[int] = ..., strategy_params: _Optional[_Mapping[str, float]] = ...) -> None: ...

class SelectBatchRequest(_message.Message):
    __slots__ = ("strategy", "budget", "seed", "request_id", "pool_ref", "inline_pool", "labeled_item_ids", "experiment_id", "round", "options", "labels")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_REF_FIELD_NUMBER: _ClassVar[int]
    INLINE_POOL_FIELD_NUMBER: _ClassVar[int]
    LABELED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    budget: int
    seed: int
    request_id: str
    pool_ref: PoolReference
    inline_pool: InlinePool
    labeled_item_ids: _containers.RepeatedScalarFieldContainer[str]
    experiment_id: str
    round: int
    options: SelectionOptions
    labels: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, strategy: _Optional[str] = ..., budget: _Optional[int] = ..., seed: _Optional[int] = ..., request_id: _Optional[str] = ..., pool_ref: _Optional[_Union[PoolReference, _Mapping]] = ..., inline_pool: _Optional[_Union[InlinePool, _Mapping]] = ..., labeled_item_ids: _Optional[_Iterable[str]] = ..., experiment_id: _Optional[str] = ..., round: _Optional[int] = ..., options: _Optional[_Union[SelectionOptions, _Mapping]] = ..., labels: _Optional[_Iterable[int]] = ...) -> None: ...

class SelectBatchResponse(_message.Message):
    __slots__ = ("item_ids", "rows", "scores", "strategy", "timing", "replayed", "request_id", "stats")
    class StatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    strategy: str
    timing: _common_pb2.Timing
    replayed: bool
    request_id: str
    stats: _containers.ScalarMap[str, float]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., strategy: _Optional[str] = ..., timing: _Optional[_Union[_common_pb2.Timing, _Mapping]] = ..., replayed: _Optional[bool] = ..., request_id: _Optional[str] = ..., stats: _Optional[_Mapping[str, float]] = ...) -> None: ...

class UploadPoolHeader(_message.Message):
    __slots__ = ("pool_id", "num_items", "overwrite", "metadata", "shard_rows")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_ITEMS_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SHARD_ROWS_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    num_items: int
    overwrite: bool
    metadata: _containers.ScalarMap[str, str]
    shard_rows: int
    def __init__(self, pool_id: _Optional[str] = ..., num_items: _Optional[int] = ..., overwrite: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ..., shard_rows: _Optional[int] = ...) -> None: ...

class UploadPoolChunk(_message.Message):
    __slots__ = ("offset", "item_ids", "arrays")
    class ArraysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ARRAYS_FIELD_NUMBER: _ClassVar[int]
    offset: int
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    arrays: _containers.MessageMap[str, _common_pb2.Tensor]
    def __init__(self, offset: _Optional[int] = ..., item_ids: _Optional[_Iterable[str]] = ..., arrays: _Optional[_Mapping[str, _common_pb2.Tensor]] = ...) -> None: ...

class UploadPoolRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadPoolHeader
    chunk: UploadPoolChunk
    def __init__(self, header: _Optional[_Union[UploadPoolHeader, _Mapping]] = ..., chunk: _Optional[_Union[UploadPoolChunk, _Mapping]] = ...) -> None: ...

class UploadPoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: _common_pb2.PoolInfo
    def __init__(self, pool: _Optional[_Union[_common_pb2.PoolInfo, _Mapping]] = ...) -> None: ...

class DescribePoolRequest(_message.Message):
    __slots__ = ("pool_id",)
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    def __init__(self, pool_id: _Optional[str] = ...) -> None: ...

class DescribePoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: _common_pb2.PoolInfo
    def __init__(self, pool: _Optional[_Union[_common_pb2.PoolInfo, _Mapping]] = ...) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools", "next_page_token")
    POOLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[_common_pb2.PoolInfo]
    next_page_token: str
    def __init__(self, pools: _Optional[_Iterable[_Union[_common_pb2.PoolInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeletePoolRequest(_message.Message):
    __slots__ = ("pool_id",)
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    def __init__(self, pool_id: _Optional[str] = ...) -> None: ...

class DeletePoolResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListStrategiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StrategyInfo(_message.Message):
    __slots__ = ("name", "description", "needs_probs", "needs_features", "params", "teacher_features", "probs_source")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    NEEDS_PROBS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FEATURES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FEATURES_FIELD_NUMBER: _ClassVar[int]
    PROBS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    needs_probs: bool
    needs_features: bool
    params: _containers.ScalarMap[str, float]
    teacher_features: bool
    probs_source: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., needs_probs: _Optional[bool] = ..., needs_features: _Optional[bool] = ..., params: _Optional[_Mapping[str, float]] = ..., teacher_features: _Optional[bool] = ..., probs_source: _Optional[str] = ...) -> None: ...

class ListStrategiesResponse(_message.Message):
    __slots__ = ("strategies",)
    STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    strategies: _containers.RepeatedCompositeFieldContainer[StrategyInfo]
    def __init__(self, strategies: _Optional[_Iterable[_Union[StrategyInfo, _Mapping]]] = ...) -> None: ...

class GetSelectionsRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class SelectionRecord(_message.Message):
    __slots__ = ("round", "request_id", "strategy", "item_ids", "scores", "created_unix")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    round: int
    request_id: str
    strategy: str
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    created_unix: float
    def __init__(self, round: _Optional[int] = ..., request_id: _Optional[str] = ..., strategy: _Optional[str] = ..., item_ids: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ..., created_unix: _Optional[float] = ...) -> None: ...

class GetSelectionsResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[SelectionRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[SelectionRecord, _Mapping]]] = ...) -> None: ...
