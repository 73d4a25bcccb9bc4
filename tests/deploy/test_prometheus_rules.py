"""Recording and alerting rules: promtool syntax check, promtool unit tests, exported names."""

from __future__ import annotations

import subprocess

import yaml

from tests.deploy.conftest import DEPLOY, exported_metric_names, promql_metric_names

RULES = DEPLOY / "prometheus" / "rules" / "activekd.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "activekd.rules.test.yml"


def test_rules_pass_promtool_check(promtool: str) -> None:
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_unit_tests(promtool: str) -> None:
    """deploy/prometheus/tests: input series -> expected recorded values and firing alerts."""
    proc = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rules_use_only_exported_metrics() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    exported = exported_metric_names()
    for rule in rules:
        names = promql_metric_names(rule["expr"])
        assert names, rule["expr"]
        assert names <= exported | recorded, f"{rule.get('record') or rule['alert']}: {names}"
    # each recording rule follows level:metric:operations and is tested in RULE_TESTS
    tested = RULE_TESTS.read_text()
    for name in recorded:
        assert name.count(":") == 2, name
    untested = {n for n in recorded if f"expr: {n}\n" not in tested}
    assert not untested, f"recording rules without a promtool unit test: {untested}"
