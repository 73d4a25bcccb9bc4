"""Pool store metadata -> ``activekd.v1.PoolInfo`` (every service that returns a pool uses it)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from activekd.store import PoolMeta
from activekd.v1 import common_pb2
from activekd.wire.tensors import dtype_to_proto


def pool_info(meta: PoolMeta) -> common_pb2.PoolInfo:
    """PoolMeta -> PoolInfo proto (arrays sorted by name)."""
    return common_pb2.PoolInfo(
        pool_id=meta.pool_id,
        num_items=meta.num_items,
        arrays=[
            common_pb2.ArrayInfo(
                name=n, dtype=cast(Any, dtype_to_proto(np.dtype(a.dtype))), shape=a.shape
            )
            for n, a in sorted(meta.arrays.items())
        ],
        metadata=meta.metadata,
        created_unix=meta.created_unix,
        complete=meta.complete,
        shard_rows=meta.shard_rows,
    )
