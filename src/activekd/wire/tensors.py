"""numpy <-> ``activekd.v1.Tensor`` (raw little-endian bytes + dtype + shape)."""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np

from activekd.errors import InvalidArgument
from activekd.v1 import common_pb2

_TO_NP: dict[int, np.dtype[Any]] = {
    common_pb2.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    common_pb2.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    common_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    common_pb2.DATA_TYPE_INT32: np.dtype("<i4"),
    common_pb2.DATA_TYPE_INT64: np.dtype("<i8"),
    common_pb2.DATA_TYPE_UINT8: np.dtype("u1"),
}
_FROM_NP: dict[np.dtype[Any], int] = {
    v.newbyteorder("=") if v.itemsize > 1 else v: k for k, v in _TO_NP.items()
}


def dtype_to_proto(dtype: Any) -> common_pb2.DataType:
    """The ``DataType`` enum value for a numpy dtype (InvalidArgument for unsupported ones)."""
    dt = np.dtype(dtype).newbyteorder("=")
    for np_dt, code in _FROM_NP.items():
        if np_dt == dt:
            return cast(common_pb2.DataType, code)
    raise InvalidArgument(
        f"dtype {dt} is not supported on the wire; use float16/32/64, int32/64 or uint8"
    )


def dtype_from_proto(code: int) -> np.dtype[Any]:
    """The numpy dtype for a ``DataType`` value."""
    if code not in _TO_NP:
        raise InvalidArgument(f"tensor dtype {code} is unspecified or unknown")
    return _TO_NP[code]


def to_proto(array: np.ndarray) -> common_pb2.Tensor:
    """Encode an array as raw little-endian bytes."""
    arr = np.asarray(array)
    code = dtype_to_proto(arr.dtype)
    data = np.ascontiguousarray(arr, dtype=_TO_NP[code]).tobytes()
    return common_pb2.Tensor(dtype=code, shape=list(arr.shape), data=data)


#: most dimensions a Tensor may have (numpy's own limit is 64)
MAX_DIMS = 32


def from_proto(tensor: common_pb2.Tensor, name: str = "tensor") -> np.ndarray:
    """Decode a Tensor, checking that the byte count matches dtype x shape. Read-only view."""
    dt = dtype_from_proto(tensor.dtype)
    shape = tuple(int(s) for s in tensor.shape)
    if len(shape) > MAX_DIMS:
        raise InvalidArgument(
            f"{name}: {len(shape)} dimensions is over the limit of {MAX_DIMS}", field=name
        )
    if any(s < 0 for s in shape):
        raise InvalidArgument(f"{name}: negative dimension in shape {list(shape)}", field=name)
    expected = math.prod(shape) * dt.itemsize  # Python ints: no int64 wrap-around
    if len(tensor.data) != expected:
        raise InvalidArgument(
            f"{name}: shape {list(shape)} of {dt.name} needs {expected} bytes but {len(tensor.data)} "
            "were sent",
            field=name,
        )
    try:
        return np.frombuffer(tensor.data, dtype=dt).reshape(shape)
    except ValueError:  # e.g. [2**62, 2**62, 0]: no bytes, but dimensions numpy cannot hold
        raise InvalidArgument(
            f"{name}: shape {list(shape)} is too large for an array", field=name
        ) from None


__all__ = ["dtype_from_proto", "dtype_to_proto", "from_proto", "to_proto"]
