"""Fixtures for the student tests.

Teacher: a *synthetic* one, on purpose independent of ``activekd.teacher`` (so these tests do not
break when the teacher library changes, and run in seconds: the label-map EfficientNet teacher
costs ~30 images/s on 2 cores). It is a nearest-centroid classifier on raw pixels, class centroids
from 100 images per class of train rows 50,000-59,999 (never in the pools below), with
``softmax(-squared_distance / 8)``: deliberately imperfect, 68.0% on the test subset below, mean
max-probability 0.73 (roughly calibrated), its errors systematic like a zero-shot teacher's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from activekd.data.fashion_mnist import balanced_subset, load_fashion_mnist

TEACHER_FIT_ROWS = (50_000, 60_000)
TEACHER_PER_CLASS = 100
TEACHER_TAU = 8.0


@dataclass(frozen=True)
class CentroidTeacher:
    """Nearest-centroid teacher on flattened pixels in [0, 1]."""

    centroids: np.ndarray  # (C, 784) float32
    tau: float

    def probs(self, images: np.ndarray) -> np.ndarray:
        f = images.reshape(len(images), -1).astype(np.float32) / 255.0
        d2 = (f**2).sum(1)[:, None] - 2.0 * f @ self.centroids.T + (self.centroids**2).sum(1)
        z = -d2 / self.tau
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class FashionSplit:
    """A Fashion-MNIST pool (train rows < 50,000) and test subset with teacher probabilities."""

    x_pool: np.ndarray
    y_pool: np.ndarray
    t_pool: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    t_test: np.ndarray
    teacher: CentroidTeacher


@pytest.fixture(scope="session")
def centroid_teacher() -> CentroidTeacher:
    x, y = load_fashion_mnist("train")
    lo, hi = TEACHER_FIT_ROWS
    xs = x[lo:hi].reshape(hi - lo, -1).astype(np.float32) / 255.0
    ys = y[lo:hi]
    rows = balanced_subset(ys, TEACHER_PER_CLASS, seed=0)
    cents = np.stack([xs[rows[ys[rows] == c]].mean(axis=0) for c in range(10)])
    return CentroidTeacher(cents.astype(np.float32), TEACHER_TAU)


@pytest.fixture(scope="session")
def fashion(centroid_teacher: CentroidTeacher) -> FashionSplit:
    """Pool: 3,000 train images (300/class, rows < 50,000); test: 1,000 (100/class)."""
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    pool = balanced_subset(ytr[: TEACHER_FIT_ROWS[0]], 300, seed=1)
    test = balanced_subset(yte, 100, seed=2)
    x_pool, x_test = np.ascontiguousarray(xtr[pool]), np.ascontiguousarray(xte[test])
    return FashionSplit(
        x_pool=x_pool,
        y_pool=ytr[pool].copy(),
        t_pool=centroid_teacher.probs(x_pool),
        x_test=x_test,
        y_test=yte[test].copy(),
        t_test=centroid_teacher.probs(x_test),
        teacher=centroid_teacher,
    )


@dataclass(frozen=True)
class TinyData:
    """Random 12x12 grayscale images with labels and Dirichlet teacher probabilities."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    labeled: np.ndarray


@pytest.fixture
def tiny() -> TinyData:
    rng = np.random.default_rng(123)
    n, c = 48, 4
    x = rng.integers(0, 256, size=(n, 12, 12), dtype=np.uint8)
    y = rng.integers(0, c, size=n).astype(np.int64)
    t = rng.dirichlet(np.ones(c), size=n).astype(np.float32)
    labeled = np.arange(0, n, 6, dtype=np.int64)
    return TinyData(x, y, t, labeled)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One torch thread per test: the 2-core dev/CI box is shared with other jobs, and 2 OpenMP
    threads under contention stalled MobileNetV2 forwards ~100x here (2.0 s vs 0.012 s)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@dataclass(frozen=True)
class FeatureSplit:
    """``fashion`` as 64-d PCA feature vectors (basis from teacher-fit rows, not the pool)."""

    f_pool: np.ndarray
    f_test: np.ndarray


@pytest.fixture(scope="session")
def fashion_pca(fashion: FashionSplit) -> FeatureSplit:
    x, _ = load_fashion_mnist("train")
    lo = TEACHER_FIT_ROWS[0]
    fit = x[lo : lo + 3000].reshape(3000, -1).astype(np.float32) / 255.0
    mean = fit.mean(axis=0)
    centred = (fit - mean).astype(np.float64)
    _, vecs = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    basis = vecs[:, ::-1][:, :64].astype(np.float32)

    def project(images: np.ndarray) -> np.ndarray:
        flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
        return np.ascontiguousarray((flat - mean) @ basis, dtype=np.float32)

    return FeatureSplit(project(fashion.x_pool), project(fashion.x_test))
