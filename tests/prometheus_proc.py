"""A real Prometheus server (Debian package) on loopback for tests: start, query, stop."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from activekd.orchestration.local_services import free_port


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(found).exists():
        raise RuntimeError("prometheus not found: apt-get install prometheus (make system-deps)")
    return found


@contextmanager
def running_prometheus(
    workdir: Path, targets: dict[str, int], rule_files: list[str] | None = None
) -> Iterator[str]:
    """Prometheus scraping ``{job: metrics port}`` every second; yields its base URL."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files or [],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(workdir / "prometheus.log", "w") as log:
        proc = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 30
            while True:
                assert proc.poll() is None, (workdir / "prometheus.log").read_text()
                try:
                    with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                assert time.time() < deadline, "Prometheus not ready in 30 s"
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(20)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """Instant query through the HTTP API."""
    with urllib.request.urlopen(
        f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=10
    ) as resp:
        body = json.loads(resp.read().decode())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait_for(url: str, expr: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll until the query returns at least ``count`` series (or time runs out)."""
    deadline = time.time() + timeout
    while True:
        result = query(url, expr)
        if len(result) >= count or time.time() > deadline:
            return result
        time.sleep(0.5)
