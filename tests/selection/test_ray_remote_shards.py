"""A sharded pool in object storage selected on Ray, each worker downloading only its own shard
file: a real S3-compatible server on loopback (moto_server) and a real local Ray instance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from activekd.distributed.pool_select import ShardedRequest, ShardedSelector
from activekd.errors import FailedPrecondition
from activekd.selection import select_batch
from activekd.store import PoolStore
from activekd.store.remote import COMPLETE_MARKER, RemoteFiles, RemoteShard, local_file
from tests.store.test_object_storage import BUCKET, options, s3_endpoint  # noqa: F401


def _stores(
    tmp_path: Path, client: redis.Redis, opts: dict[str, Any], prefix: str
) -> tuple[PoolStore, PoolStore]:
    """A writer and a reader on one bucket, with their own caches (two machines)."""
    # Ray's workers started before this test's AWS_* variables: the keys go in the options
    opts = {**opts, "key": "testing", "secret": "testing"}
    root = f"s3://{BUCKET}/{prefix}"
    return tuple(  # type: ignore[return-value]
        PoolStore(root, client, cache_dir=tmp_path / name, storage_options=opts)
        for name in ("writer", "reader")
    )


def test_workers_fetch_only_their_shard_and_equal_select_batch(
    cluster: object,
    redis_client: redis.Redis,
    options: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    writer, reader = _stores(tmp_path, redis_client, options, "rs")
    rng = np.random.default_rng(4)
    n = 2000
    ids = [f"r-{i:05d}" for i in range(n)]
    probs = rng.dirichlet(np.full(6, 0.5), size=n).astype(np.float32)
    feats = rng.normal(size=(n, 8)).astype(np.float32)
    writer.put("rs/p", ids, {"probs": probs, "features": feats}, shard_rows=600)

    refs = reader.open_shards("rs/p", "probs", fetch=False)
    assert [type(r) for r in refs] == [RemoteShard] * 4
    assert [(r.start, r.stop) for r in refs] == [(0, 600), (600, 1200), (1200, 1800), (1800, 2000)]
    assert not any(r.path.exists() for r in refs)  # nothing downloaded by the reader itself
    # SelectBatch's item-id lookup fetches that one file, not the version, beside its folder
    assert reader.item_ids("rs/p").tolist() == ids
    version_dir = refs[0].path.parent
    assert not version_dir.exists()
    assert [p.name for p in (version_dir.parent / f"ids-{refs[0].version}").iterdir()] == [
        "item_ids.npy"
    ]

    sel = ShardedSelector("unused://not-connected", cpus_per_shard=0.5)
    sel._cluster = cluster  # the module's cluster is already connected
    labeled = np.arange(3, n, 111)
    exclude = np.arange(7, n, 157)
    try:
        for strategy in ("pcoreset", "margin", "class_balanced"):
            req = ShardedRequest("rs/p", strategy, 20, "probs", labeled, exclude, seed=5)
            got = sel.select(reader, req)
            want = select_batch(strategy, 20, probs=probs, labeled=labeled, exclude=exclude, seed=5)
            assert got.indices.tolist() == want.indices.tolist(), strategy
            np.testing.assert_array_equal(got.scores, want.scores)
    finally:
        sel._cluster = None  # the module fixture stops it
    # the workers ran on this machine, with the reader's cache path: it holds the four probs
    # shards and nothing else (no features, no item ids, no "complete" marker)
    folder = refs[0].path.parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(r.name for r in refs)
    # and the reader still reads the whole version when it needs it
    np.testing.assert_array_equal(reader.open_array("rs/p", "features"), feats)
    assert (folder / COMPLETE_MARKER).exists()


def test_fetch_file_keeps_whole_files_and_names_a_missing_one(
    redis_client: redis.Redis,
    options: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    writer, reader = _stores(tmp_path, redis_client, options, "ff")
    probs = np.full((10, 2), 0.5, dtype=np.float32)
    writer.put("ff/p", [f"i{i}" for i in range(10)], {"probs": probs}, shard_rows=4)
    ref = reader.open_shards("ff/p", "probs", fetch=False)[1]
    assert isinstance(ref, RemoteShard)
    path = local_file(ref)
    np.testing.assert_array_equal(np.load(path), probs[4:8])
    assert [p.name for p in path.parent.iterdir()] == [ref.name]  # no partial download left
    mtime = path.stat().st_mtime_ns
    assert local_file(ref) == path and path.stat().st_mtime_ns == mtime  # kept, not re-fetched
    remote = RemoteFiles(ref.uri, ref.storage_options)
    with pytest.raises(FailedPrecondition, match=r"probs\.s9\.npy' is not in object storage"):
        remote.fetch_file("ff/p", ref.version, "probs.s9.npy", tmp_path / "elsewhere")
    assert not any((tmp_path / "elsewhere").iterdir())
    # a local store hands out plain files, whatever fetch says
    local = PoolStore(tmp_path / "plain", redis_client)
    local.put("ff/local", [f"i{i}" for i in range(10)], {"probs": probs}, shard_rows=4)
    files = local.open_shards("ff/local", "probs", fetch=False)
    assert [type(f).__name__ for f in files] == ["ShardFile"] * 3
    assert local_file(files[0]) == files[0].path


def test_a_shard_gone_from_the_bucket_says_upload_again_not_retry(
    cluster: object,
    redis_client: redis.Redis,
    options: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The actor that finds its shard file missing fails its readiness probe with the store's
    own error, so SelectBatch answers FAILED_PRECONDITION ("upload the pool again"), not the
    UNAVAILABLE ("retry") of a dead actor."""
    import s3fs

    writer, reader = _stores(tmp_path, redis_client, options, "gone")
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.full(4, 0.5), size=900).astype(np.float32)
    writer.put("gone/p", [f"g{i}" for i in range(900)], {"probs": probs}, shard_rows=300)
    ref = reader.open_shards("gone/p", "probs", fetch=False)[2]
    assert isinstance(ref, RemoteShard)
    fs = s3fs.S3FileSystem(**{**options, "key": "testing", "secret": "testing"})
    fs.rm(f"{BUCKET}/gone/gone/p/v-{ref.version}/{ref.name}")
    sel = ShardedSelector("unused://not-connected", cpus_per_shard=0.5)
    sel._cluster = cluster
    try:
        req = ShardedRequest("gone/p", "pcoreset", 5, "probs", np.arange(3), np.arange(0))
        with pytest.raises(FailedPrecondition, match="upload the pool again"):
            sel.select(reader, req)
    finally:
        sel._cluster = None
