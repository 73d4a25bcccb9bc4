"""The sharded pool layout (issue #15): arrays stored as files of ``shard_rows`` rows plus a
manifest; chunks that straddle shards land in the right files; every reader gets the same rows as
from the one-file layout; resume, overwrite and bad settings behave as for unsharded pools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis

from activekd.errors import FailedPrecondition, InvalidArgument, NotFound
from activekd.store import PoolStore
from activekd.store.pool_arrays import PoolArrays
from activekd.store.pool_store import MANIFEST, MAX_SHARDS, shard_file_name, shard_ranges


def _pool(n: int = 230, c: int = 7, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(c), size=n).astype(np.float32)
    feats = rng.normal(size=(n, 3)).astype(np.float16)
    return [f"item-{i:04d}" for i in range(n)], probs, feats


def test_shard_ranges_cover_every_row_once() -> None:
    assert shard_ranges(10, 0) == [(0, 10)]
    assert shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_ranges(8, 4) == [(0, 4), (4, 8)]
    for n, r in ((1, 1), (99, 7), (100, 10), (5, 100)):
        bounds = shard_ranges(n, r)
        rows = np.concatenate([np.arange(a, b) for a, b in bounds])
        assert rows.tolist() == list(range(n)) and all(b - a <= r for a, b in bounds)


def test_chunks_straddling_shards_land_in_the_right_files(pool_store: PoolStore) -> None:
    ids, probs, feats = _pool()
    w = pool_store.begin("sharded/a", len(ids), shard_rows=64)
    for start in (0, 50, 100, 170):  # chunk size 50/70: every chunk but one straddles a bound
        stop = {0: 50, 50: 100, 100: 170, 170: 230}[start]
        w.write(
            start,
            item_ids=ids[start:stop],
            arrays={"probs": probs[start:stop], "features": feats[start:stop]},
        )
    meta = w.commit()
    assert meta.shard_rows == 64 and meta.shard_bounds() == [
        (0, 64),
        (64, 128),
        (128, 192),
        (192, 230),
    ]
    assert meta.arrays["probs"].shape == [230, 7] and meta.arrays["features"].dtype == "float16"
    folder = pool_store.root / "sharded/a" / f"v-{meta.version}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["item_ids.npy", MANIFEST]
        + [shard_file_name(n, k) for n in ("probs", "features") for k in range(4)]
    )
    for k, (a, b) in enumerate(meta.shard_bounds()):
        np.testing.assert_array_equal(np.load(folder / shard_file_name("probs", k)), probs[a:b])
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["layout"] == "sharded" and manifest["num_items"] == 230
    assert [(s["start"], s["stop"]) for s in manifest["shards"]] == meta.shard_bounds()
    assert manifest["shards"][3]["files"] == {
        "features": "features.s00003.npy",
        "probs": "probs.s00003.npy",
    }
    assert manifest["arrays"]["probs"] == {"dtype": "float32", "shape": [230, 7]}


def test_every_reader_gets_the_rows_of_the_one_file_layout(pool_store: PoolStore) -> None:
    ids, probs, feats = _pool(n=101)
    arrays = {"probs": probs, "features": feats}
    pool_store.put("flat/p", ids, arrays)
    pool_store.put("sharded/p", ids, arrays, shard_rows=25)
    for name, want in arrays.items():
        got = pool_store.open_array("sharded/p", name)
        assert got.dtype == want.dtype and not got.flags.writeable
        np.testing.assert_array_equal(got, pool_store.open_array("flat/p", name))
        shards = pool_store.open_shards("sharded/p", name)
        assert [(s.start, s.stop) for s in shards] == [
            (0, 25),
            (25, 50),
            (50, 75),
            (75, 100),
            (100, 101),
        ]
        for s in shards:
            part = np.load(s.path, mmap_mode="r")
            np.testing.assert_array_equal(part, want[s.start : s.stop])
        (flat,) = pool_store.open_shards("flat/p", name)  # one file covering every row
        assert (flat.start, flat.stop) == (0, 101) and flat.path.name == f"{name}.npy"
    assert pool_store.item_ids("sharded/p").tolist() == ids
    assert pool_store.rows_for("sharded/p", ["item-0099", "item-0003"]).tolist() == [99, 3]
    pa = PoolArrays.open(pool_store, "sharded/p")  # what SelectBatch reads without Ray
    np.testing.assert_array_equal(pa.probs, probs)
    with pytest.raises(NotFound, match="has no array 'logits'"):
        pool_store.open_shards("sharded/p", "logits")


def test_resume_keeps_the_sharding_and_overwrite_replaces_it(pool_store: PoolStore) -> None:
    ids, probs, _ = _pool(n=90)
    w = pool_store.begin("sharded/r", 90, shard_rows=40)
    w.write(0, item_ids=ids[:50], arrays={"probs": probs[:50]})
    # a resume asking for another sharding starts afresh; the same sharding continues
    other = pool_store.begin("sharded/r", 90, resume=True, shard_rows=30)
    assert other.version != w.version
    other.abort()
    again = pool_store.begin("sharded/r", 90, resume=True, shard_rows=40)
    assert again.version == w.version and again.done_ranges() == [(0, 50)]
    again.write(50, item_ids=ids[50:], arrays={"probs": probs[50:]})
    old = again.commit()
    np.testing.assert_array_equal(pool_store.open_array("sharded/r", "probs"), probs)
    new = pool_store.put("sharded/r", ids, {"probs": probs[::-1].copy()}, overwrite=True)
    assert new.shard_rows == 0
    assert not (pool_store.root / "sharded/r" / f"v-{old.version}").exists()
    np.testing.assert_array_equal(pool_store.open_array("sharded/r", "probs"), probs[::-1])


def test_bad_settings_and_incomplete_shards_are_clear(pool_store: PoolStore) -> None:
    ids, probs, _ = _pool(n=20)
    with pytest.raises(InvalidArgument, match="shard_rows must be 0"):
        pool_store.begin("sharded/x", 20, shard_rows=-1)
    n = MAX_SHARDS * 3 + 1
    with pytest.raises(
        InvalidArgument, match=f"into {n} files; at most {MAX_SHARDS}: use shard_rows >= 4"
    ):
        pool_store.begin("sharded/x", n, shard_rows=1)
    pool_store.begin("sharded/x", n, shard_rows=4).abort()  # 3073 files: allowed
    one = pool_store.put("sharded/one", ids, {"probs": probs}, shard_rows=20)
    assert one.shard_rows == 0, "one shard holding every row is the one-file layout"
    w = pool_store.begin("sharded/x", 20, shard_rows=8)
    w.write(0, item_ids=ids[:10], arrays={"probs": probs[:10]})
    w.write(12, item_ids=ids[12:], arrays={"probs": probs[12:]})
    with pytest.raises(FailedPrecondition, match=r"rows \[10, 12\) were never written"):
        w.commit()
    with pytest.raises(InvalidArgument, match="earlier chunks were float32"):
        w.write(10, item_ids=ids[10:12], arrays={"probs": probs[10:12].astype(np.float64)})
    assert not pool_store.exists("sharded/x")


def test_a_pool_meta_without_the_field_reads_as_unsharded(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Pools stored before the sharded layout existed (their Redis JSON has no shard_rows)."""
    store = PoolStore(tmp_path / "store", redis_client, prefix="old")
    ids, probs, _ = _pool(n=12)
    meta = store.put("old/p", ids, {"probs": probs})
    raw = json.loads(meta.to_json())
    del raw["shard_rows"]
    redis_client.set(store._meta_key("old/p"), json.dumps(raw))
    assert store.describe("old/p").shard_rows == 0
    np.testing.assert_array_equal(store.open_array("old/p", "probs"), probs)


def test_a_commit_retried_after_a_failed_upload_keeps_the_item_ids(pool_store: PoolStore) -> None:
    """commit() writes item_ids.npy before it uploads and publishes; when the upload fails, the
    resumed writer's commit must reuse those ids, not number the rows afresh."""
    from activekd.errors import Unavailable

    ids, probs, _ = _pool(n=30)

    class StorageDown:  # the object-storage edge failing mid-commit
        def upload(self, *args: object) -> None:
            raise Unavailable("object storage did not answer; retry")

    w = pool_store.begin("sharded/retry", 30, shard_rows=12)
    w.write(0, item_ids=ids, arrays={"probs": probs})
    pool_store.remote = StorageDown()  # type: ignore[assignment]
    try:
        with pytest.raises(Unavailable):
            w.commit()
    finally:
        pool_store.remote = None
    assert not pool_store.exists("sharded/retry")
    again = pool_store.begin("sharded/retry", 30, resume=True, shard_rows=12)
    assert again.version == w.version
    again.commit()
    assert pool_store.item_ids("sharded/retry").tolist() == ids
    np.testing.assert_array_equal(pool_store.open_array("sharded/retry", "probs"), probs)
