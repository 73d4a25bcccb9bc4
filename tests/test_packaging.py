"""pyproject.toml's explicit package list names every package directory (code or data, and nothing
else), and the wheel built from it holds every module and data file, with setuptools warning about
none of them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"__pycache__", "build", "dist"}


def _config() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _roots() -> dict[str, Path]:
    return {name or "": ROOT / path for name, path in _config()["package-dir"].items()}


def _shipped(path: Path) -> bool:
    """Files a wheel should carry: not hidden, not bytecode, not build by-products."""
    return not (
        any(p.startswith(".") or p in SKIP_DIRS or p.endswith(".egg-info") for p in path.parts)
        or path.suffix == ".pyc"
    )


def _candidates(base: Path) -> list[Path]:
    """Files under ``base``: those git tracks or would track (so a developer's ignored cache files
    do not count), or every file when this is no git checkout."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
            cwd=base,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return [f for f in base.rglob("*") if f.is_file()]
    return [base / name for name in out.split("\0") if name and (base / name).is_file()]


def _source_files() -> dict[str, Path]:
    """Every file under the package roots, by its path inside the wheel."""
    files: dict[str, Path] = {}
    for prefix, base in _roots().items():
        for f in _candidates(base):
            rel = f.relative_to(base)
            if not _shipped(rel):
                continue
            if not prefix and len(rel.parts) == 1:
                continue  # src/ itself holds no module
            files["/".join(([prefix] if prefix else []) + list(rel.parts))] = f
    return files


def _package_dirs() -> dict[str, tuple[Path, bool]]:
    """Every directory holding files to install, by package name: (directory, holds modules)."""
    found: dict[str, tuple[Path, bool]] = {}
    for wheel_path, f in _source_files().items():
        name = ".".join(wheel_path.split("/")[:-1])
        _, has_code = found.get(name, (f.parent, False))
        found[name] = (f.parent, has_code or f.suffix == ".py")
    return found


def test_every_package_directory_is_listed() -> None:
    listed = set(_config()["packages"])
    missing = sorted(set(_package_dirs()) - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_exists_with_an_init() -> None:
    dirs = _package_dirs()
    for name in _config()["packages"]:
        assert name in dirs, f"pyproject.toml lists {name}, which has no directory"
        d, has_code = dirs[name]
        if has_code:
            assert (d / "__init__.py").exists(), f"{d} has no __init__.py"


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel setuptools builds from a copy of the source files (a stale build/ in the checkout
    could otherwise leak deleted files into it), and everything the build printed."""
    src = tmp_path_factory.mktemp("sdist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for f in _source_files().values():
        dest = src / f.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    out = src / "wheelhouse"
    # The venv's setuptools (pinned in constraints.txt), called the way pip calls the backend.
    code = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-c", code, str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return out / proc.stdout.strip().splitlines()[-1], log


# Warnings about pyproject's [project] table, which this test does not police.
KNOWN_WARNINGS: tuple[str, ...] = ()


def test_wheel_builds_without_setuptools_warnings(built_wheel: tuple[Path, str]) -> None:
    _, log = built_wheel
    warnings = [
        m.group(1)
        for m in re.finditer(r"\w*Warning: (.+)", log)
        if not any(k in m.group(1) for k in KNOWN_WARNINGS)
    ]
    assert not warnings, "setuptools warned:\n" + "\n".join(warnings)
    assert "absent from the `packages` configuration" not in log


def test_wheel_holds_every_module_and_data_file(built_wheel: tuple[Path, str]) -> None:
    wheel, _ = built_wheel
    with zipfile.ZipFile(wheel) as zf:
        names = {n for n in zf.namelist() if ".dist-info/" not in n}
    for must in (
        "activekd/py.typed",
        "activekd/teacher/model_configs/tiny-clip-32.json",
        "activekd/data/teacher_cache/fashion-mnist-label-map-224.npz",
        "activekd/data/fashion_mnist_imagenet_label_map.json",
        "activekd/v1/common_pb2.pyi",
        "activekd_services/selection/__main__.py",
    ):
        assert must in names, f"the wheel lacks {must}"
    expected = set(_source_files())
    assert sorted(expected - names) == [], "files missing from the wheel (add to package-data)"
    assert sorted(names - expected) == [], "files in the wheel that the sources do not have"


def _constraints() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for n, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        assert m, f"constraints.txt:{n}: not name==version: {line!r} (regenerate: make lock)"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"constraints.txt:{n}: {name} pinned twice"
        pins[name] = Version(m.group(2))
    return pins


def test_constraints_pin_every_dependency_within_its_range() -> None:
    """constraints.txt (what CI, make setup and the images install) pins every distribution that
    pyproject.toml names, at a version its range allows; a range edited without `make lock` fails."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = _constraints()
    groups = {"dependencies": meta["project"]["dependencies"]}
    groups |= {f"[{k}]": v for k, v in meta["project"]["optional-dependencies"].items()}
    groups["build-system"] = meta["build-system"]["requires"]
    problems = []
    for group, reqs in groups.items():
        for text in reqs:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            if name == canonicalize_name(meta["project"]["name"]):
                continue  # activekd[server] and friends: the project itself
            if name == "wheel" and group == "build-system":
                continue  # only isolated builds fetch it; setuptools >= 70.1 builds wheels itself
            if name not in pins:
                problems.append(f"{group}: {text} is not pinned")
            elif req.specifier and not req.specifier.contains(pins[name], prereleases=True):
                problems.append(f"{group}: {text} but constraints.txt pins {pins[name]}")
    fix = "re-lock in a fresh venv: rm -rf .venv && make setup CONSTRAINTS= && make lock"
    assert not problems, fix + "\n" + "\n".join(problems)
