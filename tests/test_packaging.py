"""pyproject.toml's explicit package list names every package directory (and nothing else), so a
wheel never silently lacks a module."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _config() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_dirs() -> dict[str, Path]:
    """Every directory holding Python modules, by the package name it installs as."""
    roots = {name or "": ROOT / path for name, path in _config()["package-dir"].items()}
    found: dict[str, Path] = {}
    for prefix, base in roots.items():
        for init in base.rglob("*.py"):
            d = init.parent
            if "__pycache__" in d.parts:
                continue
            rel = d.relative_to(base).parts
            if not prefix and not rel:
                continue  # src/ itself holds no module
            name = ".".join(([prefix] if prefix else []) + list(rel))
            found[name] = d
    return found


def test_every_package_directory_is_listed() -> None:
    listed = set(_config()["packages"])
    dirs = _package_dirs()
    missing = sorted(set(dirs) - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_exists_with_an_init() -> None:
    dirs = _package_dirs()
    for name in _config()["packages"]:
        assert name in dirs, f"pyproject.toml lists {name}, which has no directory"
        assert (dirs[name] / "__init__.py").exists(), f"{dirs[name]} has no __init__.py"
