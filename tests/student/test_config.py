"""StudentConfig: round trips, defaults from the paper, and clear errors for bad values."""

from __future__ import annotations

import json

import pytest

from activekd.errors import InvalidArgument
from activekd.student import StudentConfig


def test_defaults_follow_the_paper() -> None:
    cfg = StudentConfig()
    assert (cfg.temperature, cfg.ce_weight, cfg.kd_weight) == (2.0, 0.5, 0.5)
    assert (cfg.alpha, cfg.beta, cfg.lr, cfg.kd, cfg.augment) == (0.5, 1.0, 1e-3, True, False)
    assert cfg.validate() is cfg


def test_dict_and_json_round_trip() -> None:
    cfg = StudentConfig(
        num_classes=7,
        backbone="mlp",
        backbone_args={"input_dim": 33, "hidden": [64, 32]},
        kd=False,
        temperature=3.5,
        steps=17,
        seed=4,
    )
    assert StudentConfig.from_dict(cfg.to_dict()) == cfg
    assert StudentConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["backbone_args"]["hidden"] == [64, 32]
    # to_dict is a deep copy: editing it leaves the config alone.
    d = cfg.to_dict()
    d["backbone_args"]["hidden"].append(1)
    assert cfg.backbone_args["hidden"] == [64, 32]


def test_resolved_backbone_args_merge_defaults() -> None:
    args = StudentConfig(backbone="resnet18", backbone_args={"resize": 64}).resolved_backbone_args()
    assert args["resize"] == 64 and args["small_input"] is False and args["weights_path"] is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"backbone": "vgg99"}, "backbone"),
        ({"backbone_args": {"widht": [8]}}, "backbone_args"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"kd_weight": -1.0}, "kd_weight"),
        ({"alpha": 1.5}, "alpha"),
        ({"beta": 0}, "beta"),
        ({"steps": 0}, "steps"),
        ({"batch_size_labeled": 2.5}, "batch_size_labeled"),
        ({"lr": -1e-3}, "lr"),
        ({"warmup_fraction": 1.0}, "warmup_fraction"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"precision": "fp8"}, "precision"),
        ({"score_batch_size": -1}, "score_batch_size"),
        ({"channels_last": 1}, "channels_last"),
        ({"threads": -1}, "threads"),
        ({"kd": "yes"}, "kd"),
        ({"ce_weight": 0.0, "kd": False}, "ce_weight"),
    ],
)
def test_invalid_values_name_the_field(changes: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        StudentConfig(**changes).validate()
    assert err.value.field == field
    assert field in str(err.value)


def test_unknown_keys_and_bad_json() -> None:
    with pytest.raises(InvalidArgument, match="unknown keys"):
        StudentConfig.from_dict({"num_classes": 10, "temprature": 2.0})
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        StudentConfig.from_json("{num_classes: 10")
    with pytest.raises(InvalidArgument, match="JSON object"):
        StudentConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_replace_copies_backbone_args() -> None:
    cfg = StudentConfig(backbone_args={"widths": [8, 16]})
    other = cfg.replace(seed=3)
    other.backbone_args["widths"].append(32)
    assert cfg.backbone_args == {"widths": [8, 16]} and other.seed == 3
    with pytest.raises(InvalidArgument, match="alpha"):
        cfg.replace(alpha=2.0)
