"""Build a text set's MiniLM teacher cache; serve it as the ``precomputed`` teacher backend.

The layout of the cache and how it is read are in :mod:`activekd.data.text`. The student's input
(``fit_student_representation``) is fitted here too, on the train texts only and without labels.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from activekd.data import fortunes
from activekd.data.text import (
    SPLITS,
    STUDENT_DIM,
    load_text_cache,
    prompts_digest,
    spread_rows,
    text_cache_file,
    text_dataset,
)
from activekd.errors import InvalidArgument
from activekd.teacher.minilm import MiniLMTextTeacher
from activekd.teacher.precomputed import PrecomputedTeacher


def fit_student_representation(
    train_texts: Sequence[str], dim: int = STUDENT_DIM, seed: int = 0
) -> Any:
    """TF-IDF (1-2 grams, sublinear tf, min_df 2, English stop words) + TruncatedSVD(``dim``) +
    L2 normalisation, fitted on ``train_texts`` only (no labels): an sklearn Pipeline."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    pipe = make_pipeline(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, stop_words="english"),
        TruncatedSVD(n_components=dim, random_state=seed, algorithm="randomized", n_iter=7),
        Normalizer(copy=False),
    )
    pipe.fit(list(train_texts))
    return pipe


def build_text_cache(
    name: str = "fortunes",
    out: str | Path | None = None,
    *,
    limit: int | None = None,
    student_dim: int = STUDENT_DIM,
    batch_size: int = 64,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> Path:
    """Encode both splits with the MiniLM teacher and write the cache (module docstring).

    ``limit`` keeps ``limit`` evenly spaced rows of each split (all classes; tests); ``out`` defaults to
    :func:`text_cache_file`. The file is written atomically. Returns its path.
    """
    say = log or (lambda _msg: None)
    ds = text_dataset(name)
    data = {s: ds.load(s) for s in SPLITS}
    if limit is not None:
        data = {s: spread_rows(t, y, limit) for s, (t, y) in data.items()}
    t0 = time.perf_counter()
    teacher = MiniLMTextTeacher(ds.prompts, batch_size=batch_size, device=device)
    load_s = time.perf_counter() - t0
    arrays: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {"model_load_s": round(load_s, 2)}
    for s, (texts, labels) in data.items():
        t1 = time.perf_counter()
        probs, emb = teacher.predict(texts)
        timings[f"{s}_encode_s"] = round(time.perf_counter() - t1, 2)
        arrays[f"{s}_features"] = emb.astype(np.float16)
        arrays[f"{s}_probs"] = probs
        arrays[f"{s}_labels"] = np.asarray(labels, np.int64)
        acc = float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")
        say(f"{s}: {len(texts)} texts encoded in {timings[f'{s}_encode_s']} s, top-1 {acc:.4f}")
    train_texts = data["train"][0]
    dim = min(student_dim, max(1, len(train_texts) - 1))
    t2 = time.perf_counter()
    rep = fit_student_representation(train_texts, dim)
    for s, (texts, _labels) in data.items():
        arrays[f"{s}_student_x"] = np.asarray(rep.transform(list(texts)), np.float32)
    timings["student_representation_s"] = round(time.perf_counter() - t2, 2)
    arrays["prototypes"] = teacher.prototypes
    arrays["logit_scale"] = np.asarray(teacher.logit_scale, np.float32)
    arrays["class_names"] = np.asarray(ds.class_names)
    import sklearn

    meta = {
        "dataset": name,
        "source": ds.source,
        "rows": {s: len(data[s][0]) for s in SPLITS},
        "limit": limit,
        "dataset_sha256": {s: fortunes.split_digest(list(data[s][0]), data[s][1]) for s in SPLITS},
        "prompts_sha256": prompts_digest(ds.prompts),
        "student_representation": (
            f"tfidf(1-2 grams, sublinear, min_df 2, english stop words) + "
            f"truncated_svd({dim}, seed 0) + l2, fitted on train texts"
        ),
        "sklearn": sklearn.__version__,
        "timings": timings,
    }
    arrays["identity"] = np.asarray(teacher.identity.to_json())
    arrays["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
    path = Path(out) if out is not None else text_cache_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)
    say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path


def precomputed_teacher(
    name: str = "fortunes", split: str = "train", path: str | Path | None = None
) -> PrecomputedTeacher:
    """The cached MiniLM outputs of ``split`` as the ``precomputed`` teacher backend
    (:class:`~activekd.teacher.precomputed.PrecomputedTeacher`, rows in dataset order: read them
    with ``outputs_for_rows``)."""
    if split not in SPLITS:
        raise InvalidArgument(f"unknown split {split!r}; use 'train' or 'test'")
    cache = load_text_cache(name, path)
    return PrecomputedTeacher(
        cache[f"{split}_probs"],
        cache[f"{split}_features"],
        class_names=cache["class_names"],
        name=f"{name}-minilm-{split}",
    )


def export_npy(name: str, folder: str | Path, path: str | Path | None = None) -> list[Path]:
    """Write ``<split>_probs.npy`` / ``<split>_features.npy`` (float32) into ``folder``: the
    ``.npy`` files a ``precomputed`` TeacherConfig (``probs=``, ``features=``) reads."""
    cache = load_text_cache(name, path)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in SPLITS:
        for key in ("probs", "features"):
            target = out / f"{s}_{key}.npy"
            np.save(target, np.asarray(cache[f"{s}_{key}"], np.float32))
            written.append(target)
    return written


__all__ = ["build_text_cache", "export_npy", "fit_student_representation", "precomputed_teacher"]
