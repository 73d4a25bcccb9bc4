"""ScorePool without gRPC: image sources and the job that scores them into the pool store.

A job writes pool ``teacher/<fingerprint>/<dataset>`` (or the caller's id) with ``probs`` (N, C)
float32 and ``features`` (N, D) float32. It runs the one chunked scorer,
:func:`~activekd.teacher.scoring.iter_score_chunks`, with a :class:`PoolWriterSink`: chunks land
through a :class:`~activekd.store.PoolWriter` opened with ``resume=True``, and the pool store
records every written row range in Redis, so a job killed halfway resumes with the chunks it had
finished (same teacher, source and chunk size: the writer's metadata must match). A complete pool
with the same teacher fingerprint and source signature is a cache hit and costs no compute; for a
builtin dataset, a teacher cache file that fits the teacher (:class:`TeacherCacheIndex`) fills
``probs`` without running the model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from activekd.errors import (
    ActiveKDError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    shown,
)
from activekd.ids import check_segment
from activekd.store import PoolMeta, PoolStore, PoolWriter
from activekd.teacher.base import BaseTeacher, TeacherOutput
from activekd.teacher.cache import TeacherCacheIndex, packaged_teacher_cache_dir
from activekd.teacher.head_pool import (
    HEAD_POOL_KEY,
    TeacherHead,
    head_pool_id,
    teacher_head,
    write_head,
)
from activekd.teacher.images import decode_image, validate_image_batch
from activekd.teacher.scoring import RowImages, iter_score_chunks, predict_rows
from activekd.teacher.sources import ENTRY_CHARS, SourcePolicy, uri_scheme

log = logging.getLogger("activekd.teacher.pool_job")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
BUILTINS: dict[str, tuple[str, str]] = {
    "fashion-mnist:train": ("fashion-mnist", "train"),
    "fashion-mnist:test": ("fashion-mnist", "test"),
}
DATASET_POOL = "datasets/{dataset}/{split}"
DEFAULT_CHUNK_SIZE = 256
MAX_CHUNK_SIZE = 65536
SOURCE_KINDS = ("folder", "file_list", "array_uri", "pool_id", "builtin")

#: Former names, kept for one release.
PrecomputedIndex = TeacherCacheIndex
packaged_cache_dir = packaged_teacher_cache_dir


def _digest(*parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"
    return s[:48]


def check_dataset_name(name: str) -> str:
    """A dataset name is one pool id segment: letters, digits, ``._:-``, up to 100 chars."""
    return check_segment(name, "dataset", "dataset")


@dataclass
class ImageSource:
    """A resolved pool of images: ``load(start, stop)`` gives rows ``start..stop-1``.

    ``item_ids`` is None when rows are identified by their number (the pool store's default ids
    ``"0".."N-1"``). ``signature`` changes whenever the images may have changed (file sizes and
    mtimes, the pool's version, the row count), so a stale cache is never served.
    """

    kind: str
    ref: str
    total: int
    full_size: int
    dataset: str
    signature: str
    load: Callable[[int, int], RowImages]
    item_ids: Callable[[int, int], list[str]] | None = None
    builtin: tuple[str, str] | None = None

    @property
    def description(self) -> str:
        return f"{self.kind}:{self.ref}"


def _apply_limit(full: int, limit: int) -> int:
    if limit < 0:
        raise InvalidArgument(f"limit {limit} must be >= 0 (0 = all)", field="limit")
    return min(full, limit) if limit else full


def _default_dataset(prefix: str, name: str, key: str, total: int, full: int) -> str:
    base = f"{prefix}-{_slug(name)}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    return base + (f"-first{total}" if total < full else "")


def _check_image_array(arr: np.ndarray, what: str, field: str) -> None:
    if arr.ndim < 1 or arr.shape[0] == 0:
        raise InvalidArgument(f"{what} holds no images (shape {arr.shape})", field=field)
    if arr.ndim < 3:
        raise InvalidArgument(
            f"{what}: images shape {tuple(arr.shape)} must be (B, H, W) or (B, H, W, 1|3)",
            field=field,
        )
    try:
        validate_image_batch(arr[:0])  # dtype and image size from the header, no rows read
    except InvalidArgument as exc:
        raise InvalidArgument(f"{what}: {exc}", field=field) from exc


def _file_loader(paths: Sequence[Path]) -> Callable[[int, int], RowImages]:
    def load(start: int, stop: int) -> RowImages:
        out = []
        for p in paths[start:stop]:
            try:
                out.append(decode_image(p.read_bytes()))
            except OSError as exc:  # the OS error text would name host paths: logged only
                log.warning("image file unreadable", extra={"file": str(p), "error": str(exc)})
                raise NotFound(
                    f"image file {shown(p.name, ENTRY_CHARS)} could not be read", field="source"
                ) from exc
            except ActiveKDError as exc:
                raise type(exc)(
                    f"image file {shown(p.name, ENTRY_CHARS)}: {exc}; fix or remove it",
                    field="source",
                ) from exc
        return out

    return load


def _named(ref: str) -> Path:
    """The path as the caller wrote it (default dataset names come from it, not from where its
    symlinks lead)."""
    return Path(ref.removeprefix("file://")).expanduser()


def _is(path: Path, test: Callable[[Path], bool]) -> bool:
    """``test(path)`` (``Path.is_file``...), False where the OS refuses to look (a name too long,
    a loop, no permission) instead of an OSError naming the path."""
    try:
        return test(path)
    except (OSError, ValueError):
        return False


def _files_signature(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _check_rows(total: int, policy: SourcePolicy, what: str, field: str) -> None:
    if policy.max_rows and total > policy.max_rows:
        raise ResourceExhausted(
            f"{what} has {total} rows, over this service's limit {policy.max_rows} "
            "(ACTIVEKD_MAX_POOL_ROWS); set limit",
            field=field,
        )


def _read_file_list(
    listing: Path, ref: str, policy: SourcePolicy, limit: int, field: str
) -> list[str]:
    """The entries of a file list (blank lines and ``#`` comments skipped), read no further than
    the row cap: past it only the first ``limit`` rows can be asked for."""
    cap = policy.max_rows
    entries: list[str] = []
    try:
        with listing.open(encoding="utf-8") as fh:
            for line in fh:
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                entries.append(text)
                if cap and len(entries) > cap:
                    if 0 < limit <= cap:
                        break  # the first `limit` are all that is used
                    raise ResourceExhausted(
                        f"file list {shown(ref)} names more than {cap} files, over this "
                        "service's limit (ACTIVEKD_MAX_POOL_ROWS); set limit",
                        field=field,
                    )
    except UnicodeDecodeError:
        raise InvalidArgument(
            f"file list {shown(ref)} is not UTF-8 text (one image path per line)", field=field
        ) from None
    except OSError as exc:  # e.g. no read permission: logged, the text names host paths
        log.warning("file list unreadable", extra={"file": str(listing), "error": str(exc)})
        raise FailedPrecondition(
            f"file list {shown(ref)} could not be read on the teacher host", field=field
        ) from None
    return entries


def resolve_source(
    kind: str, ref: str, limit: int, store: PoolStore, policy: SourcePolicy | None = None
) -> ImageSource:
    """Resolve an ``ImageSource`` oneof (``folder``, ``file_list``, ``array_uri``, ``pool_id``,
    ``builtin``). Every host path or URI is checked against ``policy`` (default:
    :meth:`SourcePolicy.default` of the store) before it is opened: PermissionDenied outside it.
    NotFound for missing folders/files/pools under the roots, InvalidArgument for bad contents."""
    field = f"source.{kind}"
    if not ref:
        raise InvalidArgument(f"{field} is empty", field=field)
    if kind == "builtin":
        return _builtin_source(ref, limit)
    if policy is None:
        policy = SourcePolicy.default(store.root)
    if kind == "folder":
        folder = policy.local_path(ref, field)
        if not _is(folder, Path.exists):
            raise NotFound(
                f"image folder {shown(ref)} does not exist on the teacher host", field=field
            )
        if not _is(folder, Path.is_dir):
            raise InvalidArgument(f"{shown(ref)} is not a folder", field=field)
        try:
            candidates = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as exc:
            log.warning("folder unreadable", extra={"folder": str(folder), "error": str(exc)})
            raise FailedPrecondition(
                f"image folder {shown(ref)} could not be listed on the teacher host", field=field
            ) from None
        checked = [policy.check_file(f, field) for f in candidates]  # symlinks out: refused
        pairs = [(f, c) for f, c in zip(candidates, checked, strict=True) if _is(c, Path.is_file)]
        if not pairs:
            raise InvalidArgument(
                f"folder {shown(ref)} holds no images ({', '.join(IMAGE_SUFFIXES)})", field=field
            )
        full = len(pairs)
        total = _apply_limit(full, limit)
        _check_rows(total, policy, f"folder {shown(ref)}", field)
        files = [c for _, c in pairs[:total]]
        names = [f.name for f, _ in pairs[:total]]
        return ImageSource(
            kind, ref, total, full,
            _default_dataset("folder", _named(ref).name, str(folder), total, full),
            _digest(kind, str(folder), _files_signature(files), total),
            _file_loader(files), lambda a, b: names[a:b],
        )  # fmt: skip
    if kind == "file_list":
        listing = policy.local_path(ref, field)
        if not _is(listing, Path.is_file):
            raise NotFound(
                f"file list {shown(ref)} does not exist on the teacher host", field=field
            )
        entries = _read_file_list(listing, ref, policy, limit, field)
        if not entries:
            raise InvalidArgument(f"file list {shown(ref)} names no images", field=field)
        full = len(entries)
        total = _apply_limit(full, limit)
        entries = entries[:total]
        _check_rows(total, policy, f"file list {shown(ref)}", field)
        dups = (
            sorted({e for e in entries if entries.count(e) > 1})
            if len(set(entries)) < total
            else []
        )
        if dups:
            raise InvalidArgument(
                f"file list {shown(ref)} repeats {len(dups)} entr{'y' if len(dups) == 1 else 'ies'}"
                f", first {shown(dups[0], ENTRY_CHARS)}",
                field=field,
            )
        # every entry is checked against the roots before any of them is looked at
        paths = [
            policy.check_file(p if p.is_absolute() else listing.parent / p, field, e)
            for e, p in zip(entries, map(Path, entries), strict=True)
        ]
        missing = [e for e, p in zip(entries, paths, strict=True) if not _is(p, Path.is_file)]
        if missing:
            raise NotFound(
                f"{len(missing)} file(s) named in {shown(ref)} do not exist, first "
                f"{shown(missing[0], ENTRY_CHARS)}",
                field=field,
            )
        return ImageSource(
            kind, ref, total, full,
            _default_dataset("filelist", _named(ref).stem, str(listing), total, full),
            _digest(kind, str(listing), entries, _files_signature(paths)),
            _file_loader(paths), lambda a, b: entries[a:b],
        )  # fmt: skip
    if kind == "array_uri":
        arr, key, stem = _open_array(ref, field, policy)
        _check_image_array(arr, f"array {shown(ref)}", field)
        full = int(arr.shape[0])
        total = _apply_limit(full, limit)
        _check_rows(total, policy, f"array {shown(ref)}", field)
        return ImageSource(
            kind, ref, total, full,
            _default_dataset("array", stem, ref, total, full),
            _digest(kind, ref, key, total),
            lambda a, b: np.asarray(arr[a:b]),
        )  # fmt: skip
    if kind == "pool_id":
        meta = store.describe(ref)
        if "images" not in meta.arrays:
            raise NotFound(
                f"pool {shown(ref)} has no 'images' array; it has {sorted(meta.arrays) or 'none'}",
                field=field,
            )
        images = store.open_array(ref, "images")
        _check_image_array(images, f"pool {shown(ref)} images", field)
        ids = store.item_ids(ref)
        full = int(images.shape[0])
        total = _apply_limit(full, limit)
        return ImageSource(
            kind, ref, total, full,
            _default_dataset("pool", ref.replace("/", "."), ref, total, full),
            _digest(kind, ref, meta.version, total),
            lambda a, b: np.asarray(images[a:b]),
            lambda a, b: [str(x) for x in ids[a:b].tolist()],
        )  # fmt: skip
    raise InvalidArgument(f"unknown image source kind {shown(kind)}", field="source")


#: the fields of an fsspec ``info`` that mark an object's version, most specific first (S3's
#: ETag, GCS's generation / md5, then modification times); not ``str(info)``, whose other keys
#: differ between a listing and a HEAD of the same object
VERSION_FIELDS = ("ETag", "etag", "VersionId", "generation", "md5Hash", "LastModified", "mtime",
                  "last_modified", "updated", "created")  # fmt: skip


def _object_version(info: dict[str, Any]) -> str:
    """``size|field=value`` for the first version field ``info`` has (size only if none)."""
    mark = next((f"{k}={info[k]}" for k in VERSION_FIELDS if info.get(k) not in (None, "")), "")
    return f"{info.get('size')}|{mark}"


class RemoteNpy:
    """Rows of a ``.npy`` file in object storage, read by byte range as they are asked for: only
    the header is read up front, so a pool far larger than memory is never loaded whole (by the
    service, the Ray job's driver or any of its actors).

    ``change_key`` is the object's size plus the store's own version mark (:func:`_object_version`:
    the ETag on S3), so a rewritten object is a new source for the cache. C-order arrays of plain
    dtypes only (what ``np.save`` writes for an image array)."""

    def __init__(self, uri: str) -> None:
        import fsspec

        self.fs, self.path = fsspec.core.url_to_fs(uri)
        self.fs.invalidate_cache(self.path)  # fsspec's listing cache may predate the object
        with self.fs.open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            self.offset = int(fh.tell())
        if fortran or dtype.hasobject:
            raise ValueError("only C-order arrays of plain dtypes are read by range")
        self.shape: tuple[int, ...] = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        info = self.fs.info(self.path)  # one metadata call: the size and the version mark
        if self.shape and int(info["size"]) < self.offset + len(self) * self.row_bytes:
            raise ValueError("the file is shorter than its .npy header says (truncated)")
        self.change_key = _object_version(info)

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(len(self))
        if step != 1:
            raise IndexError("RemoteNpy reads contiguous row ranges only")
        n = max(0, stop - start)
        if n == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        first, size = self.offset + start * self.row_bytes, n * self.row_bytes
        try:
            raw = self.fs.cat_file(self.path, start=first, end=first + size)
        except (FileNotFoundError, PermissionError) as exc:  # gone, or no longer ours to read
            raise FailedPrecondition(
                "the source array is gone from object storage or no longer readable; score it "
                "again once it is back"
            ) from exc
        except Exception as exc:  # botocore's connection errors are no OSError
            raise Unavailable(
                f"object storage did not answer while reading source rows ({type(exc).__name__})"
                "; retry: the finished chunks are kept"
            ) from exc
        if len(raw) != size:
            raise FailedPrecondition(
                "the source array is shorter than when the job started (rewritten while being "
                "scored?); score it again"
            )
        return np.frombuffer(raw, dtype=self.dtype).reshape((n, *self.shape[1:]))


def _open_array(ref: str, field: str, policy: SourcePolicy) -> tuple[np.ndarray, str, str]:
    """(array, change key, name stem) for a local ``.npy`` path, ``file://`` or an fsspec URI
    whose scheme the policy allows."""
    scheme = uri_scheme(ref)
    if scheme not in (None, "file"):
        uri = policy.check_uri(ref, field)
        try:
            remote = RemoteNpy(uri)
        except FileNotFoundError as exc:
            raise NotFound(f"array {shown(ref)} does not exist", field=field) from exc
        except (OSError, ValueError, ImportError) as exc:
            log.warning("array unreadable", extra={"uri": ref, "error": str(exc)})
            raise InvalidArgument(
                f"array {shown(ref)} could not be read as .npy ({type(exc).__name__})", field=field
            ) from exc
        stem = Path(uri.split("?", 1)[0]).stem
        return remote, _digest(remote.shape, remote.change_key), stem  # type: ignore[return-value]
    path = policy.local_path(ref, field)
    if not _is(path, Path.is_file):
        raise NotFound(f"array file {shown(ref)} does not exist on the teacher host", field=field)
    if path.suffix != ".npy":
        raise InvalidArgument(f"array {shown(ref)} must be a .npy file", field=field)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("array unreadable", extra={"file": str(path), "error": str(exc)})
        raise InvalidArgument(
            f"array {shown(ref)} could not be read as .npy ({type(exc).__name__})", field=field
        ) from exc
    st = path.stat()
    return arr, f"{path}|{st.st_size}|{st.st_mtime_ns}", _named(ref).stem


def _builtin_source(ref: str, limit: int) -> ImageSource:
    if ref not in BUILTINS:
        raise InvalidArgument(
            f"unknown builtin dataset {shown(ref)}; use one of {sorted(BUILTINS)}",
            field="source.builtin",
        )
    from activekd.data.fashion_mnist import load_fashion_mnist

    dataset, split = BUILTINS[ref]
    images, _ = load_fashion_mnist(split)
    full = int(images.shape[0])
    total = _apply_limit(full, limit)
    name = f"{dataset}-{split}" + (f"-first{total}" if total < full else "")
    return ImageSource(
        "builtin", ref, total, full, name, _digest("builtin", ref, full, total),
        lambda a, b: np.asarray(images[a:b]), builtin=(dataset, split),
    )  # fmt: skip


def ensure_dataset_pool(store: PoolStore, dataset: str, split: str) -> str:
    """Register ``datasets/<dataset>/<split>`` (``images`` uint8, ``labels`` int64, ids "0".."N-1")
    if it is missing, so the trainer and experiment services can read the builtin dataset."""
    from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

    pool_id = DATASET_POOL.format(dataset=dataset, split=split)
    if store.exists(pool_id):
        return pool_id
    images, labels = load_fashion_mnist(split)
    ids = np.arange(images.shape[0]).astype(str)
    try:
        store.put(
            pool_id, ids,
            {"images": np.ascontiguousarray(images), "labels": np.asarray(labels, np.int64)},
            metadata={"kind": "dataset", "dataset": dataset, "split": split,
                      "source": f"builtin:{dataset}:{split}",
                      "class_names": json.dumps(list(FASHION_MNIST_CLASSES))},
        )  # fmt: skip
        log.info("registered dataset pool", extra={"pool_id": pool_id, "rows": len(ids)})
    except AlreadyExists:  # a concurrent job registered it first
        pass
    return pool_id


@dataclass(frozen=True)
class ScoreUpdate:
    """One progress step of a scoring job; ``meta`` is set on the last one."""

    done: int
    total: int
    chunks_resumed: int
    cached: bool = False
    computed: int = 0
    meta: PoolMeta | None = None


def default_output_pool(fingerprint: str, dataset: str) -> str:
    """``teacher/<fingerprint>/<dataset>``."""
    return f"teacher/{fingerprint}/{dataset}"


def check_score_request(kind: str | None, chunk_size: int) -> str:
    """A ScorePool request names a source kind and a chunk size >= 0 (0 = the default)."""
    if kind is None:
        raise InvalidArgument(
            f"source is required: {', '.join(SOURCE_KINDS[:-1])} or {SOURCE_KINDS[-1]}",
            field="source",
        )
    if chunk_size < 0:
        raise InvalidArgument(f"chunk_size {chunk_size} must be >= 0", field="chunk_size")
    return kind


def cached_pool(
    store: PoolStore, pool_id: str, fingerprint: str, source: ImageSource
) -> PoolMeta | None:
    """The complete pool ``pool_id`` when it holds the outputs of the teacher ``fingerprint`` for
    exactly ``source`` (any layout, whoever scored it: ScorePool or the Ray Data job)."""
    if not store.exists(pool_id):
        return None
    meta = store.describe(pool_id)
    md = meta.metadata
    if (
        meta.complete
        and "probs" in meta.arrays
        and meta.num_items == source.total
        and md.get("teacher_fingerprint") == fingerprint
        and md.get("source_signature") == source.signature
    ):
        return meta
    return None


def teacher_output_metadata(
    teacher: BaseTeacher, source: ImageSource, dataset: str, **extra: str
) -> dict[str, str]:
    """The metadata of a pool of teacher outputs (what :func:`cached_pool` and a resumed write
    compare); ``extra``: how it was scored (chunk size, features, probs source, scorer)."""
    ident = teacher.identity
    base = {
        "kind": "teacher-outputs",
        "teacher_fingerprint": ident.fingerprint,
        "teacher_backend": ident.backend,
        "teacher_model": ident.model,
        "class_names": json.dumps(list(ident.class_names)),
        "dataset": dataset,
        "source": source.description,
        "source_signature": source.signature,
    }
    clash = sorted(set(extra) & set(base))
    if clash:  # the cache key and the pool's identity are the scorer's, never a caller's
        raise ValueError(f"extra metadata may not set {', '.join(clash)}")
    return {**base, **extra}


def output_arrays(store_features: bool, has_item_ids: bool) -> list[str]:
    """What a scoring write records per row range: probs, features when stored, the item ids
    when the source names its rows."""
    names = ["probs", *(["features"] if store_features else [])]
    return [*names, "item_ids"] if has_item_ids else names


def written_ranges(writer: PoolWriter, names: Sequence[str]) -> set[tuple[int, int]]:
    """Row ranges the store recorded for every one of ``names`` (finished chunks or shards)."""
    return set.intersection(*(set(writer.done_ranges(n)) for n in names))


def begin_scoring(
    store: PoolStore,
    pool_id: str,
    total: int,
    metadata: dict[str, str],
    force: bool,
    shard_rows: int = 0,
    head: TeacherHead | None = None,
) -> PoolWriter:
    """The writer of a scoring job: an unfinished write with the same metadata resumes; with
    ``force``, one that already holds rows is discarded and the job starts afresh. ``head``: the
    teacher's zero-shot linear head, named in the pool's metadata (:mod:`activekd.teacher.head_pool`)
    and stored by :func:`commit_scoring` once every row is written."""
    if head is not None:
        metadata = {**metadata, HEAD_POOL_KEY: head_pool_id(pool_id)}
    writer = store.begin(pool_id, total, metadata=metadata, resume=True, shard_rows=shard_rows)
    if force and any(writer.done_ranges(n) for n in ("probs", "features", "item_ids")):
        writer.abort()
        writer = store.begin(
            pool_id, total, metadata=metadata, overwrite=True, shard_rows=shard_rows
        )
    return writer


def commit_scoring(
    store: PoolStore, writer: PoolWriter, pool_id: str, head: TeacherHead | None
) -> PoolMeta:
    """Store the teacher's zero-shot head beside the pool (when it has one), then commit: a job
    that failed while scoring leaves no head behind; one whose commit fails may leave the head
    pool (harmless: the next successful scoring replaces it, and only a committed teacher pool
    names it)."""
    if head is not None:
        write_head(store, pool_id, head)
    return writer.commit()


class PoolWriterSink:
    """A :class:`~activekd.teacher.scoring.ChunkSink` writing into the pool store: a chunk is held
    when the store recorded its row range for every array it writes (``probs``, ``features`` when
    stored, ``item_ids`` when the source names its rows)."""

    def __init__(
        self,
        writer: PoolWriter,
        *,
        total: int,
        chunk_size: int,
        store_features: bool,
        item_ids: Callable[[int, int], list[str]] | None = None,
    ) -> None:
        self.writer, self.total, self.chunk_size = writer, total, chunk_size
        self.store_features, self.item_ids = store_features, item_ids
        self._done = written_ranges(writer, output_arrays(store_features, item_ids is not None))

    def _range(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(self.total, start + self.chunk_size)

    def has_chunk(self, index: int) -> bool:
        return self._range(index) in self._done

    def load_chunk(self, index: int) -> TeacherOutput:
        start, stop = self._range(index)
        probs = np.array(np.load(self.writer.dir / "probs.npy", mmap_mode="r")[start:stop])
        if self.store_features:
            feats = np.array(np.load(self.writer.dir / "features.npy", mmap_mode="r")[start:stop])
        else:
            feats = np.zeros((stop - start, 0), np.float32)
        return TeacherOutput(probs, feats)

    def save_chunk(self, index: int, start: int, output: TeacherOutput) -> None:
        arrays = {"probs": output.probs}
        if self.store_features:
            arrays["features"] = output.features
        stop = start + len(output)
        ids = self.item_ids(start, stop) if self.item_ids is not None else None
        self.writer.write(start, item_ids=ids, arrays=arrays)
        self._done.add((start, stop))


class ScoreOffload(Protocol):
    """Somewhere else to score large sources (the Ray Data job on a cluster:
    :class:`activekd.distributed.ray_jobs.RayScoringOffload`)."""

    def wants(self, total: int) -> bool: ...

    def run(
        self,
        teacher: BaseTeacher,
        source: ImageSource,
        store: PoolStore,
        *,
        pool_id: str,
        dataset: str,
        force: bool,
    ) -> AsyncIterator[ScoreUpdate]: ...


class PoolScorer:
    """Runs ScorePool jobs: cache check, resume, chunked compute off the event loop, commit.
    ``offload``: sources it ``wants`` (by row count) are scored there instead, after the cache
    check; builtin datasets stay here (their teacher cache files make them cheap)."""

    def __init__(
        self,
        store: PoolStore,
        cache_files: TeacherCacheIndex,
        *,
        pause_s: float = 0.0,
        on_chunk: Callable[[str, str, int, float], None] | None = None,
        policy: SourcePolicy | None = None,
        offload: ScoreOffload | None = None,
    ) -> None:
        self.store, self.cache_files, self.pause_s = store, cache_files, pause_s
        self.offload = offload
        #: Where sources may be read from (default: :meth:`SourcePolicy.default` of the store).
        self.policy = policy if policy is not None else SourcePolicy.default(store.root)
        self.on_chunk = on_chunk
        self._locks: dict[str, asyncio.Lock] = {}

    def cached(self, pool_id: str, fingerprint: str, source: ImageSource) -> PoolMeta | None:
        """The complete pool when it holds this teacher's outputs for exactly this source."""
        return cached_pool(self.store, pool_id, fingerprint, source)

    async def score(
        self,
        teacher: BaseTeacher,
        kind: str,
        ref: str,
        *,
        limit: int = 0,
        dataset: str = "",
        pool_id: str = "",
        chunk_size: int = 0,
        force: bool = False,
    ) -> AsyncGenerator[ScoreUpdate, None]:
        """ScorePool in one call: resolve the source ``kind``/``ref`` (first ``limit`` rows,
        0 = all), then :meth:`run`. ``dataset`` defaults to the source's name, ``pool_id`` to
        ``teacher/<fingerprint>/<dataset>``, ``chunk_size`` 0 to :data:`DEFAULT_CHUNK_SIZE`."""
        source = await asyncio.to_thread(resolve_source, kind, ref, limit, self.store, self.policy)
        name = check_dataset_name(dataset) if dataset else source.dataset
        async for update in self.run(
            teacher,
            source,
            pool_id=pool_id or default_output_pool(teacher.identity.fingerprint, name),
            dataset=name,
            chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
            force=force,
        ):
            yield update

    async def run(
        self,
        teacher: BaseTeacher,
        source: ImageSource,
        *,
        pool_id: str,
        dataset: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        force: bool = False,
    ) -> AsyncGenerator[ScoreUpdate, None]:
        """Score ``source`` into ``pool_id``, yielding progress after every chunk and once more
        with the committed pool. Data errors abort the unfinished write (nothing is committed);
        a cancelled or crashed job leaves its finished chunks for the next run to resume."""
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidArgument(
                f"chunk_size {chunk_size} must be in 1..{MAX_CHUNK_SIZE} "
                f"(0 = {DEFAULT_CHUNK_SIZE})",
                field="chunk_size",
            )
        lock = self._locks.setdefault(pool_id, asyncio.Lock())
        async with lock:  # one writer per output pool in this process
            async for update in self._run_locked(
                teacher, source, pool_id, dataset, chunk_size, force
            ):
                yield update

    async def _cache_file_probs(
        self, fingerprint: str, source: ImageSource, pool_id: str
    ) -> tuple[str, np.ndarray | None]:
        """For a builtin source: register its dataset pool, and ``(file name, probs)`` from a
        teacher cache file that fits the teacher (``("", None)`` when there is none)."""
        if source.builtin is None:
            return "", None
        await asyncio.to_thread(ensure_dataset_pool, self.store, *source.builtin)
        found = await asyncio.to_thread(
            self.cache_files.lookup, fingerprint, *source.builtin, source.total
        )
        if found is None:
            return "", None
        log.info(
            "probabilities from a teacher cache file",
            extra={"file": str(found[0]), "pool_id": pool_id},
        )
        return found[0].name, found[1]

    async def _run_locked(
        self, teacher: BaseTeacher, source: ImageSource, pool_id: str, dataset: str,
        chunk_size: int, force: bool,
    ) -> AsyncGenerator[ScoreUpdate, None]:  # fmt: skip
        ident = teacher.identity
        fp = ident.fingerprint
        total = source.total
        hit = None if force else await asyncio.to_thread(self.cached, pool_id, fp, source)
        if hit is not None:
            yield ScoreUpdate(total, total, 0, cached=True, meta=hit)
            return
        if self.offload is not None and source.builtin is None and self.offload.wants(total):
            log.info("scoring on the ray cluster", extra={"pool_id": pool_id, "rows": total})
            async for update in self.offload.run(
                teacher, source, self.store, pool_id=pool_id, dataset=dataset, force=force
            ):
                yield update
            return
        cache_file, cached_probs = await self._cache_file_probs(fp, source, pool_id)
        store_features = cached_probs is None and teacher.feature_dim > 0
        metadata = teacher_output_metadata(
            teacher,
            source,
            dataset,
            chunk_size=str(chunk_size),
            features="true" if store_features else "false",
            probs_source="model" if cached_probs is None else f"precomputed:{cache_file}",
        )
        head = teacher_head(teacher)
        writer = await asyncio.to_thread(
            begin_scoring, self.store, pool_id, total, metadata, force, 0, head
        )

        def score(start: int, stop: int) -> TeacherOutput:
            if cached_probs is not None:
                probs = np.ascontiguousarray(cached_probs[start:stop], dtype=np.float32)
                return TeacherOutput(probs, np.zeros((stop - start, 0), np.float32))
            return predict_rows(teacher, source.load(start, stop))

        t0 = time.perf_counter()
        resumed = computed = 0
        try:
            sink = await asyncio.to_thread(
                PoolWriterSink, writer, total=total, chunk_size=chunk_size,
                store_features=store_features, item_ids=source.item_ids,
            )  # fmt: skip
            chunks = iter_score_chunks(total, chunk_size, score, sink=sink)
            while (p := await asyncio.to_thread(next, chunks, None)) is not None:
                resumed = p.chunks_resumed
                if not p.resumed:
                    if cached_probs is None:
                        computed += p.rows
                        if self.on_chunk is not None:
                            self.on_chunk(ident.backend, dataset, p.rows, p.chunk_seconds)
                    if self.pause_s > 0:
                        await asyncio.sleep(self.pause_s)
                yield ScoreUpdate(p.done, total, resumed, computed=computed)
            meta = await asyncio.to_thread(commit_scoring, self.store, writer, pool_id, head)
        except Unavailable:
            raise  # storage or Redis away: the written chunks stay for the next run to resume
        except (ActiveKDError, OSError):  # bad data, or a full / read-only store:
            await asyncio.to_thread(writer.abort)  # nothing half-written survives (and a full
            raise  # disk gets its space back)
        log.info(
            "scored pool",
            extra={
                "pool_id": pool_id,
                "rows": total,
                "computed": computed,
                "chunks_resumed": resumed,
                "seconds": round(time.perf_counter() - t0, 3),
            },
        )
        yield ScoreUpdate(total, total, resumed, computed=computed, meta=meta)
