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


def test_security_and_limit_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secure by default: auth required, no TLS files, no health port; every setting is read
    from ACTIVEKD_<NAME> (the names docs/security.md and the deploy files use)."""
    cfg = ServerConfig.load("selection", [])
    assert (cfg.auth, cfg.auth_tokens_file, cfg.auth_tokens) == ("required", "", "")
    assert (cfg.reflection, cfg.tls_cert_file, cfg.tls_key_file) == ("open", "", "")
    assert (cfg.tls_client_ca_file, cfg.health_port, cfg.ready_interval_seconds) == ("", -1, 2.0)
    assert (cfg.max_concurrent_rpcs, cfg.max_concurrent_per_method) == (256, "")
    assert (cfg.max_pool_rows, cfg.max_pool_bytes, cfg.max_budget) == (50_000_000, 64 << 30, 10**6)
    assert (cfg.data_roots, cfg.source_schemes) == ("", "file")
    monkeypatch.setenv("ACTIVEKD_AUTH", "off")
    monkeypatch.setenv("ACTIVEKD_AUTH_TOKENS_FILE", "/run/secrets/tokens")
    monkeypatch.setenv("ACTIVEKD_HEALTH_PORT", "50061")
    monkeypatch.setenv("ACTIVEKD_READY_INTERVAL_SECONDS", "0.5")
    monkeypatch.setenv("ACTIVEKD_TLS_CLIENT_CA_FILE", "/run/secrets/ca.crt")
    cfg = ServerConfig.load("selection", ["--reflection", "off", "--max-budget", "10"])
    assert (cfg.auth, cfg.auth_tokens_file, cfg.reflection) == ("off", "/run/secrets/tokens", "off")
    assert (cfg.health_port, cfg.ready_interval_seconds, cfg.max_budget) == (50061, 0.5, 10)
    assert cfg.tls_client_ca_file == "/run/secrets/ca.crt"
