"""The fuzz stack (Redis + the four services as real processes) and the checks of one call.

:class:`FuzzStack` starts :class:`~activekd.orchestration.local_services.LocalServices` with the
label-map teacher and small limits, seeds two small pools, and calls any method over real gRPC
with the admin token. :meth:`FuzzStack.check` sends one request and returns what is wrong with the
answer (``None`` if nothing): a dead process, INTERNAL / UNKNOWN, a missed deadline, an
undecodable body not answered INVALID_ARGUMENT, or stored state changed by a rejected request.
``bench/fuzz.py`` uses the same class for long runs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message

from activekd.orchestration.local_services import LocalServices
from activekd.wire.channel import bearer_metadata
from tests.fuzz.strategies import RpcCase, undecodable

#: per-call deadline (seconds) of every fuzzed call but the ones in LONG_TIMEOUTS
CALL_TIMEOUT = 5.0
#: methods that do real work when a request is accepted (score, train, advance a round) get a
#: longer deadline; a miss is still a failure. The generated sizes stay small (limits below).
LONG_TIMEOUTS = {"ScorePool": 30.0, "TrainRound": 30.0, "AdvanceRound": 30.0, "PredictPool": 30.0}
#: watches legitimately never end on a live experiment: a short deadline, and DEADLINE_EXCEEDED
#: is an accepted outcome for them (counted as "watch_timeouts")
WATCH_METHODS = {"WatchExperiment": 2.0}
#: status codes that are never the right answer to a client's request
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

#: the stack's settings: the offline label-map teacher, one thread, small limits so an accepted
#: hostile request stays small (budget <= 64, pools <= 1,000 rows / 4 MiB, 8 MiB messages)
FUZZ_ENV = {
    "ACTIVEKD_TEACHER_BACKEND": "label-map",
    "ACTIVEKD_TEACHER_IMAGE_SIZE": "64",
    "ACTIVEKD_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "ACTIVEKD_DEVICE": "cpu",
    "ACTIVEKD_MAX_BUDGET": "64",
    "ACTIVEKD_MAX_POOL_ROWS": "1000",
    "ACTIVEKD_MAX_POOL_BYTES": str(4 << 20),
    "ACTIVEKD_MAX_MESSAGE_BYTES": str(8 << 20),
    "ACTIVEKD_MAX_BATCH_SIZE": "16",
    "ACTIVEKD_MAX_QUEUE_DELAY_MS": "5",
}

SEED_POOL = "fz/pool"
SEED_TEST = "fz/test"


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def describe(request: Any) -> str:
    """A short text form of a request (a message, a list of them, or raw bytes) for reports."""
    if isinstance(request, bytes):
        return f"raw {request[:64]!r}" + (
            f"... ({len(request)} bytes)" if len(request) > 64 else ""
        )
    if isinstance(request, list):
        return "[" + ", ".join(describe(r) for r in request) + "]"
    if isinstance(request, Message):
        return "{" + _short(text_format.MessageToString(request, as_one_line=True), 600) + "}"
    return repr(request)


@dataclass
class Outcome:
    """The answer to one call."""

    code: grpc.StatusCode
    details: str
    seconds: float
    responses: int = 0


@dataclass
class Stats:
    """Counts over a run: calls by method and status code, accepted calls, time."""

    calls: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    by_method: dict[str, Counter[str]] = field(default_factory=dict)
    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    watch_timeouts: int = 0
    raw_calls: int = 0
    raw_invalid_argument: int = 0
    slowest: dict[str, float] = field(default_factory=dict)

    def record(self, case: RpcCase, outcome: Outcome, raw: bool) -> None:
        self.calls[case.method] += 1
        self.codes[outcome.code.name] += 1
        self.by_method.setdefault(case.method, Counter())[outcome.code.name] += 1
        if outcome.code == grpc.StatusCode.OK:
            self.accepted[case.method] += 1
        else:
            self.rejected[case.method] += 1
        if raw:
            self.raw_calls += 1
            self.raw_invalid_argument += outcome.code == grpc.StatusCode.INVALID_ARGUMENT
        self.slowest[case.method] = max(self.slowest.get(case.method, 0.0), outcome.seconds)

    def total(self) -> int:
        return sum(self.calls.values())

    def summary(self) -> dict[str, Any]:
        return {
            "calls": self.total(),
            "accepted": sum(self.accepted.values()),
            "rejected": sum(self.rejected.values()),
            "raw_calls": self.raw_calls,
            "raw_invalid_argument": self.raw_invalid_argument,
            "watch_timeouts": self.watch_timeouts,
            "codes": dict(sorted(self.codes.items())),
            "by_method": {m: dict(sorted(c.items())) for m, c in sorted(self.by_method.items())},
            "accepted_by_method": dict(sorted(self.accepted.items())),
            "slowest_seconds": {m: round(s, 3) for m, s in sorted(self.slowest.items())},
        }


def _identity(x: Any) -> Any:
    return x


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


class FuzzStack:
    """Redis + the four services with :data:`FUZZ_ENV`, two seeded pools, and the call checks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        data = root / "data"  # the only data root: nothing on the host is a valid source
        data.mkdir(parents=True, exist_ok=True)
        env = {
            **FUZZ_ENV,
            "ACTIVEKD_DATA_ROOTS": str(data),
            "ACTIVEKD_CACHE_DIR": str(root / "teacher-cache"),
        }
        self.services = LocalServices(root, env=env)
        self.stats = Stats()
        self._channels: dict[str, grpc.Channel] = {}
        self._after_rejected: dict[str, bytes | str] | None = None  # reused as the next "before"

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FuzzStack:
        self.services.start()
        self.token = self.services.credentials("admin").token
        self.metadata = bearer_metadata(self.token)
        self._seed()
        return self

    def stop(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self.services.stop()

    def _seed(self) -> None:
        from activekd.client import SelectionClient

        rng = np.random.default_rng(13)
        with SelectionClient(
            self.services.target("selection"), credentials=self.services.credentials()
        ) as sel:
            for pool_id, n in ((SEED_POOL, 24), (SEED_TEST, 12)):
                sel.upload_pool(
                    pool_id,
                    item_ids=[f"p{i}" for i in range(n)],
                    arrays={
                        "images": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8),
                        "labels": rng.integers(0, 10, n).astype(np.int64),
                        "probs": rng.dirichlet(np.ones(10), n).astype(np.float32),
                        "features": rng.standard_normal((n, 8)).astype(np.float32),
                    },
                )

    # -- state -----------------------------------------------------------------------------------
    def state_dirs(self) -> list[Path]:
        """The pool store (pools, trainer checkpoints under ``store/checkpoints``) and the
        teacher cache."""
        return [self.root / "store", self.root / "teacher-cache"]

    def snapshot(self) -> dict[str, bytes | str]:
        """Every Redis key (``SCAN`` + ``DUMP``) and every file under :meth:`state_dirs` (sha256)."""
        assert self.services.redis is not None
        out: dict[str, bytes | str] = {}
        client = self.services.redis.client()
        try:
            for key in client.scan_iter(count=1000):
                out["redis:" + key.decode("utf-8", "backslashreplace")] = client.dump(key) or b""
        finally:
            client.close()
        for base in self.state_dirs():
            if not base.exists():
                continue
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    path = Path(dirpath) / name
                    try:
                        digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    except FileNotFoundError:  # removed while walking
                        continue
                    out["file:" + str(path.relative_to(self.root))] = digest
        return out

    @staticmethod
    def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
        added = sorted(after.keys() - before.keys())
        removed = sorted(before.keys() - after.keys())
        changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
        return [f"+{k}" for k in added] + [f"-{k}" for k in removed] + [f"~{k}" for k in changed]

    # -- calls -----------------------------------------------------------------------------------
    def channel(self, service: str) -> grpc.Channel:
        if service not in self._channels:
            name = service.rsplit(".", 1)[-1].removesuffix("Service").lower()
            self._channels[service] = grpc.insecure_channel(
                self.services.target(name),
                options=[
                    ("grpc.max_send_message_length", 16 << 20),
                    ("grpc.max_receive_message_length", 64 << 20),
                    ("grpc.enable_retries", 0),
                ],
            )
        return self._channels[service]

    def timeout(self, case: RpcCase) -> float:
        return WATCH_METHODS.get(case.method) or LONG_TIMEOUTS.get(case.method, CALL_TIMEOUT)

    def call(
        self, case: RpcCase, request: Any, *, raw: bool = False, token: bool = True
    ) -> Outcome:
        """Send ``request`` (a message, a list of them for client streams, or raw bytes / a list
        of raw bytes with ``raw``) to ``case`` and wait for the whole answer."""
        ser: Any
        deser: Any
        if raw:
            ser, deser = _identity, _identity
        else:
            ser, deser = _serialize, case.response_class.FromString
        make = getattr(self.channel(case.service), case.kind)
        stub = make(case.path, request_serializer=ser, response_deserializer=deser)
        kwargs = {"timeout": self.timeout(case), "metadata": self.metadata if token else ()}
        body = iter(request) if case.client_streaming else request
        start = time.perf_counter()
        responses = 0
        try:
            if case.server_streaming:
                for _ in stub(body, **kwargs):
                    responses += 1
            else:
                stub(body, **kwargs)
                responses = 1
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
        return Outcome(code, details, time.perf_counter() - start, responses)

    def dead(self) -> list[str]:
        """Services (and Redis) whose process has exited."""
        out = [
            n
            for n, s in self.services.services.items()
            if s.proc is None or s.proc.poll() is not None
        ]
        redis = self.services.redis
        if redis is None or redis.proc is None or redis.proc.poll() is not None:
            out.append("redis")
        return out

    def check(self, case: RpcCase, request: Any, *, raw: bool = False) -> str | None:
        """Send one request; return what is wrong (a one-paragraph finding), else ``None``."""
        before = self._after_rejected if self._after_rejected is not None else self.snapshot()
        self._after_rejected = None
        outcome = self.call(case, request, raw=raw)
        self.stats.record(case, outcome, raw)
        problems = []
        dead = self.dead()
        if dead:
            problems.append(f"process exited: {', '.join(dead)}")
        if outcome.code in NEVER:
            problems.append(f"{outcome.code.name} for a client's request")
        if outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            if case.method in WATCH_METHODS:
                self.stats.watch_timeouts += 1
            else:
                problems.append(f"no answer within its deadline {self.timeout(case)} s")
        if raw:
            first = request[0] if case.client_streaming else request
            if undecodable(first, case) and outcome.code != grpc.StatusCode.INVALID_ARGUMENT:
                problems.append(
                    f"undecodable body answered {outcome.code.name}, not INVALID_ARGUMENT"
                )
        if outcome.code != grpc.StatusCode.OK:
            after = self.snapshot()
            changed = self.diff(before, after)
            self._after_rejected = after
            if changed:
                problems.append(f"rejected ({outcome.code.name}) but changed state: {changed[:8]}")
        if not problems:
            return None
        logs = ""
        if outcome.code in NEVER or dead:
            name = case.service.rsplit(".", 1)[-1].removesuffix("Service").lower()
            logs = "\n--- service log tail ---\n" + self.services.services[name].logs()[-3000:]
        return (
            f"{case.path}: {'; '.join(problems)}\n"
            f"  answer: {outcome.code.name} {_short(outcome.details)!r} in {outcome.seconds:.2f} s\n"
            f"  request: {describe(request)}{logs}"
        )


@pytest.fixture(scope="module")
def fuzz_stack() -> Iterator[FuzzStack]:
    with tempfile.TemporaryDirectory(prefix="akd-fuzz-") as tmp:
        stack = FuzzStack(Path(tmp)).start()
        try:
            yield stack
        finally:
            stack.stop()
