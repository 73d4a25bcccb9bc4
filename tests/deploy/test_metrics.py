"""activekd.server.metrics: helpers -> a real /metrics HTTP scrape -> parsed samples."""

from __future__ import annotations

import math
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest

from activekd.server import metrics
from tests.deploy.conftest import Scrape, scrape_text


def _value(fams: dict, family: str, sample: str, **labels: str) -> float:
    """The value of the one sample matching ``labels`` (0.0 when absent, as Prometheus sees it)."""
    hits = [
        v
        for name, lab, v in fams.get(family, [])
        if name == sample and all(lab.get(k) == want for k, want in labels.items())
    ]
    assert len(hits) <= 1, f"{sample}{labels} matches {len(hits)} samples"
    return hits[0] if hits else 0.0


def _method() -> tuple[str, str]:
    name = "M" + uuid.uuid4().hex[:8]
    return f"/activekd.v1.SelectionService/{name}", name


def test_unary_rpc_counters_and_histogram(scrape: Scrape) -> None:
    full, name = _method()
    lab = {"grpc_service": "activekd.v1.SelectionService", "grpc_method": name}
    metrics.rpc_started(full, "unary")
    metrics.rpc_handled(full, "unary", "OK", 0.3)
    metrics.rpc_started(full, "unary")
    metrics.rpc_handled(full, "unary", "invalid_argument", 0.02)
    f = scrape()
    assert (
        _value(f, "grpc_server_started", "grpc_server_started_total", **lab, grpc_type="unary") == 2
    )
    handled = "grpc_server_handled_total"
    assert _value(f, "grpc_server_handled", handled, **lab, grpc_code="OK") == 1
    assert _value(f, "grpc_server_handled", handled, **lab, grpc_code="INVALID_ARGUMENT") == 1
    h = "grpc_server_handling_seconds"
    assert _value(f, h, h + "_count", **lab) == 2
    assert _value(f, h, h + "_sum", **lab) == pytest.approx(0.32)
    assert _value(f, h, h + "_bucket", **lab, le="0.025") == 1  # only the 0.02 s call
    assert _value(f, h, h + "_bucket", **lab, le="0.5") == 2
    # unary: one request per call; a response only on OK
    assert _value(f, "grpc_server_msg_received", "grpc_server_msg_received_total", **lab) == 2
    assert _value(f, "grpc_server_msg_sent", "grpc_server_msg_sent_total", **lab) == 1


def test_streaming_messages_unknown_codes_and_bad_types(scrape: Scrape) -> None:
    full, name = _method()
    metrics.register_rpc_method(full, "server_stream")
    f0 = scrape()
    started = "grpc_server_started_total"
    # registered series exist at zero before the first call
    assert any(
        lab.get("grpc_method") == name and v == 0.0 for _, lab, v in f0["grpc_server_started"]
    )
    metrics.rpc_started(full, "server_stream")
    metrics.rpc_msg_sent(full, "server_stream", 3)
    metrics.rpc_handled(full, "server_stream", "NOT_A_CODE", 1.0)
    f = scrape()
    assert _value(f, "grpc_server_started", started, grpc_method=name) == 1
    assert _value(f, "grpc_server_msg_sent", "grpc_server_msg_sent_total", grpc_method=name) == 3
    assert (
        _value(f, "grpc_server_handled", "grpc_server_handled_total", grpc_method=name,
               grpc_code="UNKNOWN") == 1
    )  # fmt: skip
    with pytest.raises(ValueError, match="rpc_type"):
        metrics.rpc_started(full, "duplex")
    metrics.rpc_started("not-a-method", "unary")
    assert (
        _value(scrape(), "grpc_server_started", started, grpc_service="unknown",
               grpc_method="not-a-method") >= 1
    )  # fmt: skip


def test_teacher_batch_metrics(scrape: Scrape) -> None:
    backend = "b" + uuid.uuid4().hex[:6]
    metrics.observe_teacher_batch(backend, "fashion-mnist", 64, queue_s=0.2, compute_s=3.0)
    metrics.observe_teacher_batch(backend, "fashion-mnist", 16, queue_s=0.0, compute_s=0.7)
    metrics.set_teacher_accuracy("fashion-mnist", 0.488)
    f = scrape()
    assert (
        _value(f, "activekd_teacher_images", "activekd_teacher_images_total", backend=backend,
               dataset="fashion-mnist") == 80
    )  # fmt: skip
    bs = "activekd_teacher_batch_size"
    assert _value(f, bs, bs + "_bucket", backend=backend, le="16.0") == 1
    assert _value(f, bs, bs + "_bucket", backend=backend, le="64.0") == 2
    assert _value(f, bs, bs + "_sum", backend=backend) == 80
    q = "activekd_teacher_queue_seconds"
    assert _value(f, q, q + "_sum", backend=backend) == pytest.approx(0.2)
    c = "activekd_teacher_compute_seconds"
    assert _value(f, c, c + "_sum", backend=backend) == pytest.approx(3.7)
    assert _value(f, c, c + "_bucket", backend=backend, le="1.0") == 1
    acc = "activekd_teacher_accuracy"
    assert _value(f, acc, acc, dataset="fashion-mnist") == pytest.approx(0.488)
    with pytest.raises(ValueError, match="queue_s"):
        metrics.observe_teacher_batch(backend, "x", 1, queue_s=-1.0, compute_s=0.1)
    with pytest.raises(ValueError, match="fraction"):
        metrics.set_teacher_accuracy("fashion-mnist", 48.8)  # a percentage, not a fraction


