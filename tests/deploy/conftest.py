"""Fixtures for the deploy tests: repo paths, a live metrics endpoint, rendered manifests, tools."""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import RedisProcess, ServiceProcess, redis_server_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
VENV_BIN = Path(sys.executable).parent

Scrape = Callable[[], dict[str, list[tuple[str, dict[str, str], float]]]]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def metrics_port() -> Iterator[int]:
    """The real ``/metrics`` HTTP server of activekd.server.metrics on a free loopback port."""
    from activekd.server import metrics

    port = metrics.start_metrics_server(0, host="127.0.0.1")
    try:
        yield port
    finally:
        metrics.stop_metrics_server(port)


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


@pytest.fixture
def scrape(metrics_port: int) -> Scrape:
    """GET /metrics and parse it: family name -> [(sample name, labels, value)]."""

    def _scrape() -> dict[str, list[tuple[str, dict[str, str], float]]]:
        out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(scrape_text(metrics_port)):
            out[family.name] = [(s.name, dict(s.labels), float(s.value)) for s in family.samples]
        return out

    return _scrape


#: The liveness health service every service serves (SERVING until shutdown, Redis or not).
LIVENESS_SERVICE = "activekd.liveness"


@contextlib.contextmanager
def run_redis_script(
    script: str, secret_files: dict[str, str], password: str, tmp: Path
) -> Iterator[redis.Redis]:
    """Run a deploy file's Redis start script (``sh -c <script>``) with the local redis-server:
    the secret paths it reads are mapped to files holding ``password``, ``/data`` to ``tmp``, and
    a unix socket is added (no TCP port). ``docker-entrypoint.sh`` (the image's) just execs.
    Yields a client without a password; stops the server afterwards."""
    tmp.mkdir(parents=True, exist_ok=True)
    for path in secret_files:
        script = script.replace(path, str(tmp / Path(path).name))
        (tmp / Path(path).name).write_text(password)
    sock = tmp / "redis.sock"
    script = script.replace("--dir /data", f"--dir {tmp}")
    script = script.replace(
        "redis-server ",
        f"{redis_server_binary()} --port 0 --unixsocket {sock} --unixsocketperm 700 ",
        1,
    )
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    entry = bindir / "docker-entrypoint.sh"
    entry.write_text('#!/bin/sh\nexec "$@"\n')
    entry.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"the Redis script did not start:\n{script}\n{out}")
            time.sleep(0.05)
        yield redis.Redis(unix_socket_path=str(sock))
    finally:
        proc.terminate()
        proc.wait(10)


