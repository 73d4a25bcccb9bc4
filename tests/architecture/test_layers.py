"""The layout is enforced: allowed package dependencies (AST, function-level imports too), no
import circles, and core packages that never load grpc or generated code (fresh interpreters)."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.architecture.layers import ALLOWED, CORE, DEPRECATED_SHIMS, SHARED, WIRE_ONLY_MODULES

SRC = Path(__file__).resolve().parents[2] / "src" / "activekd"
SERVICES = Path(__file__).resolve().parents[2] / "services"


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """Every module ``path`` imports (absolute names), at any depth of the file, with its line."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((name, node.lineno))
            # `from activekd.x import y` may name a submodule y
            out += [(f"{name}.{a.name}", node.lineno) for a in node.names if a.name != "*"]
    return out


def _source_modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        if "v1" in path.relative_to(SRC).parts[:1]:
            continue
        name = _module_name(path, SRC, "activekd")
        if name not in DEPRECATED_SHIMS:
            mods[name] = path
    return mods


MODULES = _source_modules()


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_of_the_package_has_a_rule() -> None:
    parts = {_part(m) for m in MODULES} - {"", "cli", "v1"}
    assert parts <= set(ALLOWED), f"no dependency rule for {sorted(parts - set(ALLOWED))}"


def test_package_dependencies_follow_the_layers() -> None:
    bad = []
    for module, path in sorted(MODULES.items()):
        part = _part(module)
        if part in ("", "cli"):
            continue
        for name, line in _imports(path, module):
            if name.startswith("activekd_services"):
                bad.append(f"{module}:{line} imports {name} (the services import the library)")
            if not name.startswith("activekd."):
                continue
            target = _part(name)
            if (
                target != part
                and target not in ALLOWED[part]
                and f"activekd.{target}"
                in {".".join(m.split(".")[:2]) for m in MODULES} | {"activekd.v1"}
            ):
                bad.append(f"{module}:{line} imports {name} ({part} may not import {target})")
    assert not bad, "\n".join(bad)


def test_core_packages_import_no_grpc_or_generated_code() -> None:
    bad = []
    for module, path in sorted(MODULES.items()):
        if _part(module) not in CORE and _part(module) not in SHARED:
            continue
        for name, line in _imports(path, module):
            if name.startswith("activekd.v1") or any(
                name == w or name.startswith(w + ".") for w in WIRE_ONLY_MODULES
            ):
                bad.append(f"{module}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    all_mods = dict(MODULES)
    for path in SERVICES.rglob("*.py"):
        all_mods[_module_name(path, SERVICES, "activekd_services")] = path
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in all_mods.items():
        for name, _ in _imports(path, module):
            # resolve to the longest known module
            parts = name.split(".")
            for k in range(len(parts), 0, -1):
                cand = ".".join(parts[:k])
                if cand in all_mods and cand != module:
                    graph[module].add(cand)
                    break
    return graph


def test_no_import_circles() -> None:
    """No cycle between modules, counting imports inside functions. A package's ``__init__``
    importing its own submodules is the one allowed pattern (``pkg`` -> ``pkg.sub``), so edges from
    a package to its children are dropped before looking for cycles."""
    graph = _graph()
    for module in list(graph):
        graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    # a module importing `pkg.x` runs pkg/__init__ first, but that is not an edge of the module
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t) :], t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", CORE)
def test_core_package_loads_no_grpc_in_a_fresh_interpreter(package: str) -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        f"pkg = importlib.import_module('activekd.{package}')\n"
        f"shims = {sorted(DEPRECATED_SHIMS)!r}\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    if m.name not in shims:\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'grpc' or n.startswith('grpc.')\n"
        "             or n == 'activekd.v1' or n.startswith('activekd.v1.'))\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("shim", sorted(DEPRECATED_SHIMS))
def test_deprecated_paths_only_re_export(shim: str) -> None:
    """An old path is a docstring, imports from its new home and ``__all__``: nothing else."""
    path = SRC.joinpath(*shim.split(".")[1:]).with_suffix(".py")
    if not path.exists():
        pytest.fail(f"{shim} is listed as a deprecated path in CHANGELOG.md but does not exist")
    tree = ast.parse(path.read_text())
    for node in tree.body:
        ok = isinstance(node, ast.Import | ast.ImportFrom) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        )
        if isinstance(node, ast.Assign):
            ok = ok or all(isinstance(t, ast.Name) for t in node.targets)
        elif isinstance(node, ast.AnnAssign):
            ok = ok or isinstance(node.target, ast.Name)
        assert ok, f"{shim}:{node.lineno} does more than re-export"
    module = importlib.import_module(shim)
    exported = getattr(module, "__all__", [])
    assert exported, f"{shim} re-exports nothing"
    for name in exported:
        assert getattr(module, name) is not None
