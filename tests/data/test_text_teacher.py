"""The MiniLM zero-shot teacher (the real model, offline) and the text cache builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from activekd.data import fortunes
from activekd.data.text import load_text_cache
from activekd.errors import InvalidArgument
from activekd.teacher.minilm import LOGIT_SCALE, zero_shot_probs
from activekd.teacher.text_cache import build_text_cache

LIMIT = 40  # evenly spaced rows per split: about 4 per class


def test_zero_shot_probs_is_scaled_cosine_softmax() -> None:
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(4, 8))
    emb = protos[[2, 0, 3]] * np.array([[3.0], [0.5], [1.0]]) + 0.01 * rng.normal(size=(3, 8))
    p = zero_shot_probs(emb, protos)
    assert p.dtype == np.float32 and np.allclose(p.sum(1), 1, atol=1e-6)
    assert p.argmax(1).tolist() == [2, 0, 3]  # cosine: the scale of a row does not matter
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    c = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    ratio = np.log(p[:, 0] / p[:, 1])
    assert np.allclose(
        ratio, LOGIT_SCALE * (e @ c.T)[:, 0] - LOGIT_SCALE * (e @ c.T)[:, 1], atol=1e-3
    )
    with pytest.raises(InvalidArgument):
        zero_shot_probs(emb[:, :4], protos)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("text-cache") / "fortunes-minilm.npz"
    build_text_cache("fortunes", path, limit=LIMIT, batch_size=32)
    return path, load_text_cache("fortunes", path)


def test_cache_round_trip(cache: tuple[Path, dict[str, Any]]) -> None:
    path, c = cache
    assert c["class_names"] == fortunes.FORTUNES_CLASSES
    assert c["prototypes"].shape == (10, 384) and c["logit_scale"] == LOGIT_SCALE
    assert np.allclose(np.linalg.norm(c["prototypes"], axis=1), 1, atol=1e-5)
    for split in ("train", "test"):
        f, p, y, x = (c[f"{split}_{k}"] for k in ("features", "probs", "labels", "student_x"))
        assert f.shape == (LIMIT, 384) and f.dtype == np.float32
        assert np.allclose(np.linalg.norm(f, axis=1), 1, atol=2e-3)  # stored as float16
        assert p.shape == (LIMIT, 10) and np.allclose(p.sum(1), 1, atol=1e-5) and (p >= 0).all()
        assert np.bincount(y, minlength=10).min() >= 2  # every class present
        assert x.shape[0] == LIMIT and x.shape[1] == LIMIT - 1 and np.isfinite(x).all()
        # the stored probabilities are the teacher's head applied to the stored features
        assert np.allclose(zero_shot_probs(f, c["prototypes"], c["logit_scale"]), p, atol=2e-2)
    assert c["identity"]["backend"] == "minilm-zero-shot" and len(c["identity"]["fingerprint"]) > 8
    assert c["meta"]["rows"] == {"train": LIMIT, "test": LIMIT}
    with np.load(path) as z:
        assert z["train_features"].dtype == np.float16


def test_teacher_beats_chance_on_a_small_subset(cache: tuple[Path, dict[str, Any]]) -> None:
    _, c = cache
    acc = float((c["test_probs"].argmax(1) == c["test_labels"]).mean())
    assert acc > 0.3, acc  # chance is 0.1 (10 balanced classes in the subset)


def test_teacher_encodes_deterministically() -> None:
    from activekd.teacher.minilm import MiniLMTextTeacher

    t = MiniLMTextTeacher({"law": ("A joke about lawyers.",), "food": ("A joke about food.",)})
    texts = ["My attorney sued the judge in court.", "I ate a pizza and a salad for dinner."]
    probs, emb = t.predict(texts)
    assert probs.argmax(1).tolist() == [0, 1]
    assert np.array_equal(emb, t.encode(texts))
    assert t.identity.fingerprint == t.identity.fingerprint and t.identity.model.endswith("L6-v2")


def test_precomputed_backend_from_the_cache(
    cache: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from activekd.teacher import TeacherConfig, create_teacher
    from activekd.teacher.precomputed import PrecomputedTeacher
    from activekd.teacher.text_cache import export_npy, precomputed_teacher

    path, c = cache
    teacher = precomputed_teacher("fortunes", "test", path)
    out = teacher.outputs_for_rows([0, 7])
    assert np.array_equal(out.probs, c["test_probs"][[0, 7]])
    assert teacher.feature_dim == 384 and teacher.identity.class_names == fortunes.FORTUNES_CLASSES
    files = {p.name: p for p in export_npy("fortunes", tmp_path, path)}
    cfg = TeacherConfig(
        backend="precomputed",
        probs=str(files["train_probs.npy"]),
        features=str(files["train_features.npy"]),
        class_names=fortunes.FORTUNES_CLASSES,
    )
    served = create_teacher(cfg)
    assert isinstance(served, PrecomputedTeacher)
    assert np.allclose(served.outputs_for_rows([3]).probs, c["train_probs"][[3]])
