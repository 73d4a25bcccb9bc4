"""Teacher outputs kept on disk, under two names that say what they hold.

- **Output cache** (:class:`TeacherOutputCache`, under ``$ACTIVEKD_CACHE_DIR``): teacher outputs
  keyed by (teacher fingerprint, dataset, split, row indices). Layout:
  ``<root>/<fingerprint>/<dataset>/<split>/<sha256(indices)[:20]>.npz`` holding ``probs``,
  ``features`` (optional), ``indices`` and the teacher identity JSON. Writes are atomic
  (temp file + rename), so concurrent writers at worst compute twice.
- **Teacher cache file** (``<dataset>-*.npz``, written by ``scripts/build_teacher_cache.py``,
  shipped in ``activekd/data/teacher_cache/``): one teacher's probabilities for whole dataset
  splits (``<split>_probs``) plus its ``identity``. :func:`load_teacher_cache_file` reads one;
  :class:`TeacherCacheIndex` finds the file that fits a teacher (ScorePool then fills ``probs``
  from it without running the model: pool metadata ``probs_source=precomputed:<file>``).

(Caller-supplied outputs served as a teacher are the ``precomputed`` backend,
:class:`~activekd.teacher.precomputed.PrecomputedTeacher`; a ScorePool result is a
``teacher-outputs`` pool in the pool store.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from activekd.errors import InvalidArgument, NotFound
from activekd.teacher.base import Teacher, TeacherIdentity, TeacherOutput

log = logging.getLogger(__name__)

CACHE_ENV = "ACTIVEKD_CACHE_DIR"
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def default_cache_dir() -> Path:
    """``$ACTIVEKD_CACHE_DIR`` or ``~/.cache/activekd/teacher``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "activekd" / "teacher"


def _safe(name: str, what: str) -> str:
    if not _SAFE.match(name) or name in (".", ".."):
        raise InvalidArgument(
            f"{what} {name!r} may only hold letters, digits, '.', '_' and '-'", field=what
        )
    return name


def indices_key(indices: np.ndarray) -> str:
    """Digest of the row indices (int64, in order)."""
    idx = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(idx.tobytes()).hexdigest()[:20]


class TeacherOutputCache:
    """Small output cache so repeated evaluations and tests don't recompute."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def path(self, fingerprint: str, dataset: str, split: str, indices: np.ndarray) -> Path:
        """Where the entry for this key lives (whether or not it exists)."""
        return (
            self.root
            / _safe(fingerprint, "fingerprint")
            / _safe(dataset, "dataset")
            / _safe(split, "split")
            / f"{indices_key(indices)}.npz"
        )

    def get(
        self,
        identity: TeacherIdentity,
        dataset: str,
        split: str,
        indices: np.ndarray,
        *,
        need_features: bool = True,
    ) -> TeacherOutput | None:
        """The cached output, or None (missing, unreadable, or without features when needed)."""
        path = self.path(identity.fingerprint, dataset, split, indices)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if not np.array_equal(z["indices"], np.asarray(indices, dtype=np.int64)):
                    return None
                if json.loads(str(z["identity"]))["fingerprint"] != identity.fingerprint:
                    return None
                has_features = bool(z["has_features"])
                if need_features and not has_features:
                    return None
                probs = z["probs"].astype(np.float32)
                feats = (
                    z["features"].astype(np.float32)
                    if has_features
                    else np.zeros((probs.shape[0], 0), np.float32)
                )
        except (OSError, KeyError, ValueError, json.JSONDecodeError):
            return None
        return TeacherOutput(probs, feats)

    def put(
        self,
        identity: TeacherIdentity,
        dataset: str,
        split: str,
        indices: np.ndarray,
        output: TeacherOutput,
        *,
        store_features: bool = True,
    ) -> Path:
        """Store ``output`` (rows in ``indices`` order) atomically; returns the file path."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(output) != idx.shape[0]:
            raise InvalidArgument(f"{len(output)} output rows for {idx.shape[0]} indices")
        path = self.path(identity.fingerprint, dataset, split, idx)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(
                tmp,
                probs=output.probs.astype(np.float32),
                features=output.features.astype(np.float32)
                if store_features
                else np.zeros((0, 0), np.float32),
                has_features=np.array(store_features),
                indices=idx,
                identity=np.array(identity.to_json()),
            )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def get_or_compute(
        self,
        teacher: Teacher,
        dataset: str,
        split: str,
        indices: np.ndarray,
        images: np.ndarray | Callable[[np.ndarray], np.ndarray],
        *,
        store_features: bool = True,
        progress: Callable[[int, int], None] | None = None,
        chunk_size: int | None = None,
    ) -> tuple[TeacherOutput, bool]:
        """``(output, was_cached)``. ``images`` is the row-aligned image array for ``indices``
        or a loader ``indices -> images``; ``progress(done, total)`` is called per chunk."""
        idx = np.asarray(indices, dtype=np.int64)
        hit = self.get(teacher.identity, dataset, split, idx, need_features=store_features)
        if hit is not None:
            if progress is not None:
                progress(len(idx), len(idx))
            return hit, True
        step = chunk_size or teacher.max_batch_size
        parts = []
        for start in range(0, len(idx), step):
            rows = idx[start : start + step]
            batch = images(rows) if callable(images) else np.asarray(images)[start : start + step]
            parts.append(teacher.predict(batch))
            if progress is not None:
                progress(min(start + step, len(idx)), len(idx))
        out = TeacherOutput.concat(parts, teacher.num_classes, teacher.feature_dim)
        self.put(teacher.identity, dataset, split, idx, out, store_features=store_features)
        return out, False


