"""Grafana dashboard JSON: structure, variables, and every metric it queries is really exported
(by the metrics module's registry, and by a running service's /metrics), or recorded by a rule
over exported metrics."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import DEPLOY, exported_metric_names, promql_metric_names
from tests.procs import ServiceProcess

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "activekd.json"
RULES = DEPLOY / "prometheus" / "rules" / "activekd.rules.yml"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL the dashboard runs: panel targets and variable queries' metric selectors."""
    exprs = [t["expr"] for p in _panels(dashboard) for t in p["targets"]]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["query"]["query"])
            assert m, var["query"]["query"]
            exprs.append(m.group(1))
    return exprs


def _recorded() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}


def _names_behind(dashboard: dict[str, Any]) -> set[str]:
    """Metric names the dashboard needs from services (recording rules expanded)."""
    recorded, needed = _recorded(), set()
    for expr in _queries(dashboard):
        for name in promql_metric_names(expr):
            needed |= promql_metric_names(recorded[name]) if name in recorded else {name}
    return needed


def test_structure(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "activekd-overview"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, f"panel {p['title']!r} overlaps another"
        cells |= area
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            assert {u for u in used if not u.startswith("__")} <= set(variables), target["expr"]
            assert set(target["expr"]).isdisjoint("\n\t"), "one-line expressions"
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_label_efficiency_panels(dashboard: dict[str, Any]) -> None:
    xy = [p for p in _panels(dashboard) if p["type"] == "xychart"]
    assert len(xy) == 2
    for panel in xy:
        (target,) = panel["targets"]
        assert "activekd_label_efficiency_accuracy" in target["expr"]
        assert target["format"] == "table" and target["instant"] is True
        ids = [t["id"] for t in panel["transformations"]]
        assert ids == ["convertFieldType", "organize", "sortBy", "partitionByValues"]
        conversion = panel["transformations"][0]["options"]["conversions"][0]
        assert conversion == {"targetField": "labeled", "destinationType": "number"}
        grouped = re.search(r"by \(([^)]*)\)", target["expr"])
        assert grouped is not None
        partition = panel["transformations"][3]["options"]["fields"]
        assert {s.strip() for s in grouped.group(1).split(",")} == {*partition, "labeled"}
    over_time = next(p for p in _panels(dashboard) if "over time" in p["title"])
    exprs = " ".join(t["expr"] for t in over_time["targets"])
    assert "activekd_student_accuracy" in exprs and "activekd_labeled_items" in exprs


def test_covers_rpc_teacher_selection_and_training(dashboard: dict[str, Any]) -> None:
    needed = _names_behind(dashboard)
    for name in (
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "activekd_teacher_images_total",
        "activekd_teacher_queue_seconds_bucket",
        "activekd_selection_duration_seconds_sum",
        "activekd_trainer_round_duration_seconds_sum",
        "activekd_teacher_accuracy",
    ):
        assert name in needed, f"no panel shows {name}"


def test_every_queried_metric_is_registered(dashboard: dict[str, Any]) -> None:
    missing = _names_behind(dashboard) - exported_metric_names()
    assert not missing, f"the dashboard queries metrics nobody exports: {sorted(missing)}"


def test_the_parser_finds_unknown_names() -> None:
    """Guard for the check above: a typo in a query is reported, keywords are not."""
    names = promql_metric_names(
        "histogram_quantile(0.95, sum by (le) "
        '(rate(grpc_server_handlng_seconds_bucket{a="b"}[5m])))'
    )
    assert names == {"grpc_server_handlng_seconds_bucket"}
    assert not names <= exported_metric_names()


def _live_names(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
        names.update(s.name for s in family.samples)
    return names


def test_a_running_service_exports_what_the_dashboard_queries(
    dashboard: dict[str, Any], selection_process: ServiceProcess
) -> None:
    """Scrape `python -m activekd_services.selection` for real; a health RPC must show up in
    grpc_server_handled_total (interceptor -> metrics -> /metrics)."""
    with grpc.insecure_channel(selection_process.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="activekd.v1.SelectionService"), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    live = _live_names(selection_process.metrics_port)
    missing = _names_behind(dashboard) - live - {"up"}
    assert not missing, f"the running selection service does not export {sorted(missing)}"
    with urllib.request.urlopen(
        f"http://127.0.0.1:{selection_process.metrics_port}/metrics", timeout=10
    ) as resp:
        families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    handled = [
        s for s in families["grpc_server_handled"].samples
        if s.labels.get("grpc_service") == "grpc.health.v1.Health"
        and s.labels.get("grpc_method") == "Check"
    ]  # fmt: skip
    assert handled and handled[0].labels["grpc_code"] == "OK" and handled[0].value >= 1
    assert handled[0].labels["grpc_type"] == "unary"


def test_k8s_copy_is_identical() -> None:
    copy = DEPLOY / "k8s/components/monitoring/grafana-dashboard-activekd.json"
    assert Path(copy).read_text() == DASHBOARD.read_text()
