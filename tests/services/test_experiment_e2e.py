"""The whole system over gRPC: Redis + selection, teacher, trainer and experiment services as real
processes, a tiny Fashion-MNIST pool, tiny models, three rounds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from activekd.client import ExperimentClient, SelectionClient, TeacherClient
from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from activekd.experiment.oracle import initial_labels
from activekd.ids import teacher_targets_pool_id
from activekd.orchestration.local_services import LocalServices
from activekd.seeds import round_seed
from activekd.student.round_job import student_pool_id
from activekd.v1 import experiment_pb2

pytestmark = pytest.mark.slow
FINISHED = experiment_pb2.ROUND_STATE_FINISHED
ENV = {
    "ACTIVEKD_TEACHER_BACKEND": "label-map",
    "ACTIVEKD_TEACHER_IMAGE_SIZE": "64",
    "ACTIVEKD_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    s = LocalServices(tmp_path_factory.mktemp("stack"), env=ENV).start()
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    with SelectionClient(s.target("selection")) as sel:
        sel.upload_pool(
            "e2e/pool",
            item_ids=[f"p{i}" for i in range(160)],
            arrays={"images": x[:160], "labels": y[:160]},
        )
        sel.upload_pool(
            "e2e/test",
            item_ids=[f"t{i}" for i in range(80)],
            arrays={"images": xt[:80], "labels": yt[:80]},
        )
    try:
        yield s
    finally:
        s.stop()


def _spec(
    strategy: str = "pcoreset", oracle: bool = True, rounds: int = 3
) -> experiment_pb2.ExperimentSpec:
    spec = experiment_pb2.ExperimentSpec(
        pool_id="e2e/pool",
        test_pool_id="e2e/test",
        dataset="fmnist-e2e",
        class_names=list(FASHION_MNIST_CLASSES),
        strategy=strategy,
        initial_per_class=1,
        budget_per_round=5,
        num_rounds=rounds,
        seed=7,
        simulated_oracle=oracle,
    )
    spec.student_config.update({"steps": 8, "batch_size_labeled": 16, "batch_size_unlabeled": 32})
    return spec


def _run(client: ExperimentClient, exp_id: str) -> experiment_pb2.Experiment:
    exp = client.get(exp_id)
    while exp.state != FINISHED:
        exp = client.advance(exp_id).experiment
    return exp


def _selected(exp: experiment_pb2.Experiment) -> list[list[str]]:
    return [list(r.selected_item_ids) for r in exp.rounds]


def test_full_loop_three_rounds(stack: LocalServices) -> None:
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        exp = client.create(_spec(), experiment_id="loop-a")
        assert exp.labeled_count == 10 and exp.state == experiment_pb2.ROUND_STATE_CREATED
        seen: list[str] = []
        while exp.state != FINISHED:
            resp = client.advance("loop-a")
            seen.append(experiment_pb2.RoundState.Name(resp.to_state).removeprefix("ROUND_STATE_"))
            exp = resp.experiment
        per_round = [
            "TEACHER_SCORED",
            "STUDENT_TRAINED",
            "POOL_SCORED",
            "SELECTED",
            "AWAITING_LABELS",
            "LABELS_COMPLETE",
            "CREATED",
        ]
        assert seen == per_round * 3 + ["TEACHER_SCORED", "STUDENT_TRAINED", "FINISHED"]
        assert [r.labeled_count for r in exp.rounds] == [10, 15, 20, 25]
        picks = [i for ids in _selected(exp) for i in ids]
        assert len(picks) == len(set(picks)) == 15
        assert all(0.0 < r.accuracy <= 1.0 for r in exp.rounds)
        events = list(client.watch("loop-a", timeout=60))
        assert events[-1].state == FINISHED
        assert [e.version for e in events] == sorted(e.version for e in events)
        with pytest.raises(grpc.RpcError) as exc:
            client.advance("loop-a")
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_typiclust_on_the_teacher_features_with_an_adapted_teacher(stack: LocalServices) -> None:
    """A coverage strategy picks on the teacher pool's features (the driver passes it as
    features_pool_id), and teacher_config.adaptation='clap' trains through the services."""
    spec = _spec(strategy="typiclust", rounds=1)
    spec.teacher_config.update({"adaptation": "clap"})
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        exp = _run(client, client.create(spec, experiment_id="ty-clap").experiment_id)
    assert [r.labeled_count for r in exp.rounds] == [10, 15]
    picked = _selected(exp)[0]
    with TeacherClient(stack.target("teacher"), timeout=600) as teacher:
        last = list(teacher.score_pool(pool_id="e2e/pool", dataset="fmnist-e2e"))[-1]
    assert last.cached and last.pool is not None  # the experiment's own teacher pool
    _, y = load_fashion_mnist("train")
    ids, labels = initial_labels([f"p{i}" for i in range(160)], y[:160], 1, 7, 10)
    with SelectionClient(stack.target("selection")) as sel:
        kwargs = dict(pool_id=student_pool_id("ty-clap", 0), labeled=ids, labels=labels,
                      seed=round_seed(7, 0))  # fmt: skip
        on_teacher = sel.select_batch(
            "typiclust", 5, features_pool_id=last.pool.pool_id, **kwargs
        ).item_ids
        on_student = sel.select_batch("typiclust", 5, **kwargs).item_ids
    assert list(on_teacher) == picked and list(on_student) != picked

    # a teacher pool of probabilities only: the teacher step says what to do before round 0
    # trains (not after), and the state stays
    with SelectionClient(stack.target("selection")) as sel:
        flat = np.full((160, 10), 0.1, dtype=np.float32)
        sel.upload_pool("e2e/probs-only", item_ids=[f"p{i}" for i in range(160)],
                        arrays={"probs": flat}, overwrite=True)  # fmt: skip
    spec = _spec(strategy="typiclust", rounds=1)
    spec.teacher_config.update({"pool_id": "e2e/probs-only"})
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        client.create(spec, experiment_id="ty-nofeat")
        with pytest.raises(grpc.RpcError) as exc:
            _run(client, "ty-nofeat")
        state = client.get("ty-nofeat").state
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'e2e/probs-only' has none" in (exc.value.details() or "")
    assert state == experiment_pb2.ROUND_STATE_CREATED  # nothing trained, nothing lost


def test_named_pcoreset_variants_select_on_the_teacher_and_the_ce_head(
    stack: LocalServices,
) -> None:
    """pcoreset_teacher picks on the round's teacher probabilities (here the experiment's
    teacher pool, which the trainer writes in the pool's rows as <experiment>/round-<r>/teacher) and
    pcoreset_ce on the scored pool's ce_probs (the registry's probs_source, passed by the
    driver): each equals pcoreset called on those probabilities, and neither is the paper's
    pcoreset on the student's."""
    picked = {}
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        for name in ("pcoreset_teacher", "pcoreset_ce"):
            exp_id = name.replace("_", "-")
            exp = _run(client, client.create(_spec(strategy=name, rounds=1), experiment_id=exp_id)
                       .experiment_id)  # fmt: skip
            assert [r.labeled_count for r in exp.rounds] == [10, 15]
            picked[name] = _selected(exp)[0]
    with TeacherClient(stack.target("teacher"), timeout=600) as teacher:
        last = list(teacher.score_pool(pool_id="e2e/pool", dataset="fmnist-e2e"))[-1]
    assert last.cached and last.pool is not None
    _, y = load_fashion_mnist("train")
    ids, labels = initial_labels([f"p{i}" for i in range(160)], y[:160], 1, 7, 10)
    kw = dict(labeled=ids, labels=labels, seed=round_seed(7, 0))
    with SelectionClient(stack.target("selection")) as sel:
        on_teacher = sel.select_batch("pcoreset", 5, pool_id=last.pool.pool_id, **kw).item_ids
        student = student_pool_id("pcoreset-ce", 0)
        on_ce = sel.select_batch("pcoreset", 5, pool_id=student, probs_array="ce_probs", **kw)
        on_combined = sel.select_batch("pcoreset", 5, pool_id=student, **kw).item_ids
    assert list(on_teacher) == picked["pcoreset_teacher"]
    assert list(on_ce.item_ids) == picked["pcoreset_ce"]
    assert list(on_combined) != picked["pcoreset_ce"]


