"""The checked-in generated code matches protos/ (regenerate with `make protos`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_fresh() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr


def test_every_package_directory_is_listed_in_pyproject() -> None:
    """A package missing from pyproject's explicit list would be absent from a non-editable install."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT / "src").parts)
        for p in (ROOT / "src").rglob("__init__.py")
    }
    found |= {
        ".".join(("activekd_services", *p.parent.relative_to(ROOT / "services").parts)).rstrip(".")
        for p in (ROOT / "services").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
