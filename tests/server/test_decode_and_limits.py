"""The shared ServerInterceptor, in process with fake servicers: undecodable bodies, concurrency
and field limits, infrastructure errors without host details, capped messages, deadlines."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import redis
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from activekd.errors import InvalidArgument
from activekd.server import bootstrap
from activekd.server.config import ServerConfig
from activekd.server.interceptors import (
    ACCESS_DENIED_MESSAGE,
    DOWNSTREAM_UNAVAILABLE_MESSAGE,
    MAX_STATUS_MESSAGE_BYTES,
    REDIS_UNAVAILABLE_MESSAGE,
    ServerInterceptor,
    Undecodable,
    cap_message,
)
from activekd.server.limits import Limits, parse_per_method, remaining_seconds
from activekd.v1 import (
    common_pb2,
    experiment_pb2,
    experiment_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
    teacher_pb2,
    teacher_pb2_grpc,
)

SEL = "/activekd.v1.SelectionService/"
TEA = "/activekd.v1.TeacherService/"
#: a varint that never ends: no protobuf message parses it
GARBAGE = b"\xff" * 16
SECRET_PATH = "/srv/secret-host-path/store/v-1/probs.npy"
REDIS_TEXT = "Error 2 connecting to unix socket: /tmp/akd-redis-x1/redis.sock. No such file."


class Fakes(
    selection_pb2_grpc.SelectionServiceServicer,
    teacher_pb2_grpc.TeacherServiceServicer,
    experiment_pb2_grpc.ExperimentServiceServicer,
):
    """SelectBatch blocks while ``hold`` is set; DescribePool raises what its pool id names."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.seen: list[Any] = []
        self.remaining: list[float | None] = []

    async def SelectBatch(self, request: Any, context: Any) -> Any:
        self.seen.append(request)
        self.remaining.append(remaining_seconds(context))
        while self.hold.is_set():
            await asyncio.sleep(0.01)
        return selection_pb2.SelectBatchResponse(item_ids=["a"], request_id=request.request_id)

    async def UploadPool(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        n = 0
        async for msg in request_iterator:
            self.seen.append(msg)
            n += 1
        return selection_pb2.UploadPoolResponse(pool=common_pb2.PoolInfo(num_items=n))

    async def DescribePool(self, request: Any, context: Any) -> Any:
        pid = request.pool_id
        if pid == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device", SECRET_PATH)
        if pid == "efbig":
            await asyncio.to_thread(self._raise_chained, errno.EFBIG)
        if pid == "erofs":
            raise OSError(errno.EROFS, "Read-only file system", SECRET_PATH)
        if pid == "eacces":
            raise PermissionError(errno.EACCES, "Permission denied", SECRET_PATH)
        if pid == "redis":
            raise redis.ConnectionError(REDIS_TEXT)
        if pid == "redis-timeout":
            raise redis.TimeoutError(f"Timeout reading from {SECRET_PATH}")
        if pid == "downstream":  # what a sync stub raises when its target is down
            with grpc.insecure_channel("127.0.0.1:1") as channel:
                selection_pb2_grpc.SelectionServiceStub(channel).ListPools(
                    selection_pb2.ListPoolsRequest(), timeout=5
                )
        if pid == "boom":
            raise RuntimeError(f"failed on {SECRET_PATH}")
        if len(pid) > 100:
            raise InvalidArgument(f"pool_id {pid!r} is not a valid pool id", field="pool_id")
        return selection_pb2.DescribePoolResponse()

    @staticmethod
    def _raise_chained(code: int) -> None:
        try:
            raise OSError(code, "File too large", SECRET_PATH)
        except OSError as exc:
            raise RuntimeError(f"write failed: {exc}") from exc

    async def ScorePool(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.seen.append(request)
        for i in range(3):
            yield teacher_pb2.ScorePoolResponse(done=i)

    async def PredictStream(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        async for msg in request_iterator:
            self.seen.append(msg)
            yield teacher_pb2.PredictStreamResponse()

    async def CreateExperiment(self, request: Any, context: Any) -> Any:
        return experiment_pb2.CreateExperimentResponse()


class InProcess:
    """An aio server with the interceptor on its own event loop thread; sync clients."""

    def __init__(self, limits: Limits | None = None, config: ServerConfig | None = None) -> None:
        """``config`` set: the server is built by ``bootstrap.start`` (its interceptors)."""
        self.fakes = Fakes()
        self.interceptor = ServerInterceptor(limits=limits)
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self._run(self._start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def _register(self, server: grpc.aio.Server) -> None:
        selection_pb2_grpc.add_SelectionServiceServicer_to_server(self.fakes, server)
        teacher_pb2_grpc.add_TeacherServiceServicer_to_server(self.fakes, server)
        experiment_pb2_grpc.add_ExperimentServiceServicer_to_server(self.fakes, server)

    async def _start(self) -> int:
        if self.config is not None:
            names = ["activekd.v1.SelectionService", "activekd.v1.TeacherService"]
            self.running_server = await bootstrap.start(
                self.config, bootstrap.Service(full_names=names, register=self._register)
            )
            self.server = self.running_server.server
            return self.running_server.port
        self.server = grpc.aio.server(interceptors=[self.interceptor])
        self._register(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def close(self) -> None:
        self.channel.close()
        if self.config is not None:
            self._run(self.running_server.stop(0))
        else:
            self._run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def selection(self) -> selection_pb2_grpc.SelectionServiceStub:
        return selection_pb2_grpc.SelectionServiceStub(self.channel)

    def wait_running(self, method: str | None, n: int) -> None:
        """Until ``n`` calls of ``method`` (None: of any method) are counted."""
        deadline = time.monotonic() + 10
        while self.interceptor.running(method) != n:
            assert time.monotonic() < deadline, f"{method} never had {n} calls running"
            time.sleep(0.01)


@pytest.fixture
def server() -> Iterator[InProcess]:
    s = InProcess()
    try:
        yield s
    finally:
        s.close()


def _error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _violations(err: grpc.RpcError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    out = []
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out.extend(bad.field_violations)
    return out


# --- undecodable bodies -------------------------------------------------------------------------
KINDS = {
    "unary": ("unary_unary", SEL + "SelectBatch", "SelectBatchRequest"),
    "server_stream": ("unary_stream", TEA + "ScorePool", "ScorePoolRequest"),
    "client_stream": ("stream_unary", SEL + "UploadPool", "UploadPoolRequest"),
    "bidi_stream": ("stream_stream", TEA + "PredictStream", "PredictStreamRequest"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_an_undecodable_body_is_invalid_argument_on_every_rpc_kind(
    server: InProcess, kind: str
) -> None:
    factory, method, type_name = KINDS[kind]
    call = getattr(server.channel, factory)(method)  # no serializers: raw bytes on the wire
    body = GARBAGE if factory.startswith("unary") else iter([GARBAGE])

    def run() -> Any:
        result = call(body, timeout=10)
        return list(result) if factory.endswith("stream") else result

    err = _error(run)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert err.details() == f"request body is not a valid {type_name}"
    assert server.fakes.seen == []  # no servicer code saw a message


def test_a_bad_message_later_in_a_stream_is_invalid_argument(server: InProcess) -> None:
    good = teacher_pb2.PredictStreamRequest(experiment_id="e").SerializeToString()
    call = server.channel.stream_stream(TEA + "PredictStream")
    err = _error(lambda: list(call(iter([good, GARBAGE]), timeout=10)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "request body is not a valid PredictStreamRequest"
    assert len(server.fakes.seen) == 1


def test_valid_bodies_still_pass_on_every_kind(server: InProcess) -> None:
    stub = teacher_pb2_grpc.TeacherServiceStub(server.channel)
    assert [r.done for r in stub.ScorePool(teacher_pb2.ScorePoolRequest(), timeout=10)] == [0, 1, 2]
    assert len(list(stub.PredictStream(iter([teacher_pb2.PredictStreamRequest()] * 2)))) == 2
    chunks = [selection_pb2.UploadPoolRequest(chunk=selection_pb2.UploadPoolChunk())] * 3
    assert server.selection.UploadPool(iter(chunks), timeout=10).pool.num_items == 3
    assert server.selection.SelectBatch(selection_pb2.SelectBatchRequest(), timeout=10).item_ids


def test_undecodable_is_a_sentinel_not_an_exception() -> None:
    from activekd.server.interceptors import safe_deserializer

    safe = safe_deserializer(selection_pb2.SelectBatchRequest.FromString)
    assert safe is not None and safe_deserializer(safe) is safe
    got = safe(GARBAGE)
    assert isinstance(got, Undecodable) and got.type_name == "SelectBatchRequest"
    assert safe(selection_pb2.SelectBatchRequest(budget=3).SerializeToString()).budget == 3


# --- concurrency limits -------------------------------------------------------------------------
def _hold_one(s: InProcess, pool: ThreadPoolExecutor) -> Any:
    s.fakes.hold.set()
    first = pool.submit(s.selection.SelectBatch, selection_pb2.SelectBatchRequest(), timeout=20)
    s.wait_running(SEL + "SelectBatch", 1)
    return first


def test_a_method_over_its_concurrency_limit_is_resource_exhausted_naming_the_limit() -> None:
    s = InProcess(Limits(per_method={"SelectBatch": 1}))
    try:
        with ThreadPoolExecutor(2) as pool:
            first = _hold_one(s, pool)
            err = _error(
                lambda: s.selection.SelectBatch(selection_pb2.SelectBatchRequest(), timeout=10)
            )
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.details() == "too many concurrent SelectBatch calls (limit 1); retry later"
            # other methods are not limited by SelectBatch's cap
            s.selection.DescribePool(selection_pb2.DescribePoolRequest(pool_id="p"), timeout=10)
            s.fakes.hold.clear()
            assert first.result(20).item_ids == ["a"]
        s.wait_running(SEL + "SelectBatch", 0)
        assert s.selection.SelectBatch(selection_pb2.SelectBatchRequest(), timeout=10).item_ids
        s.wait_running(None, 0)
    finally:
        s.close()


def test_the_service_limit_counts_every_method_but_not_health() -> None:
    s = InProcess(Limits(max_concurrent=1))
    try:
        with ThreadPoolExecutor(2) as pool:
            first = _hold_one(s, pool)
            err = _error(
                lambda: s.selection.DescribePool(selection_pb2.DescribePoolRequest(), timeout=10)
            )
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit 1" in err.details()
            check = health_pb2_grpc.HealthStub(s.channel).Check(health_pb2.HealthCheckRequest())
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            s.fakes.hold.clear()
            first.result(20)
        s.wait_running(SEL + "SelectBatch", 0)
        s.selection.DescribePool(selection_pb2.DescribePoolRequest(), timeout=10)
    finally:
        s.close()


def test_a_failing_call_gives_its_slot_back() -> None:
    s = InProcess(Limits(max_concurrent=1))
    try:
        for _ in range(3):
            err = _error(
                lambda: s.selection.DescribePool(
                    selection_pb2.DescribePoolRequest(pool_id="boom"), timeout=10
                )
            )
            assert err.code() == grpc.StatusCode.INTERNAL
            s.wait_running(None, 0)  # the status is sent before the handler's finally runs
    finally:
        s.close()


# --- field and size caps ------------------------------------------------------------------------
def test_field_caps_refuse_only_values_above_the_limit() -> None:
    s = InProcess(Limits(max_budget=10, max_pool_rows=100, max_pool_bytes=1000))
    try:
        assert s.selection.SelectBatch(selection_pb2.SelectBatchRequest(budget=10), timeout=10)
        err = _error(
            lambda: s.selection.SelectBatch(selection_pb2.SelectBatchRequest(budget=11), timeout=10)
        )
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.details() == "budget 11 is over this service's limit 10 (ACTIVEKD_MAX_BUDGET)"
        assert [v.field for v in _violations(err)] == ["budget"]

        exp = experiment_pb2_grpc.ExperimentServiceStub(s.channel)
        spec = experiment_pb2.ExperimentSpec(budget_per_round=11)
        err = _error(
            lambda: exp.CreateExperiment(
                experiment_pb2.CreateExperimentRequest(spec=spec), timeout=10
            )
        )
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "spec.budget_per_round 11" in err.details()

        header = selection_pb2.UploadPoolRequest(
            header=selection_pb2.UploadPoolHeader(pool_id="p", num_items=101)
        )
        err = _error(lambda: s.selection.UploadPool(iter([header]), timeout=10))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "header.num_items 101" in err.details() and "ACTIVEKD_MAX_POOL_ROWS" in err.details()

        chunk = selection_pb2.UploadPoolRequest(
            chunk=selection_pb2.UploadPoolChunk(item_ids=["x" * 100] * 3)
        )
        assert s.selection.UploadPool(iter([chunk] * 3), timeout=10)  # ~930 bytes: at the cap
        err = _error(lambda: s.selection.UploadPool(iter([chunk] * 4), timeout=10))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of 1000 bytes (ACTIVEKD_MAX_POOL_BYTES)" in err.details()
    finally:
        s.close()


def test_limits_from_config_reads_the_server_config_fields_with_defaults() -> None:
    assert Limits.from_config(SimpleNamespace()) == Limits()
    cfg = SimpleNamespace(
        max_concurrent_rpcs=8,
        max_concurrent_per_method="ScorePool=4, /activekd.v1.TrainerService/TrainRound=2",
        max_pool_rows=10,
        max_pool_bytes=20,
        max_budget=30,
    )
    got = Limits.from_config(cfg)
    assert (got.max_concurrent, got.max_pool_rows, got.max_pool_bytes, got.max_budget) == (
        8,
        10,
        20,
        30,
    )
    assert dict(got.per_method) == {"ScorePool": 4, "TrainRound": 2}
    assert got.method_limit("/activekd.v1.TeacherService/ScorePool") == 4
    assert got.method_limit("/activekd.v1.TeacherService/Predict") == 0
    assert parse_per_method("") == {}
    with pytest.raises(SystemExit, match="ACTIVEKD_MAX_CONCURRENT_PER_METHOD"):
        Limits.from_config(SimpleNamespace(max_concurrent_per_method="ScorePool"))
    assert Limits.from_config(ServerConfig.load("selection", [])) == Limits()


TOKEN = "test-writer-token-0123456789"


def test_the_bootstrapped_server_applies_the_configured_limits_behind_auth() -> None:
    """``bootstrap.start``: auth outermost, then this interceptor with ``Limits.from_config``;
    an authenticated undecodable body is still INVALID_ARGUMENT (auth keeps the safe
    deserializer), an unauthenticated one UNAUTHENTICATED."""
    config = ServerConfig(
        service="fakes",
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=-1,
        redis_url="unix:///nonexistent/redis.sock",
    )
    for name, value in {
        "auth": "required",
        "auth_tokens": f"writer:{TOKEN}:wp-b-test",
        "health_port": -1,
        "ready_interval_seconds": 0.0,
        "max_budget": 10,
        "max_concurrent_per_method": "SelectBatch=1",
    }.items():
        setattr(config, name, value)
    s = InProcess(config=config)
    meta = (("authorization", f"Bearer {TOKEN}"),)
    try:
        raw = s.channel.unary_unary(SEL + "SelectBatch")
        err = _error(lambda: raw(GARBAGE, timeout=10, metadata=meta))
        assert (err.code(), err.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "request body is not a valid SelectBatchRequest",
        )
        assert _error(lambda: raw(GARBAGE, timeout=10)).code() == grpc.StatusCode.UNAUTHENTICATED
        upload = s.channel.stream_unary(SEL + "UploadPool")
        err = _error(lambda: upload(iter([GARBAGE]), timeout=10, metadata=meta))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

        request = selection_pb2.SelectBatchRequest(budget=11)
        err = _error(lambda: s.selection.SelectBatch(request, timeout=10, metadata=meta))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit 10" in err.details()
        with ThreadPoolExecutor(1) as pool:
            s.fakes.hold.set()
            first = pool.submit(
                s.selection.SelectBatch,
                selection_pb2.SelectBatchRequest(),
                timeout=20,
                metadata=meta,
            )
            deadline = time.monotonic() + 10
            while len(s.fakes.seen) < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            err = _error(
                lambda: s.selection.SelectBatch(
                    selection_pb2.SelectBatchRequest(), timeout=10, metadata=meta
                )
            )
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.details() == "too many concurrent SelectBatch calls (limit 1); retry later"
            s.fakes.hold.clear()
            first.result(20)
    finally:
        s.close()


# --- messages: capped, no host details ----------------------------------------------------------
@pytest.mark.parametrize("char", ["x", "é", "\x00"])
def test_a_5000_char_id_is_a_capped_invalid_argument_not_stream_removed(
    server: InProcess, char: str
) -> None:
    pid = char * 5000
    err = _error(
        lambda: server.selection.DescribePool(
            selection_pb2.DescribePoolRequest(pool_id=pid), timeout=10
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert len(err.details().encode()) <= MAX_STATUS_MESSAGE_BYTES
    assert err.details().startswith("pool_id '") and err.details().endswith("chars)")
    (violation,) = _violations(err)
    assert violation.field == "pool_id" and violation.description == err.details()


def test_cap_message_keeps_short_messages_word_for_word() -> None:
    text = "budget must be positive, got -2 " * 15  # ~500 chars, like the longest golden entry
    assert cap_message(text) == text
    assert cap_message("é" * 600).endswith("… (600 chars)")
    assert len(cap_message("é" * 600).encode()) <= MAX_STATUS_MESSAGE_BYTES


@pytest.mark.parametrize(
    ("pool_id", "code", "message"),
    [
        ("enospc", grpc.StatusCode.RESOURCE_EXHAUSTED, "pool store is full"),
        ("efbig", grpc.StatusCode.RESOURCE_EXHAUSTED, "pool store is full"),
        ("erofs", grpc.StatusCode.FAILED_PRECONDITION, "pool store is not writable"),
        ("eacces", grpc.StatusCode.FAILED_PRECONDITION, ACCESS_DENIED_MESSAGE),
        ("redis", grpc.StatusCode.UNAVAILABLE, REDIS_UNAVAILABLE_MESSAGE),
        ("redis-timeout", grpc.StatusCode.UNAVAILABLE, REDIS_UNAVAILABLE_MESSAGE),
        ("downstream", grpc.StatusCode.UNAVAILABLE, DOWNSTREAM_UNAVAILABLE_MESSAGE),
    ],
)
def test_infrastructure_errors_map_without_paths_or_hosts(
    server: InProcess, pool_id: str, code: grpc.StatusCode, message: str
) -> None:
    err = _error(
        lambda: server.selection.DescribePool(
            selection_pb2.DescribePoolRequest(pool_id=pool_id), timeout=10
        )
    )
    assert (err.code(), err.details()) == (code, message)
    for secret in ("/srv", "redis.sock", "127.0.0.1:1"):
        assert secret not in err.debug_error_string()


def test_internal_errors_carry_an_id_not_the_exception_text(
    server: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="activekd.rpc"):
        err = _error(
            lambda: server.selection.DescribePool(
                selection_pb2.DescribePoolRequest(pool_id="boom"), timeout=10
            )
        )
    assert err.code() == grpc.StatusCode.INTERNAL
    found = re.fullmatch(r"internal error \(logged as ([0-9a-f]{8})\)", err.details())
    assert found, err.details()
    assert "secret" not in err.debug_error_string()
    logged = [r for r in caplog.records if getattr(r, "error_id", None) == found.group(1)]
    assert logged and logged[0].exc_info and "secret-host-path" in str(logged[0].exc_info[1])


# --- deadlines ----------------------------------------------------------------------------------
def test_remaining_seconds_reads_the_callers_deadline(server: InProcess) -> None:
    server.selection.SelectBatch(selection_pb2.SelectBatchRequest(), timeout=5)
    server.selection.SelectBatch(selection_pb2.SelectBatchRequest())
    with_deadline, without = server.fakes.remaining
    assert with_deadline is not None and 0 < with_deadline <= 5.5  # clocks: a little slack
    assert without is None
    assert remaining_seconds(object()) is None
