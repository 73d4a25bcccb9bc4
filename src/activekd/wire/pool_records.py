"""What clients return for a stored pool: :class:`PoolInfo` with its :class:`ArrayInfo` rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from activekd.errors import shown
from activekd.v1 import common_pb2
from activekd.wire.tensors import dtype_from_proto


@dataclass(frozen=True)
class ArrayInfo:
    """One named array of a pool: numpy dtype name and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class PoolInfo:
    """A registered pool: id, row count, arrays, metadata; ``complete`` once fully written."""

    pool_id: str
    num_items: int
    arrays: list[ArrayInfo] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    created_unix: float = 0.0
    complete: bool = False
    #: rows per shard file of a sharded pool; 0: one file per array
    shard_rows: int = 0

    @classmethod
    def from_proto(cls, p: common_pb2.PoolInfo) -> PoolInfo:
        arrays = [
            ArrayInfo(a.name, np.dtype(dtype_from_proto(a.dtype)).name, tuple(a.shape))
            for a in p.arrays
        ]
        return cls(
            p.pool_id,
            p.num_items,
            arrays,
            dict(p.metadata),
            p.created_unix,
            p.complete,
            int(p.shard_rows),
        )

    def array(self, name: str) -> ArrayInfo:
        """The array called ``name`` (KeyError listing the pool's arrays when there is none)."""
        for a in self.arrays:
            if a.name == name:
                return a
        raise KeyError(
            f"pool {shown(self.pool_id)} has no array {shown(name)}: {[a.name for a in self.arrays]}"
        )