@pytest.mark.parametrize(
    ("n", "label"),
    [(1, "1e3"), (1000, "1e3"), (1001, "1e4"), (70_000, "1e5"), (10**6, "1e6"), (10**9, "1e7")],
)
def test_pool_size_bucket(n: int, label: str) -> None:
    assert metrics.pool_size_bucket(n) == label


def test_selection_metrics(scrape: Scrape) -> None:
    strategy = "s" + uuid.uuid4().hex[:6]
    metrics.observe_selection(strategy, 60_000, 1.5, 10)
    metrics.observe_selection(strategy, 500, 0.01, 5)
    f = scrape()
    d = "activekd_selection_duration_seconds"
    assert _value(f, d, d + "_count", strategy=strategy, pool_size="1e5") == 1
    assert _value(f, d, d + "_sum", strategy=strategy, pool_size="1e5") == pytest.approx(1.5)
    assert _value(f, d, d + "_count", strategy=strategy, pool_size="1e3") == 1
    assert _value(f, d, d + "_bucket", strategy=strategy, pool_size="1e5", le="2.5") == 1
    assert _value(f, d, d + "_bucket", strategy=strategy, pool_size="1e5", le="1.0") == 0
    sel = "activekd_selected_items"
    assert _value(f, sel, sel + "_total", strategy=strategy) == 15


def test_training_round_metrics(scrape: Scrape) -> None:
    dataset = "d" + uuid.uuid4().hex[:6]
    metrics.observe_training_round(dataset, 42.0, 300, {"ce": 0.9, "kd": 0.4, "total": 1.3})
    metrics.observe_training_round(dataset, 18.0, 100, {"ce": 0.5, "kd": float("inf")})
    f = scrape()
    r = "activekd_trainer_round_duration_seconds"
    assert _value(f, r, r + "_count", dataset=dataset) == 2
    assert _value(f, r, r + "_sum", dataset=dataset) == pytest.approx(60.0)
    assert _value(f, r, r + "_bucket", dataset=dataset, le="30.0") == 1
    assert (
        _value(f, "activekd_trainer_steps", "activekd_trainer_steps_total", dataset=dataset) == 400
    )
    loss = "activekd_trainer_loss"
    assert _value(f, loss, loss, kind="ce") == pytest.approx(0.5)  # last value wins
    assert math.isnan(_value(f, loss, loss, kind="kd"))  # a diverged loss stays visible
    assert _value(f, loss, loss, kind="total") == pytest.approx(1.3)


