"""Output cache and chunked, resumable pool scoring."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from activekd.errors import FailedPrecondition, InvalidArgument
from activekd.teacher import (
    DirectoryChunkSink,
    MemoryChunkSink,
    ScoreProgress,
    TeacherIdentity,
    TeacherOutput,
    TeacherOutputCache,
    default_cache_dir,
    iter_score_pool,
    score_pool,
)
from activekd.teacher.base import BaseTeacher


class StatsTeacher(BaseTeacher):
    """A cheap deterministic teacher: probabilities from pixel statistics; counts images seen."""

    def __init__(self, scale: float = 50.0) -> None:
        super().__init__(batch_size=8)
        self.scale = scale
        self.images_seen = 0
        self._identity = TeacherIdentity(
            "test", "stats", f"scale={scale}", ("a", "b", "c"), (), "none"
        )

    @property
    def identity(self) -> TeacherIdentity:
        return self._identity

    @property
    def feature_dim(self) -> int:
        return 2

    def _predict_batch(self, images: np.ndarray) -> TeacherOutput:
        self.images_seen += images.shape[0]
        flat = images.reshape(images.shape[0], -1).astype(np.float64)
        z = np.stack([flat.mean(1), flat.std(1), flat.max(1)], 1) / self.scale
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return TeacherOutput(p.astype(np.float32), z[:, :2].astype(np.float32))

    def with_classes(self, class_names: Sequence[str], templates: Sequence[str] | None = None):  # type: ignore[no-untyped-def]
        raise InvalidArgument("fixed classes")

    def _adopt(self, other: BaseTeacher) -> None:
        raise AssertionError


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(50, 10, 10), dtype=np.uint8)


def test_cache_round_trip_and_key_isolation(tmp_path: Path, images: np.ndarray) -> None:
    cache = TeacherOutputCache(tmp_path)
    t = StatsTeacher()
    rows = np.arange(10, 30)
    out, cached = cache.get_or_compute(t, "toy", "train", rows, images[rows])
    assert not cached and t.images_seen == 20
    again, cached = cache.get_or_compute(t, "toy", "train", rows, images[rows])
    assert cached and t.images_seen == 20  # no recomputation
    np.testing.assert_array_equal(again.probs, out.probs)
    np.testing.assert_array_equal(again.features, out.features)
    ident = t.identity
    assert cache.get(ident, "toy", "train", rows[::-1]) is None  # other order, other key
    assert cache.get(ident, "toy", "test", rows) is None
    assert cache.get(ident, "other", "train", rows) is None
    assert cache.get(StatsTeacher(scale=9.0).identity, "toy", "train", rows) is None
    # stored without features: a hit only when features are not needed
    cache.put(ident, "toy", "val", rows, out, store_features=False)
    assert cache.get(ident, "toy", "val", rows) is None
    hit = cache.get(ident, "toy", "val", rows, need_features=False)
    assert hit is not None and hit.features.shape == (20, 0)
    # a damaged file is a miss, not a crash
    path = cache.path(ident.fingerprint, "toy", "train", rows)
    path.write_bytes(b"broken")
    assert cache.get(ident, "toy", "train", rows) is None
    with pytest.raises(InvalidArgument, match="dataset"):
        cache.path(ident.fingerprint, "../etc", "train", rows)
    with pytest.raises(InvalidArgument, match="output rows"):
        cache.put(ident, "toy", "train", rows[:3], out)


def test_default_cache_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ACTIVEKD_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert TeacherOutputCache().root == tmp_path / "c"
    monkeypatch.delenv("ACTIVEKD_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "activekd" / "teacher"


def test_score_pool_equals_one_big_predict(images: np.ndarray) -> None:
    t = StatsTeacher()
    seen: list[ScoreProgress] = []
    out = score_pool(t, images, chunk_size=16, progress=seen.append)
    ref = StatsTeacher().predict(images)
    np.testing.assert_allclose(out.probs, ref.probs, atol=1e-7)
    assert [p.done for p in seen] == [16, 32, 48, 50]
    assert all(p.total == 50 and p.num_chunks == 4 for p in seen)
    loaded = score_pool(t, lambda a, b: images[a:b], total=50, chunk_size=7)
    np.testing.assert_allclose(loaded.probs, ref.probs, atol=1e-7)
    with pytest.raises(InvalidArgument, match="total is required"):
        list(iter_score_pool(t, lambda a, b: images[a:b]))
    with pytest.raises(InvalidArgument, match="returned 3 images"):
        list(iter_score_pool(t, lambda a, b: images[:3], total=10, chunk_size=5))
    with pytest.raises(InvalidArgument, match="chunk_size"):
        list(iter_score_pool(t, images, chunk_size=0))


def test_an_interrupted_job_resumes_from_its_chunks(tmp_path: Path, images: np.ndarray) -> None:
    t = StatsTeacher()
    sink = DirectoryChunkSink(tmp_path / "job", t.identity, 50, 10)
    first = list(itertools.islice(iter_score_pool(t, images, chunk_size=10, sink=sink), 2))
    assert [p.done for p in first] == [10, 20] and t.images_seen == 20  # "crash" after 2

    t2 = StatsTeacher()
    sink2 = DirectoryChunkSink(tmp_path / "job", t2.identity, 50, 10)
    progress = list(iter_score_pool(t2, images, chunk_size=10, sink=sink2))
    assert [p.resumed for p in progress] == [True, True, False, False, False]
    assert progress[-1].chunks_resumed == 2 and t2.images_seen == 30  # only the rest computed
    full = score_pool(StatsTeacher(), images, chunk_size=10, sink=sink2)
    np.testing.assert_allclose(full.probs, StatsTeacher().predict(images).probs, atol=1e-7)

    with pytest.raises(FailedPrecondition, match="another job"):
        DirectoryChunkSink(tmp_path / "job", StatsTeacher(scale=3).identity, 50, 10)
    with pytest.raises(FailedPrecondition, match="another job"):
        DirectoryChunkSink(tmp_path / "job", t.identity, 50, 20)
    fresh = DirectoryChunkSink(tmp_path / "job", t.identity, 50, 20, reset=True)
    assert not fresh.has_chunk(0)


def test_float16_chunks_without_features_are_renormalised(
    tmp_path: Path, images: np.ndarray
) -> None:
    t = StatsTeacher(scale=5.0)
    sink = DirectoryChunkSink(
        tmp_path / "h", t.identity, 50, 25, store_features=False, probs_dtype="float16"
    )
    out = score_pool(t, images, chunk_size=25, sink=sink)
    assert out.features.shape == (50, 0)
    np.testing.assert_allclose(out.probs.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out.probs, StatsTeacher(scale=5.0).predict(images).probs, atol=2e-3)
    mem = MemoryChunkSink()
    score_pool(t, images, chunk_size=25, sink=mem)
    assert sorted(mem.chunks) == [0, 1]
