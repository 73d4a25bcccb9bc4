"""One channel recipe and base class for every activekd client (deadlines, retries, health)."""

from __future__ import annotations

import json
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_TIMEOUT = 60.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: Methods retried on UNAVAILABLE: reads, and calls made idempotent by a request id.
IDEMPOTENT: dict[str, list[str]] = {
    "activekd.v1.SelectionService": [
        "SelectBatch",
        "DescribePool",
        "ListPools",
        "ListStrategies",
        "GetSelections",
        "DeletePool",
    ],
    "activekd.v1.TeacherService": ["DescribeTeacher", "Predict", "SetClasses"],
    "activekd.v1.TrainerService": ["PredictPool", "Evaluate", "ListCheckpoints"],
    "activekd.v1.ExperimentService": ["GetExperiment", "ListExperiments", "DeleteExperiment"],
    "grpc.health.v1.Health": ["Check"],
}


def _service_config(retries: int) -> str:
    methods = [{"service": s, "method": m} for s, ms in IDEMPOTENT.items() for m in ms]
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": methods,
                    "retryPolicy": {
                        "maxAttempts": max(2, min(retries + 1, 5)),
                        "initialBackoff": "0.2s",
                        "maxBackoff": "5s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def make_channel(target: str, retries: int = 3) -> grpc.Channel:
    """An insecure channel with large message limits, keepalive and the retry policy above."""
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _service_config(retries)),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )


class BaseClient:
    """A channel to one server plus its health check; a context manager that closes it."""

    def __init__(self, target: str, *, timeout: float = DEFAULT_TIMEOUT, retries: int = 3) -> None:
        self.target, self.timeout = target, timeout
        self.channel = make_channel(target, retries)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def wait_ready(self, timeout: float = 30.0, service: str = "") -> None:
        """Block until the server's health says SERVING (raises grpc.RpcError / TimeoutError)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)
        resp = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        if resp.status != health_pb2.HealthCheckResponse.SERVING:
            raise TimeoutError(
                f"{self.target} is {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
            )

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout
