"""The configs in examples/: each validates as shipped, every key is commented, the config format's
errors name the key, and the shipped example really runs (shrunk with --set) on local services."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from activekd.cli import LOCAL_SERVICE_MODULES
from activekd.cli import load_config as load_run_config
from activekd.extras import OPTIONAL_MODULES
from activekd.orchestration.run_config import ConfigError, apply_override, parse_run_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EXAMPLE = EXAMPLES / "fashion_mnist_pcoreset.yaml"
CONFIGS = sorted(p for p in EXAMPLES.iterdir() if p.suffix != ".md")
#: shrinks the shipped example to one round on a tiny pool (the `activekd run` test below)
SMALL = (
    "experiment.num_rounds=1",
    "dataset.pool_size=500",
    "dataset.test_size=200",
    "dataset.pool_prefix=test-examples",
    "experiment.student_config.steps=40",
)


def _minimal(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "services": {"local": True},
        "dataset": {"builtin": "fashion-mnist", "pool_size": 100, "test_size": 50},
        "experiment": {"initial_per_class": 1, "num_rounds": 1, "simulated_oracle": True},
    }
    data.update(sections)
    return data


# ---------------------------------------------------------------------------------- as shipped
def test_examples_folder_holds_configs() -> None:
    assert EXAMPLE in CONFIGS
    assert all(p.suffix in (".yaml", ".yml", ".json") for p in CONFIGS), CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_validates_as_shipped(path: Path) -> None:
    cfg = load_run_config(path)
    assert cfg.experiment.pool_id and cfg.experiment.class_names
    if cfg.dataset is not None:
        assert cfg.experiment.teacher_config == {
            "pool_id": cfg.dataset.pool_ids.teacher_pool,
            "test_pool_id": cfg.dataset.pool_ids.teacher_test,
        }


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.suffix != ".json"], ids=lambda p: p.name)
def test_every_key_of_an_example_is_explained_by_a_comment(path: Path) -> None:
    previous = ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if re.match(r"^[A-Za-z_][\w.-]*:", stripped):
            assert previous.startswith("#") or " # " in line, (
                f"{path.name}:{number}: key {stripped.split(':')[0]!r} has no comment above it"
            )
        if stripped:
            previous = stripped


def test_the_example_shrinks_with_set() -> None:
    cfg = load_run_config(EXAMPLE, SMALL)
    assert cfg.services.local and cfg.dataset is not None
    assert (cfg.dataset.pool_size, cfg.experiment.num_rounds) == (500, 1)
    assert cfg.experiment.student_config["steps"] == 40
    assert cfg.experiment.student_config["kd"] is True  # untouched keys keep their values
    assert cfg.experiment.pool_id == "test-examples/pool"


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("bogus=1", "unknown key bogus; valid keys: dataset, experiment, experiment_id"),
        ("services.locl=true", "unknown key services.locl; valid keys of services: env, local"),
        ("dataset.size=3", "unknown key dataset.size; valid keys of dataset: builtin"),
        ("experiment.rounds=3", "unknown key experiment.rounds; valid keys of experiment: "),
        ("experiment.student_config.stepz=3", "unknown key experiment.student_config.stepz"),
        (
            "experiment.teacher_config.pool=x",
            "valid keys of experiment.teacher_config: adaptation, pool_id",
        ),
        ("experiment.strategy=nope", "experiment.strategy: unknown strategy 'nope'"),
        ("experiment.num_rounds=many", "experiment.num_rounds: num_rounds must be an integer"),
        ("experiment.num_rounds=1000", "but dataset.pool_size is 5000"),
        ("dataset.pool_size=70000", "dataset.pool_size 70000 must be in 1..60000"),
        ("dataset.builtin=cifar", "dataset.builtin 'cifar' is unknown"),
        ("services.threads=two", "services.threads must be an integer, got 'two'"),
        ("services.target=h:1", "services.local starts its own services"),
        ("services=[]", "services must be a mapping"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_key(assignment: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_run_config(EXAMPLE, [assignment])
    assert message in str(exc.value) and str(exc.value).startswith(str(EXAMPLE))
    assert "\n" not in str(exc.value)


def test_set_parses_yaml_and_creates_mappings() -> None:
    data: dict[str, Any] = {"experiment": {}}
    apply_override(data, "experiment.student_config.backbone_args={hidden: [8, 4]}")
    apply_override(data, "experiment.seed=3")
    apply_override(data, "experiment_id=")
    assert data == {
        "experiment": {"student_config": {"backbone_args": {"hidden": [8, 4]}}, "seed": 3},
        "experiment_id": "",
    }
    for bad in ("experiment", "=3", "a..b=1", "experiment.x=[1,"):
        with pytest.raises(ConfigError):
            apply_override({}, bad)
    with pytest.raises(ConfigError, match=r"experiment\.seed is not a mapping"):
        apply_override({"experiment": {"seed": 1}}, "experiment.seed.x=2")


def test_local_services_need_a_dataset_and_remote_uploads_need_a_selection_target() -> None:
    with pytest.raises(ConfigError, match="add a dataset section"):
        parse_run_config({**_minimal(), "dataset": None})
    with pytest.raises(ConfigError, match=r"services\.selection_target"):
        parse_run_config(_minimal(services={"target": "h:1"}))
    with pytest.raises(ConfigError, match=r"services\.teacher_target"):
        parse_run_config(_minimal(services={"target": "h:1", "selection_target": "h:2"}))
    cfg = parse_run_config(
        _minimal(services={"target": "h:1", "selection_target": "h:2", "teacher_target": "h:3"})
    )
    assert (cfg.services.local, cfg.services.target) == (False, "h:1")


def test_target_flag_switches_to_running_services(tmp_path: Path) -> None:
    cfg = load_run_config(
        EXAMPLE,
        ["services.selection_target=h:2", "dataset.check_teacher_rows=0"],
        target="h:1",
    )
    assert (cfg.services.local, cfg.services.target, cfg.services.selection_target) == (
        False,
        "h:1",
        "h:2",
    )


def test_the_older_format_without_services_or_dataset_still_parses() -> None:
    """What `activekd run` read before the services/dataset sections existed."""
    cfg = parse_run_config(
        {
            "experiment_id": "old",
            "experiment_target": "h:9",
            "experiment": {
                "pool_id": "mine/pool",
                "class_names": ["a", "b"],
                "initial_per_class": 1,
                "student_config": {"steps": 5},
            },
        }
    )
    assert (cfg.experiment_id, cfg.services.target, cfg.dataset) == ("old", "h:9", None)
    with pytest.raises(ConfigError, match=r"experiment\.pool_id is missing"):
        parse_run_config({"experiment": {"class_names": ["a", "b"], "initial_per_class": 1}})


def test_local_service_modules_are_optional_modules_of_the_extras_map() -> None:
    assert set(LOCAL_SERVICE_MODULES) <= set(OPTIONAL_MODULES)


# ---------------------------------------------------------------------------------- a real run
@pytest.mark.slow
def test_activekd_run_of_the_shipped_example_on_local_services() -> None:
    """The console script, as a newcomer runs it, shrunk to one round: Redis and the four
    services start and stop, pools upload, the round table prints plausible accuracies."""
    from activekd.data.fashion_mnist import data_dir

    assert (data_dir() / "train-images-idx3-ubyte.gz").is_file(), (
        f"Fashion-MNIST is not in {data_dir()}: `make setup` installs dataset-fashion-mnist"
    )
    script = Path(sys.executable).with_name("activekd")
    assert script.is_file(), f"no console script {script}: pip install -e . first"
    args = [str(script), "run", str(EXAMPLE)]
    for assignment in SMALL:
        args += ["--set", assignment]
    start = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"activekd run took {seconds:.0f} s\n{proc.stdout}")
    progress = proc.stderr
    for step in ("services up in", "teacher cache matches live inference", "FINISHED ("):
        assert step in progress, progress
    assert progress.rstrip().endswith("stopping the services...")
    rows = re.findall(r"^round +(\d+) +labels= *(\d+) +accuracy= *([\d.]+)%", proc.stdout, re.M)
    assert [(int(r), int(n)) for r, n, _ in rows] == [(0, 10), (1, 20)], proc.stdout
    accuracies = [float(a) for _, _, a in rows]
    # ten classes: chance is 10 %; the KD student from 10-20 labels lands well above it
    assert all(20.0 < a <= 100.0 for a in accuracies), accuracies
    assert proc.stdout.startswith("experiment ") and "pcoreset on fashion-mnist" in proc.stdout


# ---------------------------------------------------------------------------------- fortunes
FORTUNES = EXAMPLES / "fortunes_typiclust.yaml"


def test_the_fortunes_builtin_fills_in_its_classes_student_and_precomputed_teacher() -> None:
    from activekd.data.fortunes import FORTUNES_CLASSES

    cfg = load_run_config(FORTUNES)
    assert cfg.dataset is not None and cfg.dataset.builtin == "fortunes"
    assert cfg.experiment.dataset == "fortunes" and cfg.experiment.strategy == "typiclust"
    assert tuple(cfg.experiment.class_names) == FORTUNES_CLASSES
    # the MLP on MiniLM's embeddings unless the config says otherwise; the config's keys win
    assert cfg.experiment.student_config["backbone"] == "mlp"
    assert cfg.experiment.student_config["input_array"] == "embeddings"
    lsa = load_run_config(FORTUNES, ["experiment.student_config.input_array=lsa"])
    assert lsa.experiment.student_config["input_array"] == "lsa"
    # no live text teacher: the default 16 of fashion-mnist does not apply, an explicit one fails
    minimal = _minimal(dataset={"builtin": "fortunes", "pool_size": 100, "test_size": 50})
    assert parse_run_config(minimal).dataset.check_teacher_rows == 0  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"check_teacher_rows: fortunes's teacher is precomputed"):
        load_run_config(FORTUNES, ["dataset.check_teacher_rows=4"])
    with pytest.raises(ConfigError, match=r"dataset\.pool_size 5000 must be in 1\.\.1683"):
        load_run_config(FORTUNES, ["dataset.pool_size=5000"])
    # fashion-mnist keeps the image student and its live check
    fashion = load_run_config(EXAMPLE)
    assert "input_array" not in fashion.experiment.student_config
    assert fashion.dataset is not None and fashion.dataset.check_teacher_rows == 16


@pytest.mark.slow
def test_activekd_run_of_the_fortunes_example_on_local_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text experiment through the services: a small MiniLM cache built here (40 texts per
    split), the pools uploaded from it, the MLP student trained on the embeddings, typiclust
    selecting on the teacher's features, the teacher adapted from its class-description head;
    the reported teacher accuracy is the cache's own."""
    import os

    from activekd.data.fortunes import data_dir
    from activekd.data.text import load_text_cache
    from activekd.teacher.text_cache import build_text_cache

    assert data_dir().is_dir(), "`make setup` installs the Debian package fortunes"
    cache_dir = tmp_path / "cache"
    build_text_cache("fortunes", cache_dir / "fortunes-minilm.npz", limit=40, batch_size=32)
    cache = load_text_cache("fortunes", cache_dir / "fortunes-minilm.npz")
    script = Path(sys.executable).with_name("activekd")
    args = [str(script), "run", str(FORTUNES)]
    for assignment in (
        "experiment.num_rounds=1",
        "dataset.pool_size=40",
        "dataset.test_size=40",
        "dataset.pool_prefix=test-fortunes",
        "experiment.student_config.steps=60",
        # adapted from MiniLM's prototypes, which the run stores beside the teacher pool
        "experiment.teacher_config.adaptation=clap",
    ):
        args += ["--set", assignment]
    env = {**os.environ, "ACTIVEKD_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(proc.stdout)
    want = (cache["test_probs"].argmax(1) == cache["test_labels"]).mean() * 100
    assert f"teacher (zero-shot, precomputed) accuracy on the test rows: {want:.1f}%" in proc.stderr
    assert "checking" not in proc.stderr  # nothing to check live
    assert proc.stdout.startswith("experiment ") and "typiclust on fortunes" in proc.stdout
    rows = re.findall(
        r"^round +(\d+) +labels= *(\d+) +accuracy= *([\d.]+)%  teacher agreement= *([\d.]+)%",
        proc.stdout,
        re.M,
    )
    assert [(int(r), int(n)) for r, n, _, _ in rows] == [(0, 10), (1, 20)], proc.stdout
    # ten classes, 40 test texts: the KD student trained on the embeddings is above chance
    assert all(float(a) > 10.0 for _, _, a, _ in rows), proc.stdout

    # what the run uploaded: the teacher pool names the head pool, which holds the prototypes
    from activekd.orchestration.builtin_datasets import TextPools
    from activekd.orchestration.fashion_pools import PoolIds
    from activekd.teacher.head_pool import HEAD_POOL_KEY, head_pool_id

    uploads: dict[str, dict[str, Any]] = {}

    class Recorder:
        def upload_pool(self, pool_id: str, **kw: Any) -> None:
            uploads[pool_id] = kw

    monkeypatch.setenv("ACTIVEKD_CACHE_DIR", str(cache_dir))
    TextPools("fortunes", 40, 40, 0).upload(Recorder(), PoolIds.with_prefix("p"))
    head = uploads[head_pool_id("p/teacher-pool")]
    assert uploads["p/teacher-pool"]["metadata"] == {HEAD_POOL_KEY: head_pool_id("p/teacher-pool")}
    np.testing.assert_array_equal(head["arrays"]["prototypes"], cache["prototypes"])
    assert float(head["metadata"]["logit_scale"]) == cache["logit_scale"]
    assert head["item_ids"] == list(cache["class_names"])
    assert set(uploads["p/pool"]["arrays"]) == {"embeddings", "lsa", "labels"}


def test_a_missing_text_cache_fails_before_any_service_starts(tmp_path: Path) -> None:
    import os

    script = Path(sys.executable).with_name("activekd")
    env = {**os.environ, "ACTIVEKD_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run(
        [str(script), "run", str(FORTUNES)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "fortunes-minilm.npz is not in" in proc.stderr
    assert "scripts/build_text_teacher.py" in proc.stderr
    assert "starting redis-server" not in proc.stderr
