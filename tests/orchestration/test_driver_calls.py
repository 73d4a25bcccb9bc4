"""The experiment service's Driver calls the others with its own credentials, bounds every call by
the caller's deadline, turns refusals of its token into a clear error, and closes all its
channels. The other services are in-process fakes that record what they received."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from activekd.errors import FailedPrecondition
from activekd.orchestration.driver import DeadlineExceeded, Driver, ServiceTargets
from activekd.v1 import (
    common_pb2,
    teacher_pb2,
    teacher_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from activekd.wire.channel import ClientCredentials

TOKEN = "driver-" + "t" * 25


class FakeTrainer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, float | None]] = []
        self.delay = 0.0
        self.refuse: grpc.StatusCode | None = None

    def PredictPool(self, request: Any, context: grpc.ServicerContext) -> Any:
        auth = dict(context.invocation_metadata()).get("authorization", "")
        self.seen.append((auth, context.time_remaining()))
        if self.refuse is not None:
            context.abort(self.refuse, "missing or invalid bearer token")
        time.sleep(self.delay)
        return trainer_pb2.PredictPoolResponse(pool=common_pb2.PoolInfo(pool_id="student/pool"))


class FakeTeacher(teacher_pb2_grpc.TeacherServiceServicer):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def ScorePool(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self.seen.append(dict(context.invocation_metadata()).get("authorization", ""))
        yield teacher_pb2.ScorePoolResponse(pool=common_pb2.PoolInfo(pool_id="teacher/pool"))


@pytest.fixture
def fakes() -> Iterator[tuple[FakeTeacher, FakeTrainer, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    teacher, trainer = FakeTeacher(), FakeTrainer()
    teacher_pb2_grpc.add_TeacherServiceServicer_to_server(teacher, server)
    trainer_pb2_grpc.add_TrainerServiceServicer_to_server(trainer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield teacher, trainer, f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def _driver(target: str, timeout: float = 3600.0) -> Driver:
    return Driver(
        None,  # type: ignore[arg-type]  # the calls tested here touch no store
        None,  # type: ignore[arg-type]
        ServiceTargets(selection=target, teacher=target, trainer=target),
        timeout=timeout,
        credentials=ClientCredentials(token=TOKEN),
    )


EXP: Any = SimpleNamespace(
    experiment_id="exp-1", current_round=0, spec=SimpleNamespace(pool_id="p")
)


def test_downstream_calls_carry_the_drivers_own_token(
    fakes: tuple[FakeTeacher, FakeTrainer, str],
) -> None:
    teacher, trainer, target = fakes
    driver = _driver(target)
    try:
        assert driver._score_with_teacher(EXP, "p", "ds", None) == "teacher/pool"
        driver._predict_pool(EXP, None)
    finally:
        driver.close()
    assert teacher.seen == [f"Bearer {TOKEN}"]
    assert [auth for auth, _ in trainer.seen] == [f"Bearer {TOKEN}"]


def test_the_callers_deadline_bounds_each_downstream_call(
    fakes: tuple[FakeTeacher, FakeTrainer, str],
) -> None:
    _, trainer, target = fakes
    driver = _driver(target, timeout=3600)
    try:
        driver._predict_pool(EXP, time.monotonic() + 20)
        remaining = trainer.seen[-1][1]
        # grpc sends the timeout rounded up to its wire units, and the server measures it on its
        # own clock, so the remaining time may read a little above 20 s; never near 3600 s.
        assert remaining is not None and 15 < remaining <= 21  # not the driver's 3600 s
        driver._predict_pool(EXP, None)
        assert trainer.seen[-1][1] > 3000  # type: ignore[operator]
        trainer.delay = 2.0
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="ran out of time"):
            driver._predict_pool(EXP, time.monotonic() + 0.3)
        assert time.monotonic() - start < 1.5
        calls = len(trainer.seen)
        with pytest.raises(DeadlineExceeded, match="deadline passed before the call"):
            driver._predict_pool(EXP, time.monotonic() - 1)
        assert len(trainer.seen) == calls  # no call made at all
    finally:
        driver.close()
    assert DeadlineExceeded.code == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED]
)
def test_a_refused_token_is_a_clear_error(
    fakes: tuple[FakeTeacher, FakeTrainer, str], code: grpc.StatusCode
) -> None:
    _, trainer, target = fakes
    trainer.refuse = code
    driver = _driver(target)
    try:
        with pytest.raises(FailedPrecondition) as info:
            driver._predict_pool(EXP, None)
    finally:
        driver.close()
    message = str(info.value)
    assert "trainer service refused the experiment service's credentials" in message
    assert code.name in message and "ACTIVEKD_CLIENT_TOKEN_FILE" in message
    assert TOKEN not in message


def test_close_closes_all_three_channels(fakes: tuple[FakeTeacher, FakeTrainer, str]) -> None:
    *_, target = fakes
    driver = _driver(target)
    driver.close()
    for call in (
        lambda: driver._predict_pool(EXP, None),
        lambda: driver._score_with_teacher(EXP, "p", "ds", None),
        lambda: driver.selection.list_strategies(),
    ):
        with pytest.raises(ValueError, match="closed channel"):
            call()


def test_advance_round_passes_the_callers_deadline_to_the_driver() -> None:
    from activekd_services.experiment.servicer import ExperimentServicer

    from activekd.v1 import experiment_pb2

    got: dict[str, Any] = {}
    called = threading.Event()

    class FakeDriver:
        def step(self, experiment_id: str, expected: int | None, *, deadline: float | None) -> Any:
            got.update(id=experiment_id, deadline=deadline, at=time.monotonic())
            called.set()
            raise FailedPrecondition("stop here")

    class Context:
        def __init__(self, remaining: float | None) -> None:
            self.remaining = remaining

        def time_remaining(self) -> float | None:
            return self.remaining

    servicer = ExperimentServicer(None, FakeDriver())  # type: ignore[arg-type]
    request = experiment_pb2.AdvanceRoundRequest(experiment_id="exp-1")
    try:
        with pytest.raises(FailedPrecondition):
            asyncio.run(servicer.AdvanceRound(request, Context(30.0)))  # type: ignore[arg-type]
        assert got["id"] == "exp-1" and 29 < got["deadline"] - got["at"] <= 30
        with pytest.raises(FailedPrecondition):
            asyncio.run(servicer.AdvanceRound(request, Context(None)))  # type: ignore[arg-type]
        assert got["deadline"] is None
    finally:
        servicer.shutdown()
