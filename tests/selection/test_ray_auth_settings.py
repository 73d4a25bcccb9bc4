"""How ``RayCluster`` sets up token auth to connect to a remote cluster (a fake ``ray`` stands in
for the module: no cluster is reached; the real local instances are in test_ray_kcenter.py)."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from activekd.distributed import ray_kcenter
from activekd.distributed.ray_kcenter import RayCluster


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    fake = SimpleNamespace(init=lambda **kw: calls.append(kw), shutdown=lambda: None)
    monkeypatch.delitem(sys.modules, "ray", raising=False)  # as before Ray's first import
    monkeypatch.setattr(ray_kcenter, "_ray", lambda: fake)
    return calls


def test_unset_auth_mode_becomes_token_before_ray_is_imported(
    monkeypatch: pytest.MonkeyPatch, fake_ray: list[dict[str, Any]]
) -> None:
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    RayCluster("ray://head:10001").start()
    assert fake_ray == [{"address": "ray://head:10001", "log_to_driver": False}]
    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_another_auth_mode_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, fake_ray: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(RuntimeError, match="RAY_AUTH_MODE must be 'token'"):
        RayCluster("ray://head:10001").start()
    assert fake_ray == []
