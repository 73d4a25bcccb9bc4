"""Text classification sets, their MiniLM teacher cache and the student's text representation.

Registered sets (:data:`TEXT_DATASETS`): ``fortunes`` (:mod:`activekd.data.fortunes`, 10
topics, Debian package ``fortunes``). :func:`load_text_dataset` returns the texts and labels.

The per-machine cache ``feature_cache_dir() / "<name>-minilm.npz"`` (built by
``scripts/build_text_teacher.py``, :func:`activekd.teacher.text_cache.build_text_cache`; 1-3 min
on 2 cores) holds, for
each split ``train`` and ``test``:

- ``<split>_features``: float16 (N, 384) unit-norm MiniLM embeddings (the teacher's features);
- ``<split>_probs``: float32 (N, C) zero-shot teacher probabilities
  (:mod:`activekd.teacher.minilm`);
- ``<split>_student_x``: float32 (N, 256) the student's input: TF-IDF (words and bigrams,
  sublinear tf) + TruncatedSVD + L2 normalisation (LSA), fitted on the **train texts only**,
  without labels;
- ``<split>_labels``: int64 (N,);

plus ``prototypes`` (float32 (C, 384), the class-description embeddings, for CLAP-style
adaptation), ``logit_scale`` (float32 scalar), ``class_names``, ``identity`` (the teacher's
:class:`~activekd.teacher.base.TeacherIdentity` JSON) and ``meta`` (dataset digests, timings,
versions). :func:`load_text_cache` checks the cache still matches the dataset and the prompts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from activekd.data import fortunes
from activekd.data.feature_cache import feature_file
from activekd.errors import FailedPrecondition, InvalidArgument, NotFound


@dataclass(frozen=True)
class TextDataset:
    """A registered text set: its loader, class names and zero-shot class descriptions."""

    name: str
    load: Callable[[str], tuple[list[str], np.ndarray]]
    class_names: tuple[str, ...]
    prompts: Mapping[str, tuple[str, ...]]
    source: str


TEXT_DATASETS: dict[str, TextDataset] = {
    "fortunes": TextDataset(
        name="fortunes",
        load=lambda split: fortunes.load_fortunes(split),
        class_names=fortunes.FORTUNES_CLASSES,
        prompts=fortunes.FORTUNES_PROMPTS,
        source=f"Debian package fortunes {fortunes.PACKAGE_VERSION} (BSD), 10 topic files",
    ),
}

SPLITS: tuple[str, ...] = ("train", "test")
#: Dimension of the student's TF-IDF + SVD representation.
STUDENT_DIM = 256
BUILD_HINT = "scripts/build_text_teacher.py (about a minute on 2 cores)"


def text_dataset(name: str) -> TextDataset:
    """The registry entry of ``name``; InvalidArgument naming the known sets otherwise."""
    if name not in TEXT_DATASETS:
        raise InvalidArgument(f"unknown text set {name!r}; known: {', '.join(TEXT_DATASETS)}")
    return TEXT_DATASETS[name]


def load_text_dataset(name: str, split: str) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """``(texts, labels int64 (N,), class_names)`` of ``split`` in {train, test}."""
    ds = text_dataset(name)
    texts, labels = ds.load(split)
    return texts, labels, ds.class_names


def text_cache_file(name: str) -> Path:
    """``feature_cache_dir() / f"{name}-minilm.npz"``."""
    return feature_file(f"{name}-minilm")


def spread_rows(texts: list[str], labels: np.ndarray, limit: int) -> tuple[list[str], np.ndarray]:
    """``limit`` evenly spaced rows (rows are ordered by class, so every class is kept)."""
    if limit < 1:
        raise InvalidArgument(f"limit must be >= 1, got {limit}")
    idx = np.unique(np.linspace(0, len(texts) - 1, min(limit, len(texts))).astype(np.int64))
    return [texts[i] for i in idx], labels[idx]


def prompts_digest(prompts: Mapping[str, Sequence[str]]) -> str:
    """sha256 of the class descriptions (the cache records it)."""
    text = json.dumps({k: list(v) for k, v in prompts.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def load_text_cache(name: str = "fortunes", path: str | Path | None = None) -> dict[str, Any]:
    """The cache's arrays by key (features as float32), plus ``identity`` and ``meta`` dicts.

    NotFound (saying how to build it) when missing; FailedPrecondition when it was built from
    other rows or other class descriptions than the current code gives (rebuild it).
    """
    ds = text_dataset(name)
    p = Path(path) if path is not None else text_cache_file(name)
    if not p.is_file():
        raise NotFound(
            f"text teacher cache {p.name} is not in {p.parent}: build it with {BUILD_HINT}"
        )
    out: dict[str, Any] = {}
    with np.load(p, allow_pickle=False) as z:
        for key in z.files:
            if key in ("identity", "meta"):
                out[key] = json.loads(str(z[key]))
            elif key.endswith("_features"):
                out[key] = z[key].astype(np.float32)
            elif key == "logit_scale":
                out[key] = float(z[key])
            elif key == "class_names":
                out[key] = tuple(str(c) for c in z[key])
            else:
                out[key] = z[key]
    meta = out.get("meta", {})
    if meta.get("prompts_sha256") != prompts_digest(ds.prompts):
        raise FailedPrecondition(f"{p.name} was built with other class descriptions: rebuild it")
    if out.get("class_names") != ds.class_names:
        raise FailedPrecondition(f"{p.name} has other class names: rebuild it")
    if meta.get("limit") is None and name == "fortunes":
        want = fortunes.load_manifest()["splits"]
        for s in SPLITS:
            if meta.get("dataset_sha256", {}).get(s) != want[s]["sha256"]:
                raise FailedPrecondition(
                    f"{p.name} was built from other {s} rows than the recorded set: rebuild it"
                )
    return out


__all__ = [
    "BUILD_HINT",
    "STUDENT_DIM",
    "TEXT_DATASETS",
    "TextDataset",
    "load_text_cache",
    "load_text_dataset",
    "prompts_digest",
    "spread_rows",
    "text_cache_file",
    "text_dataset",
]
