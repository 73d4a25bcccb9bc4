"""Backbone registry: every backbone builds, runs forward and trains one step on CPU; weights load
from a local file; the input adapter repeats channels, resizes and normalises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import mobilenet_v2, resnet18

from activekd.errors import InvalidArgument, NotFound
from activekd.student import (
    ImageInput,
    StudentConfig,
    available_backbones,
    build_backbone,
    build_student,
    model_summary,
    score_pool,
    train_round,
)


def test_registry_lists_the_backbones() -> None:
    names = available_backbones()
    assert {"small_cnn", "resnet18", "mobilenet_v2", "mlp"} <= set(names)
    assert all(isinstance(d, str) and d for d in names.values())
    with pytest.raises(InvalidArgument, match="unknown backbone"):
        build_backbone("alexnet")


@pytest.mark.parametrize(
    ("backbone", "args", "side", "dim"),
    [
        ("small_cnn", {}, 28, 256),
        ("resnet18", {"small_input": True}, 28, 512),
        ("resnet18", {"resize": 64}, 28, 512),
        ("mobilenet_v2", {"small_input": True, "width_mult": 0.5}, 28, 1280),
        ("mobilenet_v2", {}, 32, 1280),
    ],
)
def test_image_backbones_forward_and_one_step(
    backbone: str, args: dict, side: int, dim: int
) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, side, side), dtype=np.uint8)  # grayscale -> 3 channels
    y = np.array([0, 1, 2, 0, 1, 2])
    t = rng.dirichlet(np.ones(3), size=6).astype(np.float32)
    cfg = StudentConfig(
        num_classes=3,
        backbone=backbone,
        backbone_args=args,
        steps=1,
        batch_size_labeled=2,
        batch_size_unlabeled=2,
    )
    torch.manual_seed(0)
    before = build_student(cfg).state_dict()
    res = train_round(cfg, None, y[:3], x, t, labeled_rows=np.arange(3), device="cpu")
    assert res.model.feature_dim == dim
    summary = model_summary(res.model)
    assert summary["feature_dim"] == dim and summary["kd"] is True
    assert summary["parameters"] == sum(p.numel() for p in res.model.parameters())
    after = res.state_dict()
    assert not torch.equal(before["ce_head.weight"], after["ce_head.weight"])  # one real step
    scores = score_pool(res.model, x, batch_size=4)
    assert scores.features.shape == (6, dim) and scores.probs.shape == (6, 3)
    assert np.isfinite(scores.features).all()


def test_resnet_weights_from_local_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ref = resnet18(weights=None)
    path = tmp_path / "r18.pth"
    # Checkpoints often wrap the dict and carry DataParallel prefixes; both are handled.
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    net, dim = build_backbone("resnet18", {"weights_path": str(path)})
    assert dim == 512
    got = net.state_dict()
    assert torch.equal(got["body.layer4.1.conv2.weight"], ref.state_dict()["layer4.1.conv2.weight"])
    assert torch.equal(got["body.conv1.weight"], ref.conv1.weight)
    # small_input keeps every pretrained weight except the replaced 3x3 stem.
    small, _ = build_backbone("resnet18", {"weights_path": str(path), "small_input": True})
    s = small.state_dict()
    assert s["body.conv1.weight"].shape == (64, 3, 3, 3)
    assert torch.equal(s["body.layer1.0.conv1.weight"], ref.state_dict()["layer1.0.conv1.weight"])


def test_mobilenet_weights_from_local_file(tmp_path: Path) -> None:
    torch.manual_seed(2)
    ref = mobilenet_v2(weights=None)
    path = tmp_path / "mnv2.pth"
    torch.save(ref.state_dict(), path)
    net, _ = build_backbone("mobilenet_v2", {"weights_path": str(path)})
    assert torch.equal(net.state_dict()["body.features.0.0.weight"], ref.features[0][0].weight)


def test_bad_weight_files(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        build_backbone("resnet18", {"weights_path": str(tmp_path / "missing.pth")})
    wrong = tmp_path / "wrong.pth"
    torch.save(mobilenet_v2(weights=None).state_dict(), wrong)
    with pytest.raises(InvalidArgument, match="unexpected key"):
        build_backbone("resnet18", {"weights_path": str(wrong)})
    partial = tmp_path / "partial.pth"
    sd = resnet18(weights=None).state_dict()
    del sd["layer2.0.bn1.weight"]
    torch.save(sd, partial)
    with pytest.raises(InvalidArgument, match="lack 1 keys"):
        build_backbone("resnet18", {"weights_path": str(partial)})
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(InvalidArgument, match="cannot read"):
        build_backbone("resnet18", {"weights_path": str(garbage)})


def test_image_input_adapter_by_hand() -> None:
    adapter = ImageInput(3, mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 1.0])
    x = torch.full((1, 1, 2, 2), 0.75)  # grayscale is repeated to three channels
    out = adapter(x)
    assert out.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [0.5, 2.0, 0.75], atol=1e-6)
    gray = ImageInput(1, mean=0.5, std=0.5, resize=4)
    rgb = torch.stack([torch.zeros(2, 2), torch.ones(2, 2), torch.full((2, 2), 0.5)])[None]
    out2 = gray(rgb)  # 3 -> 1 channel by averaging, 2x2 -> 4x4
    assert out2.shape == (1, 1, 4, 4)
    np.testing.assert_allclose(out2.numpy(), 0.0, atol=1e-6)  # mean 0.5 -> (0.5 - 0.5) / 0.5
    with pytest.raises(InvalidArgument, match="std"):
        ImageInput(1, mean=0.0, std=0.0)


def test_mlp_backbone_shapes() -> None:
    net, dim = build_backbone("mlp", {"input_dim": 7, "hidden": [16, 5]})
    assert dim == 5
    net.eval()
    assert net(torch.randn(3, 7)).shape == (3, 5)
    _, d = build_backbone("mlp", {"input_dim": 7, "hidden": [], "input_norm": False})
    assert d == 7  # no hidden layer: a linear student on the inputs
    with pytest.raises(InvalidArgument, match="input_dim"):
        build_backbone("mlp", {})
