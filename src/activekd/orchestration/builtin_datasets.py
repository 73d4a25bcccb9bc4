"""The built-in datasets of ``activekd run`` (``dataset.builtin``), as data.

Each entry says what a run over it uploads and how its student reads it:

- ``fashion-mnist``: Fashion-MNIST images and the shipped label-map teacher cache
  (:class:`~activekd.orchestration.fashion_pools.FashionMnistPools`); the teacher service can
  score images, so cached rows are checked against live inference (``check_teacher_rows``).
- ``fortunes``: Fortunes-10 texts (Debian ``fortunes``, :mod:`activekd.data.fortunes`) with the
  MiniLM zero-shot teacher's precomputed probabilities and embeddings from this machine's text
  cache (``scripts/build_text_teacher.py``). The teacher service serves images only, so the text
  teacher is precomputed (no live check). The student is the MLP on MiniLM's embeddings (the
  student of the confirmed Fortunes-10 protocol, docs/benchmarks.md); the pool also carries the
  pool-fitted TF-IDF + SVD representation as ``lsa`` (``student_config.input_array: lsa``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES
from activekd.data.fortunes import FORTUNES_CLASSES
from activekd.errors import InvalidArgument
from activekd.teacher.head_pool import HEAD_POOL_KEY, TeacherHead, head_arrays, head_pool_id


class BuiltinPools(Protocol):
    """What ``activekd run`` needs of a loaded built-in dataset."""

    class_names: tuple[str, ...]

    @property
    def teacher_accuracy(self) -> float: ...

    def check_teacher(self, teacher: Any, rows: int) -> float: ...

    def upload(self, sel: Any, ids: Any) -> Any: ...


@dataclass(frozen=True)
class BuiltinDataset:
    """A registry entry: sizes, classes, whether the teacher service can check its cache, the
    student settings a run starts from, and the loader of its pools."""

    name: str
    class_names: tuple[str, ...]
    train_rows: int
    test_rows: int
    #: the teacher service can score this data, so cached rows can be checked live
    live_teacher: bool
    #: ``(pool_size, test_size, seed) -> pools``
    load: Callable[[int, int, int], BuiltinPools]
    #: student_config defaults of a run (the run's own keys win)
    student_defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


def _load_fashion(pool_size: int, test_size: int, seed: int) -> BuiltinPools:
    from activekd.orchestration.fashion_pools import FashionMnistPools

    return FashionMnistPools(pool_size, test_size, seed)


def _load_fortunes(pool_size: int, test_size: int, seed: int) -> BuiltinPools:
    return TextPools("fortunes", pool_size, test_size, seed)


def _fortunes_rows() -> tuple[int, int]:
    from activekd.data.fortunes import load_manifest

    splits = load_manifest()["splits"]
    return int(splits["train"]["rows"]), int(splits["test"]["rows"])


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "fashion-mnist": BuiltinDataset(
        "fashion-mnist",
        FASHION_MNIST_CLASSES,
        60_000,
        10_000,
        live_teacher=True,
        load=_load_fashion,
        description="Fashion-MNIST images, EfficientNet-Lite0 label-map teacher (shipped cache)",
    ),
    "fortunes": BuiltinDataset(
        "fortunes",
        FORTUNES_CLASSES,
        *_fortunes_rows(),
        live_teacher=False,
        student_defaults={"backbone": "mlp", "input_array": "embeddings"},
        load=_load_fortunes,
        description="Fortunes-10 texts, MiniLM zero-shot teacher (precomputed text cache)",
    ),
}
DEFAULT_BUILTIN = "fashion-mnist"


def builtin_dataset(name: str) -> BuiltinDataset:
    """The entry of ``name``; InvalidArgument naming the known ones otherwise."""
    if name not in BUILTIN_DATASETS:
        raise InvalidArgument(
            f"unknown built-in dataset {name!r}: use one of {', '.join(BUILTIN_DATASETS)}",
            field="dataset.builtin",
        )
    return BUILTIN_DATASETS[name]


class TextPools:
    """``pool_size`` train and ``test_size`` test rows of a text set's MiniLM cache, drawn with
    ``seed``, uploaded as four pools.

    The data pools hold ``embeddings`` (MiniLM, float32 (N, 384): the student's default input),
    ``lsa`` (TF-IDF + SVD fitted on the train texts without labels) and ``labels``; the teacher
    pools hold the zero-shot ``probs`` and, for the train pool, the teacher's ``features`` (the
    same embeddings: what typiclust selects on and what teacher adaptation refits), and name the
    teacher's zero-shot head (the class-description prototypes, :mod:`activekd.teacher.head_pool`).
    """

    def __init__(self, name: str, pool_size: int, test_size: int, seed: int = 0) -> None:
        from activekd.data.text import load_text_cache, text_dataset

        self.dataset = name
        self.class_names: tuple[str, ...] = text_dataset(name).class_names
        self.cache = load_text_cache(name)
        n_train, n_test = len(self.cache["train_labels"]), len(self.cache["test_labels"])
        if not 1 <= pool_size <= n_train:
            raise InvalidArgument(f"pool_size {pool_size} must be in 1..{n_train}")
        if not 1 <= test_size <= n_test:
            raise InvalidArgument(f"test_size {test_size} must be in 1..{n_test}")
        self.rng = np.random.default_rng(seed)
        self.pool_rows = np.sort(self.rng.choice(n_train, pool_size, replace=False))
        self.test_rows = np.sort(self.rng.choice(n_test, test_size, replace=False))

    @property
    def teacher_accuracy(self) -> float:
        """Top-1 of the cached zero-shot probabilities on the sampled test rows."""
        c, rows = self.cache, self.test_rows
        return float((c["test_probs"][rows].argmax(1) == c["test_labels"][rows]).mean())

    def check_teacher(self, teacher: Any, rows: int) -> float:
        """The teacher service scores images only: a text cache cannot be checked live."""
        raise InvalidArgument(
            f"{self.dataset}'s teacher is precomputed (no live text teacher): set "
            "dataset.check_teacher_rows: 0",
            field="dataset.check_teacher_rows",
        )

    def arrays(self, split: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The data pool's arrays of ``split``'s ``rows``."""
        c = self.cache
        return {
            "embeddings": np.ascontiguousarray(c[f"{split}_features"][rows], np.float32),
            "lsa": np.ascontiguousarray(c[f"{split}_student_x"][rows], np.float32),
            "labels": np.asarray(c[f"{split}_labels"][rows], np.int64),
        }

    def upload(self, sel: Any, ids: Any) -> Any:
        """Upload pool, test split and both teacher pools (overwriting); ``ids``."""
        c, pool, test = self.cache, self.pool_rows, self.test_rows
        item_ids = [f"train-{i}" for i in pool]
        test_ids = [f"test-{i}" for i in test]
        teacher_pool = {
            "probs": np.asarray(c["train_probs"][pool], np.float32),
            "features": np.ascontiguousarray(c["train_features"][pool], np.float32),
        }
        uploads = [
            (ids.pool, item_ids, self.arrays("train", pool)),
            (ids.test, test_ids, self.arrays("test", test)),
            (ids.teacher_pool, item_ids, teacher_pool),
            (ids.teacher_test, test_ids, {"probs": np.asarray(c["test_probs"][test], np.float32)}),
        ]
        # the MiniLM teacher's zero-shot head (class-description prototypes), beside the teacher
        # pool, so teacher_config.adaptation 'clap' starts from it as the in-process harness does
        head = TeacherHead(
            np.asarray(c["prototypes"], np.float32), float(c["logit_scale"]), self.class_names
        )
        head_ids, head_array, head_meta = head_arrays(head)
        head_id = head_pool_id(ids.teacher_pool)
        sel.upload_pool(
            head_id, item_ids=head_ids, arrays=head_array, metadata=head_meta, overwrite=True
        )
        for pool_id, names, arrays in uploads:
            metadata = {HEAD_POOL_KEY: head_id} if pool_id == ids.teacher_pool else None
            sel.upload_pool(
                pool_id, item_ids=names, overwrite=True, arrays=arrays, metadata=metadata
            )
        return ids


__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_BUILTIN",
    "BuiltinDataset",
    "BuiltinPools",
    "TextPools",
    "builtin_dataset",
]