def test_pcoreset_teacher_picks_only_pool_items_from_a_larger_teacher_pool(
    stack: LocalServices,
) -> None:
    """A teacher pool may hold more items than the experiment's, in another order: the trainer
    writes the round's teacher targets in the pool's rows (<experiment>/round-<r>/teacher) and
    pcoreset_teacher selects on those,
    so it never returns an item outside the experiment pool, even when the extra items are the
    farthest points of the teacher's probability space."""
    rng = np.random.default_rng(3)
    pool_ids = [f"p{i}" for i in range(160)]
    probs = rng.dirichlet(np.full(10, 2.0), size=160).astype(np.float32)
    extra = np.eye(10, dtype=np.float32)[rng.integers(10, size=40)]  # one-hot: far from all
    ids = pool_ids + [f"x{i}" for i in range(40)]
    order = rng.permutation(200)
    with SelectionClient(stack.target("selection")) as sel:
        sel.upload_pool("e2e/teacher-wide", item_ids=[ids[i] for i in order],
                        arrays={"probs": np.concatenate([probs, extra])[order]}, overwrite=True)  # fmt: skip
        sel.upload_pool("e2e/teacher-aligned", item_ids=pool_ids, arrays={"probs": probs},
                        overwrite=True)  # fmt: skip
    spec = _spec(strategy="pcoreset_teacher", rounds=1)
    spec.teacher_config.update({"pool_id": "e2e/teacher-wide"})
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        exp = _run(client, client.create(spec, experiment_id="pt-wide").experiment_id)
    picked = _selected(exp)[0]
    assert len(picked) == 5 and set(picked) <= set(pool_ids)
    _, y = load_fashion_mnist("train")
    lab, labels = initial_labels(pool_ids, y[:160], 1, 7, 10)
    with SelectionClient(stack.target("selection")) as sel:
        kw = dict(labeled=lab, labels=labels, seed=round_seed(7, 0))
        want = sel.select_batch("pcoreset", 5, pool_id="e2e/teacher-aligned", **kw).item_ids
        stored = sel.select_batch(
            "pcoreset", 5, pool_id=teacher_targets_pool_id("pt-wide", 0), **kw
        ).item_ids
        wide = sel.select_batch("pcoreset", 5, pool_id="e2e/teacher-wide", **kw).item_ids
    assert list(want) == picked and list(stored) == picked
    assert set(wide) - set(pool_ids)  # selecting on the teacher pool itself would leave the pool


