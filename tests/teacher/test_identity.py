"""Teacher identity: the fingerprint covers everything that changes outputs, and nothing else."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from activekd.errors import InvalidArgument
from activekd.teacher import TeacherIdentity
from activekd.teacher.clip_train import save_checkpoint
from activekd.teacher.open_clip_teacher import OpenClipTeacher

BASE = TeacherIdentity(
    backend="open_clip",
    model="tiny-clip-32",
    weights_hash="ab" * 32,
    class_names=("cat", "dog"),
    templates=("a photo of a {}.",),
    preprocessing="v1;size=32",
    head="zero-shot T=1",
    description="a test teacher",
)


def test_fingerprint_is_stable_hex_and_ignores_description() -> None:
    again = dataclasses.replace(BASE)
    assert again.fingerprint == BASE.fingerprint
    assert len(BASE.fingerprint) == 20 and int(BASE.fingerprint, 16) >= 0
    assert dataclasses.replace(BASE, description="other words").fingerprint == BASE.fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"backend": "label-map"},
        {"model": "tiny-clip-32b"},
        {"weights_hash": "cd" * 32},
        {"class_names": ("dog", "cat")},
        {"class_names": ("cat", "dog", "bird")},
        {"templates": ("a photo of a {}.", "art of the {}.")},
        {"templates": ()},
        {"preprocessing": "v1;size=64"},
        {"head": "zero-shot T=2"},
    ],
)
def test_fingerprint_changes_with_every_output_relevant_field(change: dict[str, Any]) -> None:
    assert dataclasses.replace(BASE, **change).fingerprint != BASE.fingerprint


def test_dict_round_trip_and_tamper_check() -> None:
    d = BASE.to_dict()
    assert d["fingerprint"] == BASE.fingerprint and d["class_names"] == ["cat", "dog"]
    assert TeacherIdentity.from_dict(d) == BASE
    d["class_names"] = ["cat", "wolf"]
    with pytest.raises(InvalidArgument, match="does not match"):
        TeacherIdentity.from_dict(d)


def test_real_teacher_fingerprint_tracks_classes_templates_and_weights(
    random_tiny_clip: Any, tmp_path: Path
) -> None:
    model, ckpt = random_tiny_clip
    kw: dict[str, Any] = {"class_names": ["cat", "dog"], "device": "cpu"}
    a = OpenClipTeacher.load("tiny-clip-32", str(ckpt), **kw)
    b = OpenClipTeacher.load("tiny-clip-32", str(ckpt), **kw)
    assert a.identity == b.identity  # same inputs, same fingerprint, across loads
    fps = {a.identity.fingerprint}
    fps.add(a.with_classes(["cat", "wolf"]).identity.fingerprint)
    fps.add(a.with_classes(["cat", "dog"], ["art of the {}."]).identity.fingerprint)
    fps.add(OpenClipTeacher.load("tiny-clip-32", str(ckpt), temperature=2.0, **kw).fingerprint)
    fps.add(OpenClipTeacher.load("tiny-clip-32", str(ckpt), invert=True, **kw).fingerprint)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["visual.proj"] += 1e-3  # one tensor nudged
    changed = tmp_path / "nudged.pt"
    torch.save(state, changed)
    nudged = OpenClipTeacher.load("tiny-clip-32", str(changed), **kw)
    assert nudged.identity.weights_hash != a.identity.weights_hash
    fps.add(nudged.identity.fingerprint)
    assert len(fps) == 6
    save_checkpoint(model, tmp_path / "copy.pt")  # same weights in another file: same hash
    copy = OpenClipTeacher.load("tiny-clip-32", str(tmp_path / "copy.pt"), **kw)
    assert copy.identity.fingerprint == a.identity.fingerprint
