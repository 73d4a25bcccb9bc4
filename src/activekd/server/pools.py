"""Pool store metadata -> ``activekd.v1.PoolInfo`` (shared by the services that return pools)."""

from __future__ import annotations

import numpy as np

from activekd.server.tensors import dtype_to_proto
from activekd.store import PoolMeta
from activekd.v1 import common_pb2


def pool_info(meta: PoolMeta) -> common_pb2.PoolInfo:
    """PoolMeta -> PoolInfo proto."""
    return common_pb2.PoolInfo(
        pool_id=meta.pool_id,
        num_items=meta.num_items,
        arrays=[
            common_pb2.ArrayInfo(name=n, dtype=dtype_to_proto(np.dtype(a.dtype)), shape=a.shape)
            for n, a in sorted(meta.arrays.items())
        ],
        metadata=meta.metadata,
        created_unix=meta.created_unix,
        complete=meta.complete,
    )
