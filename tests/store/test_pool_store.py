"""PoolStore against a real redis-server: versions, chunked writes, resume, atomic replace."""

from __future__ import annotations

import numpy as np
import pytest

from activekd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from activekd.store import PoolStore


def _probs(n: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(c), size=n).astype(np.float32)


def test_put_describe_open_roundtrip(pool_store: PoolStore) -> None:
    probs = _probs(50, 4)
    meta = pool_store.put(
        "p1", [f"id{i}" for i in range(50)], {"probs": probs}, metadata={"k": "v"}
    )
    assert meta.complete and meta.num_items == 50
    assert meta.arrays["probs"].shape == [50, 4] and meta.arrays["probs"].dtype == "float32"
    got = pool_store.open_array("p1", "probs")
    assert isinstance(got, np.memmap) and not got.flags.writeable
    np.testing.assert_array_equal(got, probs)
    assert pool_store.describe("p1").metadata == {"k": "v"}
    assert pool_store.rows_for("p1", ["id7", "id0"]).tolist() == [7, 0]
    with pytest.raises(InvalidArgument, match="not in pool"):
        pool_store.rows_for("p1", ["nope"])
    with pytest.raises(NotFound, match="has no array 'features'; it has \\['probs'\\]"):
        pool_store.open_array("p1", "features")


def test_chunked_write_requires_full_coverage(pool_store: PoolStore) -> None:
    w = pool_store.begin("teacher/abc/ds", 10)
    w.write(0, item_ids=[str(i) for i in range(6)], arrays={"probs": _probs(6, 3)})
    with pytest.raises(FailedPrecondition, match=r"rows \[6, 10\) were never written"):
        w.commit()
    assert not pool_store.exists("teacher/abc/ds")
    w.write(6, item_ids=[str(i) for i in range(6, 10)], arrays={"probs": _probs(4, 3, 1)})
    meta = w.commit()
    assert meta.complete and pool_store.item_ids("teacher/abc/ds").tolist() == [
        str(i) for i in range(10)
    ]


def test_rejected_chunks_touch_nothing(pool_store: PoolStore) -> None:
    w = pool_store.begin("p", 5)
    with pytest.raises(InvalidArgument, match="outside the pool's 5 rows"):
        w.write(3, arrays={"probs": _probs(4, 3)})
    with pytest.raises(InvalidArgument, match="row counts differ"):
        w.write(0, item_ids=["a"], arrays={"probs": _probs(2, 3)})
    w.write(0, arrays={"probs": _probs(5, 3)})
    with pytest.raises(InvalidArgument, match="earlier chunks were float32\\[3\\]"):
        w.write(0, arrays={"probs": _probs(5, 4)})
    assert w.done_ranges("probs") == [(0, 5)]


def test_overwrite_is_atomic_and_failed_upload_keeps_old(pool_store: PoolStore) -> None:
    old = _probs(4, 2)
    pool_store.put("p", list("abcd"), {"probs": old})
    with pytest.raises(AlreadyExists):
        pool_store.begin("p", 4)
    w = pool_store.begin("p", 4, overwrite=True)
    w.write(0, item_ids=list("abcd"), arrays={"probs": _probs(4, 2, 5)})
    # readers still see the old version until commit
    np.testing.assert_array_equal(pool_store.open_array("p", "probs"), old)
    w.abort()
    np.testing.assert_array_equal(pool_store.open_array("p", "probs"), old)
    with pytest.raises(InvalidArgument, match="unique"):
        pool_store.put("p", list("aacd"), {"probs": old}, overwrite=True)
    np.testing.assert_array_equal(pool_store.open_array("p", "probs"), old)
    new = _probs(4, 2, 9)
    pool_store.put("p", list("abcd"), {"probs": new}, overwrite=True)
    np.testing.assert_array_equal(pool_store.open_array("p", "probs"), new)
    assert len(list((pool_store.root / "p").iterdir())) == 1  # old version removed


def test_resume_reuses_unfinished_version(pool_store: PoolStore) -> None:
    w = pool_store.begin("r", 8, metadata={"teacher": "x"})
    w.write(0, arrays={"probs": _probs(4, 2)})
    again = pool_store.begin("r", 8, metadata={"teacher": "x"}, resume=True)
    assert again.version == w.version and again.done_ranges("probs") == [(0, 4)]
    other = pool_store.begin("r", 8, metadata={"teacher": "y"}, resume=True)
    assert other.version != w.version
    again.write(4, arrays={"probs": _probs(4, 2, 1)})
    assert again.commit().num_items == 8


def test_list_delete_and_ids(pool_store: PoolStore) -> None:
    for name in ["b", "a", "c/d"]:
        pool_store.put(name, ["x", "y"], {"probs": _probs(2, 2)})
    page, token = pool_store.list(page_size=2)
    assert [p.pool_id for p in page] == ["a", "b"] and token == "b"
    page2, token2 = pool_store.list(page_size=2, page_token=token)
    assert [p.pool_id for p in page2] == ["c/d"] and token2 == ""
    assert pool_store.delete("a") and not pool_store.delete("a")
    with pytest.raises(NotFound):
        pool_store.describe("a")
    for bad in ["", "../x", "a//b", "/abs", "x" * 300]:
        with pytest.raises(InvalidArgument, match="pool id"):
            pool_store.describe(bad)


def test_file_uri_root_and_unknown_protocol_rejected(redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = PoolStore(f"file://{tmp_path}/s", redis_client)
    store.put("p", ["a"], {"x": np.zeros((1, 2), np.float32)})
    assert (tmp_path / "s" / "p").is_dir()
    with pytest.raises(InvalidArgument, match="store root 'nosuch://x'"):
        PoolStore("nosuch://x", redis_client)  # remote roots: tests/store/test_object_storage.py
