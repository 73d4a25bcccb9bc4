"""Pools: ordered item ids plus named arrays with one row per item.

Layout: ``<root>/<pool_id>/v-<version>/{item_ids.npy, <array>.npy}``; metadata is one JSON value per
pool in Redis (``<prefix>:pool:{<pool_id>}``, a hash tag so a cluster keeps a pool on one slot).

Writes go to a fresh version directory that readers never see; ``commit()`` checks every row of
every array was written, then flips the pool's current version with a compare-and-set, so a failed
or rejected upload never changes a stored pool. Written row ranges are recorded in Redis as they
land, so an interrupted writer (e.g. the teacher scoring 60k images) resumes without redoing
finished chunks.

A pool may be **sharded** (``begin(..., shard_rows=R)``): each array is then stored as files of R
rows, ``<array>.s<k>.npy`` (rows ``[k*R, (k+1)*R)``), described by ``manifest.json`` in the version
folder, so that a worker can memory-map its rows alone (the Ray k-center engine puts one actor on
each shard). Every reader accepts both layouts: :meth:`PoolStore.open_array` of a sharded array
joins its shards in memory, :meth:`PoolStore.open_shards` gives the shard files.

The root may also be an object-storage URI (``s3://bucket/prefix``, any fsspec protocol): the files
then live there and every process reads them through a local memory-mapped cache
(:mod:`activekd.store.remote`); only the local cache can resume an interrupted write.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from activekd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    shown,
)
from activekd.ids import check_array_name, check_pool_id
from activekd.store.remote import COMPLETE_MARKER, RemoteFiles, RemoteShard, default_cache_dir

_SUPPORTED = {"float16", "float32", "float64", "int32", "int64", "uint8"}

#: The pool id rule lives in :mod:`activekd.ids` (one copy); this name stays for old callers.
_check_pool_id = check_pool_id


@dataclass
class ArrayMeta:
    """dtype and full shape (rows first) of one stored array."""

    dtype: str
    shape: list[int]


@dataclass
class PoolMeta:
    """What Redis holds about a pool."""

    pool_id: str
    num_items: int
    version: str
    arrays: dict[str, ArrayMeta] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    created_unix: float = 0.0
    complete: bool = False
    #: rows per shard file of every array; 0: one ``.npy`` file per array
    shard_rows: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> PoolMeta:
        data = json.loads(raw)
        data["arrays"] = {k: ArrayMeta(**v) for k, v in data.get("arrays", {}).items()}
        return cls(**data)

    def shard_bounds(self) -> builtins.list[tuple[int, int]]:
        """Row ranges [start, stop) of the shards (one range for an unsharded pool)."""
        return shard_ranges(self.num_items, self.shard_rows)


@dataclass(frozen=True)
class ShardFile:
    """One shard of a stored array: its rows ``[start, stop)`` of the pool and its local file."""

    start: int
    stop: int
    path: Path


#: The most shard files an array may have (each shard is a file and, on Ray, an actor)
MAX_SHARDS = 4096

#: The manifest of a sharded version (next to its files)
MANIFEST = "manifest.json"


def shard_ranges(num_items: int, shard_rows: int) -> builtins.list[tuple[int, int]]:
    """[start, stop) of each shard of ``num_items`` rows in files of ``shard_rows`` (0: one)."""
    if shard_rows <= 0:
        return [(0, num_items)]
    return [(a, min(a + shard_rows, num_items)) for a in range(0, num_items, shard_rows)]


def shard_file_name(name: str, k: int) -> str:
    """File of shard ``k`` of array ``name`` (array names hold no dot, so this never clashes)."""
    return f"{name}.s{k:05d}.npy"


def _drop_other_ids(pool_dir: Path, version: str) -> None:
    """Removes the item-id folders (``ids-<version>``, fetched alone by ``item_ids``) of every
    version but ``version`` from a pool's cache folder."""
    for other in pool_dir.glob("ids-*"):
        if other.name != f"ids-{version}":
            shutil.rmtree(other, ignore_errors=True)


