"""The in-process ActiveKD loop and the label-efficiency harness on a tiny problem."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from activekd.data.fashion_mnist import load_fashion_mnist
from activekd.errors import InvalidArgument
from activekd.experiment import label_efficiency as le
from activekd.experiment.loop import LoopConfig, run_active_learning

SMALL = {"batch_size_labeled": 16, "batch_size_unlabeled": 32, "threads": 1}


def _noisy_teacher(y: np.ndarray, seed: int) -> np.ndarray:
    """A deliberately imperfect teacher: right ~60% of the time, soft."""
    rng = np.random.default_rng(seed)
    guess = np.where(rng.random(y.size) < 0.6, y, rng.integers(0, 10, y.size))
    probs = np.full((y.size, 10), 0.03)
    probs[np.arange(y.size), guess] += 0.73
    return probs / probs.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def tiny() -> dict[str, np.ndarray]:
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    return {
        "x": x[:400],
        "y": y[:400],
        "t": _noisy_teacher(y[:400], 0),
        "xt": xt[:200],
        "yt": yt[:200],
        "tt": _noisy_teacher(yt[:200], 1),
    }


def test_loop_grows_labels_by_budget_without_repeats(tiny: dict[str, np.ndarray]) -> None:
    cfg = LoopConfig(strategy="pcoreset", rounds=2, budget=7, seed=3, student=SMALL | {"steps": 15})
    seen: list[int] = []
    res = run_active_learning(
        cfg,
        tiny["x"],
        tiny["y"],
        tiny["t"],
        tiny["xt"],
        tiny["yt"],
        tiny["tt"],
        progress=lambda r: seen.append(r.round),
    )
    assert seen == [0, 1, 2]
    assert [r.labeled for r in res] == [10, 17, 24]
    picked = [i for r in res for i in r.selected]
    assert len(picked) == len(set(picked)) == 14
    assert res[-1].selected == []
    assert all(0.0 <= r.accuracy <= 1.0 and r.teacher_agreement is not None for r in res)


def test_strategies_are_paired_by_seed(tiny: dict[str, np.ndarray]) -> None:
    """Same seed: identical round-0 student (same initial labels and training seed)."""
    runs = [
        run_active_learning(
            LoopConfig(strategy=s, rounds=1, budget=5, seed=1, student=SMALL | {"steps": 10}),
            tiny["x"],
            tiny["y"],
            tiny["t"],
            tiny["xt"],
            tiny["yt"],
        )
        for s in ("random", "entropy")
    ]
    assert runs[0][0].accuracy == runs[1][0].accuracy
    assert runs[0][0].selected != runs[1][0].selected


def test_grid_resumes_and_summarises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: dict[str, np.ndarray]
) -> None:
    data = {
        "x_pool": tiny["x"],
        "y_pool": tiny["y"],
        "t_pool": tiny["t"],
        "x_test": tiny["xt"],
        "y_test": tiny["yt"],
        "t_test": tiny["tt"],
    }
    monkeypatch.setattr(le, "load_data", lambda grid: data)
    grid = le.GridConfig(
        pool_size=400,
        test_size=200,
        rounds=1,
        budget=5,
        seeds=[0, 1],
        strategies=["random", "pcoreset"],
        ce_only_strategies=["random"],
        student=SMALL | {"steps": 8},
    )
    first = le.run_grid(grid, tmp_path, max_runs=4)
    assert len(first) == 4
    rest = le.run_grid(grid, tmp_path)
    assert len(rest) == 2  # only the missing runs
    assert le.run_grid(grid, tmp_path) == []
    root = tmp_path / grid.tag
    md = le.summarise(root, teacher_accuracy=0.6)
    assert "| pcoreset | 2 |" in md and "(n=2)" in md and "teacher" in md
    rows = (root / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 2 * 2  # header + configs x seeds x rounds
    assert (root / "curves.png").stat().st_size > 10_000
    run = json.loads((root / "pcoreset" / "seed-0.json").read_text())
    assert run["kd"] is True and len(run["rounds"]) == 2
    assert json.loads((root / "ce_only-random" / "seed-1.json").read_text())["kd"] is False


def test_grid_workers_run_in_processes_and_match_a_serial_run(tmp_path: Path) -> None:
    """``workers=2`` (spawned processes, each loading the data itself) writes the same runs as
    one process: same picks, same accuracies (CPU, one torch thread)."""
    grid = le.GridConfig(
        pool_size=300,
        test_size=200,
        rounds=1,
        budget=5,
        seeds=[0],
        strategies=["random", "pcoreset"],
        ce_only_strategies=[],
        student=SMALL | {"steps": 4, "threads": 1},
    )
    serial = le.run_grid(grid, tmp_path / "serial")
    parallel = le.run_grid(grid, tmp_path / "parallel", workers=2)
    assert sorted(p.name for p in serial) == sorted(p.name for p in parallel) == ["seed-0.json"] * 2

    def strip(path: Path) -> list[dict[str, object]]:
        rounds = json.loads(path.read_text())["rounds"]
        return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rounds]

    for name in ("random", "pcoreset"):
        a = strip(tmp_path / "serial" / grid.tag / name / "seed-0.json")
        b = strip(tmp_path / "parallel" / grid.tag / name / "seed-0.json")
        assert a == b and len(a[0]["selected"]) == 5  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="workers"):
        le.run_grid(grid, tmp_path / "x", workers=0)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_grid_workers_stop_when_the_grid_process_is_killed(tmp_path: Path) -> None:
    """kill -9 of the grid process: its worker processes stop after their current round instead
    of finishing (and saving) runs nobody supervises."""
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, str(root / "bench" / "label_efficiency.py"), "--workers", "2",
           "--pool-size", "300", "--test-size", "200", "--rounds", "60", "--steps", "30",
           "--seeds", "0", "--strategies", "random", "pcoreset", "--ce-only",
           "--out", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "ACTIVEKD_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 60
        workers: list[int] = []
        while time.time() < deadline and len(workers) < 2:  # resource tracker + 2 workers
            workers = [p for p in _children(proc.pid)
                       if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]  # fmt: skip
            time.sleep(0.5)
        assert len(workers) == 2, "the grid did not start its 2 worker processes"
        time.sleep(12)  # let them load data and start training
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.time() + 60
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.5)
        assert not any(_alive(p) for p in workers), "workers outlived the grid process"
        assert not list(tmp_path.rglob("seed-*.json"))  # 60 rounds cannot have finished
    finally:
        if proc.poll() is None:
            proc.kill()
