"""Label-map teacher: EfficientNet-Lite0 (ImageNet-1k) + a Fashion-MNIST label map (not a VLM)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, balanced_subset
from activekd.data.label_maps import (
    BUILTIN_LABEL_MAPS,
    LabelMap,
    imagenet_class_names,
    load_label_map,
)
from activekd.errors import InvalidArgument, NotFound
from activekd.teacher import TeacherConfig, TeacherOutputCache, create_teacher, evaluate_teacher
from activekd.teacher.label_map_teacher import LabelMapTeacher


@pytest.mark.slow
def test_reproduces_the_recorded_top1_on_500_balanced_test_images(
    label_map_teacher: LabelMapTeacher, fmnist_test: Any
) -> None:
    x, y = fmnist_test
    rows = balanced_subset(y, 50, seed=0)
    cache = TeacherOutputCache()  # $ACTIVEKD_CACHE_DIR or ~/.cache/activekd/teacher
    report = evaluate_teacher(
        label_map_teacher, x[rows], y[rows], cache=cache, cache_key=("fashion-mnist", "test", rows)
    )
    assert report.num_images == 500
    assert report.top1 >= 0.44  # measured 0.480 here; the label map JSON records 0.488 on 2000
    # systematic failures as recorded with the map; measured here Sneaker 0.92, Shirt 0.0,
    # Trouser 0.02 (the JSON: 0.96, 0.0, 0.02)
    assert report.per_class_top1["Sneaker"] >= 0.8
    assert report.per_class_top1["Shirt"] <= 0.1
    assert report.per_class_top1["Trouser"] <= 0.1

    # the cached rows are what the current code computes (a cache hit proves nothing otherwise)
    again = label_map_teacher.predict(x[rows[:12]]).probs
    cached = cache.get(
        label_map_teacher.identity, "fashion-mnist", "test", rows, need_features=False
    )
    assert cached is not None
    np.testing.assert_allclose(again, cached.probs[:12], atol=1e-4)
    assert evaluate_teacher(
        label_map_teacher, x[rows], y[rows], cache=cache, cache_key=("fashion-mnist", "test", rows)
    ).cached


def test_probabilities_are_the_renormalised_imagenet_mass_of_each_class(
    label_map_teacher: LabelMapTeacher, fmnist_test: Any
) -> None:
    images = fmnist_test[0][:6]
    out = label_map_teacher.predict(images)
    assert out.probs.shape == (6, 10) and out.features.shape == (6, 1280)

    # independent preprocessing as recorded in the label map JSON: invert, bilinear 28->224,
    # three channels, scale to [-1, 1]
    x = torch.from_numpy(255 - images.astype(np.float32))[:, None]
    x = F.interpolate(x, size=224, mode="bilinear", align_corners=False)
    x = (x / 127.5 - 1.0).expand(-1, 3, -1, -1).contiguous()
    net = label_map_teacher._bb.model
    with torch.inference_mode():
        imagenet = net(x).softmax(-1).numpy()
        feats = net.extract_features(x).mean((2, 3)).numpy()
    lm = load_label_map("fashion-mnist")
    mass = np.stack([imagenet[:, list(idx)].sum(1) for idx in lm.imagenet_indices], 1)
    np.testing.assert_allclose(out.probs, mass / mass.sum(1, keepdims=True), atol=2e-5)
    np.testing.assert_allclose(out.features, feats, atol=2e-4)
    assert label_map_teacher.identity.templates == ()
    assert "not a vision-language model" in label_map_teacher.identity.description


def test_gray_and_repeated_rgb_inputs_agree(
    label_map_teacher: LabelMapTeacher, fmnist_test: Any
) -> None:
    gray = fmnist_test[0][:3]
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_allclose(
        label_map_teacher.predict(gray).probs, label_map_teacher.predict(rgb).probs, atol=1e-6
    )


def test_class_subsets_keep_mass_ratios_and_reject_unknowns(
    label_map_teacher: LabelMapTeacher, fmnist_test: Any
) -> None:
    images = fmnist_test[0][:5]
    full = label_map_teacher.predict(images).probs
    sub = label_map_teacher.with_classes(["Bag", "Sneaker"])
    p = sub.predict(images).probs
    bag, sneaker = FASHION_MNIST_CLASSES.index("Bag"), FASHION_MNIST_CLASSES.index("Sneaker")
    np.testing.assert_allclose(p[:, 0], full[:, bag] / (full[:, bag] + full[:, sneaker]), atol=1e-5)
    assert sub.identity.fingerprint != label_map_teacher.identity.fingerprint
    assert label_map_teacher.num_classes == 10
    with pytest.raises(InvalidArgument, match="no ImageNet mapping"):
        label_map_teacher.with_classes(["Bag", "Spaceship"])
    with pytest.raises(InvalidArgument, match="templates"):
        label_map_teacher.with_classes(["Bag"], ["a photo of a {}."])
    with pytest.raises(InvalidArgument):
        label_map_teacher.with_classes([])


def test_image_size_and_label_map_change_the_fingerprint(
    label_map_teacher: LabelMapTeacher, fmnist_test: Any, tmp_path: Path
) -> None:
    small = create_teacher(TeacherConfig(backend="label-map", image_size=96, device="cpu"))
    assert small.identity.preprocessing != label_map_teacher.identity.preprocessing
    assert small.identity.fingerprint != label_map_teacher.identity.fingerprint
    assert small.identity.weights_hash == label_map_teacher.identity.weights_hash
    assert small.predict(fmnist_test[0][:4]).probs.shape == (4, 10)

    raw = json.loads(BUILTIN_LABEL_MAPS["fashion-mnist"].read_text())
    raw["classes"][0]["imagenet_indices"] = [610, 611]  # add "jigsaw puzzle" to T-shirt/top
    custom = tmp_path / "map.json"
    custom.write_text(json.dumps(raw))
    other = label_map_teacher.with_label_map(load_label_map(str(custom)))
    assert other.identity.class_names == label_map_teacher.identity.class_names
    assert other.identity.fingerprint != label_map_teacher.identity.fingerprint


def test_label_map_files_are_validated(tmp_path: Path) -> None:
    assert len(imagenet_class_names()) == 1000
    assert imagenet_class_names()[610].startswith("jersey")
    with pytest.raises(NotFound):
        load_label_map(str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"classes": [{"name": "a"}]}')
    with pytest.raises(InvalidArgument, match="malformed"):
        load_label_map(str(bad))
    with pytest.raises(InvalidArgument, match="mapped to both"):
        LabelMap(("a", "b"), ((1, 2), (2,)))
    with pytest.raises(InvalidArgument, match=r"not in 0\.\.999"):
        LabelMap(("a",), ((1000,),))
    with pytest.raises(InvalidArgument, match="maps to no ImageNet class"):
        LabelMap(("a",), ((),))


def test_any_torchvision_imagenet_classifier_works_with_local_weights(
    tmp_path: Path, fmnist_test: Any
) -> None:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=1000)
    weights = tmp_path / "resnet18.pt"
    torch.save(net.state_dict(), weights)
    teacher = create_teacher(
        TeacherConfig(
            backend="label-map",
            model="torchvision:resnet18",
            weights=str(weights),
            image_size=64,
            device="cpu",
        )
    )
    out = teacher.predict(fmnist_test[0][:3])
    assert out.features.shape == (3, 512) and out.probs.shape == (3, 10)
    np.testing.assert_allclose(out.probs.sum(1), 1.0, atol=1e-5)
    assert teacher.identity.model == "torchvision:resnet18"
    with pytest.raises(NotFound):
        create_teacher(TeacherConfig(model="torchvision:resnet18", weights=str(tmp_path / "x")))
    with pytest.raises(InvalidArgument, match="needs weights"):
        create_teacher(TeacherConfig(model="torchvision:resnet18"))
    with pytest.raises(InvalidArgument, match="unknown label-map model"):
        create_teacher(TeacherConfig(model="alexnet-from-nowhere"))
    torch.save({"nonsense": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(InvalidArgument, match="do not fit"):
        create_teacher(
            TeacherConfig(model="torchvision:resnet18", weights=str(tmp_path / "wrong.pt"))
        )


def test_auto_precision_is_fp32_even_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 moved this teacher's probabilities by up to 0.11 on an H100, so ``auto`` asks for
    fp32 on every device (the CUDA run itself: tests/gpu). Checked here on the CPU by recording
    what the loader asks the precision resolver for."""
    import activekd.teacher.label_map_teacher as lm

    asked: list[str] = []
    real = lm.resolve_precision

    def spy(precision: str, device: torch.device) -> torch.dtype:
        asked.append(precision)
        return real(precision, device)

    monkeypatch.setattr(lm, "resolve_precision", spy)
    create_teacher(TeacherConfig(backend="label-map", device="cpu"))
    create_teacher(TeacherConfig(backend="label-map", device="cpu", precision="fp32"))
    assert asked == ["fp32", "fp32"]
    with pytest.raises(InvalidArgument, match="needs CUDA"):
        create_teacher(TeacherConfig(backend="label-map", device="cpu", precision="bf16"))