def tool(name: str) -> str:
    """A command-line tool from the venv or PATH; fails (not skips) when it is missing."""
    for candidate in (VENV_BIN / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail(f"{name} not found: `make setup` installs it")


@pytest.fixture(scope="session")
def selection_process(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """``python -m activekd_services.selection`` as a real subprocess on loopback ports."""
    store = tmp_path_factory.mktemp("store")
    svc = ServiceProcess("selection", redis_server.url, str(store)).start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def kubectl() -> str:
    return tool("kubectl")


@pytest.fixture(scope="session")
def promtool() -> str:
    return tool("promtool")


@pytest.fixture(scope="session")
def kustomize_build(kubectl: str) -> Callable[[str], list[dict[str, Any]]]:
    """Render a kustomization under deploy/k8s (cached per path) into a list of objects."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def build(rel: str) -> list[dict[str, Any]]:
        if rel not in cache:
            proc = subprocess.run(
                [kubectl, "kustomize", str(K8S / rel)], capture_output=True, text=True, timeout=60
            )
            assert proc.returncode == 0, f"kubectl kustomize {rel} failed:\n{proc.stderr}"
            cache[rel] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return cache[rel]

    return build


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="session")
def architecture_services() -> dict[str, dict[str, str]]:
    """docs/architecture.md's service table: name -> grpc_service, ports, entry point, and the
    plaintext health-only port (the optional last column; "" when a row has none)."""
    text = (REPO / "docs" / "architecture.md").read_text()
    rows: dict[str, dict[str, str]] = {}
    pattern = re.compile(
        r"^\|\s*(\w+)\s*\|\s*(activekd\.v1\.\w+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*`([^`]+)`\s*\|"
        r"(?:\s*(\d+)\s*\|)?",
        re.M,
    )
    for m in pattern.finditer(text):
        rows[m.group(1)] = {
            "grpc_service": m.group(2),
            "grpc_port": m.group(3),
            "metrics_port": m.group(4),
            "entry": m.group(5),
            "health_port": m.group(6) or "",
        }
    assert len(rows) >= 4, f"could not parse the service table of docs/architecture.md: {rows}"
    return rows


_LITERAL = re.compile(r"""["'](ACTIVEKD_[A-Z0-9_]*[A-Z0-9])["']""")
_PREFIX = re.compile(r"""["'](ACTIVEKD_[A-Z0-9_]+_)["']""")


def _dataclass_fields(tree: ast.Module) -> set[str]:
    """Field names of the @dataclass classes defined in a module."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            "dataclass" in ast.unparse(d) for d in node.decorator_list
        ):
            names |= {
                s.target.id
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            }
    return names


@pytest.fixture(scope="session")
def library_env_names() -> set[str]:
    """``ACTIVEKD_*`` names read anywhere in src/ and services/, found by reading the code:
    literal names (``"ACTIVEKD_CACHE_DIR"``), ``ServerConfig`` fields (read as
    ``ACTIVEKD_<FIELD>``) and prefix families (a literal ``"ACTIVEKD_TEACHER_"`` next to a
    dataclass means ``ACTIVEKD_TEACHER_<FIELD>`` for each of its fields)."""
    from activekd.server.config import ServerConfig

    names = {f"ACTIVEKD_{f.name.upper()}" for f in fields(ServerConfig)} - {
        "ACTIVEKD_SERVICE",
        "ACTIVEKD_EXTRA",
    }
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "services").rglob("*.py")]:
        text = path.read_text()
        names |= set(_LITERAL.findall(text))
        prefixes = set(_PREFIX.findall(text))
        if prefixes:
            for field_name in _dataclass_fields(ast.parse(text)):
                names |= {p + field_name.upper() for p in prefixes}
    return names


@pytest.fixture(scope="session")
def service_env_names(library_env_names: set[str]) -> Callable[[str], set[str]]:
    """All ``ACTIVEKD_*`` names one service reads: its entry point's flags (each flag is also an
    env var, docs/architecture.md), learnt by running ``python -m <entry> --help``, plus
    :func:`library_env_names`. Fails when the entry point does not exist or does not start."""
    cache: dict[str, set[str]] = {}

    def names(module: str) -> set[str]:
        if module not in cache:
            proc = subprocess.run(
                [sys.executable, "-m", module, "--help"],
                capture_output=True,
                text=True,
                timeout=180,
                cwd=REPO,
            )
            assert proc.returncode == 0, f"`python -m {module} --help` failed:\n{proc.stderr}"
            flags = set(re.findall(r"--([a-z][a-z0-9-]*)", proc.stdout)) - {"help"}
            assert flags, f"no flags in `python -m {module} --help`:\n{proc.stdout}"
            cache[module] = {"ACTIVEKD_" + f.upper().replace("-", "_") for f in flags}
        return cache[module] | library_env_names

    return names


# Environment variables of other software that the deploy files may set (typos fail the tests).
THIRD_PARTY_ENV = frozenset(
    {
        "HF_HUB_OFFLINE",
        "HF_HOME",
        "TORCH_HOME",
        "XDG_CACHE_HOME",
        "MPLCONFIGDIR",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "LD_PRELOAD",  # the dynamic loader: jemalloc (ACTIVEKD_MALLOC, server/allocator.py)
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "OMP_NUM_THREADS",
        "PATH",
    }
)


def exported_metric_names() -> set[str]:
    """Every metric/sample name the activekd metrics module registers (+ Prometheus' ``up``)."""
    from activekd.server import metrics

    return metrics.metric_names() | {"up"}


_PROMQL_DROP = [
    re.compile(r'"(?:[^"\\]|\\.)*"'),  # strings (label values)
    re.compile(r"\{[^}]*\}"),  # label matchers
    re.compile(r"\[[^\]]*\]"),  # range selectors
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),
    re.compile(r"\$\{?\w+\}?"),  # Grafana variables
    re.compile(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"),  # numbers
]
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                 "or", "unless", "offset", "inf", "nan", "le"}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (identifiers that are not functions/keywords)."""
    for pattern in _PROMQL_DROP:
        expr = pattern.sub(" ", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        word = m.group(0)
        if rest.startswith("(") or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names
