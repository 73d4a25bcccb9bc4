"""The CUDA code paths against their CPU twins (selection, student, teacher, the AL loop).

Run on a GPU machine with ``pytest -m gpu tests/gpu``. This module uses no conftest fixture, so
it also runs with ``--noconftest`` where the service stack (grpc-health, redis-server) is absent.
On a machine without CUDA every test here is reported as skipped with the reason; the CPU paths
of the same code are covered by the rest of the suite.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from activekd.experiment.loop import LoopConfig, run_active_learning
from activekd.selection import select_batch
from activekd.student import (
    StudentConfig,
    load_student,
    save_checkpoint,
    score_pool,
    train_round,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs CUDA: run `pytest -m gpu tests/gpu` on a GPU machine "
        "(last results: docs/benchmarks.md, GPU section)",
    ),
]


def _clustered(n: int, c: int, seed: int, dtype: type = np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.dirichlet(np.full(c, 0.3), 12)
    p = centres[rng.integers(0, 12, n)] + 0.05 * rng.dirichlet(np.ones(c), n)
    return (p / p.sum(1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("strategy", ["pcoreset", "coreset"])
def test_kcenter_on_cuda_picks_what_numpy_picks(strategy: str) -> None:
    probs = _clustered(20_000, 10, seed=1)
    kw = {"probs": probs} if strategy == "pcoreset" else {"features": probs * 3.0}
    labeled = np.arange(0, 20_000, 2_000)
    cpu = select_batch(strategy, 50, labeled=labeled, device="cpu", backend="numpy", **kw)
    gpu = select_batch(strategy, 50, labeled=labeled, device="cuda", backend="auto", **kw)
    assert gpu.backend == "torch:cuda"
    assert list(gpu.indices) == list(cpu.indices)
    assert not set(gpu.indices) & set(labeled)


def test_kcenter_cuda_float32_covers_as_well_as_numpy() -> None:
    probs = _clustered(50_000, 20, seed=2, dtype=np.float32)
    labeled = np.arange(20)
    cpu = select_batch("pcoreset", 64, probs=probs, labeled=labeled, device="cpu", backend="numpy")
    gpu = select_batch("pcoreset", 64, probs=probs, labeled=labeled, device="cuda")

    def radius(picks: np.ndarray) -> float:
        centres = torch.from_numpy(probs[np.concatenate([labeled, picks])]).double()
        d = torch.cdist(torch.from_numpy(probs).double(), centres).min(1).values
        return float(d.max())

    # float32 ties may order picks differently; the covering radius must be the same
    assert radius(gpu.indices) == pytest.approx(radius(cpu.indices), rel=1e-4)


@pytest.mark.parametrize("strategy", ["badge", "entropy", "margin", "class_balanced", "random"])
def test_other_strategies_accept_cuda(strategy: str) -> None:
    probs = _clustered(5_000, 10, seed=3, dtype=np.float32)
    feats = np.random.default_rng(4).standard_normal((5_000, 32)).astype(np.float32)
    labeled = np.arange(10)
    kw = dict(probs=probs, features=feats, labeled=labeled, labels=labeled % 10, seed=7)
    gpu = select_batch(strategy, 25, device="cuda", **kw)
    cpu = select_batch(strategy, 25, device="cpu", **kw)
    assert len(set(gpu.indices)) == 25 and not set(gpu.indices) & set(labeled)
    if strategy == "random":
        assert list(gpu.indices) == list(cpu.indices)
    elif strategy != "badge":  # BADGE samples k-means++ seeds; scores may differ in float32 ulps
        assert len(set(gpu.indices) & set(cpu.indices)) >= 24


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images whose class is a bright quadrant: learnable in a few dozen steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 40, (n, 16, 16)).astype(np.uint8)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, r * 8 : r * 8 + 8, q * 8 : q * 8 + 8] += 200
    t = np.full((n, 4), 0.1 / 3, np.float32)
    t[np.arange(n), y] = 0.9
    return x, y, t


def test_student_trains_on_cuda_with_autocast_and_scores_like_cpu(tmp_path: Path) -> None:
    x, y, t = _separable(512, seed=0)
    rows = np.arange(0, 512, 8)
    cfg = StudentConfig(num_classes=4, steps=80, batch_size_labeled=32, batch_size_unlabeled=64)
    res = train_round(cfg, None, y[rows], x, t, labeled_rows=rows, device="cuda")
    assert res.device.startswith("cuda")
    losses = [h.loss for h in res.history]
    assert np.isfinite(losses).all() and np.mean(losses[-10:]) < np.mean(losses[:10])
    gpu = score_pool(res.model, x)
    assert gpu.probs.dtype == np.float32
    np.testing.assert_allclose(gpu.probs.sum(1), 1.0, atol=1e-5)
    assert (gpu.probs.argmax(1) == y).mean() > 0.9
    # a checkpoint written from CUDA loads on the CPU and predicts the same classes
    path = tmp_path / "round.ckpt"
    save_checkpoint(path, res.model, res.config, {"round": 0})
    cpu = score_pool(load_student(path, device="cpu")[0], x)
    assert np.abs(cpu.probs - gpu.probs).max() < 0.05  # bf16 autocast vs fp32
    assert (cpu.probs.argmax(1) == gpu.probs.argmax(1)).mean() > 0.98


def test_active_learning_loop_on_cuda() -> None:
    x, y, t = _separable(600, seed=1)
    cfg = LoopConfig(strategy="pcoreset", rounds=2, budget=4, seed=0,
                     student={"steps": 30, "batch_size_labeled": 16, "batch_size_unlabeled": 32})  # fmt: skip
    results = run_active_learning(cfg, x[:500], y[:500], t[:500], x[500:], y[500:], t[500:])
    assert [r.labeled for r in results] == [4, 8, 12]
    picked = [i for r in results for i in r.selected]
    assert len(picked) == len(set(picked)) == 8
    assert all(0.0 <= r.accuracy <= 1.0 for r in results)


def _fashion_mnist_available() -> bool:
    from activekd.data.fashion_mnist import data_dir

    return (data_dir() / "t10k-images-idx3-ubyte.gz").exists()


@pytest.mark.skipif(
    not _fashion_mnist_available(),
    reason="Fashion-MNIST missing: apt install dataset-fashion-mnist or set ACTIVEKD_FASHION_MNIST_DIR",
)
def test_label_map_teacher_cuda_matches_cpu() -> None:
    from activekd.data.fashion_mnist import load_fashion_mnist
    from activekd.teacher import TeacherConfig, create_teacher

    x, _ = load_fashion_mnist("test")
    x = x[:96]
    cpu = create_teacher(TeacherConfig(backend="label-map", device="cpu")).predict(x)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    fp32 = create_teacher(
        TeacherConfig(backend="label-map", device="cuda", precision="fp32")
    ).predict(x)
    auto = create_teacher(TeacherConfig(backend="label-map", device="cuda"))
    assert auto.dtype == "float32"  # "auto" keeps this teacher in fp32 on CUDA (bf16 drifts)
    bf16 = create_teacher(
        TeacherConfig(backend="label-map", device="cuda", precision="bf16")
    ).predict(x)
    assert np.abs(fp32.probs - cpu.probs).max() < 1e-3  # the cache's float16 rounding is 5e-4
    assert np.abs(fp32.features - cpu.features).max() < 1e-2
    assert (bf16.probs.argmax(1) == cpu.probs.argmax(1)).mean() >= 0.85
    assert bf16.probs.dtype == np.float32
    np.testing.assert_allclose(bf16.probs.sum(1), 1.0, atol=1e-4)


def test_open_clip_teacher_cuda_bf16_agrees_with_cpu() -> None:
    from activekd.teacher import TeacherConfig, create_teacher

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    kw = dict(backend="open_clip", model="ViT-B-32", pretrained="random",
              class_names=["cat", "dog", "car"])  # fmt: skip
    torch.manual_seed(0)  # untrained weights: the same seed gives both the same weights
    cpu = create_teacher(TeacherConfig(device="cpu", **kw))  # type: ignore[arg-type]
    torch.manual_seed(0)
    gpu = create_teacher(TeacherConfig(device="cuda", **kw))  # type: ignore[arg-type]
    assert gpu.device.startswith("cuda") and gpu.dtype in ("bfloat16", "float16")
    assert gpu.identity.fingerprint == cpu.identity.fingerprint  # same weights, same head
    a, b = cpu.predict(x), gpu.predict(x)
    cos = (a.features * b.features).sum(1) / (
        np.linalg.norm(a.features, axis=1) * np.linalg.norm(b.features, axis=1)
    )
    assert cos.min() > 0.98  # bf16 autocast through 12 untrained blocks
    np.testing.assert_allclose(b.probs.sum(1), 1.0, atol=1e-4)


def test_device_env_is_cuda() -> None:
    """Guards the run itself: these tests mean nothing if torch silently fell back to the CPU."""
    assert torch.cuda.is_available() and torch.zeros(1, device="cuda").device.type == "cuda"
    assert os.environ.get("CUDA_VISIBLE_DEVICES", "0") != ""