def test_round_result_and_experiment_cap(scrape: Scrape, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(metrics.MAX_EXPERIMENTS_ENV, "3")
    tag = uuid.uuid4().hex[:6]
    names = [f"exp-{tag}-{i}" for i in range(5)]
    rounds = "activekd_rounds_completed_total"
    before = _value(scrape(), "activekd_rounds_completed", rounds, strategy="pcoreset")
    evicted: list[str] = []
    for i, exp in enumerate(names):
        evicted += metrics.record_round_result(exp, "pcoreset", "fashion-mnist", 10 * (i + 1), 0.5)
    metrics.record_round_result(names[2], "pcoreset", "fashion-mnist", 70, 0.61)
    f = scrape()
    exps = {lab["experiment"] for _, lab, _ in f["activekd_labeled_items"]}
    assert exps == set(names[2:]), "the cap of 3 keeps the 3 most recently updated experiments"
    assert {lab["experiment"] for _, lab, _ in f["activekd_student_accuracy"]} == exps
    assert set(names[:2]) <= set(evicted)
    assert _value(f, "activekd_labeled_items", "activekd_labeled_items", experiment=names[2]) == 70
    acc = "activekd_student_accuracy"
    assert _value(f, acc, acc, experiment=names[2]) == pytest.approx(0.61)
    assert _value(f, "activekd_rounds_completed", rounds, strategy="pcoreset") == before + 6
    # one accuracy point per labeled-set size: names[2] has two (30 and 70 labels)
    eff = "activekd_label_efficiency_accuracy"
    points = {(lab["experiment"], lab["labeled"]): v for _, lab, v in f[eff]}
    assert {e for e, _ in points} == exps
    assert points[(names[2], "30")] == pytest.approx(0.5)
    assert points[(names[2], "70")] == pytest.approx(0.61)

    # names[3] is now the least recently updated: a new experiment evicts it, not names[2]
    assert names[3] in metrics.record_round_result(
        f"exp-{tag}-new", "random", "fashion-mnist", 5, 0.2
    )
    f = scrape()
    exps = {lab["experiment"] for _, lab, _ in f["activekd_labeled_items"]}
    assert exps == {names[2], names[4], f"exp-{tag}-new"}
    assert {lab["experiment"] for _, lab, _ in f[eff]} == exps

    with pytest.raises(ValueError, match="fraction"):
        metrics.record_round_result(names[4], "pcoreset", "fashion-mnist", 10, 1.5)
    with pytest.raises(ValueError, match="experiment"):
        metrics.record_round_result("", "pcoreset", "fashion-mnist", 10, 0.5)
    monkeypatch.setenv(metrics.MAX_EXPERIMENTS_ENV, "zero")
    with pytest.raises(ValueError, match=metrics.MAX_EXPERIMENTS_ENV):
        metrics.record_round_result(names[4], "pcoreset", "fashion-mnist", 10, 0.5)


def test_stop_signal_gauges_follow_the_experiment_cap(
    scrape: Scrape, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(metrics.MAX_EXPERIMENTS_ENV, "2")
    tag = uuid.uuid4().hex[:6]
    a, b, c = (f"stop-{tag}-{i}" for i in range(3))
    for exp in (a, b):
        metrics.record_round_result(exp, "typiclust", "fashion-mnist", 20, 0.6)
    metrics.record_stop_signal(a, "typiclust", "fashion-mnist", 0.93, 0.71)
    metrics.record_stop_signal(b, "typiclust", "fashion-mnist", None, 0.5)  # round 0: no stability
    f = scrape()
    stab, agree = "activekd_stop_stability", "activekd_stop_teacher_agreement"
    assert _value(f, stab, stab, experiment=a) == pytest.approx(0.93)
    assert _value(f, agree, agree, experiment=a) == pytest.approx(0.71)
    assert not [lab for _, lab, _ in f.get(stab, []) if lab["experiment"] == b]
    metrics.record_round_result(c, "typiclust", "fashion-mnist", 20, 0.6)  # evicts a
    f = scrape()
    assert not [lab for _, lab, _ in f.get(stab, []) if lab["experiment"] == a]
    assert not [lab for _, lab, _ in f.get(agree, []) if lab["experiment"] == a]
    with pytest.raises(ValueError, match="fraction"):
        metrics.record_stop_signal(b, "typiclust", "fashion-mnist", 1.5, None)


def test_points_per_experiment_are_capped(scrape: Scrape, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "MAX_POINTS_PER_EXPERIMENT", 3)
    exp = "pts-" + uuid.uuid4().hex[:6]
    for labeled in (10, 20, 30, 40, 50):
        metrics.record_round_result(exp, "pcoreset", "fashion-mnist", labeled, labeled / 100)
    eff = scrape()["activekd_label_efficiency_accuracy"]
    kept = sorted(int(lab["labeled"]) for _, lab, _ in eff if lab["experiment"] == exp)
    assert kept == [30, 40, 50]  # the oldest points go first


def test_label_values_are_bounded() -> None:
    guard = metrics._LabelGuard(3)
    assert [guard("strategy", s) for s in ("a", "b", "c", "d", "a", "")] == [
        "a", "b", "c", "other", "a", "other",
    ]  # fmt: skip
    assert guard("dataset", "d1") == "d1"  # each label has its own budget


def test_exposition_passes_promtool_lint(metrics_port: int, promtool: str) -> None:
    """`promtool check metrics` enforces Prometheus naming (units, _total, no _count gauges)."""
    metrics.record_round_result(
        "lint-" + uuid.uuid4().hex[:6], "pcoreset", "fashion-mnist", 10, 0.3
    )
    metrics.observe_teacher_batch("label-map", "fashion-mnist", 8, 0.0, 0.1)
    text = scrape_text(metrics_port)
    assert "activekd_student_accuracy{" in text
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_metrics_server_start_and_stop() -> None:
    port = metrics.start_metrics_server(0, host="127.0.0.1")
    assert port > 0
    assert "grpc_server_started_total" in scrape_text(port)
    metrics.stop_metrics_server(port)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    metrics.stop_metrics_server(port)  # stopping twice is harmless
