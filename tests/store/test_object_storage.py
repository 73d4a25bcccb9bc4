"""The pool store on an S3 root, against a real S3-compatible server on loopback (moto's
``moto_server``, an HTTP server speaking the S3 API, not a mock of the client): two stores with
their own local caches share one bucket and one Redis, as two service replicas on two machines do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from activekd.errors import FailedPrecondition, Unavailable
from activekd.server.config import ServerConfig
from activekd.server.stores import open_pool_store, storage_options
from activekd.store import PoolStore
from activekd.store.remote import COMPLETE_MARKER
from tests.procs import RedisProcess, ServiceProcess

BUCKET = "akd-pools"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_moto(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server
        except OSError:
            if server.poll() is not None:
                raise RuntimeError("moto_server exited at start") from None
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("moto_server did not listen within 30 s")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    server = _start_moto(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def options(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    opts: dict[str, Any] = {"endpoint_url": s3_endpoint, "skip_instance_cache": True}
    import s3fs

    fs = s3fs.S3FileSystem(**opts)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    return opts


def _store(tmp: Path, name: str, client: redis.Redis, opts: dict[str, Any], root: str) -> PoolStore:
    return PoolStore(root, client, cache_dir=tmp / name, storage_options=opts)


def _objects(opts: dict[str, Any], prefix: str) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(**opts)
    return sorted(str(p) for p in fs.find(prefix))


@pytest.fixture
def root(request: pytest.FixtureRequest) -> str:
    return f"s3://{BUCKET}/{request.node.name[:40]}"


def test_a_pool_written_on_one_machine_is_read_on_another(
    tmp_path: Path, redis_client: redis.Redis, options: dict[str, Any], root: str
) -> None:
    writer = _store(tmp_path, "a", redis_client, options, root)
    reader = _store(tmp_path, "b", redis_client, options, root)
    probs = np.random.default_rng(0).dirichlet(np.ones(5), size=300).astype(np.float32)
    ids = [f"img-{i}" for i in range(300)]
    w = writer.begin("teacher/t/ds", 300)
    for start in range(0, 300, 128):  # chunked, as ScorePool writes
        w.write(
            start, item_ids=ids[start : start + 128], arrays={"probs": probs[start : start + 128]}
        )
    meta = w.commit()
    key = root.removeprefix("s3://")
    assert _objects(options, key) == [
        f"{key}/teacher/t/ds/v-{meta.version}/item_ids.npy",
        f"{key}/teacher/t/ds/v-{meta.version}/probs.npy",
    ]
    got = reader.open_array("teacher/t/ds", "probs")
    assert isinstance(got, np.memmap) and not got.flags.writeable
    np.testing.assert_array_equal(got, probs)
    assert reader.item_ids("teacher/t/ds").tolist() == ids
    cached = tmp_path / "b" / "teacher/t/ds" / f"v-{meta.version}"
    assert (cached / COMPLETE_MARKER).exists() and (cached / "probs.npy").exists()
    assert reader.rows_for("teacher/t/ds", ["img-7"]).tolist() == [7]


def test_overwrite_and_delete_reach_the_bucket_and_every_cache(
    tmp_path: Path, redis_client: redis.Redis, options: dict[str, Any], root: str
) -> None:
    a = _store(tmp_path, "a", redis_client, options, root)
    b = _store(tmp_path, "b", redis_client, options, root)
    first = a.put("p", ["x", "y"], {"v": np.array([[1.0], [2.0]], np.float32)})
    np.testing.assert_array_equal(b.open_array("p", "v"), [[1.0], [2.0]])
    second = a.put("p", ["x", "y"], {"v": np.array([[3.0], [4.0]], np.float32)}, overwrite=True)
    np.testing.assert_array_equal(b.open_array("p", "v"), [[3.0], [4.0]])
    key = root.removeprefix("s3://")
    assert {Path(o).parent.name for o in _objects(options, key)} == {f"v-{second.version}"}
    assert not (tmp_path / "b" / "p" / f"v-{first.version}").exists()  # old cached copy dropped
    assert a.delete("p")
    assert _objects(options, key) == []
    assert not b.exists("p")


def test_an_interrupted_download_is_fetched_again(
    tmp_path: Path, redis_client: redis.Redis, options: dict[str, Any], root: str
) -> None:
    a = _store(tmp_path, "a", redis_client, options, root)
    meta = a.put("p", ["x", "y", "z"], {"v": np.arange(6, dtype=np.int64).reshape(3, 2)})
    broken = tmp_path / "c" / "p" / f"v-{meta.version}"
    broken.mkdir(parents=True)
    np.save(broken / "v.npy", np.zeros((1, 2), np.int64))  # half a download, no marker
    c = _store(tmp_path, "c", redis_client, options, root)
    np.testing.assert_array_equal(c.open_array("p", "v"), np.arange(6).reshape(3, 2))
    assert not list((tmp_path / "c" / "p").glob(".fetch-*"))


def test_files_missing_from_the_bucket_are_a_clear_error(
    tmp_path: Path, redis_client: redis.Redis, options: dict[str, Any], root: str
) -> None:
    a = _store(tmp_path, "a", redis_client, options, root)
    meta = a.put("p", ["x"], {"v": np.zeros((1, 1), np.float32)})
    assert a.remote is not None
    a.remote.remove("p", meta.version)
    c = _store(tmp_path, "c", redis_client, options, root)
    with pytest.raises(FailedPrecondition, match="its files are not in object storage"):
        c.open_array("p", "v")


def test_storage_that_does_not_answer_is_unavailable_without_host_details(
    tmp_path: Path, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dead = f"http://127.0.0.1:{_free_port()}"
    opts = {
        "endpoint_url": dead,
        "skip_instance_cache": True,
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    store = _store(tmp_path, "a", redis_client, opts, f"s3://{BUCKET}/dead")
    with pytest.raises(Unavailable) as err:
        store.put("p", ["x"], {"v": np.zeros((1, 1), np.float32)})
    assert "retry" in str(err.value) and "127.0.0.1" not in str(err.value)
    assert not store.exists("p")  # nothing registered whose files are not all up


def test_services_open_the_remote_store_from_their_settings(
    tmp_path: Path, redis_client: redis.Redis, options: dict[str, Any], root: str
) -> None:
    import json

    config = ServerConfig(
        service="selection",
        store_uri=root,
        store_cache_dir=str(tmp_path / "cache"),
        store_options=json.dumps(options),
    )
    store = open_pool_store(config, redis_client)
    assert store.remote is not None and store.root == tmp_path / "cache"
    store.put("p", ["x"], {"v": np.ones((1, 1), np.float32)})
    assert os.listdir(tmp_path / "cache" / "p")
    with pytest.raises(ValueError, match="ACTIVEKD_STORE_OPTIONS must be a JSON object"):
        storage_options("[1]")
    with pytest.raises(ValueError, match="not valid JSON"):
        storage_options("{")
    assert storage_options("  ") == {}


def test_two_selection_replicas_share_a_pool_through_the_bucket(
    tmp_path: Path, redis_server: RedisProcess, options: dict[str, Any], root: str
) -> None:
    """UploadPool on one replica, SelectBatch by reference on another: the second replica has
    never seen the pool's files and reads them from the bucket into its own cache."""
    import json

    from activekd.client import SelectionClient
    from activekd.selection import select_batch

    def replica(name: str) -> ServiceProcess:
        env = {
            "ACTIVEKD_STORE_CACHE_DIR": str(tmp_path / name),
            "ACTIVEKD_STORE_OPTIONS": json.dumps(options),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        return ServiceProcess("selection", redis_server.url, root, env=env).start()

    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(6) * 0.5, size=500).astype(np.float32)
    ids = [f"item-{i:04d}" for i in range(500)]
    first, second = replica("r1"), replica("r2")
    try:
        with SelectionClient(first.target, timeout=60) as c1:
            c1.wait_ready()
            c1.upload_pool("s3/pool", item_ids=ids, arrays={"probs": probs}, chunk_bytes=4096)
        assert not (tmp_path / "r2" / "s3").exists()
        with SelectionClient(second.target, timeout=60) as c2:
            c2.wait_ready()
            got = c2.select_batch("pcoreset", 10, pool_id="s3/pool", labeled=ids[:3], seed=1)
    finally:
        first.stop()
        second.stop()
    want = select_batch("pcoreset", 10, probs=probs, labeled=np.arange(3), seed=1)
    assert got.rows.tolist() == want.indices.tolist()
    assert got.item_ids == [ids[i] for i in want.indices]
    assert list((tmp_path / "r2" / "s3" / "pool").glob(f"v-*/{COMPLETE_MARKER}"))


def test_a_sharded_pool_goes_through_the_bucket_shard_by_shard(
    tmp_path: Path, redis_client: redis.Redis, options: dict[str, Any], root: str
) -> None:
    writer = _store(tmp_path, "a", redis_client, options, root)
    reader = _store(tmp_path, "b", redis_client, options, root)
    probs = np.random.default_rng(1).dirichlet(np.ones(4), size=50).astype(np.float32)
    meta = writer.put("big/p", [str(i) for i in range(50)], {"probs": probs}, shard_rows=20)
    key = root.removeprefix("s3://")
    folder = f"{key}/big/p/v-{meta.version}"
    assert _objects(options, key) == [
        f"{folder}/{name}"
        for name in ("item_ids.npy", "manifest.json", *(f"probs.s0000{k}.npy" for k in range(3)))
    ]
    shards = reader.open_shards("big/p", "probs")
    assert [(s.start, s.stop) for s in shards] == [(0, 20), (20, 40), (40, 50)]
    assert all(s.path.is_relative_to(tmp_path / "b") for s in shards), "read from the cache"
    np.testing.assert_array_equal(reader.open_array("big/p", "probs"), probs)
