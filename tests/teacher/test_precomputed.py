"""Precomputed teacher: validation of supplied outputs, row access, lookup by image content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activekd.errors import FailedPrecondition, InvalidArgument, NotFound
from activekd.teacher import TeacherConfig, check_probs, create_teacher
from activekd.teacher.precomputed import PrecomputedTeacher


def _probs(n: int = 6, c: int = 3, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(n, c))
    e = np.exp(logits)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda p: p.__setitem__((1, 0), np.nan), "row 1 has NaN"),
        (lambda p: p.__setitem__((2, 1), np.inf), "row 2 has NaN or inf"),
        (lambda p: p.__setitem__((3, 0), -0.1), "row 3 has negative"),
        (lambda p: p.__setitem__((4, 2), p[4, 2] + 0.2), "row 4 sums to"),
    ],
)
def test_bad_probabilities_are_rejected_with_the_row(mutate, match) -> None:  # type: ignore[no-untyped-def]
    p = _probs()
    mutate(p)
    with pytest.raises(InvalidArgument, match=match):
        PrecomputedTeacher(p)


def test_shapes_and_types_are_checked() -> None:
    with pytest.raises(InvalidArgument, match=r"\(N, C\)"):
        check_probs(np.ones(3, np.float32))
    with pytest.raises(InvalidArgument, match="floating"):
        check_probs(np.ones((2, 1), np.int64))
    with pytest.raises(InvalidArgument, match="features shape"):
        PrecomputedTeacher(_probs(), np.zeros((5, 4), np.float32))
    with pytest.raises(InvalidArgument, match="NaN"):
        PrecomputedTeacher(_probs(), np.full((6, 4), np.nan, np.float32))
    with pytest.raises(InvalidArgument, match="2 class names for 3"):
        PrecomputedTeacher(_probs(), class_names=["a", "b"])
    with pytest.raises(InvalidArgument, match="images for 6"):
        PrecomputedTeacher(_probs(), images=np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(InvalidArgument, match="needs probs"):
        create_teacher(TeacherConfig(backend="precomputed"))


def test_rows_from_npy_paths_and_lookup_by_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    probs, feats = _probs(6), rng.normal(size=(6, 4)).astype(np.float32)
    images = rng.integers(0, 256, size=(6, 10, 10), dtype=np.uint8)
    for name, arr in (("p", probs), ("f", feats), ("i", images)):
        np.save(tmp_path / f"{name}.npy", arr)
    t = create_teacher(
        TeacherConfig(
            backend="precomputed",
            probs=str(tmp_path / "p.npy"),
            features=str(tmp_path / "f.npy"),
            images=str(tmp_path / "i.npy"),
            class_names=("x", "y", "z"),
        )
    )
    assert isinstance(t, PrecomputedTeacher)
    assert (t.num_classes, t.feature_dim, t.num_rows) == (3, 4, 6)
    out = t.outputs_for_rows([4, 0])
    np.testing.assert_array_equal(out.probs, probs[[4, 0]])
    np.testing.assert_array_equal(out.features, feats[[4, 0]])
    got = t.predict(images[[5, 2]])
    np.testing.assert_array_equal(got.probs, probs[[5, 2]])
    with pytest.raises(InvalidArgument, match=r"0\.\.5"):
        t.outputs_for_rows([6])
    stranger = np.full((10, 10), 7, np.uint8)
    with pytest.raises(NotFound, match="not among"):
        t.predict(stranger[None])
    items = t.predict_items([images[1], stranger, b"junk", images[3][..., None]])
    assert [r.ok for r in items] == [True, False, False, True]
    assert isinstance(items[1].error, NotFound) and isinstance(items[2].error, InvalidArgument)
    np.testing.assert_array_equal(items[3].probs, probs[3])
    with pytest.raises(NotFound):
        PrecomputedTeacher(str(tmp_path / "missing.npy"))


def test_without_images_predict_explains_the_alternative() -> None:
    t = PrecomputedTeacher(_probs())
    assert t.feature_dim == 0 and t.identity.class_names == ("class_0", "class_1", "class_2")
    with pytest.raises(FailedPrecondition, match="outputs_for_rows"):
        t.predict(np.zeros((1, 8, 8), np.uint8))


def test_set_classes_renames_only_with_the_same_count() -> None:
    t = PrecomputedTeacher(_probs(), name="run-7")
    fp = t.identity.fingerprint
    ident = t.set_classes(["a", "b", "c"])
    assert ident.class_names == ("a", "b", "c") and ident.fingerprint != fp
    with pytest.raises(InvalidArgument, match="3 columns"):
        t.set_classes(["a", "b"])
    with pytest.raises(InvalidArgument, match="templates"):
        t.set_classes(["a", "b", "c"], ["{}"])
    with pytest.raises(InvalidArgument):
        t.set_classes([])
    other = PrecomputedTeacher(_probs(seed=5), name="run-7", class_names=["a", "b", "c"])
    assert other.identity.fingerprint != t.identity.fingerprint  # data hash differs
