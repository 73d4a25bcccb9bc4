"""TeacherConfig parsing, the factory, templates."""

from __future__ import annotations

from typing import Any

import pytest

from activekd.data.templates import (
    COOP_TEMPLATES,
    FASHION_MNIST_TEMPLATES,
    SIMPLE_TEMPLATES,
    templates_for,
    validate_templates,
)
from activekd.errors import InvalidArgument
from activekd.teacher import Teacher, TeacherConfig, create_teacher
from activekd.teacher.label_map_teacher import LabelMapTeacher
from activekd.teacher.open_clip_teacher import OpenClipTeacher


def test_backend_aliases_and_unknown_backends() -> None:
    assert TeacherConfig(backend="open-clip").backend == "open_clip"
    assert TeacherConfig(backend="label_map").backend == "label-map"
    with pytest.raises(InvalidArgument, match="unknown teacher backend"):
        TeacherConfig(backend="dino")


def test_from_env_parses_types_and_lists() -> None:
    cfg = TeacherConfig.from_env(
        {
            "ACTIVEKD_TEACHER_BACKEND": "open-clip",
            "ACTIVEKD_TEACHER_MODEL": "tiny-clip-32",
            "ACTIVEKD_TEACHER_CLASS_NAMES": '["a b", "c"]',
            "ACTIVEKD_TEACHER_TEMPLATES": "a photo of a {}.|art of the {}.",
            "ACTIVEKD_TEACHER_IMAGE_SIZE": "96",
            "ACTIVEKD_TEACHER_TEMPERATURE": "0.5",
            "ACTIVEKD_TEACHER_INVERT": "true",
            "ACTIVEKD_TEACHER_PRETRAINED": "",
            "ACTIVEKD_OTHER": "ignored",
        }
    )
    assert cfg.backend == "open_clip" and cfg.model == "tiny-clip-32"
    assert cfg.class_names == ("a b", "c")
    assert cfg.templates == ("a photo of a {}.", "art of the {}.")
    assert (cfg.image_size, cfg.temperature, cfg.invert, cfg.pretrained) == (96, 0.5, True, None)
    with pytest.raises(InvalidArgument, match="unknown teacher setting"):
        TeacherConfig.from_mapping({"colour": "red"})
    with pytest.raises(InvalidArgument, match="not an integer"):
        TeacherConfig.from_mapping({"batch_size": "many"})
    with pytest.raises(InvalidArgument, match="JSON"):
        TeacherConfig.from_mapping({"class_names": "[broken"})


def test_factory_builds_each_backend(random_tiny_clip: Any) -> None:
    _, ckpt = random_tiny_clip
    default = create_teacher()
    assert isinstance(default, LabelMapTeacher)  # the offline default
    assert isinstance(default, Teacher)  # satisfies the protocol the services program against
    t = create_teacher(
        {
            "backend": "open_clip",
            "model": "tiny-clip-32",
            "pretrained": str(ckpt),
            "class_names": ["x", "y"],
            "templates": ["a {}"],
            "device": "cpu",
            "batch_size": 4,
        }
    )
    assert isinstance(t, OpenClipTeacher)
    assert t.identity.class_names == ("x", "y") and t.max_batch_size == 4
    with pytest.raises(InvalidArgument, match="batch_size"):
        create_teacher(
            {
                "backend": "open_clip",
                "model": "tiny-clip-32",
                "pretrained": str(ckpt),
                "batch_size": 0,
            }
        )
    with pytest.raises(InvalidArgument, match="temperature"):
        create_teacher(
            {
                "backend": "open_clip",
                "model": "tiny-clip-32",
                "pretrained": str(ckpt),
                "temperature": -1,
            }
        )


def test_templates() -> None:
    assert templates_for("fashion_mnist") == FASHION_MNIST_TEMPLATES
    assert templates_for("EuroSAT") == COOP_TEMPLATES["eurosat"]
    assert templates_for("unknown-set") == SIMPLE_TEMPLATES
    for name, temps in COOP_TEMPLATES.items():
        assert validate_templates(temps) == temps, name
    with pytest.raises(InvalidArgument, match="must not be empty"):
        validate_templates([])
    with pytest.raises(InvalidArgument, match="exactly one"):
        validate_templates(["{}{}"])
    with pytest.raises(InvalidArgument, match="does not format"):
        validate_templates(["a {} {"])


def test_from_env_ignores_the_experiment_services_teacher_target() -> None:
    from activekd.teacher.config import TeacherConfig

    cfg = TeacherConfig.from_env(
        {"ACTIVEKD_TEACHER_TARGET": "teacher:50052", "ACTIVEKD_TEACHER_IMAGE_SIZE": "96"}
    )
    assert cfg.image_size == 96
