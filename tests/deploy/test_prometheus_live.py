"""A real Prometheus server (Debian package, /usr/bin/prometheus) on loopback scrapes the metrics
endpoint of this process and of a running selection service, evaluates the recording rules,
and answers the dashboard's queries through its HTTP API."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from activekd.server import metrics
from tests.deploy.conftest import DEPLOY
from tests.procs import ServiceProcess
from tests.prometheus_proc import running_prometheus

TAG = uuid.uuid4().hex[:6]
# (experiment, strategy) -> [(labeled, accuracy)] per round
CURVES = {
    (f"{TAG}-pc", "pcoreset"): [(10, 0.30), (20, 0.45), (30, 0.52)],
    (f"{TAG}-rand", "random"): [(10, 0.28), (20, 0.36), (30, 0.41)],
}
DATASET = f"fmnist-{TAG}"

Query = Callable[[str], list[dict[str, Any]]]


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.loads(resp.read().decode()))


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, metrics_port: int, selection_process: ServiceProcess
) -> Iterator[str]:
    """Prometheus scraping every second: this process as job activekd-experiment (label
    efficiency recorded in-process) and the selection subprocess as activekd-selection."""
    targets = {
        "activekd-experiment": metrics_port,
        "activekd-selection": selection_process.metrics_port,
    }
    rules = [str(DEPLOY / "prometheus" / "rules" / "activekd.rules.yml")]
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), targets, rules) as url:
        yield url


@pytest.fixture(scope="module")
def query(prometheus: str) -> Query:
    def run(expr: str) -> list[dict[str, Any]]:
        body = _get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    return run


def _wait_for(query: Query, expr: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.time() + timeout
    while True:
        result = query(expr)
        if len(result) >= count or time.time() > deadline:
            return result
        time.sleep(0.5)


@pytest.fixture(scope="module")
def recorded() -> None:
    """Record one tiny two-strategy experiment plus one of everything the dashboard shows."""
    for (experiment, strategy), curve in CURVES.items():
        for labeled, accuracy in curve:
            metrics.record_round_result(experiment, strategy, DATASET, labeled, accuracy)
    metrics.set_teacher_accuracy(DATASET, 0.488)
    metrics.observe_teacher_batch("label-map", DATASET, 64, queue_s=0.05, compute_s=1.9)
    metrics.observe_selection("pcoreset", 60_000, 1.2, 10)
    metrics.observe_training_round(DATASET, 35.0, 120, {"ce": 0.8, "kd": 0.3})
    method = "/activekd.v1.ExperimentService/RunRound"
    for code in ("OK", "INTERNAL"):
        metrics.rpc_started(method, "unary")
        metrics.rpc_handled(method, "unary", code, 0.2)


def test_label_efficiency_through_prometheus(recorded: None, query: Query) -> None:
    points = _wait_for(query, f'activekd_label_efficiency_accuracy{{dataset="{DATASET}"}}', 6)
    got = {
        (r["metric"]["experiment"], r["metric"]["strategy"], int(r["metric"]["labeled"])): float(
            r["value"][1]
        )
        for r in points
    }
    want = {
        (exp, strategy, labeled): acc
        for (exp, strategy), curve in CURVES.items()
        for labeled, acc in curve
    }
    assert got == pytest.approx(want)
    assert all(r["metric"]["job"] == "activekd-experiment" for r in points)
    latest = query(f'activekd_student_accuracy{{experiment="{TAG}-pc"}}')
    assert [float(r["value"][1]) for r in latest] == pytest.approx([0.52])
    labeled = query(f'activekd_labeled_items{{experiment="{TAG}-pc"}}')
    assert [float(r["value"][1]) for r in labeled] == [30.0]
    # the per-strategy curve the dashboard plots: PCoreSet above random at every budget
    mean = query(
        f'avg by (strategy, labeled) (activekd_label_efficiency_accuracy{{dataset="{DATASET}"}})'
    )
    by = {(r["metric"]["strategy"], r["metric"]["labeled"]): float(r["value"][1]) for r in mean}
    assert all(by[("pcoreset", n)] > by[("random", n)] for n in ("10", "20", "30"))


def test_running_selection_service_through_prometheus(
    selection_process: ServiceProcess, query: Query
) -> None:
    with grpc.insecure_channel(selection_process.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(service="activekd.v1.SelectionService"))
    expr = (
        'grpc_server_handled_total{job="activekd-selection", grpc_service="grpc.health.v1.Health",'
        ' grpc_method="Check", grpc_code="OK"} >= 1'
    )
    assert _wait_for(query, expr, 1), "the health RPC never reached Prometheus"
    (up,) = query('up{job="activekd-selection"}')
    assert up["value"][1] == "1"


def _substitute(expr: str) -> str:
    """Grafana's variables as Grafana would expand them for 'All' over a short range."""
    expr = expr.replace("$__rate_interval", "10s").replace("$__range", "5m")
    for var in ("experiment", "strategy", "dataset", "job"):
        expr = expr.replace(f"${var}", ".*")
    assert "$" not in expr, expr
    return expr


def test_every_dashboard_query_returns_data(recorded: None, query: Query, prometheus: str) -> None:
    """Each panel query is valid PromQL for a real Prometheus and finds series once the
    services' metrics and the recording rules exist (Grafana's rendering is not exercised)."""
    dashboard = json.loads((DEPLOY / "grafana/dashboards/activekd.json").read_text())
    exprs = {
        f"{p['title']} [{t['refId']}]": _substitute(t["expr"])
        for p in dashboard["panels"]
        if p["type"] != "row"
        for t in p["targets"]
    }
    deadline = time.time() + 45
    empty = dict(exprs)
    while empty and time.time() < deadline:
        empty = {name: e for name, e in empty.items() if not query(e)}
        if empty:
            time.sleep(1)
    assert not empty, f"queries with no data: {json.dumps(empty, indent=1)}"
    # variable queries: label_values(selector, label) through the series API
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        selector, label = var["query"]["query"][len("label_values(") : -1].rsplit(",", 1)
        params = urllib.parse.urlencode({"match[]": _substitute(selector)})
        body = _get(f"{prometheus}/api/v1/label/{label.strip()}/values?{params}")
        assert body["status"] == "success" and body["data"], var["name"]
        if var["name"] == "strategy":
            assert {"pcoreset", "random"} <= set(body["data"])
        if var["name"] == "experiment":
            assert {f"{TAG}-pc", f"{TAG}-rand"} <= set(body["data"])
