"""The config file of ``activekd run``: parsing, ``--set`` overrides and full validation.

Top-level sections (``examples/fashion_mnist_pcoreset.yaml`` explains every key)::

    experiment_id: ""            # optional; the service picks one when empty
    services: {local: true}      # or {target: HOST:PORT, selection_target: ..., teacher_target: ...}
    dataset: {builtin: fashion-mnist, pool_size: ..., test_size: ..., seed: ...}   # optional
    experiment: {...}            # ExperimentSpec fields

Validation runs before any service is started and before any network call: unknown keys anywhere
(teacher_config included), wrong types and spec errors are a :class:`ConfigError` naming the key
path and the valid keys. ``experiment.student_config`` is checked by ``activekd.cli.load_config``
(the student's config schema is outside this package's layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activekd.errors import InvalidArgument
from activekd.orchestration.builtin_datasets import BUILTIN_DATASETS, DEFAULT_BUILTIN
from activekd.orchestration.fashion_pools import PoolIds
from activekd.state.experiment_spec import ExperimentSpec

DEFAULT_TARGET = "localhost:50054"
BUILTINS = tuple(BUILTIN_DATASETS)
TEACHER_CONFIG_KEYS = ("pool_id", "test_pool_id", "adaptation")
#: ``experiment_target`` is the name older configs used for ``services.target``
TOP_KEYS = ("experiment_id", "services", "dataset", "experiment", "experiment_target")


class ConfigError(InvalidArgument):
    """The run config is wrong; the message names the file and the key path."""


@dataclass(frozen=True)
class ServicesConfig:
    """Where the services are: started on this machine for the run, or already running."""

    local: bool = False
    target: str = DEFAULT_TARGET
    selection_target: str = ""
    teacher_target: str = ""
    threads: int = 1
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetConfig:
    """A built-in dataset uploaded for the run (pool, test split and teacher probabilities);
    ``builtin`` names an entry of :data:`~activekd.orchestration.builtin_datasets.BUILTIN_DATASETS`."""

    builtin: str = DEFAULT_BUILTIN
    pool_size: int = 2_000
    test_size: int = 1_000
    seed: int = 0
    pool_prefix: str = "run"
    check_teacher_rows: int = 16

    @property
    def pool_ids(self) -> PoolIds:
        return PoolIds.with_prefix(self.pool_prefix)


@dataclass(frozen=True)
class RunConfig:
    """A validated config: what ``activekd run`` starts, uploads and drives."""

    experiment: ExperimentSpec
    services: ServicesConfig = field(default_factory=ServicesConfig)
    dataset: DatasetConfig | None = None
    experiment_id: str = ""


# ---------------------------------------------------------------------------------- loading
def load_run_config(
    path: str | Path, overrides: Sequence[str] = (), target: str | None = None
) -> RunConfig:
    """Read a YAML (or JSON) file, apply ``--set KEY.PATH=VALUE`` overrides and ``--target``."""
    import yaml

    where = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {_one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of {', '.join(TOP_KEYS)}")
    for assignment in overrides:
        apply_override(data, assignment, where)
    if target:
        services = data.get("services")
        services = dict(services) if isinstance(services, dict) else {}
        services.update(local=False, target=target)
        data["services"] = services
        data.pop("experiment_target", None)
    return parse_run_config(data, where)


def apply_override(data: dict[str, Any], assignment: str, where: str = "--set") -> None:
    """``a.b.c=VALUE``: set ``data["a"]["b"]["c"]`` to VALUE parsed as YAML (maps are created)."""
    import yaml

    key, sep, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {assignment!r}: write KEY.PATH=VALUE, e.g. experiment.seed=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"--set {assignment!r}: value is not valid YAML: {_one_line(exc)}"
        ) from exc
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            path = ".".join(parts[: i + 1])
            raise ConfigError(f"{where}: --set {key}: {path} is not a mapping")
        node = child
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------- validation
def parse_run_config(data: Mapping[str, Any], where: str = "config") -> RunConfig:
    """Validate a parsed config fully; returns the RunConfig (pool ids etc. filled in)."""
    check_keys(data, TOP_KEYS, where, "")
    services = _services(data, where)
    dataset = _dataset(data.get("dataset"), where)
    experiment_id = _typed(data.get("experiment_id", ""), str, where, "experiment_id")
    if services.local and dataset is None:
        raise ConfigError(
            f"{where}: services.local starts empty services, so the run needs data: "
            f"add a dataset section (dataset.builtin: {DEFAULT_BUILTIN})"
        )
    if dataset is not None and not services.local:
        if not services.selection_target:
            raise ConfigError(
                f"{where}: dataset uploads through a SelectionService: set "
                "services.selection_target (or services.local: true)"
            )
        if dataset.check_teacher_rows and not services.teacher_target:
            raise ConfigError(
                f"{where}: dataset.check_teacher_rows needs services.teacher_target "
                "(or set dataset.check_teacher_rows: 0)"
            )
    spec = _experiment(data.get("experiment"), dataset, where)
    return RunConfig(spec, services, dataset, experiment_id)


def _services(data: Mapping[str, Any], where: str) -> ServicesConfig:
    raw = data.get("services")
    raw = {} if raw is None else raw
    _mapping(raw, where, "services")
    valid = tuple(f.name for f in dataclasses.fields(ServicesConfig))
    check_keys(raw, valid, where, "services.")
    legacy = data.get("experiment_target")
    if legacy is not None and "target" in raw:
        raise ConfigError(f"{where}: give services.target or experiment_target (its old name)")
    values: dict[str, Any] = dict(raw)
    if legacy is not None:
        values["target"] = legacy
    local = _typed(values.get("local", False), bool, where, "services.local")
    if local and ({"target", "selection_target", "teacher_target"} & set(values)):
        raise ConfigError(
            f"{where}: services.local starts its own services; drop services.target, "
            "selection_target and teacher_target (or set services.local: false)"
        )
    for name in ("target", "selection_target", "teacher_target"):
        if name in values:
            _typed(values[name], str, where, f"services.{name}")
    if not local and not str(values.get("target", DEFAULT_TARGET)).strip():
        raise ConfigError(f"{where}: services.target is empty: give HOST:PORT")
    threads = _typed(values.get("threads", 1), int, where, "services.threads")
    if threads < 0:
        raise ConfigError(f"{where}: services.threads {threads} must be 0 (all cores) or more")
    env = values.get("env") or {}
    _mapping(env, where, "services.env")
    for key, value in env.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}: services.env keys must be variable names, got {key!r}")
        if not isinstance(value, str | int | float | bool):
            raise ConfigError(f"{where}: services.env.{key} must be a string or number")
    values["env"] = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()}
    return ServicesConfig(**values)


def _dataset(raw: Any, where: str) -> DatasetConfig | None:
    if raw is None:
        return None
    _mapping(raw, where, "dataset")
    valid = tuple(f.name for f in dataclasses.fields(DatasetConfig))
    check_keys(raw, valid, where, "dataset.")
    defaults = DatasetConfig()
    for f in dataclasses.fields(DatasetConfig):
        if f.name in raw:
            _typed(raw[f.name], type(getattr(defaults, f.name)), where, f"dataset.{f.name}")
    cfg = DatasetConfig(**raw)
    if "builtin" not in raw:
        raise ConfigError(f"{where}: dataset.builtin is missing: use one of {', '.join(BUILTINS)}")
    if cfg.builtin not in BUILTINS:
        raise ConfigError(
            f"{where}: dataset.builtin {cfg.builtin!r} is unknown: use one of {', '.join(BUILTINS)}"
            " (for pools you uploaded yourself, drop the dataset section and set "
            "experiment.pool_id)"
        )
    entry = BUILTIN_DATASETS[cfg.builtin]
    for name, top in (("pool_size", entry.train_rows), ("test_size", entry.test_rows)):
        if not 1 <= getattr(cfg, name) <= top:
            raise ConfigError(f"{where}: dataset.{name} {getattr(cfg, name)} must be in 1..{top}")
    if not entry.live_teacher:
        if raw.get("check_teacher_rows"):
            raise ConfigError(
                f"{where}: dataset.check_teacher_rows: {cfg.builtin}'s teacher is precomputed "
                "(the teacher service scores images only), so no row can be checked live: set 0"
            )
        cfg = dataclasses.replace(cfg, check_teacher_rows=0)
    if not 0 <= cfg.check_teacher_rows <= cfg.pool_size:
        raise ConfigError(
            f"{where}: dataset.check_teacher_rows {cfg.check_teacher_rows} must be in "
            f"0..pool_size ({cfg.pool_size})"
        )
    if cfg.seed < 0:
        raise ConfigError(f"{where}: dataset.seed {cfg.seed} must be 0 or more")
    if not cfg.pool_prefix.strip():
        raise ConfigError(f"{where}: dataset.pool_prefix is empty")
    return cfg


def _experiment(raw: Any, dataset: DatasetConfig | None, where: str) -> ExperimentSpec:
    if raw is None:
        raise ConfigError(f"{where}: the experiment section is missing")
    _mapping(raw, where, "experiment")
    valid = tuple(f.name for f in dataclasses.fields(ExperimentSpec))
    check_keys(raw, valid, where, "experiment.")
    values = dict(raw)
    for name in ("teacher_config", "student_config"):
        values[name] = dict(_mapping(values.get(name) or {}, where, f"experiment.{name}"))
    check_keys(values["teacher_config"], TEACHER_CONFIG_KEYS, where, "experiment.teacher_config.")
    if dataset is not None:
        ids = dataset.pool_ids
        values.setdefault("pool_id", ids.pool)
        values.setdefault("test_pool_id", ids.test)
        entry = BUILTIN_DATASETS[dataset.builtin]
        values.setdefault("dataset", entry.name)
        if not values.get("class_names"):
            values["class_names"] = list(entry.class_names)
        values["student_config"] = {**entry.student_defaults, **values["student_config"]}
        values["teacher_config"].setdefault("pool_id", ids.teacher_pool)
        values["teacher_config"].setdefault("test_pool_id", ids.teacher_test)
    if "pool_id" not in values:
        raise ConfigError(
            f"{where}: experiment.pool_id is missing: give the id of a pool you uploaded, "
            f"or add a dataset section (dataset.builtin: {DEFAULT_BUILTIN})"
        )
    try:
        spec = ExperimentSpec(**values).validate(_strategies())
    except InvalidArgument as exc:
        key = f"experiment.{exc.field}: " if exc.field else "experiment: "
        raise ConfigError(f"{where}: {key}{exc}") from exc
    except TypeError as exc:  # a field given a value of the wrong kind
        raise ConfigError(f"{where}: experiment: {exc}") from exc
    if dataset is not None and spec.pool_id == dataset.pool_ids.pool:
        wanted = spec.initial_per_class * spec.num_classes + spec.budget_per_round * (
            spec.num_rounds
        )
        if wanted > dataset.pool_size:
            raise ConfigError(
                f"{where}: the run labels up to {wanted} rows (initial_per_class x classes + "
                f"budget_per_round x num_rounds) but dataset.pool_size is {dataset.pool_size}"
            )
    return spec


def _strategies() -> set[str] | None:
    """Strategy names the selection library knows (None where it cannot be imported)."""
    try:
        from activekd.selection.strategies import available_strategies
    except ImportError:
        return None
    return set(available_strategies())


# ---------------------------------------------------------------------------------- helpers
def check_keys(mapping: Mapping[str, Any], valid: Sequence[str], where: str, prefix: str) -> None:
    """ConfigError naming the first unknown key (with ``prefix``, e.g. ``services.``) and the
    valid ones."""
    unknown = sorted(str(k) for k in mapping if k not in valid)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {prefix}{unknown[0]}"
            + (f" (and {', '.join(unknown[1:])})" if unknown[1:] else "")
            + f"; valid keys{' of ' + prefix.rstrip('.') if prefix else ''}: "
            + ", ".join(sorted(valid))
        )


def _mapping(value: Any, where: str, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {key} must be a mapping, got {type(value).__name__}")
    return value


def _typed(value: Any, kind: type, where: str, key: str) -> Any:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{where}: {key} must be {_KIND_NAMES[kind]}, got {value!r}")
    return value


_KIND_NAMES = {bool: "true or false", int: "an integer", str: "a string"}


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


__all__ = [
    "DEFAULT_TARGET",
    "ConfigError",
    "DatasetConfig",
    "RunConfig",
    "ServicesConfig",
    "apply_override",
    "check_keys",
    "load_run_config",
    "parse_run_config",
]
