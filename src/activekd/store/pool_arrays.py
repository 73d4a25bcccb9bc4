"""``PoolArrays``: one pool's probabilities, features and item ids, as ``select_batch`` reads them.

A pool is either registered in the :class:`~activekd.store.PoolStore` (arrays memory-mapped from
disk) or given inline with the request (arrays already decoded). Either way the caller gets the
arrays and maps item ids to rows; checks here are about ids only (the arrays are checked once,
by the selection library).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from activekd.arrays import check_probabilities
from activekd.errors import InvalidArgument
from activekd.store.pool_store import PoolStore


@dataclass
class PoolArrays:
    """A pool's arrays (``None`` when absent) and its item ids in row order."""

    probs: np.ndarray | None
    features: np.ndarray | None
    item_ids: np.ndarray
    #: the registered pool these rows come from; ``None`` for an inline pool
    store: PoolStore | None = None
    pool_id: str = ""
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def open(
        cls,
        store: PoolStore,
        pool_id: str,
        probs_array: str = "probs",
        features_array: str = "features",
    ) -> PoolArrays:
        """A registered pool (NotFound when it does not exist); absent arrays are ``None``."""
        meta = store.describe(pool_id)
        probs = store.open_array(pool_id, probs_array) if probs_array in meta.arrays else None
        feats = store.open_array(pool_id, features_array) if features_array in meta.arrays else None
        return cls(probs, feats, store.item_ids(pool_id), store=store, pool_id=pool_id)

    @classmethod
    def inline(
        cls,
        probs: np.ndarray | None,
        features: np.ndarray | None,
        item_ids: Sequence[str],
        *,
        name: str = "inline_pool",
    ) -> PoolArrays:
        """A pool sent with the request; no ``item_ids`` means ``"0".."N-1"``. ``name`` is how
        errors call it (their field is ``<name>.item_ids``)."""
        n = (
            probs.shape[0]
            if probs is not None
            else features.shape[0]
            if features is not None
            else 0
        )
        ids = np.asarray(list(item_ids) or [str(i) for i in range(n)])
        if len(ids) != n:
            raise InvalidArgument(
                f"{name} has {len(ids)} item ids but {n} rows", field=f"{name}.item_ids"
            )
        index = {str(v): i for i, v in enumerate(ids.tolist())}
        if len(index) != len(ids):
            raise InvalidArgument(f"{name}.item_ids must be unique", field=f"{name}.item_ids")
        return cls(probs, features, ids, _index=index)

    def rows_for(self, item_ids: Sequence[str], what: str) -> np.ndarray:
        """Rows of ``item_ids`` in their order; InvalidArgument (field ``what``) when an id repeats
        or is not in the pool."""
        ids = list(item_ids)
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"{what} contains duplicates", field=what)
        if self.store is not None:
            return self.store.rows_for(self.pool_id, ids)
        missing = [i for i in ids if i not in self._index]
        if missing:
            raise InvalidArgument(
                f"{what}: {len(missing)} id(s) not in the pool: {missing[:5]}", field=what
            )
        return np.asarray([self._index[i] for i in ids], dtype=np.int64)

    def rows_present(self, item_ids: Iterable[str]) -> np.ndarray:
        """Rows of those ``item_ids`` that are in the pool, ascending (others are ignored)."""
        wanted = sorted(item_ids)
        if not wanted:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(np.isin(self.item_ids, np.asarray(wanted))).astype(np.int64)


def check_chunk(arrays: dict[str, np.ndarray], where: str) -> None:
    """Content check of one uploaded chunk (``where`` starts each message, e.g. "chunk at 0"):
    ``probs`` must hold probability rows, every float array must be finite."""
    if "probs" in arrays:
        check_probabilities(arrays["probs"], "probs", where=where)
    for name, arr in arrays.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InvalidArgument(f"{where}: {name} has NaN or inf values")


__all__ = ["PoolArrays", "check_chunk"]
