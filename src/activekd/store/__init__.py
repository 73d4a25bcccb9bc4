"""Pool store: named arrays per pool on disk (memory-mapped ``.npy``), metadata in Redis."""

from activekd.store.pool_store import ArrayMeta, PoolMeta, PoolStore, PoolWriter

__all__ = ["ArrayMeta", "PoolMeta", "PoolStore", "PoolWriter"]
