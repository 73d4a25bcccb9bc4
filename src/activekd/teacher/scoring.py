"""Score a whole pool of images in chunks, resumably: the one chunked teacher scorer.

:func:`iter_score_chunks` is the loop: rows ``0..total-1`` in chunks, each finished chunk handed
to a :class:`ChunkSink`, one :class:`ScoreProgress` per chunk. On a rerun, chunks the sink already
holds are skipped, so an interrupted job resumes where it stopped. Its users:

- :func:`iter_score_pool` / :func:`score_pool`: an image array or row loader, chunks in memory
  (:class:`MemoryChunkSink`) or in a folder of ``.npz`` files (:class:`DirectoryChunkSink`, what
  ``scripts/build_teacher_cache.py`` resumes from);
- :class:`~activekd.teacher.pool_job.PoolScorer` (ScorePool): chunks written into the pool store
  through a resumable writer (:class:`~activekd.teacher.pool_job.PoolWriterSink`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from activekd.errors import FailedPrecondition, InvalidArgument
from activekd.teacher.base import Teacher, TeacherIdentity, TeacherOutput

#: A chunk of images: one uint8 array (B, H, W[, 3]), or a list of images of any shapes.
RowImages = np.ndarray | list[np.ndarray]
#: ``(start, stop) -> images of rows start..stop-1``.
RowLoader = Callable[[int, int], RowImages]


@dataclass(frozen=True)
class ScoreProgress:
    """State after one chunk (rows ``start..done-1``): rows done of ``total``; ``resumed`` if it
    came from the sink; ``seconds`` since the job started, ``chunk_seconds`` spent loading and
    scoring this chunk (0 when resumed)."""

    done: int
    total: int
    chunk_index: int
    num_chunks: int
    resumed: bool
    chunks_resumed: int
    seconds: float
    start: int = 0
    chunk_seconds: float = 0.0

    @property
    def rows(self) -> int:
        """Rows in this chunk."""
        return self.done - self.start


@runtime_checkable
class ChunkSink(Protocol):
    """Where finished chunks go; ``has_chunk`` is the resume hook."""

    def has_chunk(self, index: int) -> bool: ...
    def load_chunk(self, index: int) -> TeacherOutput: ...
    def save_chunk(self, index: int, start: int, output: TeacherOutput) -> None: ...


class MemoryChunkSink:
    """Keeps chunks in a dict (tests, small pools)."""

    def __init__(self) -> None:
        self.chunks: dict[int, TeacherOutput] = {}

    def has_chunk(self, index: int) -> bool:
        return index in self.chunks

    def load_chunk(self, index: int) -> TeacherOutput:
        return self.chunks[index]

    def save_chunk(self, index: int, start: int, output: TeacherOutput) -> None:
        self.chunks[index] = output


class DirectoryChunkSink:
    """``chunk-000012.npz`` files plus ``manifest.json`` (fingerprint, total, chunk size).

    Opening a folder whose manifest disagrees raises FailedPrecondition (unless ``reset``),
    so chunks of another teacher or chunking are never mixed in. ``probs_dtype`` float16 halves
    the size (probabilities are then renormalised on load).
    """

    def __init__(
        self,
        folder: str | Path,
        identity: TeacherIdentity,
        total: int,
        chunk_size: int,
        *,
        store_features: bool = True,
        probs_dtype: str = "float32",
        reset: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.store_features = store_features
        self.probs_dtype = np.dtype(probs_dtype)
        manifest = {
            "fingerprint": identity.fingerprint,
            "total": int(total),
            "chunk_size": int(chunk_size),
            "store_features": bool(store_features),
            "probs_dtype": self.probs_dtype.name,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        mpath = self.folder / "manifest.json"
        if mpath.is_file() and not reset:
            old = json.loads(mpath.read_text())
            if old != manifest:
                raise FailedPrecondition(
                    f"{self.folder} holds chunks of another job ({old}); expected {manifest}. "
                    "Use another folder or reset=True"
                )
        else:
            for f in self.folder.glob("chunk-*.npz"):
                f.unlink()
            mpath.write_text(json.dumps(manifest, sort_keys=True))
        self.manifest = manifest

    def _path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:06d}.npz"

    def has_chunk(self, index: int) -> bool:
        return self._path(index).is_file()

    def load_chunk(self, index: int) -> TeacherOutput:
        with np.load(self._path(index), allow_pickle=False) as z:
            probs = z["probs"].astype(np.float32)
            probs /= probs.sum(axis=1, keepdims=True)
            return TeacherOutput(probs, z["features"].astype(np.float32))

    def save_chunk(self, index: int, start: int, output: TeacherOutput) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp.npz")
        os.close(fd)
        feats = output.features if self.store_features else output.features[:, :0]
        try:
            np.savez(
                tmp,
                probs=output.probs.astype(self.probs_dtype),
                features=feats.astype(np.float32),
                start=np.int64(start),
            )
            os.replace(tmp, self._path(index))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def predict_rows(teacher: Teacher, images: RowImages) -> TeacherOutput:
    """Teacher outputs for a chunk: one ``predict`` for an array; for a list of images (decoded
    files of any sizes), one ``predict`` per image shape, rows back in list order."""
    if isinstance(images, np.ndarray):
        return teacher.predict(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(img.shape, []).append(i)
    probs = np.zeros((len(images), teacher.num_classes), np.float32)
    feats = np.zeros((len(images), teacher.feature_dim), np.float32)
    for rows in groups.values():
        out = teacher.predict(np.stack([images[i] for i in rows]))
        probs[rows], feats[rows] = out.probs, out.features
    return TeacherOutput(probs, feats)


def iter_score_chunks(
    total: int,
    chunk_size: int,
    score: Callable[[int, int], TeacherOutput],
    *,
    sink: ChunkSink | None = None,
    on_chunk: Callable[[int, int, TeacherOutput], None] | None = None,
) -> Iterator[ScoreProgress]:
    """The chunk loop: ``score(start, stop)`` for each chunk of rows ``0..total-1`` the ``sink``
    does not hold yet, saved to the sink and passed to ``on_chunk(index, start, output)``;
    yields progress after every chunk (resumed ones included)."""
    if chunk_size < 1:
        raise InvalidArgument(f"chunk_size {chunk_size} must be >= 1", field="chunk_size")
    if total < 0:
        raise InvalidArgument(f"total {total} must be >= 0", field="total")
    num_chunks = (total + chunk_size - 1) // chunk_size
    resumed_count = 0
    t0 = time.perf_counter()
    for ci in range(num_chunks):
        start, stop = ci * chunk_size, min(total, (ci + 1) * chunk_size)
        resumed = sink is not None and sink.has_chunk(ci)
        chunk_seconds = 0.0
        if resumed:
            resumed_count += 1
        else:
            t_chunk = time.perf_counter()
            out = score(start, stop)
            chunk_seconds = time.perf_counter() - t_chunk
            if sink is not None:
                sink.save_chunk(ci, start, out)
            if on_chunk is not None:
                on_chunk(ci, start, out)
        yield ScoreProgress(
            done=stop,
            total=total,
            chunk_index=ci,
            num_chunks=num_chunks,
            resumed=resumed,
            chunks_resumed=resumed_count,
            seconds=time.perf_counter() - t0,
            start=start,
            chunk_seconds=chunk_seconds,
        )


def iter_score_pool(
    teacher: Teacher,
    images: np.ndarray | RowLoader,
    *,
    total: int | None = None,
    chunk_size: int = 256,
    sink: ChunkSink | None = None,
    on_chunk: Callable[[int, int, TeacherOutput], None] | None = None,
) -> Iterator[ScoreProgress]:
    """Score rows ``0..total-1`` chunk by chunk, yielding progress after each chunk.

    ``images``: an array (N, H, W[, 3]) or a loader ``(start, stop) -> images``
    (then ``total`` is required). Chunks the ``sink`` has are skipped (resume); each new chunk
    is saved to the sink and passed to ``on_chunk(index, start, output)``.
    """
    if chunk_size < 1:
        raise InvalidArgument(f"chunk_size {chunk_size} must be >= 1", field="chunk_size")
    if total is None:
        if callable(images):
            raise InvalidArgument("total is required when images is a loader", field="total")
        total = int(images.shape[0])

    def score(start: int, stop: int) -> TeacherOutput:
        batch = images(start, stop) if callable(images) else np.asarray(images[start:stop])
        if len(batch) != stop - start:
            raise InvalidArgument(
                f"loader returned {len(batch)} images for rows {start}..{stop - 1}"
            )
        return predict_rows(teacher, batch)

    yield from iter_score_chunks(total, chunk_size, score, sink=sink, on_chunk=on_chunk)


def score_pool(
    teacher: Teacher,
    images: np.ndarray | RowLoader,
    *,
    total: int | None = None,
    chunk_size: int = 256,
    sink: ChunkSink | None = None,
    progress: Callable[[ScoreProgress], None] | None = None,
) -> TeacherOutput:
    """Run :func:`iter_score_pool` to the end and return all rows' outputs in order (read back
    from ``sink``, default in memory)."""
    sink = sink if sink is not None else MemoryChunkSink()
    progresses = []
    for p in iter_score_pool(teacher, images, total=total, chunk_size=chunk_size, sink=sink):
        progresses.append(p)
        if progress is not None:
            progress(p)
    parts = [sink.load_chunk(p.chunk_index) for p in progresses]
    return TeacherOutput.concat(parts, teacher.num_classes, teacher.feature_dim)
