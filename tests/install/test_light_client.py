"""``pip install activekd`` (no extras) in a fresh virtualenv: the light client calls a real
selection service, stays under 100 MB installed, and a module whose extra is missing fails with one
line naming it.

The venv is built once per module from a copy of the source tree (so the build leaves nothing in
the checkout), with the same pinned versions CI uses (``-c constraints.txt``). The selection service
runs from the project's own venv, as it would on another machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from activekd.extras import EXTRA_OF_PACKAGE, MissingExtraError
from activekd.selection import select_batch
from tests.procs import RedisProcess, ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "constraints.txt", "src", "services")
LIMIT_BYTES = 100 * 1000 * 1000  # "under 100 MB installed"
#: what the light install may bring: the base dependencies and what they pull in themselves
ALLOWED = {"activekd", "numpy", "grpcio", "grpcio-health-checking", "protobuf", "typing-extensions"}
#: what the venv itself starts with (not installed by `pip install activekd`)
VENV_SEED = {"pip", "setuptools"}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _copy_sources(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(src, dest / name)
    return dest


class LightVenv:
    """A virtualenv holding only ``pip install activekd`` and what it depends on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.python = path / "bin" / "python"

    def run(self, code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.path,  # not the checkout: nothing may import from the source tree
        )


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> LightVenv:
    base = tmp_path_factory.mktemp("light")
    src = _copy_sources(base / "src-copy")
    venv = LightVenv(base / "venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv.path)], check=True, timeout=120)
    log = base / "pip.log"
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            [
                str(venv.python),
                "-m",
                "pip",
                "install",
                "-c",
                str(src / "constraints.txt"),
                str(src),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    tail = "\n".join(log.read_text().splitlines()[-30:])
    assert proc.returncode == 0, f"pip install activekd failed:\n{tail}"
    print(f"light install took {time.monotonic() - start:.1f} s")
    return venv


def _installed(venv: LightVenv) -> dict[str, int]:
    """Bytes on disk (apparent size) of every distribution in the venv, by normalized name."""
    proc = venv.run(
        """
        import json, importlib.metadata as md
        sizes = {}
        for dist in md.distributions():
            total = 0
            for f in dist.files or ():
                p = f.locate()
                if p.is_file():
                    total += p.stat().st_size
            sizes[dist.metadata["Name"]] = total
        print(json.dumps(sizes))
        """
    )
    assert proc.returncode == 0, proc.stderr
    return {_norm(k): v for k, v in json.loads(proc.stdout).items()}


def test_light_install_brings_only_the_base_dependencies_and_stays_under_100_mb(
    light_venv: LightVenv,
) -> None:
    sizes = _installed(light_venv)
    installed = set(sizes) - VENV_SEED
    assert installed <= ALLOWED, f"the light client pulled in {sorted(installed - ALLOWED)}"
    assert {"activekd", "numpy", "grpcio", "protobuf"} <= installed
    total = sum(sizes[name] for name in installed)
    # the same measured another way: everything under site-packages but the venv's own pip
    site = next(light_venv.path.glob("lib/python*/site-packages"))
    on_disk = sum(
        p.stat().st_size
        for p in site.rglob("*")
        if p.is_file()
        and not p.relative_to(site)
        .parts[0]
        .startswith(
            ("pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence")
        )
    )
    print(
        f"light install: {total / 1e6:.1f} MB by RECORD, {on_disk / 1e6:.1f} MB under site-packages; "
        + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]))
    )
    assert total < LIMIT_BYTES, f"light install is {total / 1e6:.1f} MB (limit 100 MB)"
    assert on_disk < LIMIT_BYTES, f"site-packages holds {on_disk / 1e6:.1f} MB (limit 100 MB)"


@pytest.fixture(scope="module")
def selection_service(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    store = tmp_path_factory.mktemp("light-store")
    svc = ServiceProcess("selection", redis_server.url, str(store)).start()
    try:
        yield svc
    finally:
        svc.stop()


def test_light_client_lists_strategies_and_selects_on_a_running_service(
    light_venv: LightVenv, selection_service: ServiceProcess, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(10), size=400).astype(np.float32)
    np.save(tmp_path / "probs.npy", probs)
    labeled_rows = [3, 17, 250]
    proc = light_venv.run(
        f"""
        import json, sys
        import numpy as np
        from activekd.client import SelectionClient
        probs = np.load({str(tmp_path / "probs.npy")!r})
        ids = [f"item-{{i}}" for i in range(len(probs))]
        with SelectionClient({selection_service.target!r}, timeout=60) as sel:
            names = [s.name for s in sel.list_strategies()]
            sel.upload_pool("light/pool", item_ids=ids, arrays={{"probs": probs}}, overwrite=True)
            res = sel.select_batch("pcoreset", 8, pool_id="light/pool",
                                   labeled=[ids[r] for r in {labeled_rows!r}], seed=0)
        heavy = sorted(m for m in ("torch", "faiss", "redis", "yaml", "rich", "matplotlib",
                                    "prometheus_client", "grpc_reflection") if m in sys.modules)
        print(json.dumps({{"strategies": names, "picked": list(res.item_ids), "heavy": heavy}}))
        """
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"pcoreset", "random", "coreset"} <= set(out["strategies"])
    assert out["heavy"] == [], f"the light client imported {out['heavy']}"
    # the service's picks are the library's picks on the same matrix
    expected = select_batch(
        "pcoreset", 8, probs=probs, labeled=np.asarray(labeled_rows), seed=0
    ).indices
    assert out["picked"] == [f"item-{i}" for i in expected]


@pytest.mark.parametrize(
    ("module", "extra", "missing"),
    [
        ("activekd.student:train_round", "trainer", "torch"),
        ("activekd.student.model", "trainer", "torch"),
        ("activekd.teacher.open_clip_teacher", "teacher", "torch"),
        ("activekd.store", "server", "redis"),
        ("activekd.state.experiments", "server", "redis"),
        ("activekd.server.bootstrap", "server", "grpc_reflection"),
        ("activekd_services.selection.servicer", "selection", "prometheus_client"),
        ("activekd_services.teacher.__main__", "teacher", "torch"),
        ("activekd_services.trainer.__main__", "trainer", "torch"),
        ("activekd.orchestration.demo", "all", "rich"),
    ],
)
def test_a_module_whose_extra_is_missing_fails_with_one_line_naming_it(
    light_venv: LightVenv, module: str, extra: str, missing: str
) -> None:
    name, _, attr = module.partition(":")
    proc = light_venv.run(f"from {name} import {attr}" if attr else f"import {name}")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    expected = f"pip install 'activekd[{extra}]'"
    assert last.startswith("activekd.extras.MissingExtraError: "), proc.stderr[-2000:]
    assert last.endswith(expected) and f"'{missing}'" in last and f"'{extra}' extra" in last, last


def test_the_cli_prints_one_line_for_a_missing_extra(light_venv: LightVenv) -> None:
    cli = light_venv.path / "bin" / "activekd"
    helped = subprocess.run([str(cli), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "usage: activekd" in helped.stdout, helped.stderr
    proc = subprocess.run(
        [str(cli), "serve", "selection"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "activekd_services.selection needs the 'selection' extra (No module named "
        "'faiss'): pip install 'activekd[selection]'"
    ], proc.stderr


def test_every_extra_named_by_the_map_exists_in_pyproject() -> None:
    import tomllib

    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    assert set(EXTRA_OF_PACKAGE.values()) <= extras
    assert issubclass(MissingExtraError, ModuleNotFoundError)
