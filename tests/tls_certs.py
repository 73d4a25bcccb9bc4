"""Throwaway certificates and tokens for tests (``scripts/dev_secrets.py``, loaded by path), and
in-process activekd servers (``bootstrap.start`` on a private event loop) for the server tests."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import grpc

from activekd.server import bootstrap
from activekd.server.config import ServerConfig
from activekd.v1 import (
    experiment_pb2,
    experiment_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
    teacher_pb2,
    teacher_pb2_grpc,
)

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def dev_secrets_module() -> ModuleType:
    """``scripts/dev_secrets.py`` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "activekd_dev_secrets", ROOT / "scripts" / "dev_secrets.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_dev_secrets(out: Path, hosts: Sequence[str] | None = None) -> dict[str, Path]:
    """``scripts/dev_secrets.write_dev_secrets(out)``: CA, certificates, tokens, Redis password."""
    module = dev_secrets_module()
    if hosts is None:
        return dict(module.write_dev_secrets(out))
    return dict(module.write_dev_secrets(out, tuple(hosts)))


def token_of(secrets: dict[str, Path], name: str) -> str:
    """The token ``name`` (admin, writer, reader, experiment) of :func:`write_dev_secrets`."""
    return secrets[f"{name}.token"].read_text().strip()


# --- in-process servers -------------------------------------------------------------------------
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    """One event loop, in a daemon thread, for every in-process server of the session."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="akd-test-loop", daemon=True).start()
        return _loop


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run ``coro`` on the servers' loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, _event_loop()).result(timeout)


class FakeExperiments(experiment_pb2_grpc.ExperimentServiceServicer):
    async def GetExperiment(self, request: Any, context: Any) -> Any:
        return experiment_pb2.GetExperimentResponse()

    async def DeleteExperiment(self, request: Any, context: Any) -> Any:
        return experiment_pb2.DeleteExperimentResponse()


class FakeSelection(selection_pb2_grpc.SelectionServiceServicer):
    async def UploadPool(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        async for _ in request_iterator:
            pass
        return selection_pb2.UploadPoolResponse()


class FakeTeacher(teacher_pb2_grpc.TeacherServiceServicer):
    async def ScorePool(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield teacher_pb2.ScorePoolResponse()

    async def PredictStream(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        async for _ in request_iterator:
            yield teacher_pb2.PredictStreamResponse()


def fake_service() -> bootstrap.Service:
    """Fake Experiment, Selection and Teacher servicers on one server (no Redis, no models)."""

    def register(server: grpc.aio.Server) -> None:
        experiment_pb2_grpc.add_ExperimentServiceServicer_to_server(FakeExperiments(), server)
        selection_pb2_grpc.add_SelectionServiceServicer_to_server(FakeSelection(), server)
        teacher_pb2_grpc.add_TeacherServiceServicer_to_server(FakeTeacher(), server)

    names = [
        m.DESCRIPTOR.services_by_name[n].full_name
        for m, n in (
            (experiment_pb2, "ExperimentService"),
            (selection_pb2, "SelectionService"),
            (teacher_pb2, "TeacherService"),
        )
    ]
    return bootstrap.Service(full_names=names, register=register, ready=lambda: True)


def server_config(**settings: Any) -> ServerConfig:
    """A loopback config with free ports, no metrics server and quick readiness checks."""
    base: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": -1,
        "health_port": -1,
        "grace_seconds": 0.0,
        "ready_interval_seconds": 0.2,
    }
    return ServerConfig(service="test", **{**base, **settings})


class InProcessServer:
    """``bootstrap.start(config, service)`` on the shared loop; a context manager."""

    def __init__(self, config: ServerConfig, service: bootstrap.Service | None = None) -> None:
        self.config = config
        self.service = service if service is not None else fake_service()
        self.running: bootstrap.RunningServer | None = None

    def __enter__(self) -> InProcessServer:
        self.running = run_async(bootstrap.start(self.config, self.service))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.running is not None:
            run_async(self.running.stop(0))

    @property
    def port(self) -> int:
        assert self.running is not None
        return self.running.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def health_target(self) -> str:
        assert self.running is not None and self.running.health_port is not None
        return f"127.0.0.1:{self.running.health_port}"
