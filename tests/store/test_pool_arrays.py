"""PoolArrays: a registered or inline pool's arrays, and item ids -> rows (ids checked only)."""

from __future__ import annotations

import numpy as np
import pytest

from activekd.errors import InvalidArgument, NotFound
from activekd.store.pool_arrays import PoolArrays, check_chunk

P = np.full((4, 2), 0.5, np.float32)


def test_inline_pool_ids_and_rows() -> None:
    pool = PoolArrays.inline(P, None, [])
    assert pool.item_ids.tolist() == ["0", "1", "2", "3"] and pool.features is None
    assert pool.rows_for(["3", "1"], "labeled_item_ids").tolist() == [3, 1]
    assert pool.rows_present({"2", "0", "ghost"}).tolist() == [0, 2]
    assert pool.rows_present(set()).dtype == np.int64
    with pytest.raises(InvalidArgument, match="labeled_item_ids contains duplicates") as err:
        pool.rows_for(["1", "1"], "labeled_item_ids")
    assert err.value.field == "labeled_item_ids"
    with pytest.raises(InvalidArgument, match=r"1 id\(s\) not in the pool: \['ghost'\]"):
        pool.rows_for(["ghost"], "labeled_item_ids")
    with pytest.raises(InvalidArgument, match="inline_pool has 3 item ids but 4 rows") as err:
        PoolArrays.inline(P, None, ["a", "b", "c"])
    assert err.value.field == "inline_pool.item_ids"
    with pytest.raises(InvalidArgument, match=r"inline_pool\.item_ids must be unique"):
        PoolArrays.inline(P, None, ["a", "b", "c", "a"])


def test_registered_pool(pool_store) -> None:  # type: ignore[no-untyped-def]
    pool_store.put("p", ["a", "b", "c", "d"], {"probs": P})
    pool = PoolArrays.open(pool_store, "p")
    assert pool.features is None and pool.probs is not None and pool.probs.shape == (4, 2)
    assert pool.rows_for(["d", "a"], "labeled_item_ids").tolist() == [3, 0]
    assert pool.rows_present({"c", "elsewhere"}).tolist() == [2]
    with pytest.raises(InvalidArgument, match="not in pool 'p'"):
        pool.rows_for(["ghost"], "labeled_item_ids")
    with pytest.raises(NotFound, match="UploadPool"):
        PoolArrays.open(pool_store, "missing")


def test_check_chunk() -> None:
    check_chunk({"probs": P, "features": np.zeros((4, 3), np.float32)}, "chunk at 0")
    bad = P.copy()
    bad[1, 0] = np.nan
    with pytest.raises(InvalidArgument, match="chunk at 8: probs row 1"):
        check_chunk({"probs": bad}, "chunk at 8")
    with pytest.raises(InvalidArgument, match="chunk at 8: features has NaN or inf values"):
        check_chunk({"features": np.full((2, 2), np.inf, np.float32)}, "chunk at 8")
