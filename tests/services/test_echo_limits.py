"""A caller's string comes back as a short prefix at most, and every id that ends up in a Redis key
is checked, over real gRPC against a selection service process."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from activekd.client import SelectionClient
from tests.procs import ServiceProcess

LONG = "x" * 5000


@pytest.fixture
def client(selection_service: ServiceProcess) -> Iterator[SelectionClient]:
    with SelectionClient(selection_service.target, timeout=60) as c:
        c.wait_ready()
        yield c


def _inline(client: SelectionClient, **kw: str) -> None:
    probs = np.full((4, 2), 0.5, np.float32)
    client.select_batch("margin", 1, probs=probs, item_ids=["a", "b", "c", "d"], **kw)  # type: ignore[arg-type]


def _rejected(exc: pytest.ExceptionInfo[grpc.RpcError], field: str) -> str:
    err = exc.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err  # type: ignore[attr-defined]
    details = err.details()  # type: ignore[attr-defined]
    assert len(details) < 300 and "x" * 65 not in details
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None and len(status.SerializeToString()) < 1024
    fields = []
    for d in status.details:
        bad = error_details_pb2.BadRequest()
        if d.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
            assert all(len(v.description) < 300 for v in bad.field_violations)
    assert field in fields
    return str(details)


def test_a_5000_char_pool_id_is_a_short_invalid_argument(client: SelectionClient) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        client.describe_pool(LONG)
    assert "(5000 chars)" in _rejected(exc, "pool_id")
    with pytest.raises(grpc.RpcError) as exc:
        client.select_batch("margin", 1, pool_id=LONG)
    _rejected(exc, "pool_id")


@pytest.mark.parametrize("experiment_id", [LONG, "bad id", "a/b", "{tag}", "e\n"])
def test_select_batch_rejects_a_bad_experiment_id(
    client: SelectionClient, experiment_id: str
) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        _inline(client, experiment_id=experiment_id)
    _rejected(exc, "experiment_id")
    with pytest.raises(grpc.RpcError) as exc:
        client.get_selections(experiment_id)
    _rejected(exc, "experiment_id")


@pytest.mark.parametrize("request_id", [LONG, "a/../b", "r}{", "r\x00"])
def test_select_batch_rejects_a_bad_request_id(client: SelectionClient, request_id: str) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        _inline(client, request_id=request_id, experiment_id="echo-exp")
    _rejected(exc, "request_id")
    with pytest.raises(grpc.RpcError) as exc:  # also without an experiment (its own key)
        _inline(client, request_id=request_id)
    _rejected(exc, "request_id")


def test_good_ids_still_select(client: SelectionClient) -> None:
    _inline(client, experiment_id="echo-ok", request_id="echo-ok/round-0")
    assert [s.request_id for s in client.get_selections("echo-ok")] == ["echo-ok/round-0"]
