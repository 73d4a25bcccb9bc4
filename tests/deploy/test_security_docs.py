"""docs/security.md stays true: its role table is the one the auth interceptor enforces, it
documents every setting the deploy files and the code use, and the id pattern it shows is the
code's."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

import yaml

from tests.deploy.conftest import K8S, REPO

DOC = REPO / "docs" / "security.md"
ROLE_ROW = re.compile(
    r"^\|\s*(\w+Service)\s*\|\s*(\w+)\s*\|\s*(reader|writer|admin)(?:; admin with `([^`]+)`)?\s*\|",
    re.M,
)


def _doc() -> str:
    return DOC.read_text()


def test_role_table_is_the_enforced_one() -> None:
    from activekd.server.auth import METHOD_RULES, Role

    documented = {
        f"/activekd.v1.{svc}/{rpc}": (role, bool(escalation))
        for svc, rpc, role, escalation in ROLE_ROW.findall(_doc())
    }
    enforced = {
        method: (rule.role.label, rule.admin_if is not None and rule.role < Role.ADMIN)
        for method, rule in METHOD_RULES.items()
    }
    assert documented == enforced


def test_role_table_covers_every_rpc() -> None:
    from activekd.v1 import experiment_pb2, selection_pb2, teacher_pb2, trainer_pb2

    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (experiment_pb2, selection_pb2, teacher_pb2, trainer_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    documented = {f"/activekd.v1.{s}/{r}" for s, r, _, _ in ROLE_ROW.findall(_doc())}
    assert documented == methods


def test_id_pattern_is_the_code_s() -> None:
    from activekd.ids import ID_SEGMENT

    assert f"```\n{ID_SEGMENT}\n```" in _doc()


def _deploy_env_names() -> set[str]:
    names: set[str] = set()
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        names |= set(service.get("environment", {}) or {})
    for path in K8S.rglob("*.yaml"):
        names |= set(re.findall(r"\b(ACTIVEKD_[A-Z0-9_]+)\b", path.read_text()))
    return {n for n in names if n.startswith("ACTIVEKD_")}


def test_every_setting_is_documented() -> None:
    """Each ``ACTIVEKD_*`` name the deploy files set, each security/limit field of
    ServerConfig and each client credential setting is in docs/security.md or
    docs/architecture.md (the annotation backend's: docs/annotation.md)."""
    from activekd.server.config import ServerConfig
    from activekd.wire.channel import CLIENT_ENV

    docs = _doc() + "".join(
        (REPO / "docs" / name).read_text() for name in ("architecture.md", "annotation.md")
    )
    security = _doc()
    config_fields = {f.name for f in fields(ServerConfig)}
    security_fields = {
        "auth", "auth_tokens_file", "auth_tokens", "reflection", "tls_cert_file", "tls_key_file",
        "tls_client_ca_file", "health_port", "ready_interval_seconds", "max_concurrent_rpcs",
        "max_concurrent_per_method", "max_pool_rows", "max_pool_bytes", "max_budget",
        "data_roots", "source_schemes",
    }  # fmt: skip
    assert security_fields <= config_fields, "docs name settings the code does not have"
    wanted: dict[str, Any] = {f"ACTIVEKD_{f.upper()}": security for f in security_fields}
    wanted |= {name: security for name in CLIENT_ENV.values()}
    wanted |= {
        "ACTIVEKD_REDIS_PASSWORD_FILE": security,
        "ACTIVEKD_REDIS_CA_FILE": security,
    }
    wanted |= {name: docs for name in _deploy_env_names()}
    for name, text in wanted.items():
        if name.endswith("_TARGET") or name.startswith("ACTIVEKD_TEACHER_"):
            continue  # documented as families in architecture.md
        assert f"`{name}`" in text, f"{name} is not documented"
