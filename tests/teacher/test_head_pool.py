"""The teacher's zero-shot head stored beside its scored pool (activekd.teacher.head_pool):
ScorePool writes open_clip's, it reproduces the pool's probabilities, and a head that does not
fit its teacher pool is refused with a message instead of being adapted silently."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES
from activekd.errors import FailedPrecondition
from activekd.store import PoolStore
from activekd.teacher.adapt import head_probs
from activekd.teacher.cache import TeacherCacheIndex
from activekd.teacher.head_pool import (
    HEAD_POOL_KEY,
    TeacherHead,
    head_pool_id,
    read_head,
    teacher_head,
    write_head,
)
from activekd.teacher.open_clip_teacher import OpenClipTeacher
from activekd.teacher.pool_job import PoolScorer
from activekd.teacher.precomputed import PrecomputedTeacher
from activekd.teacher.sources import SourcePolicy


def _score(store: PoolStore, teacher: Any, ref: str, folder: Path) -> Any:
    scorer = PoolScorer(store, TeacherCacheIndex([]), policy=SourcePolicy((folder,)))

    async def run() -> Any:
        return [u async for u in scorer.score(teacher, "array_uri", ref, dataset="toy")][-1]

    return asyncio.run(run()).meta


def test_score_pool_stores_open_clips_head_and_it_reproduces_the_pool(
    pool_store: PoolStore, random_tiny_clip: Any, fmnist_test: Any, tmp_path: Path
) -> None:
    _, ckpt = random_tiny_clip
    teacher = OpenClipTeacher.load(
        "tiny-clip-32", str(ckpt), device="cpu", class_names=FASHION_MNIST_CLASSES,
        temperature=2.0,
    )  # fmt: skip
    np.save(tmp_path / "imgs.npy", fmnist_test[0][:24])
    meta = _score(pool_store, teacher, str(tmp_path / "imgs.npy"), tmp_path)
    assert meta.metadata[HEAD_POOL_KEY] == head_pool_id(meta.pool_id)
    head = read_head(pool_store, meta, num_classes=10, feature_dim=teacher.feature_dim)
    assert head is not None and head.class_names == FASHION_MNIST_CLASSES
    np.testing.assert_array_equal(head.prototypes, teacher.zero_shot_weights)
    assert head.logit_scale == pytest.approx(teacher.logit_scale / 2.0)
    # the stored head is the teacher's zero-shot head: on the stored features it gives the
    # stored probabilities (temperature included)
    feats = np.array(pool_store.open_array(meta.pool_id, "features"))
    probs = np.asarray(pool_store.open_array(meta.pool_id, "probs"))
    np.testing.assert_allclose(
        head_probs(feats, head.prototypes, head.logit_scale), probs, atol=1e-4
    )


def test_a_teacher_without_a_linear_head_stores_none(pool_store: PoolStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 8, 8), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(3), size=12).astype(np.float32)
    teacher = PrecomputedTeacher(probs, images=images)
    assert teacher_head(teacher) is None
    np.save(tmp_path / "imgs.npy", images)
    meta = _score(pool_store, teacher, str(tmp_path / "imgs.npy"), tmp_path)
    assert HEAD_POOL_KEY not in meta.metadata
    assert read_head(pool_store, meta, num_classes=3, feature_dim=0) is None
    assert not pool_store.exists(head_pool_id(meta.pool_id))


def test_a_head_that_does_not_fit_its_teacher_pool_is_refused(pool_store: PoolStore) -> None:
    names = ("a", "b", "c")
    rng = np.random.default_rng(1)
    head = TeacherHead(rng.normal(size=(3, 4)).astype(np.float32), 20.0, names)
    ids = [str(i) for i in range(6)]
    probs = rng.dirichlet(np.ones(3), size=6).astype(np.float32)

    def teacher_pool(pool_id: str, head_id: str, classes: tuple[str, ...] = names) -> Any:
        pool_store.put(
            pool_id, ids, {"probs": probs},
            metadata={HEAD_POOL_KEY: head_id, "class_names": json.dumps(list(classes))},
            overwrite=True,
        )  # fmt: skip
        return pool_store.describe(pool_id)

    meta = teacher_pool("t/ok", write_head(pool_store, "t/ok", head))
    got = read_head(pool_store, meta, num_classes=3, feature_dim=4)
    assert got is not None and got.logit_scale == 20.0 and got.class_names == names
    np.testing.assert_array_equal(got.prototypes, head.prototypes)
    with pytest.raises(FailedPrecondition, match=r"prototypes are \[3, 4\].*5-d features"):
        read_head(pool_store, meta, num_classes=3, feature_dim=5)
    with pytest.raises(FailedPrecondition, match="which is not in the store"):
        read_head(
            pool_store, teacher_pool("t/gone", "t/nothing-here"), num_classes=3, feature_dim=4
        )
    other = teacher_pool("t/other", head_pool_id("t/ok"), classes=("c", "b", "a"))
    with pytest.raises(FailedPrecondition, match="classes are not the teacher pool's"):
        read_head(pool_store, other, num_classes=3, feature_dim=4)
    with pytest.raises(ValueError, match="logit_scale"):
        write_head(pool_store, "t/bad", TeacherHead(head.prototypes, float("nan"), names))
    # metadata anyone can upload: malformed values are FailedPrecondition, not internal errors
    pool_store.put("t/odd-head", list(names), {"prototypes": head.prototypes},
                   metadata={"logit_scale": "twenty"})  # fmt: skip
    with pytest.raises(FailedPrecondition, match="logit_scale is not a number"):
        read_head(pool_store, teacher_pool("t/odd", "t/odd-head"), num_classes=3, feature_dim=4)
    pool_store.put("t/bad-names", ids, {"probs": probs}, overwrite=True,
                   metadata={HEAD_POOL_KEY: head_pool_id("t/ok"), "class_names": "[a, b"})  # fmt: skip
    with pytest.raises(FailedPrecondition, match="class_names metadata that is not a JSON list"):
        read_head(pool_store, pool_store.describe("t/bad-names"), num_classes=3, feature_dim=4)