def test_two_drivers_exactly_one_advances(stack: LocalServices) -> None:
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        exp = client.create(_spec(rounds=1), experiment_id="race")
        for _ in range(4):  # CREATED -> ... -> SELECTED, racing on every transition
            version = client.get("race").version
            outcomes: list[str] = []

            def go(v: int = version, outcomes: list[str] = outcomes) -> None:
                try:
                    client.advance("race", expected_version=v)
                    outcomes.append("ok")
                except grpc.RpcError as err:
                    outcomes.append(err.code().name)

            threads = [threading.Thread(target=go) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(outcomes) == ["ABORTED", "ok"]
            assert client.get("race").version > version
        exp = client.get("race")
        assert exp.state == experiment_pb2.ROUND_STATE_SELECTED


def test_label_submission_over_grpc(stack: LocalServices) -> None:
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        client.create(_spec(oracle=False, rounds=1), experiment_id="labels")
        exp = client.get("labels")
        while exp.state != experiment_pb2.ROUND_STATE_AWAITING_LABELS:
            exp = client.advance("labels").experiment
        picked = list(exp.rounds[0].selected_item_ids)
        with pytest.raises(grpc.RpcError) as exc:
            client.advance("labels")
        assert (
            exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            and "SubmitLabels" in exc.value.details()
        )
        res = client.submit_labels("labels", {picked[0]: 3, picked[1]: 4})
        assert (res.accepted, res.remaining) == (2, 3)
        assert client.submit_labels("labels", {picked[0]: 3}).unchanged == 1
        for bad, code in [
            ({"p159x": 1}, "INVALID_ARGUMENT"),
            ({picked[2]: 10}, "INVALID_ARGUMENT"),
            ({picked[0]: 5}, "FAILED_PRECONDITION"),
        ]:
            with pytest.raises(grpc.RpcError) as exc:
                client.submit_labels("labels", bad)
            assert exc.value.code().name == code, bad
        assert client.submit_labels("labels", {picked[0]: 5}, overwrite=True).accepted == 1
        done = client.submit_labels("labels", {p: 1 for p in picked[2:]})
        assert done.remaining == 0
        assert done.experiment.state == experiment_pb2.ROUND_STATE_LABELS_COMPLETE
        # the round closed: a change is queued as a correction, applied when round 1 starts
        late = client.submit_labels("labels", {picked[2]: 2}, overwrite=True, withdraw=[picked[3]])
        assert (late.accepted, late.deferred, late.experiment.pending_corrections) == (0, 2, 2)
        final = _run(client, "labels")
        assert final.labeled_count == 14 and final.pending_corrections == 0
        assert final.rounds[1].corrections_applied == 2


def test_withdraw_while_awaiting_reopens_the_pick(stack: LocalServices) -> None:
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        client.create(_spec(oracle=False, rounds=1), experiment_id="withdraw")
        exp = client.get("withdraw")
        while exp.state != experiment_pb2.ROUND_STATE_AWAITING_LABELS:
            exp = client.advance("withdraw").experiment
        picked = list(exp.rounds[0].selected_item_ids)
        client.submit_labels("withdraw", {p: 1 for p in picked[:-1]})
        res = client.submit_labels("withdraw", {}, withdraw=[picked[0]])
        assert (res.withdrawn, res.remaining) == (1, 2)
        with pytest.raises(grpc.RpcError) as exc:
            client.submit_labels("withdraw", {picked[1]: 0}, withdraw=[picked[1]])
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        done = client.submit_labels("withdraw", {picked[0]: 2, picked[-1]: 3})
        assert done.experiment.state == experiment_pb2.ROUND_STATE_LABELS_COMPLETE


def test_stopping_rule_finishes_early_with_the_signal_reported(stack: LocalServices) -> None:
    spec = _spec(rounds=6)
    spec.stopping.min_stability = 0.01  # any agreement at all: fires after `patience` rounds
    spec.stopping.patience = 2
    spec.stopping.stop_set_size = 100
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        client.create(spec, experiment_id="stops")
        exp = _run(client, "stops")
        assert exp.stop_reason.startswith("stability >= 0.01 for 2 round(s)")
        assert len(exp.rounds) == 3  # rounds 1 and 2 were stable: no selection in round 2
        assert exp.rounds[0].stability is None
        for r in exp.rounds[1:]:
            assert 0.01 <= r.stability <= 1.0 and 0.0 <= r.stop_set_teacher_agreement <= 1.0
        assert not exp.rounds[2].selected_item_ids
        messages = [e.message for e in client.watch("stops", timeout=60)]
        assert any("stability" in m for m in messages) and "stopped early" in messages[-1]


def test_kill_each_service_mid_round_same_result(stack: LocalServices) -> None:
    """kill -9 every service in turn during an advance, restart it: same labeled set as a clean run."""
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        client.create(_spec(strategy="entropy", rounds=2), experiment_id="clean")
        clean = _run(client, "clean")
        client.create(_spec(strategy="entropy", rounds=2), experiment_id="killed")
    order = ["teacher", "trainer", "trainer", "selection", "experiment"]
    kills = 0
    for step in range(100):
        svc_name = order[kills] if kills < len(order) else None
        with ExperimentClient(stack.target("experiment"), timeout=600) as client:
            exp = client.get("killed")
            if exp.state == FINISHED:
                break
            if svc_name is None:
                client.advance("killed")
                continue
            errors: list[grpc.RpcError] = []

            def call(errors: list[grpc.RpcError] = errors) -> None:
                try:
                    client.advance("killed")
                except grpc.RpcError as err:
                    errors.append(err)

            t = threading.Thread(target=call)
            t.start()
            time.sleep(0.3 + 0.2 * step % 3)
            svc = stack.services[svc_name]
            svc.kill()
            t.join(120)
            svc.start()
            kills += 1
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        killed = _run(client, "killed")
    assert kills == len(order)
    assert _selected(killed) == _selected(clean)
    assert [r.labeled_count for r in killed.rounds] == [r.labeled_count for r in clean.rounds]


def test_prometheus_scrapes_label_efficiency_of_a_real_experiment(
    stack: LocalServices, tmp_path: Path
) -> None:
    """A real Prometheus scrapes all four services after a tiny experiment ran through them."""
    from tests.prometheus_proc import running_prometheus, wait_for

    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        client.create(_spec(rounds=2), experiment_id="prom")
        exp = _run(client, "prom")
    targets = {f"activekd-{n}": s.metrics_port for n, s in stack.services.items()}
    with running_prometheus(tmp_path / "prom", targets) as url:
        points = wait_for(url, 'activekd_label_efficiency_accuracy{experiment="prom"}', 3)
        got = {int(p["metric"]["labeled"]): float(p["value"][1]) for p in points}
        want = {r.labeled_count: r.accuracy for r in exp.rounds}
        assert got.keys() == want.keys()
        for labeled, acc in want.items():
            assert got[labeled] == pytest.approx(acc, abs=1e-9)
        handled = wait_for(
            url, 'grpc_server_handled_total{grpc_method="AdvanceRound",grpc_code="OK"}', 1
        )
        # 7 transitions per selecting round + 3 in the last (other tests may add more)
        assert float(handled[0]["value"][1]) >= 7 * (len(exp.rounds) - 1) + 3
        for job in targets:
            assert wait_for(url, f'up{{job="{job}"}} == 1', 1), job


def test_cli_run_and_status(
    stack: LocalServices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`activekd run CONFIG` drives an experiment to the end; `activekd status` lists it."""
    import yaml

    from activekd.cli import main

    config = {
        "experiment_id": "from-cli",
        "experiment": {
            "pool_id": "e2e/pool",
            "test_pool_id": "e2e/test",
            "dataset": "fmnist-e2e",
            "class_names": list(FASHION_MNIST_CLASSES),
            "strategy": "margin",
            "initial_per_class": 1,
            "budget_per_round": 4,
            "num_rounds": 1,
            "seed": 3,
            "simulated_oracle": True,
            "student_config": {"steps": 5, "batch_size_labeled": 16, "batch_size_unlabeled": 32},
        },
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--target", stack.target("experiment")]) == 0
    out = capsys.readouterr().out
    assert "labels=   10" in out and "labels=   14" in out
    assert main(["status", "--target", stack.target("experiment")]) == 0
    out = capsys.readouterr().out
    assert "from-cli" in out and "FINISHED" in out
