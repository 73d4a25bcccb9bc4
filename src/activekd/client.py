"""Typed Python clients for every activekd RPC: numpy in, dataclasses out, deadlines, retries.

Every method returns a dataclass (or a list / iterator of them), never a raw protobuf message.
Retries use gRPC's own retry policy (service config) and apply only to idempotent methods:
reads, and calls made idempotent by a request id (``select_batch`` always sends one).

    from activekd.client import SelectionClient
    sel = SelectionClient("localhost:50051")
    sel.upload_pool("pool", item_ids=ids, arrays={"probs": P, "features": F})
    res = sel.select_batch("pcoreset", 10, pool_id="pool", labeled=["id3", "id7"])

Services require a bearer token. A client reads ``ACTIVEKD_CLIENT_TOKEN`` (or
``ACTIVEKD_CLIENT_TOKEN_FILE``, and ``ACTIVEKD_CLIENT_CA_FILE`` for TLS) unless given credentials:

    from activekd.client import ClientCredentials, SelectionClient
    creds = ClientCredentials(token_file="reader.token", ca_file="ca.crt")
    sel = SelectionClient("selection.example:50051", credentials=creds)

The clients live in :mod:`activekd.wire`, one module per service; this module is their stable
import path.
"""

from __future__ import annotations

from activekd.wire.channel import (
    DEFAULT_TIMEOUT,
    MAX_MESSAGE_BYTES,
    BaseClient,
    ClientCredentials,
    CredentialsError,
    bearer_metadata,
    make_channel,
)
from activekd.wire.experiment_client import AdvanceResult, ExperimentClient, SubmitLabelsResult
from activekd.wire.experiment_convert import ExperimentStatus, RoundEvent, RoundSummary
from activekd.wire.pool_records import ArrayInfo, PoolInfo
from activekd.wire.selection_client import (
    CHUNK_BYTES,
    PastSelection,
    SelectBatchResult,
    SelectionClient,
    StrategyInfo,
)
from activekd.wire.structs import dict_to_struct
from activekd.wire.teacher_client import (
    PredictResult,
    ScorePoolProgress,
    TeacherClient,
    TeacherIdentity,
    TeacherInfo,
    TeacherPrediction,
    image_proto,
)
from activekd.wire.trainer_client import (
    TRAIN_TIMEOUT,
    CheckpointInfo,
    PredictPoolResult,
    StudentEvaluation,
    TrainerClient,
    TrainProgress,
    TrainRoundResult,
)

#: Deprecated names (one release): ``Selection`` is :class:`SelectBatchResult`, ``to_struct`` is
#: :func:`activekd.wire.structs.dict_to_struct`.
Selection = SelectBatchResult
to_struct = dict_to_struct

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "TRAIN_TIMEOUT",
    "AdvanceResult",
    "ArrayInfo",
    "BaseClient",
    "CheckpointInfo",
    "ClientCredentials",
    "CredentialsError",
    "ExperimentClient",
    "ExperimentStatus",
    "PastSelection",
    "PoolInfo",
    "PredictPoolResult",
    "PredictResult",
    "RoundEvent",
    "RoundSummary",
    "ScorePoolProgress",
    "SelectBatchResult",
    "Selection",
    "SelectionClient",
    "StrategyInfo",
    "StudentEvaluation",
    "SubmitLabelsResult",
    "TeacherClient",
    "TeacherIdentity",
    "TeacherInfo",
    "TeacherPrediction",
    "TrainProgress",
    "TrainRoundResult",
    "TrainerClient",
    "bearer_metadata",
    "image_proto",
    "make_channel",
    "to_struct",
]
