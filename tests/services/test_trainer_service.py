"""TrainerService end to end: a real server process, real Redis, real gRPC on loopback.

Pool: 300 Fashion-MNIST train images; teacher: a synthetic, deliberately imperfect probability
matrix (right on ~70% of the rows); test pool: 200 Fashion-MNIST test images. The student is a
small CNN (8/16 channels) trained for a few dozen steps on one thread.
"""

from __future__ import annotations

import hashlib
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from torch import equal as torch_equal

from activekd.client import TrainerClient, TrainProgress, TrainRoundResult
from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from activekd.state.experiment_spec import ExperimentSpec
from activekd.state.experiments import ExperimentStore
from activekd.store import PoolStore
from activekd.student import evaluate, load_checkpoint, load_student, loads_checkpoint, score_pool
from activekd.v1 import trainer_pb2, trainer_pb2_grpc
from tests.procs import RedisProcess, ServiceProcess

C = len(FASHION_MNIST_CLASSES)
TINY: dict[str, Any] = {
    "steps": 30,
    "log_every": 10,
    "batch_size_labeled": 16,
    "batch_size_unlabeled": 32,
    "backbone_args": {"widths": [8, 16], "hidden": 32},
}


def _teacher(y: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    guess = np.where(rng.random(y.size) < 0.7, y, rng.integers(0, C, y.size))
    p = np.full((y.size, C), 0.03)
    p[np.arange(y.size), guess] += 0.7
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


@dataclass
class World:
    svc: ServiceProcess
    client: redis.Redis
    store: PoolStore
    experiments: ExperimentStore
    ids: list[str]
    x: np.ndarray
    y: np.ndarray
    xt: np.ndarray
    yt: np.ndarray
    tt: np.ndarray

    @property
    def ckpt_root(self) -> Path:
        return Path(self.svc.store_uri) / "checkpoints"

    def experiment(
        self,
        exp_id: str,
        *,
        ids: list[str] | None = None,
        labels: list[int] | None = None,
        teacher_config: dict[str, Any] | None = None,
    ) -> str:
        """2 labels per class (the first rows of each class) unless ``ids``/``labels`` given."""
        if ids is None:
            rows = np.concatenate([np.flatnonzero(self.y == c)[:2] for c in range(C)])
            ids, labels = [self.ids[r] for r in rows], [int(self.y[r]) for r in rows]
        spec = ExperimentSpec(
            pool_id="fm/pool",
            test_pool_id="fm/test",
            dataset="fashion-mnist-svc",
            class_names=list(FASHION_MNIST_CLASSES),
            teacher_config=teacher_config
            or {"pool_id": "fm/teacher", "test_pool_id": "fm/teacher-test"},
            student_config=dict(TINY),
            strategy="pcoreset",
            initial_item_ids=ids,
            initial_labels=list(labels or []),
            budget_per_round=10,
            num_rounds=3,
            seed=5,
        )
        self.experiments.create(spec, exp_id)
        return exp_id


@pytest.fixture(scope="module")
def world(trainer_service: ServiceProcess, redis_server: RedisProcess) -> Iterator[World]:
    client = redis_server.client()
    store = PoolStore(trainer_service.store_uri, client)
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    x, y, xt, yt = x[:300], y[:300], xt[:200], yt[:200]
    ids = [f"fm-{i:05d}" for i in range(300)]
    test_ids = [f"fmt-{i:05d}" for i in range(200)]
    tt = _teacher(yt, 1)
    store.put("fm/pool", ids, {"images": x, "labels": y}, overwrite=True)
    store.put("fm/teacher", ids, {"probs": _teacher(y, 0)}, overwrite=True)
    store.put("fm/test", test_ids, {"images": xt, "labels": yt}, overwrite=True)
    store.put("fm/teacher-test", test_ids, {"probs": tt}, overwrite=True)
    yield World(trainer_service, client, store, ExperimentStore(client), ids, x, y, xt, yt, tt)
    client.close()


@pytest.fixture
def trainer(world: World) -> Iterator[TrainerClient]:
    with TrainerClient(world.svc.target, timeout=60) as c:
        c.wait_ready()
        yield c


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _metric(port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no series {name}{labels}")


def _train(trainer: TrainerClient, exp: str, **kwargs: Any) -> TrainRoundResult:
    return trainer.train_round_result(exp, 0, **kwargs)


# ------------------------------------------------------------------------------------ tests
def test_health_and_reflection(world: World) -> None:
    with grpc.insecure_channel(world.svc.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "activekd.v1.TrainerService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        resp = next(refl.ServerReflectionInfo(iter([req])))
        assert "activekd.v1.TrainerService" in {s.name for s in resp.list_services_response.service}


def test_train_round_score_evaluate_and_download(world: World, trainer: TrainerClient) -> None:
    exp = world.experiment("svc-main")
    events: list[TrainProgress | TrainRoundResult] = []
    health_during_training = []
    with grpc.insecure_channel(world.svc.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for msg in trainer.train_round(exp, 0, student_config={"threads": 1}, predict_pool=True):
            if not events:  # training runs in a worker thread: the event loop still answers
                req = health_pb2.HealthCheckRequest(service="activekd.v1.TrainerService")
                health_during_training.append(health.Check(req, timeout=5).status)
            events.append(msg)
    assert health_during_training == [health_pb2.HealthCheckResponse.SERVING]
    progress = [e for e in events[:-1] if isinstance(e, TrainProgress)]
    result = events[-1]
    assert len(progress) == len(events) - 1 and all(np.isfinite(p.loss) for p in progress)
    assert [(p.step, p.total_steps) for p in progress] == [(10, 30), (20, 30), (30, 30)]
    assert isinstance(result, TrainRoundResult) and result.num_labeled == 2 * C
    assert result.train_seconds > 0 and result.predict_seconds > 0

    # the checkpoint: on disk where documented, downloadable in chunks, same bytes, loads
    path = world.ckpt_root / exp / "round-0.ckpt"
    on_disk = path.read_bytes()
    info = result.checkpoint
    assert (info.checkpoint_id, info.round, info.size_bytes) == (f"{exp}/round-0", 0, len(on_disk))
    assert info.sha256 == _sha(on_disk)
    data = trainer.get_checkpoint(exp, 0)
    assert data == on_disk
    stub = trainer_pb2_grpc.TrainerServiceStub(trainer.channel)
    msgs = list(stub.GetCheckpoint(trainer_pb2.GetCheckpointRequest(experiment_id=exp, round=0)))
    assert len(msgs) == -(-len(on_disk) // (16 * 1024))  # 16 KiB chunks (fixture setting)
    assert msgs[0].HasField("info") and not any(m.HasField("info") for m in msgs[1:])
    ckpt = loads_checkpoint(data)
    assert ckpt.metadata["num_labeled"] == 20 and ckpt.config.steps == 30
    assert ckpt.config.seed == 5 * 1000 and ckpt.config.threads == 1
    assert [c.sha256 for c in trainer.list_checkpoints(exp)] == [info.sha256]

    # the student pool equals the downloaded student's scores, item order kept
    pool = result.student_pool
    assert pool is not None and pool.pool_id == f"{exp}/round-0/student" and pool.num_items == 300
    shapes = {a.name: list(a.shape) for a in pool.arrays}
    assert shapes["probs"] == shapes["ce_logits"] == shapes["kd_logits"] == [300, C]
    assert shapes["features"] == [300, 32]
    model, _ = load_student(ckpt)
    ref = score_pool(model, world.x)
    np.testing.assert_allclose(world.store.open_array(pool.pool_id, "probs"), ref.probs, atol=1e-5)
    assert world.store.item_ids(pool.pool_id).tolist() == world.ids

    # evaluation on the test pool (teacher test probs from the spec's teacher_config)
    ev = result.evaluation
    assert ev is not None and ev.num_examples == 200
    lib = evaluate(model, world.xt, world.yt, world.tt)
    assert ev.accuracy == pytest.approx(lib["accuracy"], abs=1e-9)
    assert ev.kd_accuracy == pytest.approx(lib["accuracy_kd"], abs=1e-9)
    assert ev.teacher_accuracy == pytest.approx(float((world.tt.argmax(1) == world.yt).mean()))
    assert ev.teacher_agreement == pytest.approx(lib["teacher_agreement"], abs=1e-9)
    again = trainer.evaluate(exp, 0)
    assert (again.accuracy, again.teacher_agreement) == (ev.accuracy, ev.teacher_agreement)
    plain = trainer.evaluate(exp, 0, teacher_test_pool_id="")  # spec default still applies
    assert plain.teacher_accuracy == ev.teacher_accuracy

    scored = trainer.predict_pool(exp, 0, output_pool_id=f"{exp}/rescored")
    assert scored.pool.num_items == 300 and scored.compute_seconds > 0
    np.testing.assert_allclose(
        world.store.open_array(f"{exp}/rescored", "probs"),
        world.store.open_array(pool.pool_id, "probs"),
        atol=1e-6,
    )

    # metrics: the round's steps and its label-efficiency point
    port = world.svc.metrics_port
    steps = _metric(port, "activekd_trainer_steps_total", dataset="fashion-mnist-svc")
    assert steps == 30.0
    acc = _metric(port, "activekd_student_accuracy", experiment=exp)
    assert acc == pytest.approx(ev.accuracy)


def _code(exc: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return exc.value.code()  # type: ignore[attr-defined,no-any-return]


def _details(exc: pytest.ExceptionInfo[grpc.RpcError]) -> str:
    return exc.value.details()  # type: ignore[attr-defined,no-any-return]


def test_missing_inputs(world: World, trainer: TrainerClient) -> None:
    exp = world.experiment("svc-missing")
    cases: list[tuple[str, dict[str, Any], grpc.StatusCode, str]] = [
        ("nobody", {}, grpc.StatusCode.NOT_FOUND, "experiment 'nobody' not found"),
        (exp, {"pool_id": "fm/none"}, grpc.StatusCode.FAILED_PRECONDITION, "'fm/none' does not"),
        (exp, {"teacher_pool_id": "fm/t-none"}, grpc.StatusCode.FAILED_PRECONDITION,
         "teacher pool 'fm/t-none' does not exist"),
        (exp, {"test_pool_id": "fm/x-none"}, grpc.StatusCode.FAILED_PRECONDITION,
         "test pool 'fm/x-none' does not exist"),
        (exp, {"student_config": {"lrr": 0.1}}, grpc.StatusCode.INVALID_ARGUMENT,
         "unknown keys ['lrr']"),
    ]  # fmt: skip
    for exp_id, kwargs, code, text in cases:
        with pytest.raises(grpc.RpcError) as exc:
            _train(trainer, exp_id, **kwargs)
        assert _code(exc) == code and text in _details(exc), (kwargs, _details(exc))
    for call in (lambda: trainer.predict_pool(exp, 0), lambda: trainer.evaluate(exp, 0)):
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
        assert "no checkpoint for round 0" in _details(exc)
    with pytest.raises(grpc.RpcError) as exc:
        trainer.get_checkpoint(exp, 0)
    assert _code(exc) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as exc:
        trainer.list_checkpoints("nobody")
    assert _code(exc) == grpc.StatusCode.NOT_FOUND
    assert trainer.list_checkpoints(exp) == []


def test_bad_inputs(world: World, trainer: TrainerClient) -> None:
    fp = grpc.StatusCode.FAILED_PRECONDITION
    # labels outside the class range in the round state
    bad_label = world.experiment("svc-badlabel")
    world.client.hset(world.experiments.key_prefix(bad_label) + ":labels", world.ids[100], 12)
    # labeled ids the pool does not have
    rows = [0, 1, 2]
    ghost = world.experiment(
        "svc-ghost",
        ids=[*(world.ids[r] for r in rows), "not-in-pool"],
        labels=[*(int(world.y[r]) for r in rows), 0],
    )
    # an empty labeled set
    empty = world.experiment("svc-empty")
    world.client.delete(world.experiments.key_prefix(empty) + ":labels")
    # a teacher matrix with 7 classes, and one with a NaN row
    world.store.put("fm/teacher-7", world.ids, {"probs": np.full((300, 7), 1 / 7, np.float32)})
    t_nan = world.store.open_array("fm/teacher", "probs").copy()
    t_nan[42, 3] = np.nan
    world.store.put("fm/teacher-nan", world.ids, {"probs": t_nan})
    ok = world.experiment("svc-bad-teacher")
    cases: list[tuple[str, dict[str, Any], str]] = [
        (bad_label, {}, f"label(s) outside [0, 10): {world.ids[100]}=12"),
        (ghost, {}, "missing from the pool: 1 item id(s) are not in pool 'fm/pool': 'not-in-pool'"),
        (empty, {}, "has no labels for round 0 yet"),
        (
            ok,
            {"teacher_pool_id": "fm/teacher-7"},
            "shape [300, 7], the student has num_classes = 10",
        ),
        (ok, {"teacher_pool_id": "fm/teacher-nan"}, "row 42 is not a probability vector"),
    ]
    for exp_id, kwargs, text in cases:
        with pytest.raises(grpc.RpcError) as exc:
            _train(trainer, exp_id, **kwargs)
        assert _code(exc) == fp and text in _details(exc), (exp_id, kwargs, _details(exc))
    assert not [p for g in ("svc-b*/*", "svc-g*/*", "svc-e*/*") for p in world.ckpt_root.glob(g)]


def test_clap_teacher_adaptation_through_the_service(world: World, trainer: TrainerClient) -> None:
    """teacher_config.adaptation='clap' trains on the adapted teacher (the library computation
    is pinned in tests/student/test_round_job.py): other KD targets, so other weights than the
    same round with the zero-shot teacher; a teacher pool without features is refused."""
    rng = np.random.default_rng(3)
    feats = np.eye(C)[world.y] + rng.normal(0, 0.3, (world.y.size, C))
    t = world.store.open_array("fm/teacher", "probs")
    world.store.put(
        "fm/teacher-feats",
        world.ids,
        {"probs": t, "features": feats.astype(np.float16)},
        overwrite=True,
    )
    weights = {}
    for mode in ("none", "clap"):
        exp = world.experiment(
            f"svc-adapt-{mode}", teacher_config={"pool_id": "fm/teacher-feats", "adaptation": mode}
        )
        _train(trainer, exp, student_config={"steps": 4, "threads": 1})
        weights[mode] = loads_checkpoint(trainer.get_checkpoint(exp, 0)).state_dict
    assert any(not torch_equal(weights["none"][k], weights["clap"][k]) for k in weights["none"])
    exp = world.experiment(
        "svc-adapt-nofeat", teacher_config={"pool_id": "fm/teacher", "adaptation": "clap"}
    )
    with pytest.raises(grpc.RpcError) as exc:
        _train(trainer, exp, student_config={"steps": 2, "threads": 1})
    assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
    assert "no 'features' array" in _details(exc) and "use force" in _details(exc)


def test_seed_field_reaches_the_student_exactly(world: World, trainer: TrainerClient) -> None:
    """TrainRoundRequest.seed is an integer field: 2**53 + 1 (not representable as a double, the
    number type of a Struct) arrives unchanged; contradicting a student_config seed is rejected."""
    exp = world.experiment("svc-seed")
    seed = 2**53 + 1
    result = _train(trainer, exp, student_config={"steps": 2, "threads": 1}, seed=seed)
    assert loads_checkpoint(trainer.get_checkpoint(exp, 0)).config.seed == seed
    assert result.checkpoint.round == 0
    with pytest.raises(grpc.RpcError) as exc:
        _train(trainer, exp, student_config={"steps": 2, "seed": 3}, seed=5)
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert "contradicts student_config seed" in _details(exc)


def test_nan_loss_fails_the_round_and_keeps_the_previous_checkpoint(
    world: World, trainer: TrainerClient
) -> None:
    exp = world.experiment("svc-nan")
    first = _train(trainer, exp, student_config={"steps": 3, "threads": 1})
    with pytest.raises(grpc.RpcError) as exc:
        _train(trainer, exp, student_config={"lr": 1e30, "warmup_fraction": 0.0, "threads": 1})
    assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
    assert "diverged at step" in _details(exc) and "previous checkpoint is kept" in _details(exc)
    assert [c.sha256 for c in trainer.list_checkpoints(exp)] == [first.checkpoint.sha256]
    assert _sha(trainer.get_checkpoint(exp, 0)) == first.checkpoint.sha256


def test_kill_mid_round_restart_and_rerun(world: World, trainer: TrainerClient) -> None:
    """kill -9 while the round trains: the old checkpoint survives untouched; after a restart the
    round re-runs to completion and leaves exactly one loadable checkpoint, no temp files."""
    exp = world.experiment("svc-crash")
    folder = world.ckpt_root / exp
    old = _train(trainer, exp, student_config={"steps": 3, "threads": 1}).checkpoint
    long_round = {"steps": 3000, "log_every": 1, "seed": 11, "threads": 1}
    seen = []
    for ev in trainer.train_round(exp, 0, student_config=long_round):
        seen.append(ev)
        world.svc.kill()  # at step 1 of 3000: certainly mid-round
        break
    assert isinstance(seen[0], TrainProgress) and seen[0].step == 1
    assert sorted(p.name for p in folder.iterdir()) == ["round-0.ckpt"]
    assert _sha((folder / "round-0.ckpt").read_bytes()) == old.sha256
    # what a kill between write and rename would leave: must never be listed, loaded or kept
    (folder / ".round-0.ckpt.k1ll3d.tmp").write_bytes(b"\x00" * 1000)

    world.svc.start()
    with TrainerClient(world.svc.target, timeout=60) as again:
        again.wait_ready()
        assert [c.sha256 for c in again.list_checkpoints(exp)] == [old.sha256]
        rerun = again.train_round_result(exp, 0, student_config={**long_round, "steps": 20})
        assert sorted(p.name for p in folder.iterdir()) == ["round-0.ckpt"]
        assert rerun.checkpoint.sha256 != old.sha256  # the re-run's (seed 11) weights
        assert [c.sha256 for c in again.list_checkpoints(exp)] == [rerun.checkpoint.sha256]
        ckpt = load_checkpoint(folder / "round-0.ckpt")
        assert ckpt.config.seed == 11 and ckpt.config.steps == 20
        assert _sha(again.get_checkpoint(exp, 0)) == rerun.checkpoint.sha256


def test_a_round_past_its_deadline_stops_and_keeps_the_previous_checkpoint(
    world: World, trainer: TrainerClient
) -> None:
    """The caller's deadline passes mid-round: the call ends DEADLINE_EXCEEDED and the service
    stops training at its next step (it logs "round cancelled", then "round stopped" once the
    worker has returned) instead of running on for nobody; the round's previous checkpoint
    stays, and the service trains the next call."""
    exp = world.experiment("svc-deadline")
    folder = world.ckpt_root / exp
    old = _train(trainer, exp, student_config={"steps": 3, "threads": 1}).checkpoint
    endless = {"steps": 1_000_000, "log_every": 1, "seed": 3, "threads": 1}
    steps: list[int] = []
    with pytest.raises(grpc.RpcError) as err:
        for ev in trainer.train_round(exp, 0, student_config=endless, timeout=4.0):
            steps.append(getattr(ev, "step", -1))
    assert _code(err) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert steps and steps[-1] < 1_000_000
    cancelled = f'"experiment_id": "{exp}"'
    deadline = time.monotonic() + 30
    for message in ("round cancelled", "round stopped"):
        while not any(
            message in line and cancelled in line for line in world.svc.logs().splitlines()
        ):
            assert time.monotonic() < deadline, f"the service did not log {message!r}"
            time.sleep(0.2)
    assert sorted(p.name for p in folder.iterdir()) == ["round-0.ckpt"]
    assert _sha((folder / "round-0.ckpt").read_bytes()) == old.sha256
    after = _train(trainer, exp, student_config={"steps": 3, "seed": 4, "threads": 1})
    assert after.checkpoint.sha256 != old.sha256


def test_weights_path_outside_the_data_roots_is_denied(
    world: World, trainer: TrainerClient
) -> None:
    """A weights_path is a host path the trainer would open: it obeys the data-root rule, with
    the same message whether the outside file exists (/etc/hostname) or not."""
    exp = world.experiment("svc-weights")
    messages = []
    for path in ("/etc/hostname", "/nonexistent/weights.pth", "../../etc/passwd"):
        config = {"backbone": "resnet18", "backbone_args": {"weights_path": path}, "steps": 1}
        with pytest.raises(grpc.RpcError) as exc:
            _train(trainer, exp, student_config=config)
        assert _code(exc) == grpc.StatusCode.PERMISSION_DENIED, _details(exc)
        messages.append(_details(exc).replace(repr(path), "PATH"))
    assert "data root" in messages[0] and len(set(messages[:2])) == 1, messages
    assert not list(world.ckpt_root.glob("svc-weights/*"))
