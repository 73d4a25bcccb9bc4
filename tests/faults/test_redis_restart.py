"""Redis (AOF, fsync every second) goes away mid-experiment and comes back, once by a clean
SHUTDOWN and once by SIGKILL that also loses its last writes. While it is gone every service stays
up and live but not ready, and calls that need it fail UNAVAILABLE without host details; the same
processes serve again once it is back, and the experiment ends exactly like an uninterrupted run.

A SIGKILL of redis-server alone loses nothing here (its AOF writes are in the page cache; only the
fsync is once a second), so the "lost last second" case is made explicit: the AOF is cut back to
its size before the last transition, as a power loss after that transition would leave it, and
the test checks that the transition really is gone before finishing the experiment.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from activekd.client import SelectionClient, TrainerClient
from activekd.server.healthcheck import LIVENESS_SERVICE
from activekd.server.interceptors import REDIS_UNAVAILABLE_MESSAGE
from activekd.state.experiments import ExperimentStore
from activekd.v1 import experiment_pb2
from bench.chaos import ChaosStack, RunResult, retrying

pytestmark = pytest.mark.slow
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(target: str) -> tuple[int, int]:
    """(readiness of service "", liveness) on a health port."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        ready = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3).status
        live = stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE), timeout=3)
        return ready, live.status


def _wait_ready(stack: ChaosStack, want: int, within: float = 8.0) -> None:
    deadline = time.monotonic() + within
    for name, svc in stack.services.services.items():
        while True:
            ready, live = _health(svc.health_target)
            assert live == SERVING, f"{name} liveness went {live}"
            if ready == want:
                break
            assert time.monotonic() < deadline, f"{name} readiness still {ready}, want {want}"
            time.sleep(0.1)


def _last_incr_aof(redis_dir: Path) -> Path:
    """The AOF file Redis 7 appends to (last ``type i`` entry of the manifest)."""
    aof_dir = redis_dir / "appendonlydir"
    manifest = next(aof_dir.glob("*.manifest")).read_text().split("\n")
    incr = [line.split()[1] for line in manifest if line.split()[-1:] == ["i"]]
    return aof_dir / incr[-1]


def _assert_unavailable(call: object, root: Path) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    err = info.value
    assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
    assert err.details() == REDIS_UNAVAILABLE_MESSAGE
    assert "redis.sock" not in str(err.details()) and str(root) not in str(err.details())


@pytest.mark.parametrize("mode", ["shutdown", "sigkill-losing-last-writes"])
def test_redis_goes_away_mid_experiment_and_the_same_processes_finish_it(
    chaos_stack: ChaosStack, clean_run: RunResult, mode: str
) -> None:
    services, redis = chaos_stack.services, chaos_stack.services.redis
    assert redis is not None and redis.proc is not None
    pids = {n: s.proc.pid for n, s in services.services.items() if s.proc is not None}
    exp_id = f"redis-{mode.split('-')[0]}"
    creds = services.credentials("admin")
    with chaos_stack.client(retries=1) as client:
        client.create(chaos_stack.spec(), experiment_id=exp_id)
        for _ in range(3):  # -> TEACHER_SCORED -> STUDENT_TRAINED -> POOL_SCORED
            client.advance(exp_id)
        if mode == "shutdown":
            redis.client().shutdown()  # SHUTDOWN: the AOF is fsynced, nothing is lost
            redis.proc.wait(10)
        else:
            time.sleep(1.2)  # past one fsync period: everything so far is on disk
            before = client.get(exp_id)
            aof = _last_incr_aof(redis.dir)
            cut = aof.stat().st_size
            assert client.advance(exp_id).to_state == experiment_pb2.ROUND_STATE_SELECTED
            redis.kill()
            assert aof.stat().st_size > cut  # the transition was written ...
            with aof.open("r+b") as fh:  # ... and is lost, as after a power cut
                fh.truncate(cut)
        _wait_ready(chaos_stack, NOT_SERVING)
        root = Path(services.root)
        _assert_unavailable(lambda: client.get(exp_id), root)
        _assert_unavailable(lambda: client.advance(exp_id), root)
        with SelectionClient(services.target("selection"), retries=1, credentials=creds) as sel:
            _assert_unavailable(lambda: sel.describe_pool(chaos_stack.ids.pool), root)
        with TrainerClient(services.target("trainer"), retries=1, credentials=creds) as trainer:
            _assert_unavailable(lambda: trainer.list_checkpoints(exp_id), root)
        redis.restart()
        _wait_ready(chaos_stack, SERVING)
        now = client.get(exp_id)
        if mode == "shutdown":
            assert now.state == experiment_pb2.ROUND_STATE_POOL_SCORED
        else:  # the SELECTED transition is really gone: it is derived again below
            assert (now.state, now.version) == (before.state, before.version)
            assert now.state == experiment_pb2.ROUND_STATE_POOL_SCORED
        counter = Counter[str]()
        exp = now
        while exp.state != experiment_pb2.ROUND_STATE_FINISHED:
            exp = retrying(lambda: client.advance(exp_id), counter).experiment
        codes = dict(counter)
    assert codes == {}, codes  # Redis was back: no advance needed a retry
    assert [list(r.selected_item_ids) for r in exp.rounds] == clean_run.selections
    assert [r.labeled_count for r in exp.rounds] == clean_run.labeled_counts
    store = ExperimentStore(redis.client())
    assert store.labels(exp_id) == clean_run.labels
    assert store.labeled_ids(exp_id) == clean_run.label_order
    assert {n: s.proc.pid for n, s in services.services.items() if s.proc} == pids
    assert all(s.proc is not None and s.proc.poll() is None for s in services.services.values())
