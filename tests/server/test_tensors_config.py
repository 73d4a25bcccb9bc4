"""Wire tensors and service configuration."""

from __future__ import annotations

import numpy as np
import pytest

from activekd.errors import InvalidArgument
from activekd.server.config import ServerConfig
from activekd.v1 import common_pb2
from activekd.wire.tensors import from_proto, to_proto


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "uint8"])
def test_tensor_roundtrip(dtype: str) -> None:
    arr = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    msg = to_proto(arr)
    assert list(msg.shape) == [2, 3, 4] and len(msg.data) == arr.nbytes
    back = from_proto(common_pb2.Tensor.FromString(msg.SerializeToString()))
    assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_tensor_big_endian_input_is_sent_little_endian() -> None:
    arr = np.arange(5, dtype=">f4")
    back = from_proto(to_proto(arr))
    assert np.array_equal(back, arr.astype("<f4"))


def test_tensor_errors_name_the_problem() -> None:
    msg = to_proto(np.zeros((2, 3), np.float32))
    msg.shape[:] = [3, 3]
    with pytest.raises(InvalidArgument, match=r"needs 36 bytes but 24 were sent") as exc:
        from_proto(msg, "probs")
    assert exc.value.field == "probs"
    with pytest.raises(InvalidArgument, match="unspecified"):
        from_proto(common_pb2.Tensor(shape=[1], data=b"\0"))
    with pytest.raises(InvalidArgument, match="not supported"):
        to_proto(np.zeros(2, dtype=np.complex64))


def test_config_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ServerConfig.load("teacher", [])
    assert (cfg.grpc_port, cfg.metrics_port) == (50052, 9102)
    monkeypatch.setenv("ACTIVEKD_GRPC_PORT", "6000")
    monkeypatch.setenv("ACTIVEKD_GRACE_SECONDS", "2.5")
    monkeypatch.setenv("ACTIVEKD_TEACHER_BACKEND", "label-map")
    cfg = ServerConfig.load("teacher", ["--grpc-port", "7000"], extra_keys=("teacher_backend",))
    assert cfg.grpc_port == 7000 and cfg.grace_seconds == 2.5
    assert cfg.extra == {"teacher_backend": "label-map"}
    monkeypatch.setenv("ACTIVEKD_THREADS", "many")
    with pytest.raises(SystemExit, match="not a number"):
        ServerConfig.load("teacher", [])
