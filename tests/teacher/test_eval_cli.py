"""`activekd teacher eval` logic and scripts/build_teacher_cache.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, balanced_subset
from activekd.teacher import evaluate_probs
from activekd.teacher.cache import load_teacher_cache_file
from activekd.teacher.eval_cli import teacher_eval_main
from activekd.teacher.label_map_teacher import LabelMapTeacher

TOP1_LINE = re.compile(r"^top1=(\d\.\d{3})$")


def _last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def test_label_map_eval_prints_per_class_and_ends_with_top1(
    capsys: pytest.CaptureFixture[str],
    label_map_teacher: LabelMapTeacher,
    fmnist_test: Any,
    tmp_path: Path,
) -> None:
    argv = [
        "--teacher",
        "label-map",
        "--dataset",
        "fashion-mnist",
        "--split",
        "test",
        "--limit",
        "30",
        "--cache-dir",
        str(tmp_path),
    ]
    assert teacher_eval_main(argv) == 0
    out = capsys.readouterr().out
    m = TOP1_LINE.match(_last_line(out))
    assert m is not None
    for name in FASHION_MNIST_CLASSES:
        assert name in out
    x, y = fmnist_test
    rows = balanced_subset(y, 3, seed=0)  # --limit 30, balanced: 3 per class, seed 0
    expected = evaluate_probs(
        label_map_teacher.predict(x[rows]).probs, y[rows], FASHION_MNIST_CLASSES
    ).top1
    assert m.group(1) == f"{expected:.3f}"

    assert teacher_eval_main(argv) == 0  # second run: from the cache, same answer
    again = capsys.readouterr().out
    assert "from the cache" in again and _last_line(again) == _last_line(out)


def test_precomputed_eval_matches_the_array(
    capsys: pytest.CaptureFixture[str], fmnist_test: Any, tmp_path: Path
) -> None:
    x, y = fmnist_test
    rng = np.random.default_rng(0)
    guess = np.where(rng.random(len(y)) < 0.7, y, (y + 1) % 10)  # ~70% right
    probs = np.full((len(y), 10), 0.02, np.float32)
    probs[np.arange(len(y)), guess] = 0.82
    np.save(tmp_path / "p.npy", probs)
    argv = [
        "--teacher",
        "precomputed",
        "--probs",
        str(tmp_path / "p.npy"),
        "--limit",
        "200",
        "--sampling",
        "first",
        "--no-cache",
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert teacher_eval_main(argv) == 0
    last = _last_line(capsys.readouterr().out)
    # lookup is by pixels, and a duplicated image resolves to its first copy in the split
    first: dict[bytes, int] = {}
    source = np.array([first.setdefault(x[i].tobytes(), i) for i in range(200)])
    expected = float((guess[source] == y[:200]).mean())
    assert last == f"top1={expected:.3f}"
    assert (tmp_path / "r.json").is_file()


def test_bad_configuration_exits_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert teacher_eval_main(["--teacher", "open_clip", "--limit", "10"]) == 2
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "model=" in err
    assert teacher_eval_main(["--teacher", "nonsense", "--limit", "10"]) == 2


def test_build_teacher_cache_script_writes_float16_probs_and_identity(
    build_teacher_cache_script: Any,
    label_map_teacher: LabelMapTeacher,
    fmnist_test: Any,
    tmp_path: Path,
) -> None:
    out = tmp_path / "cache.npz"
    argv = [
        "--limit",
        "24",
        "--chunk-size",
        "10",
        "--splits",
        "test",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert build_teacher_cache_script.main(argv) == 0
    assert not (tmp_path / "cache.parts").exists()  # chunk folder cleaned up
    identity, probs = load_teacher_cache_file(out)
    assert identity.fingerprint == label_map_teacher.identity.fingerprint
    assert set(probs) == {"test"} and probs["test"].shape == (24, 10)
    np.testing.assert_allclose(probs["test"].sum(1), 1.0, atol=1e-5)
    ref = label_map_teacher.predict(fmnist_test[0][:24]).probs
    np.testing.assert_allclose(probs["test"], ref, atol=2e-3)  # float16 storage
    with np.load(out) as z:
        assert z["test_probs"].dtype == np.float16
