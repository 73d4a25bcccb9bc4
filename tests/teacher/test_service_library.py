"""What the teacher service runs, tested as library code: class views over Redis, the batch
function, in-order streaming and the ScorePool job on the one chunked scorer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import redis

from activekd.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from activekd.state.teacher_classes import ClassSpec, TeacherClassStore
from activekd.store import PoolStore
from activekd.teacher import PredictItem, run_batch
from activekd.teacher.batching import check_predict_count, map_in_order
from activekd.teacher.cache import TeacherCacheIndex
from activekd.teacher.class_views import ClassViews
from activekd.teacher.pool_job import (
    PoolScorer,
    ScoreUpdate,
    check_score_request,
    default_output_pool,
    resolve_source,
    teacher_output_metadata,
)
from activekd.teacher.precomputed import PrecomputedTeacher
from activekd.teacher.sources import SourcePolicy


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(30, 12, 12), dtype=np.uint8)
    logits = rng.normal(size=(30, 3))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    return images, probs


def test_class_specs_keep_their_redis_key_and_json(redis_client: redis.Redis) -> None:
    store = TeacherClassStore(redis_client)
    assert store.get("e1") is None
    store.set("e1", ["cat", "dog"], ["a photo of a {}."])
    raw = redis_client.get("akd:teacher:classes:{e1}")
    assert raw is not None
    assert json.loads(raw) == {"class_names": ["cat", "dog"], "templates": ["a photo of a {}."]}
    assert store.get("e1") == ClassSpec(("cat", "dog"), ("a photo of a {}.",))
    # a spec stored before the move (same key, same JSON) reads back
    redis_client.set("akd:teacher:classes:{old}", '{"class_names": ["x"], "templates": []}')
    assert store.get("old") == ClassSpec(("x",), ())


def test_class_store_checks_the_experiment_id(redis_client: redis.Redis) -> None:
    """The id goes into a Redis key (and its hash tag): the one experiment id rule applies."""
    store = TeacherClassStore(redis_client)
    for bad in ("a}b", "a/b", "x" * 5000, "e\n"):
        with pytest.raises(InvalidArgument, match="experiment id") as exc:
            store.get(bad)
        assert len(str(exc.value)) < 200
        with pytest.raises(InvalidArgument):
            store.set(bad, ["cat"])
    assert not list(redis_client.scan_iter(match="akd:teacher:classes:*}b*"))


def test_class_views_per_experiment(
    redis_client: redis.Redis, data: tuple[np.ndarray, np.ndarray]
) -> None:
    images, probs = data
    teacher = PrecomputedTeacher(probs, images=images)
    views = ClassViews(teacher, TeacherClassStore(redis_client), capacity=1)

    async def main() -> None:
        assert await views.get("") is teacher and await views.get("none") is teacher
        view = await views.set("e", ["a", "b", "c"], [])
        assert view.class_names == ("a", "b", "c") and teacher.class_names != view.class_names
        assert await views.get("e") is view  # cached while the stored spec is unchanged
        again = ClassViews(teacher, TeacherClassStore(redis_client))  # after a restart
        assert (await again.get("e")).class_names == ("a", "b", "c")
        with pytest.raises(InvalidArgument, match="experiment_id is required"):
            await views.set("", ["a"], [])
        with pytest.raises(InvalidArgument, match="class_names is empty"):
            await views.set("e", [], [])
        with pytest.raises(InvalidArgument):
            await views.set("e", ["a", "b"], [])  # 3 columns: rejected, nothing stored
        assert (await views.get("e")).class_names == ("a", "b", "c")
        redis_client.set("akd:teacher:classes:{bad}", '{"class_names": ["a"], "templates": []}')
        with pytest.raises(FailedPrecondition, match="call SetClasses again"):
            await views.get("bad")

    asyncio.run(main())


def test_run_batch_groups_by_view_and_shape_and_fails_items_alone(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    images, probs = data
    teacher = PrecomputedTeacher(probs, images=images)
    renamed = teacher.with_classes(["x", "y", "z"])

    def broken() -> np.ndarray:
        raise InvalidArgument("no pixels", field="source")

    items = [
        PredictItem(teacher, images[0]),
        PredictItem(renamed, lambda: images[1]),
        PredictItem(teacher, b"not an image"),
        PredictItem(teacher, broken),
        PredictItem(teacher, np.zeros((16, 16), np.uint8)),  # not among the images
        PredictItem(teacher, images[2]),
        PredictItem(renamed, np.zeros((16, 16), np.uint8)),
    ]
    out = run_batch(items)
    np.testing.assert_array_equal(out[0].probs, probs[0])
    np.testing.assert_array_equal(out[1].probs, probs[1])
    np.testing.assert_array_equal(out[5].probs, probs[2])
    assert isinstance(out[2].error, InvalidArgument)
    assert isinstance(out[3].error, InvalidArgument) and "no pixels" in str(out[3].error)
    # a failing forward pass fails its group (same view, same shape) only
    assert isinstance(out[4].error, NotFound) and isinstance(out[6].error, NotFound)
    assert out[4].error is not out[6].error
    assert [r.ok for r in out] == [True, True, False, False, False, True, False]


def test_request_checks() -> None:
    assert check_predict_count(3, 3) == 3
    with pytest.raises(InvalidArgument, match="images is empty"):
        check_predict_count(0, 3)
    with pytest.raises(ResourceExhausted, match="at most 3"):
        check_predict_count(4, 3)
    assert check_score_request("folder", 0) == "folder"
    with pytest.raises(InvalidArgument, match="source is required"):
        check_score_request(None, 0)
    with pytest.raises(InvalidArgument, match="must be >= 0"):
        check_score_request("folder", -1)


def test_map_in_order_keeps_request_order_and_bounds_in_flight() -> None:
    running = {"now": 0, "max": 0}

    async def requests() -> AsyncIterator[int]:
        for i in range(12):
            yield i

    async def fn(req: int, index: int) -> tuple[int, int]:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        await asyncio.sleep(0.001 * (12 - req))  # later requests finish first
        running["now"] -= 1
        return req, index

    async def main() -> list[tuple[int, int]]:
        return [r async for r in map_in_order(requests(), fn, max_in_flight=4)]

    assert asyncio.run(main()) == [(i, i) for i in range(12)]
    assert running["max"] <= 4


def test_score_pool_job_resumes_through_the_pool_writer(
    pool_store: PoolStore, tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    images, probs = data
    np.save(tmp_path / "imgs.npy", images)
    teacher = PrecomputedTeacher(probs, images=images)
    computed: list[int] = []
    policy = SourcePolicy((tmp_path,))  # the source lies outside the store: allow its folder
    scorer = PoolScorer(
        pool_store,
        TeacherCacheIndex([]),
        on_chunk=lambda b, d, n, s: computed.append(n),
        policy=policy,
    )
    ref = str(tmp_path / "imgs.npy")

    async def run(limit: int = 0, stop_after: int | None = None) -> list[ScoreUpdate]:
        out = []
        job = scorer.score(teacher, "array_uri", ref, dataset="toy", chunk_size=8)
        async for u in job:
            out.append(u)
            if stop_after is not None and len(out) == stop_after:
                await job.aclose()  # the job is "killed" after two chunks
                break
        return out

    first = asyncio.run(run(stop_after=2))
    assert [u.done for u in first] == [8, 16] and computed == [8, 8]
    second = asyncio.run(run())
    assert [u.done for u in second] == [8, 16, 24, 30, 30]
    assert second[-1].chunks_resumed == 2 and computed == [8, 8, 8, 6]
    meta = second[-1].meta
    assert meta is not None and meta.pool_id == default_output_pool(teacher.fingerprint, "toy")
    np.testing.assert_array_equal(pool_store.open_array(meta.pool_id, "probs"), probs)
    third = asyncio.run(run())
    assert len(third) == 1 and third[0].cached and computed == [8, 8, 8, 6]
    assert resolve_source("array_uri", ref, 0, pool_store, policy).total == 30
    with pytest.raises(PermissionDenied, match="data root"):  # the default: the store only
        resolve_source("array_uri", ref, 0, pool_store)


def test_extra_metadata_cannot_replace_the_cache_key(
    pool_store: PoolStore, tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    images, probs = data
    np.save(tmp_path / "imgs.npy", images)
    source = resolve_source(
        "array_uri", str(tmp_path / "imgs.npy"), 0, pool_store, SourcePolicy((tmp_path,))
    )
    teacher = PrecomputedTeacher(probs, images=images)
    md = teacher_output_metadata(teacher, source, "toy", scorer="ray-data")
    assert md["teacher_fingerprint"] == teacher.fingerprint and md["scorer"] == "ray-data"
    with pytest.raises(ValueError, match="source_signature, teacher_fingerprint"):
        teacher_output_metadata(
            teacher, source, "toy", teacher_fingerprint="x", source_signature="y"
        )
