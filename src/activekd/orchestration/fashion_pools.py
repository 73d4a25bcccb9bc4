"""The built-in Fashion-MNIST pools of ``activekd demo`` and ``activekd run``.

A seeded sample of Fashion-MNIST train rows (the unlabeled pool) and test rows, with the teacher
probabilities of the shipped teacher cache (the EfficientNet-Lite0 label-map teacher), uploaded
through SelectionService as four pools. :meth:`FashionMnistPools.check_teacher` compares a random
sample of cached rows with live inference of a running TeacherService.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activekd.client import SelectionClient, TeacherClient
from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from activekd.errors import FailedPrecondition, InvalidArgument

CACHE = Path(__file__).resolve().parents[1] / "data" / "teacher_cache"
DRIFT_ATOL = 5e-3  # float16 cache vs live float32 inference
DATASET = "fashion-mnist"
TRAIN_ROWS, TEST_ROWS = 60_000, 10_000


def find_cache() -> Path:
    """The teacher cache shipped in the package (the newest ``fashion-mnist-label-map-224*.npz``)."""
    found = sorted(CACHE.glob("fashion-mnist-label-map-224*.npz"))
    if not found:
        raise FailedPrecondition(
            f"no teacher cache in {CACHE}: run `.venv/bin/python scripts/build_teacher_cache.py`"
        )
    return found[-1]


@dataclass(frozen=True)
class PoolIds:
    """The four pool ids an experiment over the built-in data uses."""

    pool: str
    test: str
    teacher_pool: str
    teacher_test: str

    @classmethod
    def with_prefix(cls, prefix: str) -> PoolIds:
        """``<prefix>/pool``, ``<prefix>/test``, ``<prefix>/teacher-pool``, ``<prefix>/teacher-test``."""
        return cls(
            f"{prefix}/pool", f"{prefix}/test", f"{prefix}/teacher-pool", f"{prefix}/teacher-test"
        )


class FashionMnistPools:
    """``pool_size`` train rows and ``test_size`` test rows drawn with ``seed``, plus cached probs.

    Loads the images and the teacher cache at construction, so a missing dataset or cache fails
    before any service is started.
    """

    class_names: tuple[str, ...] = FASHION_MNIST_CLASSES
    dataset = DATASET

    def __init__(self, pool_size: int, test_size: int, seed: int = 0) -> None:
        from activekd.teacher.cache import load_split_probs

        if not 1 <= pool_size <= TRAIN_ROWS:
            raise InvalidArgument(f"pool_size {pool_size} must be in 1..{TRAIN_ROWS}")
        if not 1 <= test_size <= TEST_ROWS:
            raise InvalidArgument(f"test_size {test_size} must be in 1..{TEST_ROWS}")
        self.cache = find_cache()
        self.identity, self.probs = load_split_probs(self.cache)
        self.xtr, self.ytr = load_fashion_mnist("train")
        self.xte, self.yte = load_fashion_mnist("test")
        self.rng = np.random.default_rng(seed)
        self.pool_rows = np.sort(
            self.rng.choice(len(self.probs["train"]), pool_size, replace=False)
        )
        self.test_rows = np.sort(self.rng.choice(len(self.probs["test"]), test_size, replace=False))

    @property
    def teacher_accuracy(self) -> float:
        """Top-1 of the cached teacher probabilities on the sampled test rows."""
        rows = self.test_rows
        return float((self.probs["test"][rows].argmax(1) == self.yte[rows]).mean())

    def check_teacher(self, teacher: TeacherClient, rows: int) -> float:
        """Compare ``rows`` random pool rows of the cache with live inference; the max abs diff.

        Raises FailedPrecondition when the service runs another teacher or the cache drifted.
        """
        live_id = teacher.describe().fingerprint
        if live_id != self.identity.fingerprint:
            raise FailedPrecondition(
                f"teacher cache {self.cache.name} was made by teacher {self.identity.fingerprint}, "
                f"the service runs {live_id}: start it with ACTIVEKD_TEACHER_BACKEND=label-map "
                "or rebuild the cache"
            )
        check = self.rng.choice(self.pool_rows, min(rows, len(self.pool_rows)), replace=False)
        live = teacher.predict([self.xtr[i] for i in check])
        got = np.stack([np.asarray(p.probs) for p in live])
        worst = float(np.abs(got - self.probs["train"][check]).max())
        if worst > DRIFT_ATOL:
            raise FailedPrecondition(
                f"teacher cache drifted: max |live - cached| = {worst:.4f} > {DRIFT_ATOL}"
            )
        return worst

    def upload(self, sel: SelectionClient, ids: PoolIds) -> PoolIds:
        """Upload pool, test split and both teacher-probability pools (overwriting); ``ids``."""
        pool, test = self.pool_rows, self.test_rows
        item_ids = [f"train-{i}" for i in pool]
        test_ids = [f"test-{i}" for i in test]
        uploads = [
            (ids.pool, item_ids, {"images": self.xtr[pool], "labels": self.ytr[pool]}),
            (ids.test, test_ids, {"images": self.xte[test], "labels": self.yte[test]}),
            (ids.teacher_pool, item_ids, {"probs": self.probs["train"][pool]}),
            (ids.teacher_test, test_ids, {"probs": self.probs["test"][test]}),
        ]
        for pool_id, names, arrays in uploads:
            sel.upload_pool(pool_id, item_ids=names, overwrite=True, arrays=arrays)
        return ids


__all__ = ["CACHE", "DATASET", "DRIFT_ATOL", "FashionMnistPools", "PoolIds", "find_cache"]
