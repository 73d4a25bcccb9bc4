"""Fixtures for the teacher tests: Fashion-MNIST, a random and a trained tiny CLIP, teachers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from activekd.data.fashion_mnist import load_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]
TINY_FIXTURE = ROOT / "tests" / "fixtures" / "teacher" / "tiny_clip_fmnist.npz"


def _load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fmnist_test() -> tuple[np.ndarray, np.ndarray]:
    return load_fashion_mnist("test")


@pytest.fixture(scope="session")
def fmnist_train() -> tuple[np.ndarray, np.ndarray]:
    return load_fashion_mnist("train")


@pytest.fixture(scope="session")
def random_tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """``tiny-clip-32`` from open_clip's factory with seeded random weights, saved as a
    checkpoint file: ``(model, checkpoint_path)``."""
    import open_clip

    from activekd.teacher import register_model_configs

    register_model_configs()  # tiny-clip-32
    torch.manual_seed(1234)
    model, _, _ = open_clip.create_model_and_transforms("tiny-clip-32")
    model.eval()
    from activekd.teacher.clip_train import save_checkpoint

    path = save_checkpoint(model, tmp_path_factory.mktemp("tiny") / "tiny.pt")
    return model, path


@pytest.fixture(scope="session")
def trained_tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The Fashion-MNIST-trained tiny CLIP as a checkpoint file: ``(path, meta)``.

    From tests/fixtures/teacher/tiny_clip_fmnist.npz (made by scripts/make_tiny_clip_fixture.py);
    re-trained with the same recipe (~30 s) when that file is missing.
    """
    import open_clip

    from activekd.teacher import register_model_configs
    from activekd.teacher.clip_train import load_state_npz, save_checkpoint

    register_model_configs()  # tiny-clip-32
    if TINY_FIXTURE.is_file():
        state, meta = load_state_npz(TINY_FIXTURE)
        model, _, _ = open_clip.create_model_and_transforms("tiny-clip-32")
        model.load_state_dict(state)
    else:
        model, meta = _load_script("make_tiny_clip_fixture").train_tiny_clip()
    path = save_checkpoint(model, tmp_path_factory.mktemp("tiny-trained") / "tiny.pt")
    return path, meta


@pytest.fixture(scope="session")
def label_map_teacher() -> Any:
    """The default label-map teacher (EfficientNet-Lite0 + Fashion-MNIST map) on CPU."""
    from activekd.teacher import TeacherConfig, create_teacher

    return create_teacher(TeacherConfig(backend="label-map", device="cpu"))


@pytest.fixture(scope="session")
def build_teacher_cache_script() -> Any:
    return _load_script("build_teacher_cache")
