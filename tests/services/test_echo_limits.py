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


def test_a_5000_char_strategy_device_or_parameter_comes_back_short(
    client: SelectionClient,
) -> None:
    """Strings that are not ids (a strategy name, a device, a strategy parameter's name) are
    echoed as a 64-character prefix and their length."""
    probs = np.full((4, 2), 0.5, np.float32)
    ids = ["a", "b", "c", "d"]
    calls = [
        ("strategy", lambda: client.select_batch(LONG, 1, probs=probs, item_ids=ids)),
        ("options.device", lambda: client.select_batch(
            "margin", 1, probs=probs, item_ids=ids, device=LONG)),
        ("options.strategy_params", lambda: client.select_batch(
            "typiclust", 1, features=probs, item_ids=ids, strategy_params={LONG: 1})),
    ]  # fmt: skip
    for field, call in calls:
        with pytest.raises(grpc.RpcError) as exc:
            call()
        err = exc.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err)  # type: ignore[attr-defined]
        details = err.details()  # type: ignore[attr-defined]
        assert "x" * 65 not in details and "(5000 chars)" in details, (field, details)
        assert len(details) < 400, (field, details)


def test_a_request_over_the_max_message_size_is_refused_and_the_service_goes_on(
    client: SelectionClient, selection_service: ServiceProcess
) -> None:
    """The fixture's service takes messages up to 8 MiB (ACTIVEKD_MAX_MESSAGE_BYTES): a 9 MiB
    inline SelectBatch is RESOURCE_EXHAUSTED before any handler runs; one just under the
    limit is answered, and so is the next call."""
    n = 9 * 1024 * 1024 // (4 * 8) + 1  # 8 float32 columns a row: just over 9 MiB
    probs = np.full((n, 8), 0.125, np.float32)
    ids = [str(i) for i in range(n)]
    with pytest.raises(grpc.RpcError) as exc:
        client.select_batch("margin", 1, probs=probs, item_ids=ids)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    small = n // 2  # about 4.5 MiB with the ids
    res = client.select_batch("margin", 2, probs=probs[:small], item_ids=ids[:small])
    assert len(res.item_ids) == 2
    assert selection_service.proc is not None and selection_service.proc.poll() is None
