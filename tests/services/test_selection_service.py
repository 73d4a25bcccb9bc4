"""SelectionService end to end: a real server process, real Redis, real gRPC on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from activekd.client import SelectionClient
from activekd.selection import select_batch
from activekd.v1 import selection_pb2
from activekd.wire.tensors import to_proto
from tests.procs import RedisProcess, ServiceProcess


def _pool(
    n: int = 400, c: int = 6, d: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centers = rng.dirichlet(np.ones(c) * 0.3, size=4)
    probs = np.stack([rng.dirichlet(centers[i % 4] * 50 + 0.05) for i in range(n)]).astype(
        np.float32
    )
    probs /= probs.sum(1, keepdims=True)
    feats = rng.normal(size=(n, d)).astype(np.float32)
    return probs, feats, [f"item-{i:04d}" for i in range(n)]


@pytest.fixture
def client(selection_service: ServiceProcess):  # type: ignore[no-untyped-def]
    with SelectionClient(selection_service.target, timeout=60) as c:
        c.wait_ready()
        yield c


def _code(exc: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return exc.value.code()  # type: ignore[attr-defined,no-any-return]


def test_health_and_reflection(selection_service: ServiceProcess) -> None:
    with grpc.insecure_channel(selection_service.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "activekd.v1.SelectionService"):
            assert (
                health.Check(health_pb2.HealthCheckRequest(service=name)).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(
            refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        )
        names = {s.name for s in resp.list_services_response.service}
        assert {"activekd.v1.SelectionService", "grpc.health.v1.Health"} <= names


def test_upload_chunks_then_select_by_reference_matches_library(client: SelectionClient) -> None:
    probs, feats, ids = _pool()
    info = client.upload_pool(
        "svc/pool-a",
        item_ids=ids,
        arrays={"probs": probs, "features": feats},
        chunk_bytes=2048,
        overwrite=True,
    )  # ~50 rows per chunk -> 8 chunks
    assert info.num_items == 400 and info.complete
    assert {a.name: list(a.shape) for a in info.arrays} == {"probs": [400, 6], "features": [400, 5]}
    labeled = [ids[3], ids[77], ids[150]]
    lib = select_batch(
        "pcoreset", 12, probs=probs, features=feats, labeled=np.array([3, 77, 150]), seed=0
    )
    for strategy in ("pcoreset", "coreset", "entropy", "badge"):
        got = client.select_batch(strategy, 12, pool_id="svc/pool-a", labeled=labeled, seed=4)
        want = select_batch(
            strategy, 12, probs=probs, features=feats, labeled=np.array([3, 77, 150]), seed=4
        )
        assert got.rows.tolist() == want.indices.tolist(), strategy
        assert got.item_ids == [ids[i] for i in want.indices]
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    inline = client.select_batch(
        "pcoreset", 12, probs=probs, features=feats, item_ids=ids, labeled=labeled
    )
    assert inline.rows.tolist() == lib.indices.tolist()
    assert not set(inline.item_ids) & set(labeled)


def test_request_id_is_idempotent_and_experiments_never_repick(client: SelectionClient) -> None:
    probs, _, ids = _pool(seed=1)
    client.upload_pool("svc/pool-b", item_ids=ids, arrays={"probs": probs}, overwrite=True)
    first = client.select_batch(
        "random",
        10,
        pool_id="svc/pool-b",
        seed=1,
        request_id="req-1",
        experiment_id="exp-x",
        round=0,
    )
    again = client.select_batch(
        "random",
        10,
        pool_id="svc/pool-b",
        seed=1,
        request_id="req-1",
        experiment_id="exp-x",
        round=0,
    )
    assert again.replayed and not first.replayed and again.item_ids == first.item_ids
    with pytest.raises(grpc.RpcError) as exc:
        client.select_batch(
            "random", 11, pool_id="svc/pool-b", seed=1, request_id="req-1", experiment_id="exp-x"
        )
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT and "already used" in exc.value.details()
    # same seed, new request: without the experiment's memory it would pick the same rows
    second = client.select_batch(
        "random",
        10,
        pool_id="svc/pool-b",
        seed=1,
        request_id="req-2",
        experiment_id="exp-x",
        round=1,
    )
    assert not set(second.item_ids) & set(first.item_ids)
    records = client.get_selections("exp-x")
    assert [r.request_id for r in records] == ["req-1", "req-2"]
    assert [list(r.item_ids) for r in records] == [first.item_ids, second.item_ids]


def test_pool_listing_and_delete(client: SelectionClient) -> None:
    probs, _, ids = _pool(n=20)
    client.upload_pool("svc/tmp-1", item_ids=ids, arrays={"probs": probs}, overwrite=True)
    assert "svc/tmp-1" in {p.pool_id for p in client.list_pools(page_size=1)}
    assert client.delete_pool("svc/tmp-1") and not client.delete_pool("svc/tmp-1")
    with pytest.raises(grpc.RpcError) as exc:
        client.describe_pool("svc/tmp-1")
    assert _code(exc) == grpc.StatusCode.NOT_FOUND
    names = {s.name for s in client.list_strategies()}
    assert {
        "pcoreset",
        "coreset",
        "random",
        "entropy",
        "margin",
        "least_confidence",
        "badge",
        "class_balanced",
    } <= names


@pytest.mark.parametrize(
    ("mutate", "code", "needle"),
    [
        (lambda p: p.__setitem__((0, 0), np.nan), "INVALID_ARGUMENT", "NaN"),
        (lambda p: p.__setitem__((1, 0), -0.5), "INVALID_ARGUMENT", "negative"),
        (lambda p: p.__setitem__((2, 0), p[2, 0] + 0.5), "INVALID_ARGUMENT", "sum"),
    ],
)
def test_bad_probabilities_rejected_inline(client: SelectionClient, mutate, code, needle) -> None:  # type: ignore[no-untyped-def]
    probs, _, ids = _pool(n=30)
    bad = probs.copy()
    mutate(bad)
    with pytest.raises(grpc.RpcError) as exc:
        client.select_batch("entropy", 3, probs=bad, item_ids=ids)
    assert _code(exc).name == code and needle.lower() in exc.value.details().lower()


def test_bad_requests_get_clear_statuses(
    client: SelectionClient, selection_service: ServiceProcess
) -> None:
    probs, _, ids = _pool(n=30)
    client.upload_pool("svc/pool-c", item_ids=ids, arrays={"probs": probs}, overwrite=True)
    cases = [
        (dict(strategy="entropy", budget=0), "INVALID_ARGUMENT", "budget"),
        (dict(strategy="entropy", budget=29, labeled=ids[:2]), "INVALID_ARGUMENT", "budget"),
        (dict(strategy="nope", budget=2), "INVALID_ARGUMENT", "pcoreset"),
        (dict(strategy="coreset", budget=2), "INVALID_ARGUMENT", "features"),
        (
            dict(strategy="entropy", budget=2, labeled=[ids[1], ids[1]]),
            "INVALID_ARGUMENT",
            "duplicate",
        ),
        (dict(strategy="entropy", budget=2, labeled=["ghost"]), "INVALID_ARGUMENT", "ghost"),
    ]
    for kwargs, code, needle in cases:
        with pytest.raises(grpc.RpcError) as exc:
            client.select_batch(pool_id="svc/pool-c", **kwargs)  # type: ignore[arg-type]
        assert _code(exc).name == code, kwargs
        assert needle in exc.value.details(), (kwargs, exc.value.details())
    with pytest.raises(grpc.RpcError) as exc:
        client.select_batch("entropy", 2, pool_id="svc/missing")
    assert _code(exc) == grpc.StatusCode.NOT_FOUND and "UploadPool" in exc.value.details()
    # shape/dtype mismatch: bytes don't match the declared shape -> BadRequest detail names the field
    req = selection_pb2.SelectBatchRequest(strategy="entropy", budget=2)
    t = to_proto(probs)
    t.shape[:] = [31, 6]
    req.inline_pool.probs.CopyFrom(t)
    with pytest.raises(grpc.RpcError) as exc:
        client.stub.SelectBatch(req, timeout=30)
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in exc.value.details()
    status = rpc_status.from_call(exc.value)
    assert status is not None
    violation = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(violation)
    assert violation.field_violations[0].field == "inline_pool.probs"
    # oversized message: over the server's 8 MiB limit
    big = np.full((3_000_000,), 1 / 3_000_000, np.float32).reshape(1_000_000, 3)
    with pytest.raises(grpc.RpcError) as exc:
        client.select_batch("entropy", 2, probs=big)
    assert _code(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_sharded_upload_is_described_and_selected_without_ray(client: SelectionClient) -> None:
    """UploadPool with shard_rows stores the pool in shard files; a service without a Ray
    address joins them, so every strategy answers as for the one-file pool."""
    probs, feats, ids = _pool(n=400)
    arrays = {"probs": probs, "features": feats}
    info = client.upload_pool(
        "svc/sharded", item_ids=ids, arrays=arrays, chunk_bytes=3000, shard_rows=150, overwrite=True
    )
    assert info.shard_rows == 150 and info.complete
    assert client.describe_pool("svc/sharded").shard_rows == 150
    assert {a.name: list(a.shape) for a in info.arrays} == {"probs": [400, 6], "features": [400, 5]}
    for strategy in ("pcoreset", "coreset", "margin"):
        got = client.select_batch(strategy, 9, pool_id="svc/sharded", labeled=ids[:4])
        want = select_batch(strategy, 9, probs=probs, features=feats, labeled=np.arange(4))
        assert got.rows.tolist() == want.indices.tolist(), strategy
        assert "shards" not in got.stats  # no Ray address: in-process
    many = [f"x{i}" for i in range(4400)]
    for rows, n, needle in ((-3, 400, "shard_rows must be 0"), (1, 4400, "shard_rows >= 2")):
        with pytest.raises(grpc.RpcError) as exc:
            client.upload_pool(
                "svc/sharded-bad",
                item_ids=many[:n],
                arrays={"probs": probs[:1].repeat(n, 0)},
                shard_rows=rows,
            )
        assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
        assert needle in exc.value.details(), exc.value.details()
    assert "svc/sharded-bad" not in [p.pool_id for p in client.list_pools()]


def test_rejected_upload_leaves_stored_pool_unchanged(client: SelectionClient) -> None:
    probs, _, ids = _pool(n=40)
    client.upload_pool("svc/keep", item_ids=ids, arrays={"probs": probs}, overwrite=True)
    before = client.describe_pool("svc/keep")
    bad = probs.copy()
    bad[35] = np.nan
    with pytest.raises(grpc.RpcError) as exc:
        client.upload_pool(
            "svc/keep", item_ids=ids, arrays={"probs": bad}, overwrite=True, chunk_bytes=256
        )
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT and "chunk at" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        client.upload_pool(
            "svc/keep", item_ids=[*ids[:39], ids[0]], arrays={"probs": probs}, overwrite=True
        )
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT and "unique" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        client.upload_pool("svc/keep", item_ids=ids, arrays={"probs": probs})
    assert _code(exc) == grpc.StatusCode.ALREADY_EXISTS
    after = client.describe_pool("svc/keep")
    assert after == before
    got = client.select_batch("entropy", 3, pool_id="svc/keep")
    want = select_batch("entropy", 3, probs=probs, labeled=np.array([], np.int64), seed=0)
    assert got.rows.tolist() == want.indices.tolist()


def test_graceful_shutdown_on_sigterm(redis_server: RedisProcess, tmp_path) -> None:  # type: ignore[no-untyped-def]
    svc = ServiceProcess("selection", redis_server.url, str(tmp_path)).start()
    assert svc.proc is not None
    maps = Path(f"/proc/{svc.proc.pid}/maps").read_text()
    assert "libjemalloc" in maps  # the launcher preloads the default allocator
    assert svc.stop() == 0
    lines = [json.loads(line) for line in svc.logs().splitlines() if line.startswith("{")]
    msgs = [line["msg"] for line in lines]
    assert msgs.index("listening") < msgs.index("shutting down") < msgs.index("stopped")
    assert msgs.index("allocator: jemalloc") < msgs.index("listening")
    assert not [line for line in lines if line.get("level") == "warning"]


def test_cli_entry_point_rejects_bad_config() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "activekd_services.selection", "--grpc-port", "abc"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "not a number" in out.stderr
