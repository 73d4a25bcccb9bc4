"""One copy of each rule: exactly one definition of each of these names in the code base, and
the rule's telltale expression nowhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("src/activekd", "services", "bench", "scripts")

#: name -> (kind, the module that must hold the one definition)
ONE_DEFINITION = {
    "round_seed": ("def", "src/activekd/seeds.py"),
    "resolve_device": ("def", "src/activekd/devices.py"),
    "resolve_precision": ("def", "src/activekd/devices.py"),
    "check_probabilities": ("def", "src/activekd/arrays.py"),
    "pool_info": ("def", "src/activekd/wire/pool_info.py"),
    "dict_to_struct": ("def", "src/activekd/wire/structs.py"),
    "struct_to_dict": ("def", "src/activekd/wire/structs.py"),
    "CheckpointInfo": ("class", "src/activekd/student/checkpoint_registry.py"),
    "check_pool_id": ("def", "src/activekd/ids.py"),
    "check_experiment_id": ("def", "src/activekd/ids.py"),
    "check_request_id": ("def", "src/activekd/ids.py"),
    "check_array_name": ("def", "src/activekd/ids.py"),
    "shown": ("def", "src/activekd/errors.py"),
    "SourcePolicy": ("class", "src/activekd/teacher/sources.py"),
}

#: Expressions that re-implement a rule; allowed only in the rule's own module. Checked in the
#: library and the services (benchmarks may ask whether a GPU is there to measure).
TELLTALES = {
    r"cuda\.is_available\(\)": "src/activekd/devices.py",
    r"\*\s*(SEED_STRIDE|1000)\s*\+": "src/activekd/seeds.py",
    r"json_format\.(MessageToDict|ParseDict)|\.update\(\s*\w*config\w*\s*\)": (
        "src/activekd/wire/structs.py"
    ),
}


def _python_files() -> list[Path]:
    files = []
    for d in CODE_DIRS:
        files += [p for p in (ROOT / d).rglob("*.py") if "/v1/" not in p.as_posix()]
    return files


FILES = _python_files()


def _definitions(name: str, kind: str) -> list[str]:
    found = []
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and kind == "def"
            is_class = isinstance(node, ast.ClassDef) and kind == "class"
            if (is_def or is_class) and node.name == name:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


@pytest.mark.parametrize("name", sorted(ONE_DEFINITION))
def test_exactly_one_definition(name: str) -> None:
    kind, home = ONE_DEFINITION[name]
    found = _definitions(name, kind)
    assert len(found) == 1, f"{kind} {name} defined {len(found)} times: {found}"
    assert found[0].startswith(home + ":"), f"{name} should live in {home}, found {found[0]}"


@pytest.mark.parametrize("pattern", sorted(TELLTALES))
def test_rule_is_not_re_implemented(pattern: str) -> None:
    home = TELLTALES[pattern]
    hits = []
    for path in FILES:
        rel = path.relative_to(ROOT).as_posix()
        if rel == home or not rel.startswith(("src/", "services/")):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(pattern, code) and not code.lstrip().startswith(('"', "'")):
                hits.append(f"{rel}:{i}: {line.strip()}")
    assert not hits, f"re-implements the rule of {home}:\n" + "\n".join(hits)


def test_one_probability_tolerance() -> None:
    """PROB_SUM_ATOL has one value, defined once; every other module imports it."""
    defs = []
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == "PROB_SUM_ATOL" for t in targets):
                defs.append(path.relative_to(ROOT).as_posix())
    assert defs == ["src/activekd/arrays.py"], defs
