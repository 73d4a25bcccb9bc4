"""Precomputed teacher: probabilities (and features) supplied by the caller.

Rows are read with :meth:`PrecomputedTeacher.outputs_for_rows`. When the images the rows belong
to are given too, :meth:`predict` looks images up by content (exact pixels), so the teacher can
stand in for a model wherever images are sent; an image not in the set is NotFound.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from activekd.arrays import check_probabilities
from activekd.data.templates import validate_class_names
from activekd.errors import ActiveKDError, FailedPrecondition, InvalidArgument, NotFound
from activekd.teacher.base import BaseTeacher, ItemPrediction, TeacherIdentity, TeacherOutput
from activekd.teacher.images import (
    ImageInput,
    to_image_array,
    validate_image_array,
    validate_image_batch,
)

ArrayOrPath = np.ndarray | str | Path


def _load(value: ArrayOrPath, name: str) -> np.ndarray:
    if isinstance(value, str | Path):
        path = Path(value).expanduser()
        if not path.is_file():
            raise NotFound(f"{name} file {path} does not exist", field=name)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise InvalidArgument(f"{name} file {path} is not a .npy array: {exc}") from exc
    return np.asarray(value)


def _image_key(image: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())
    return h.digest()


class PrecomputedTeacher(BaseTeacher):
    """Serves caller-supplied outputs, validated (finite, non-negative, rows sum to 1)."""

    def __init__(
        self,
        probs: ArrayOrPath,
        features: ArrayOrPath | None = None,
        *,
        class_names: Sequence[str] | None = None,
        images: ArrayOrPath | None = None,
        name: str = "precomputed",
        batch_size: int = 256,
    ) -> None:
        super().__init__(batch_size)
        checked = check_probabilities(np.asarray(_load(probs, "probs")), "probs")
        self._probs = checked.astype(np.float32, copy=False)
        n, c = self._probs.shape
        if features is None:
            self._features = np.zeros((n, 0), np.float32)
        else:
            f = np.asarray(_load(features, "features"))
            if f.ndim != 2 or f.shape[0] != n:
                raise InvalidArgument(
                    f"features shape {f.shape} must be ({n}, D) to match probs", field="features"
                )
            f = f.astype(np.float32, copy=False)
            if not np.isfinite(f).all():
                raise InvalidArgument("features contain NaN or inf", field="features")
            self._features = f
        names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(c))
        names = validate_class_names(names)
        if len(names) != c:
            raise InvalidArgument(
                f"{len(names)} class names for {c} probability columns", field="class_names"
            )
        self._lookup: dict[bytes, int] | None = None
        self._image_shape: tuple[int, ...] | None = None
        if images is not None:
            imgs = validate_image_batch(np.asarray(_load(images, "images")), min_size=1)
            if imgs.shape[0] != n:
                raise InvalidArgument(
                    f"{imgs.shape[0]} images for {n} probability rows", field="images"
                )
            self._lookup = {}
            for i in range(n):
                self._lookup.setdefault(_image_key(imgs[i]), i)
            self._image_shape = tuple(imgs.shape[1:])
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self._probs).tobytes())
        h.update(np.ascontiguousarray(self._features).tobytes())
        self._name = name
        self._data_hash = h.hexdigest()
        self._identity = self._make_identity(names)

    def _make_identity(self, names: tuple[str, ...]) -> TeacherIdentity:
        return TeacherIdentity(
            backend="precomputed",
            model=self._name,
            weights_hash=self._data_hash,
            class_names=names,
            templates=(),
            preprocessing="none" if self._lookup is None else "lookup-by-exact-pixels",
            head="given probabilities",
            description=(
                f"precomputed outputs '{self._name}': {self._probs.shape[0]} rows, "
                f"{self._probs.shape[1]} classes, {self._features.shape[1]}-d features"
            ),
        )

    @property
    def identity(self) -> TeacherIdentity:
        return self._identity

    @property
    def feature_dim(self) -> int:
        return int(self._features.shape[1])

    @property
    def num_rows(self) -> int:
        return int(self._probs.shape[0])

    def outputs_for_rows(self, indices: np.ndarray | Sequence[int] | slice) -> TeacherOutput:
        """The stored outputs of row ``indices`` (bounds-checked)."""
        if isinstance(indices, slice):
            return TeacherOutput(self._probs[indices], self._features[indices])
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise InvalidArgument("row indices must be a 1-D integer array", field="indices")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_rows):
            raise InvalidArgument(f"row indices must be in 0..{self.num_rows - 1}", field="indices")
        idx = idx.astype(np.int64)
        return TeacherOutput(self._probs[idx], self._features[idx])

    def _rows_for_images(self, images: np.ndarray) -> np.ndarray:
        if self._lookup is None:
            raise FailedPrecondition(
                "this precomputed teacher was built without the images its rows belong to; "
                "use outputs_for_rows(indices) or pass images=..."
            )
        rows = np.empty(images.shape[0], np.int64)
        for i in range(images.shape[0]):
            row = self._lookup.get(_image_key(images[i]))
            if row is None:
                raise NotFound(
                    f"image {i} ({images[i].shape}) is not among the precomputed images",
                    field="images",
                )
            rows[i] = row
        return rows

    def _predict_batch(self, images: np.ndarray) -> TeacherOutput:
        return self.outputs_for_rows(self._rows_for_images(images))

    def predict(self, images: np.ndarray) -> TeacherOutput:
        batch = validate_image_batch(images, min_size=1)
        return self._predict_batch(batch)

    def predict_items(
        self, items: Sequence[ImageInput], include_features: bool = True
    ) -> list[ItemPrediction]:
        """Per-item lookups: unknown or bad images fail alone."""
        out = []
        for i, item in enumerate(items):
            try:
                arr = (
                    validate_image_array(item, min_size=1)
                    if isinstance(item, np.ndarray)
                    else to_image_array(item)
                )
                res = self._predict_batch(arr[None])
                out.append(
                    ItemPrediction(i, res.probs[0], res.features[0] if include_features else None)
                )
            except ActiveKDError as exc:
                out.append(ItemPrediction(i, error=exc))
        return out

    def with_classes(
        self, class_names: Sequence[str], templates: Sequence[str] | None = None
    ) -> PrecomputedTeacher:
        """Rename the columns (same count); precomputed outputs cannot use templates."""
        if templates:
            raise InvalidArgument(
                "a precomputed teacher has fixed outputs; prompt templates do not apply",
                field="templates",
            )
        names = validate_class_names(class_names)
        if len(names) != self.num_classes:
            raise InvalidArgument(
                f"{len(names)} class names but the precomputed outputs have "
                f"{self.num_classes} columns",
                field="class_names",
            )
        clone = object.__new__(PrecomputedTeacher)
        clone.__dict__.update(self.__dict__)
        clone._identity = clone._make_identity(names)
        return clone

    def _adopt(self, other: BaseTeacher) -> None:
        assert isinstance(other, PrecomputedTeacher)
        self.__dict__.update(other.__dict__)
