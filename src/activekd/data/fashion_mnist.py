"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (MIT licence).

``sudo apt-get install dataset-fashion-mnist`` puts the four IDX files under
``/usr/share/datasets/fashion-mnist``; ``ACTIVEKD_FASHION_MNIST_DIR`` points elsewhere.
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from activekd.errors import FailedPrecondition, InvalidArgument

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def data_dir() -> Path:
    """Folder holding the IDX files (env ``ACTIVEKD_FASHION_MNIST_DIR`` or the Debian path)."""
    return Path(os.environ.get("ACTIVEKD_FASHION_MNIST_DIR", DEFAULT_DIR))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise FailedPrecondition(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise FailedPrecondition(f"{path} is truncated: {data.size} bytes for shape {dims}")
    return data.reshape(dims)


@lru_cache(maxsize=2)
def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 (N, 28, 28), labels int64 (N,))`` for ``split`` in {train, test}.

    Arrays are read-only and cached per process.
    """
    if split not in _FILES:
        raise InvalidArgument(f"unknown split {split!r}; use 'train' or 'test'")
    folder = data_dir()
    img_name, lab_name = _FILES[split]
    img_path, lab_path = folder / img_name, folder / lab_name
    if not img_path.exists() or not lab_path.exists():
        raise FailedPrecondition(
            f"Fashion-MNIST not found in {folder}: run `apt-get install dataset-fashion-mnist` "
            "or set ACTIVEKD_FASHION_MNIST_DIR"
        )
    images = _read_idx(img_path)
    labels = _read_idx(lab_path).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise FailedPrecondition(f"{split}: {images.shape[0]} images but {labels.shape[0]} labels")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def balanced_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices with ``per_class`` rows of every class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if rows.size < per_class:
            raise InvalidArgument(f"class {c} has {rows.size} rows, fewer than {per_class}")
        out.append(rng.choice(rows, size=per_class, replace=False))
    return np.sort(np.concatenate(out)).astype(np.int64)
