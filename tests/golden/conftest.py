"""Golden-master helpers: compare what users see with JSON recorded from the baseline.

Each golden test builds a JSON-able value and calls ``golden.check(file, key, value)``; the value
is compared with ``tests/golden/data/<file>.json[key]`` (ints, strings and bools exactly, floats
to 1e-6). ``ACTIVEKD_UPDATE_GOLDEN=1`` writes the value instead and FAILS the test on purpose
(so a regeneration run can never pass as a check): rerun without the variable to compare.

Regenerate from the pre-refactor commit only (see tests/golden/README.md).

The ``golden_services`` fixture starts the four services as real processes through their public
entry points (``python -m activekd_services.<name>``, configured by ``ACTIVEKD_*`` variables) on
loopback ports, sharing the session's real redis-server and one pool store folder.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

DATA = Path(__file__).resolve().parent / "data"
UPDATE = os.environ.get("ACTIVEKD_UPDATE_GOLDEN") == "1"
ABS_TOL = 1e-6
REL_TOL = 1e-6


def jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars and arrays, tuples -> lists; dict keys -> str)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy array or scalar
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'nan' / 'inf': JSON has no literal for them
    return value


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Human-readable differences (empty when equal within the float tolerance)."""
    here = where or "<root>"
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for k in sorted(set(expected) | set(actual)):
            if k not in actual:
                out.append(f"{where}/{k}: missing (expected {_short(expected[k])})")
            elif k not in expected:
                out.append(f"{where}/{k}: unexpected (got {_short(actual[k])})")
            else:
                out += differences(expected[k], actual[k], f"{where}/{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{here}: length {len(actual)}, expected {len(expected)}: "
                    f"got {_short(actual)}, expected {_short(expected)}"]  # fmt: skip
        out = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            out += differences(e, a, f"{where}[{i}]")
        return out
    numeric = (int, float)
    if (
        isinstance(expected, numeric)
        and isinstance(actual, numeric)
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
        and (isinstance(expected, float) or isinstance(actual, float))
    ):
        if math.isclose(expected, actual, rel_tol=REL_TOL, abs_tol=ABS_TOL):
            return []
        return [f"{here}: got {actual!r}, expected {expected!r}"]
    if type(expected) is not type(actual) or expected != actual:
        return [f"{here}: got {_short(actual)}, expected {_short(expected)}"]
    return []


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


class Golden:
    """``check(file, key, value)``: compare with (or, when updating, record) one golden entry."""

    def check(self, file: str, key: str, value: Any) -> None:
        path = DATA / f"{file}.json"
        value = jsonable(value)
        if UPDATE:
            DATA.mkdir(parents=True, exist_ok=True)
            data = json.loads(path.read_text()) if path.exists() else {}
            data[key] = value
            path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            pytest.fail(
                f"ACTIVEKD_UPDATE_GOLDEN=1: wrote {path.name}[{key!r}] instead of checking it; "
                "rerun without ACTIVEKD_UPDATE_GOLDEN to compare",
                pytrace=False,
            )
        if not path.exists():
            pytest.fail(f"no golden file {path}; generate it from the baseline", pytrace=False)
        data = json.loads(path.read_text())
        if key not in data:
            pytest.fail(
                f"{path.name} has no entry {key!r} (a case added after the baseline?)",
                pytrace=False,
            )
        diffs = differences(data[key], value)
        if diffs:
            shown = "\n  ".join(diffs[:40])
            more = f"\n  ... and {len(diffs) - 40} more" if len(diffs) > 40 else ""
            pytest.fail(
                f"{path.name}[{key!r}] differs from the baseline:\n  {shown}{more}", pytrace=False
            )

    def keys(self, file: str) -> list[str]:
        """The keys recorded in a golden file (empty when it does not exist)."""
        path = DATA / f"{file}.json"
        return sorted(json.loads(path.read_text())) if path.exists() else []


@pytest.fixture(scope="session")
def golden() -> Golden:
    return Golden()


# --- services as real processes --------------------------------------------------------------
SERVICE_NAMES = ("selection", "teacher", "trainer", "experiment")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GoldenService:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class GoldenServices:
    store: Path
    services: dict[str, GoldenService]
    channels: dict[str, grpc.Channel]

    def channel(self, name: str) -> grpc.Channel:
        return self.channels[name]


def _wait_serving(svc: GoldenService, deadline: float) -> None:
    with grpc.insecure_channel(svc.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.time() < deadline:
            if svc.proc.poll() is not None:
                raise RuntimeError(
                    f"{svc.name} exited with {svc.proc.returncode}:\n{svc.logs()[-4000:]}"
                )
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"{svc.name} did not start in time:\n{svc.logs()[-4000:]}")


def _stop_all(services: list[GoldenService]) -> None:
    """SIGTERM to every service first (graceful shutdowns overlap), then wait for each."""
    for svc in services:
        if svc.proc.poll() is None:
            svc.proc.send_signal(signal.SIGTERM)
    for svc in services:
        try:
            svc.proc.wait(20)
        except subprocess.TimeoutExpired:
            svc.proc.kill()
            svc.proc.wait(10)


@pytest.fixture(scope="module")
def golden_services(redis_server: Any) -> Iterator[GoldenServices]:
    """Selection, teacher (label-map backend), trainer and experiment services on loopback."""
    with tempfile.TemporaryDirectory(prefix="akd-golden-") as tmp:
        root = Path(tmp)
        store = root / "store"
        ports = {n: _free_port() for n in SERVICE_NAMES}
        targets = {
            f"ACTIVEKD_{n.upper()}_TARGET": f"127.0.0.1:{ports[n]}"
            for n in ("selection", "teacher", "trainer")
        }
        started: dict[str, GoldenService] = {}
        try:
            for name in SERVICE_NAMES:  # start all, then wait: the imports overlap
                env = {
                    **os.environ,
                    "ACTIVEKD_GRPC_HOST": "127.0.0.1",
                    "ACTIVEKD_GRPC_PORT": str(ports[name]),
                    "ACTIVEKD_METRICS_PORT": str(_free_port()),
                    "ACTIVEKD_REDIS_URL": redis_server.url,
                    "ACTIVEKD_STORE_URI": str(store),
                    "ACTIVEKD_GRACE_SECONDS": "1",
                    "ACTIVEKD_DEVICE": "cpu",
                    "ACTIVEKD_THREADS": "1",
                    "ACTIVEKD_LOG_LEVEL": "WARNING",
                    # the masters pin messages of bad requests, not auth (see README.md)
                    "ACTIVEKD_AUTH": "off",
                    "PYTHONUNBUFFERED": "1",
                    **(targets if name == "experiment" else {}),
                }
                log_path = root / f"{name}.log"
                with log_path.open("wb") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", f"activekd_services.{name}"],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                started[name] = GoldenService(name, ports[name], proc, log_path)
            deadline = time.time() + 120
            for svc in started.values():
                _wait_serving(svc, deadline)
            channels = {n: grpc.insecure_channel(s.target) for n, s in started.items()}
            try:
                yield GoldenServices(store, started, channels)
            finally:
                for ch in channels.values():
                    ch.close()
        finally:
            _stop_all(list(started.values()))