class PoolStore:
    """Create, read, list and delete pools. Thread-safe as far as redis-py clients are."""

    def __init__(
        self,
        root: str | Path,
        client: redis.Redis,
        prefix: str = "akd",
        *,
        cache_dir: str | Path | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        root_str = str(root)
        if root_str.startswith("file://"):
            root_str = root_str[len("file://") :]
        #: where versions are stored remotely (None: ``root`` is local and the only copy)
        self.remote: RemoteFiles | None = None
        if "://" in root_str:
            self.remote = RemoteFiles(root_str, storage_options)
            root_str = str(cache_dir or default_cache_dir(root_str))
        self.root = Path(root_str)
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis = client
        self.prefix = prefix
        self._row_index: dict[tuple[str, str], dict[str, int]] = {}

    # keys ---------------------------------------------------------------------------------
    def _meta_key(self, pool_id: str) -> str:
        return f"{self.prefix}:pool:{{{pool_id}}}"

    def _writing_key(self, pool_id: str) -> str:
        """Hash: unfinished version -> JSON of its size and metadata."""
        return f"{self.prefix}:pool:{{{pool_id}}}:writing"

    def _index_key(self) -> str:
        return f"{self.prefix}:pools"

    def _dir(self, pool_id: str, version: str) -> Path:
        return self.root / pool_id / f"v-{version}"

    def _read_dir(self, pool_id: str, version: str) -> Path:
        """The local folder of a committed version (fetched into the cache first if remote)."""
        local = self._dir(pool_id, version)
        if self.remote is None or (local / COMPLETE_MARKER).exists():
            return local
        self.remote.fetch(pool_id, version, local)
        for other in local.parent.glob("v-*"):  # older cached copies (never an unfinished write)
            if other != local and (other / COMPLETE_MARKER).exists():
                shutil.rmtree(other, ignore_errors=True)
        _drop_other_ids(local.parent, version)
        return local

    # reads --------------------------------------------------------------------------------
    def exists(self, pool_id: str) -> bool:
        """True when a committed pool with this id exists."""
        return bool(self.redis.exists(self._meta_key(_check_pool_id(pool_id))))

    def describe(self, pool_id: str) -> PoolMeta:
        """Metadata of a committed pool (NotFound otherwise)."""
        raw = self.redis.get(self._meta_key(_check_pool_id(pool_id)))
        if raw is None:
            raise NotFound(
                f"pool {shown(pool_id)} does not exist; register it with UploadPool first"
            )
        return PoolMeta.from_json(raw)

    def list(
        self, page_size: int = 100, page_token: str = ""
    ) -> tuple[builtins.list[PoolMeta], str]:
        """Pools in id order; ``page_token`` is the last id of the previous page."""
        if page_size <= 0 or page_size > 1000:
            page_size = 100
        start = f"({page_token}" if page_token else "-"
        ids = self.redis.zrangebylex(self._index_key(), start, "+", start=0, num=page_size + 1)
        out = []
        for raw_id in ids[:page_size]:
            pid = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            raw = self.redis.get(self._meta_key(pid))
            if raw is not None:
                out.append(PoolMeta.from_json(raw))
        next_token = out[-1].pool_id if len(ids) > page_size and out else ""
        return out, next_token

    def open_array(self, pool_id: str, name: str) -> np.ndarray:
        """A read-only memory map of array ``name`` (NotFound naming the arrays that exist)."""
        files = self.open_shards(pool_id, name)
        if len(files) == 1:  # the one-file layout (a sharded pool has two shards or more)
            return np.load(files[0].path, mmap_mode="r")
        parts = [np.load(f.path, mmap_mode="r") for f in files]
        joined = np.concatenate(parts)  # in memory: use open_shards to keep one shard at a time
        joined.flags.writeable = False
        return joined

    def open_shards(
        self, pool_id: str, name: str, *, fetch: bool = True
    ) -> builtins.list[ShardFile] | builtins.list[RemoteShard]:
        """The files of array ``name`` with the rows each holds: one per shard of a sharded
        pool, a single one covering every row otherwise (local paths; fetched if remote).

        ``fetch=False`` on a remote store: nothing is downloaded here; each
        :class:`~activekd.store.remote.RemoteShard` is fetched by its reader (``local_path()``,
        into the same cache path on its own machine, kept when already there), so a Ray actor
        holds only its own shard."""
        meta = self.describe(pool_id)
        if name not in meta.arrays:
            raise NotFound(
                f"pool {shown(pool_id)} has no array {shown(name)}; it has {sorted(meta.arrays) or 'none'}"
            )
        if not fetch and self.remote is not None:
            files = (
                [(0, meta.num_items, f"{name}.npy")]
                if not meta.shard_rows
                else [
                    (a, b, shard_file_name(name, k)) for k, (a, b) in enumerate(meta.shard_bounds())
                ]
            )
            return [
                RemoteShard(
                    a,
                    b,
                    self.remote.uri,
                    pool_id,
                    meta.version,
                    file,
                    str(self.root),
                    dict(self.remote.storage_options),
                )
                for a, b, file in files
            ]
        folder = self._read_dir(pool_id, meta.version)
        if not meta.shard_rows:
            return [ShardFile(0, meta.num_items, folder / f"{name}.npy")]
        return self._shard_files(meta, folder, name)

    @staticmethod
    def _shard_files(meta: PoolMeta, folder: Path, name: str) -> builtins.list[ShardFile]:
        return [
            ShardFile(a, b, folder / shard_file_name(name, k))
            for k, (a, b) in enumerate(meta.shard_bounds())
        ]

    def item_ids(self, pool_id: str) -> np.ndarray:
        """Item ids in row order (numpy unicode array). From object storage only this one file
        is fetched, not the whole version (a sharded SelectBatch reads no array here)."""
        meta = self.describe(pool_id)
        local = self._dir(pool_id, meta.version)
        if self.remote is not None and not (local / COMPLETE_MARKER).exists():
            # beside the version's folder, not in it: a whole-version fetch replaces that folder
            ids_dir = local.parent / f"ids-{meta.version}"
            path = self.remote.fetch_file(pool_id, meta.version, "item_ids.npy", ids_dir)
            _drop_other_ids(local.parent, meta.version)
            return np.load(path)
        return np.load(self._read_dir(pool_id, meta.version) / "item_ids.npy")

    def row_index(self, pool_id: str) -> Mapping[str, int]:
        """Item id -> row number, cached per pool version (read-only: shared by callers)."""
        meta = self.describe(pool_id)
        key = (pool_id, meta.version)
        index = self._row_index.get(key)
        if index is None:
            ids = self.item_ids(pool_id)
            index = {str(v): i for i, v in enumerate(ids.tolist())}
            self._row_index = {k: v for k, v in self._row_index.items() if k[0] != pool_id}
            self._row_index[key] = index
        return index

    def rows_for(self, pool_id: str, item_ids: builtins.list[str] | tuple[str, ...]) -> np.ndarray:
        """Row numbers of ``item_ids`` (InvalidArgument listing unknown ids)."""
        index = self.row_index(pool_id)
        rows, missing = [], []
        for item in item_ids:
            row = index.get(item)
            if row is None:
                missing.append(item)
            else:
                rows.append(row)
        if missing:
            listed = ", ".join(shown(m, 32) for m in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise InvalidArgument(
                f"{len(missing)} item id(s) are not in pool {shown(pool_id)}: {listed}{more}",
                field="item_ids",
            )
        return np.asarray(rows, dtype=np.int64)

    # writes -------------------------------------------------------------------------------
    def begin(
        self,
        pool_id: str,
        num_items: int,
        *,
        metadata: dict[str, str] | None = None,
        overwrite: bool = False,
        resume: bool = False,
        shard_rows: int = 0,
    ) -> PoolWriter:
        """Start writing ``pool_id``; with ``resume`` reuse an unfinished write of the same size
        (and sharding). ``shard_rows`` > 0 stores every array in files of that many rows."""
        _check_pool_id(pool_id)
        if num_items <= 0:
            raise InvalidArgument(f"num_items must be positive, got {num_items}", field="num_items")
        if shard_rows < 0:
            raise InvalidArgument(
                f"shard_rows must be 0 (one file per array) or positive, got {shard_rows}",
                field="shard_rows",
            )
        shard_rows = 0 if shard_rows >= num_items else shard_rows
        if shard_rows and -(-num_items // shard_rows) > MAX_SHARDS:
            raise InvalidArgument(
                f"shard_rows {shard_rows} splits the {num_items} rows into "
                f"{-(-num_items // shard_rows)} files; at most {MAX_SHARDS}: use shard_rows >= "
                f"{-(-num_items // MAX_SHARDS)}",
                field="shard_rows",
            )
        if self.exists(pool_id) and not overwrite and not resume:
            raise AlreadyExists(f"pool {shown(pool_id)} exists; set overwrite to replace it")
        if resume:
            for raw in self.redis.hvals(self._writing_key(pool_id)):
                state = json.loads(raw)
                if (
                    state["num_items"] == num_items
                    and state.get("metadata", {}) == (metadata or {})
                    and state.get("shard_rows", 0) == shard_rows
                    and self._dir(pool_id, state["version"]).is_dir()  # written on this machine
                ):
                    return PoolWriter(
                        self, pool_id, state["version"], num_items, metadata or {}, shard_rows
                    )
        version = f"{int(time.time() * 1000):x}-{uuid.uuid4().hex[:8]}"
        self._dir(pool_id, version).mkdir(parents=True, exist_ok=False)
        self.redis.hset(
            self._writing_key(pool_id),
            version,
            json.dumps(
                {
                    "version": version,
                    "num_items": num_items,
                    "metadata": metadata or {},
                    "shard_rows": shard_rows,
                }
            ),
        )
        return PoolWriter(self, pool_id, version, num_items, metadata or {}, shard_rows)

    def delete(self, pool_id: str) -> bool:
        """Remove a pool (metadata first, then files); False when it did not exist."""
        _check_pool_id(pool_id)
        raw = self.redis.get(self._meta_key(pool_id))
        pipe = self.redis.pipeline()
        pipe.delete(self._meta_key(pool_id))
        pipe.zrem(self._index_key(), pool_id)
        pipe.execute()
        if raw is None:
            return False
        version = PoolMeta.from_json(raw).version
        if self.remote is not None:
            self.remote.remove(pool_id, version)
        shutil.rmtree(self._dir(pool_id, version), ignore_errors=True)
        self._row_index.pop((pool_id, version), None)
        return True

    def put(
        self,
        pool_id: str,
        item_ids: builtins.list[str] | np.ndarray,
        arrays: dict[str, np.ndarray],
        *,
        metadata: dict[str, str] | None = None,
        overwrite: bool = False,
        shard_rows: int = 0,
    ) -> PoolMeta:
        """Write a whole pool in one call (small pools, tests, the trainer's outputs)."""
        writer = self.begin(
            pool_id, len(item_ids), metadata=metadata, overwrite=overwrite, shard_rows=shard_rows
        )
        try:
            writer.write(0, item_ids=list(map(str, item_ids)), arrays=arrays)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise


def _new_array_file(
    path: Path, dtype: np.dtype[Any], shape: tuple[int, ...]
) -> np.memmap[Any, Any]:
    """A new ``.npy`` file of ``shape``, memory-mapped for writing, with its blocks allocated up
    front: a full disk then fails here, as an ``OSError`` (ENOSPC, EFBIG, EDQUOT) the services
    answer RESOURCE_EXHAUSTED, instead of killing the process with SIGBUS on a later write into
    a hole of a sparse map. A file that could not be made whole is removed, so a resumed write
    never finds a short file."""
    try:
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        with open(path, "r+b") as fh:
            size = os.fstat(fh.fileno()).st_size
            try:
                os.posix_fallocate(fh.fileno(), 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate there
                    raise
        return out
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class PoolWriter:
    """Writes rows of one pool version; ``commit`` publishes it, ``abort`` discards it."""

    def __init__(
        self,
        store: PoolStore,
        pool_id: str,
        version: str,
        num_items: int,
        metadata: dict[str, str],
        shard_rows: int = 0,
    ) -> None:
        self.store, self.pool_id, self.version = store, pool_id, version
        self.num_items, self.metadata, self.shard_rows = num_items, metadata, shard_rows
        self.shards = shard_ranges(num_items, shard_rows)
        self.dir = store._dir(pool_id, version)
        self._ranges_key = f"{store.prefix}:pool:{{{pool_id}}}:ranges:{version}"

    def _array_path(self, name: str) -> Path:
        """The file of ``name`` (its first shard's in a sharded pool: dtype and width checks)."""
        return self.dir / (shard_file_name(name, 0) if self.shard_rows else f"{name}.npy")

    def _existing_file(self, name: str) -> Path | None:
        """A file of ``name`` written by an earlier chunk (any shard), or None."""
        if not self.shard_rows:
            path = self.dir / f"{name}.npy"
            return path if path.exists() else None
        return next(iter(sorted(self.dir.glob(f"{name}.s*.npy"))), None)

    def _targets(self, name: str, offset: int, n: int) -> list[tuple[Path, int, int, int, int]]:
        """(file, file rows, rows in the file, rows in the chunk) pieces of ``[offset, +n)``."""
        if not self.shard_rows:
            return [(self.dir / f"{name}.npy", self.num_items, offset, 0, n)]
        out = []
        for k, (a, b) in enumerate(self.shards):
            lo, hi = max(a, offset), min(b, offset + n)
            if lo < hi:
                out.append(
                    (self.dir / shard_file_name(name, k), b - a, lo - a, lo - offset, hi - lo)
                )
        return out

    def done_ranges(self, name: str = "item_ids") -> list[tuple[int, int]]:
        """Row ranges [start, end) already written for ``name`` (sorted)."""
        raw = self.store.redis.smembers(f"{self._ranges_key}:{name}")
        out = []
        for item in raw:
            s, e = (item.decode() if isinstance(item, bytes) else item).split(":")
            out.append((int(s), int(e)))
        return sorted(out)

    def write(
        self, offset: int, *, item_ids: list[str] | None = None, arrays: dict[str, np.ndarray]
    ) -> int:
        """Write rows ``[offset, offset + n)``; returns n. Validates before touching any file."""
        lengths = {name: int(np.shape(a)[0]) if np.ndim(a) else -1 for name, a in arrays.items()}
        if item_ids is not None:
            lengths["item_ids"] = len(item_ids)
        if not lengths:
            raise InvalidArgument("chunk carries no item ids and no arrays", field="chunk")
        if len(set(lengths.values())) != 1:
            raise InvalidArgument(f"chunk row counts differ: {lengths}", field="chunk")
        n = next(iter(lengths.values()))
        if n <= 0 or offset < 0 or offset + n > self.num_items:
            raise InvalidArgument(
                f"chunk rows [{offset}, {offset + n}) fall outside the pool's {self.num_items} rows",
                field="chunk.offset",
            )
        prepared: dict[str, np.ndarray] = {}
        for name, array in arrays.items():
            if name == "item_ids":
                raise InvalidArgument(f"array name {shown(name)} is invalid", field="chunk.arrays")
            check_array_name(name, field="chunk.arrays")
            arr = np.asarray(array)
            if arr.dtype.name not in _SUPPORTED:
                raise InvalidArgument(f"array {shown(name)}: dtype {arr.dtype} not supported")
            path = self._existing_file(name)
            if path is not None:
                existing = np.load(path, mmap_mode="r")
                if existing.dtype != arr.dtype or existing.shape[1:] != arr.shape[1:]:
                    raise InvalidArgument(
                        f"array {shown(name)}: chunk is {arr.dtype}{list(arr.shape[1:])} per row but earlier "
                        f"chunks were {existing.dtype}{list(existing.shape[1:])}",
                        field="chunk.arrays",
                    )
            prepared[name] = arr
        for name, arr in prepared.items():
            for path, rows, at, src, count in self._targets(name, offset, n):
                if path.exists():
                    out = np.load(path, mmap_mode="r+")
                else:
                    out = _new_array_file(path, arr.dtype, (rows, *arr.shape[1:]))
                out[at : at + count] = arr[src : src + count]
                out.flush()
                del out
            self.store.redis.sadd(f"{self._ranges_key}:{name}", f"{offset}:{offset + n}")
        if item_ids is not None:
            np.save(self.dir / f"ids-{offset:012d}.npy", np.asarray(item_ids, dtype=str))
            self.store.redis.sadd(f"{self._ranges_key}:item_ids", f"{offset}:{offset + n}")
        return n

    def _coverage_error(self, name: str) -> str | None:
        ranges = self.done_ranges(name)
        pos = 0
        for s, e in ranges:
            if s != pos:
                return (
                    f"{name}: rows [{pos}, {s}) were never written"
                    if s > pos
                    else (f"{name}: chunks overlap at row {s}")
                )
            pos = e
        if pos != self.num_items:
            return f"{name}: rows [{pos}, {self.num_items}) were never written"
        return None

    def commit(self) -> PoolMeta:
        """Check coverage and unique ids, then publish this version (replacing any older one)."""
        names = sorted(
            {
                p.name.split(".")[0]
                for p in self.dir.glob("*.npy")
                if not p.stem.startswith("ids-") and p.stem != "item_ids"
            }
        )
        id_files = sorted(self.dir.glob("ids-*.npy"))
        if id_files:
            problems = [m for m in (self._coverage_error(n) for n in ["item_ids", *names]) if m]
        else:
            problems = [m for m in (self._coverage_error(n) for n in names) if m]
        if problems:
            raise FailedPrecondition("pool is incomplete: " + "; ".join(problems))
        if id_files:
            ids = np.concatenate([np.load(p) for p in id_files])
        elif (self.dir / "item_ids.npy").exists():  # an earlier commit of this version got here
            ids = np.load(self.dir / "item_ids.npy")  # (then failed to upload or publish)
        else:
            ids = np.arange(self.num_items).astype(str)
        if len(np.unique(ids)) != len(ids):
            uniq, counts = np.unique(ids, return_counts=True)
            raise InvalidArgument(
                f"item ids must be unique; duplicated: {uniq[counts > 1][:5].tolist()}",
                field="item_ids",
            )
        np.save(self.dir / "item_ids.npy", ids)
        for p in id_files:
            p.unlink()
        arrays = {}
        for name in names:
            arr = np.load(self._array_path(name), mmap_mode="r")
            arrays[name] = ArrayMeta(dtype=arr.dtype.name, shape=[self.num_items, *arr.shape[1:]])
        files = ["item_ids.npy"]
        for name in names:
            files += [p.name for p, *_ in self._targets(name, 0, self.num_items)]
        if self.shard_rows:
            manifest = {
                "layout": "sharded",
                "num_items": self.num_items,
                "shard_rows": self.shard_rows,
                "shards": [
                    {"start": a, "stop": b, "files": {n: shard_file_name(n, k) for n in names}}
                    for k, (a, b) in enumerate(self.shards)
                ],
                "arrays": {n: asdict(m) for n, m in arrays.items()},
            }
            (self.dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            files.append(MANIFEST)
        if self.store.remote is not None:  # all files up before Redis names the version
            self.store.remote.upload(self.dir, self.pool_id, self.version, files)
            (self.dir / COMPLETE_MARKER).touch()
        meta = PoolMeta(
            pool_id=self.pool_id,
            num_items=self.num_items,
            version=self.version,
            arrays=arrays,
            metadata=dict(self.metadata),
            created_unix=time.time(),
            complete=True,
            shard_rows=self.shard_rows,
        )
        store, key = self.store, self.store._meta_key(self.pool_id)
        old_version = None
        with store.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    old_version = PoolMeta.from_json(raw).version if raw else None
                    pipe.multi()
                    pipe.set(key, meta.to_json())
                    pipe.zadd(store._index_key(), {self.pool_id: 0})
                    pipe.hdel(store._writing_key(self.pool_id), self.version)
                    for n in ["item_ids", *names]:
                        pipe.delete(f"{self._ranges_key}:{n}")
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        if old_version and old_version != self.version:
            if store.remote is not None:
                store.remote.remove(self.pool_id, old_version)
            shutil.rmtree(store._dir(self.pool_id, old_version), ignore_errors=True)
        return meta

    def abort(self) -> None:
        """Discard this unfinished version (files, any part a failed commit uploaded, and Redis
        bookkeeping)."""
        keys: list[Any] = list(self.store.redis.scan_iter(match=f"{self._ranges_key}:*"))
        self.store.redis.hdel(self.store._writing_key(self.pool_id), self.version)
        if keys:
            self.store.redis.delete(*keys)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.store.remote is not None:  # storage down: the orphan is only bucket space
            with contextlib.suppress(Unavailable, FailedPrecondition):
                self.store.remote.remove(self.pool_id, self.version)