def packaged_teacher_cache_dir() -> Path:
    """``activekd/data/teacher_cache`` of the installed package (the shipped teacher cache files)."""
    import activekd.data

    return Path(activekd.data.__file__).resolve().parent / "teacher_cache"


def load_teacher_cache_file(
    path: str | Path,
) -> tuple[TeacherIdentity, dict[str, np.ndarray]]:
    """Read a teacher cache file (``scripts/build_teacher_cache.py``): the teacher identity and
    ``{split: float32 probs}`` (float16 rows renormalised to sum to 1)."""
    p = Path(path)
    if not p.is_file():
        raise NotFound(
            f"teacher cache {p} does not exist (scripts/build_teacher_cache.py makes it)"
        )
    with np.load(p, allow_pickle=False) as z:
        identity = TeacherIdentity.from_dict(json.loads(str(z["identity"])))
        out = {}
        for key in z.files:
            if key.endswith("_probs"):
                probs = z[key].astype(np.float32)
                probs /= probs.sum(axis=1, keepdims=True)
                out[key[: -len("_probs")]] = probs
    return identity, out


class TeacherCacheIndex:
    """Finds the teacher cache file (``scripts/build_teacher_cache.py``) that fits a teacher.

    Files are ``<dataset>-*.npz`` in the given folders holding ``identity`` JSON and
    ``<split>_probs``; a file is used when its identity fingerprint equals the teacher's. Folders
    are rescanned on each lookup (cheap: only the identity entry is read, and remembered per
    file size and mtime), so a cache built while the service runs is picked up.
    """

    def __init__(self, folders: Sequence[Path]) -> None:
        self.folders = [Path(f) for f in folders]
        self._ids: dict[Path, tuple[tuple[int, int], str, tuple[str, ...]]] = {}
        self._probs: OrderedDict[tuple[Path, int], dict[str, np.ndarray]] = OrderedDict()

    def _scan(self, dataset: str) -> list[tuple[Path, str, tuple[str, ...]]]:
        found = []
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob(f"{dataset}-*.npz")):
                st = path.stat()
                key = (st.st_size, st.st_mtime_ns)
                cached = self._ids.get(path)
                if cached is None or cached[0] != key:
                    try:
                        with np.load(path, allow_pickle=False) as z:
                            fp = json.loads(str(z["identity"]))["fingerprint"]
                            splits = tuple(
                                k[: -len("_probs")] for k in z.files if k.endswith("_probs")
                            )
                    except (OSError, KeyError, ValueError) as exc:
                        log.warning(
                            "unreadable teacher cache", extra={"path": str(path), "error": str(exc)}
                        )
                        continue
                    cached = (key, str(fp), splits)
                    self._ids[path] = cached
                found.append((path, cached[1], cached[2]))
        return found

    def lookup(
        self, fingerprint: str, dataset: str, split: str, rows: int
    ) -> tuple[Path, np.ndarray] | None:
        """``(file, probs[:rows])`` when a file for this teacher holds at least ``rows`` rows."""
        for path, fp, splits in self._scan(dataset):
            if fp != fingerprint or split not in splits:
                continue
            key = (path, path.stat().st_mtime_ns)
            probs = self._probs.get(key)
            if probs is None:
                identity, probs = load_teacher_cache_file(path)
                if identity.fingerprint != fingerprint:
                    continue
                self._probs[key] = probs
                while len(self._probs) > 2:
                    self._probs.popitem(last=False)
            arr = probs[split]
            if arr.shape[0] >= rows:
                return path, arr[:rows]
        return None


#: Former names, kept for one release.
load_split_probs = load_teacher_cache_file
