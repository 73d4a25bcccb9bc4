"""Backbone registry: name -> how to build a feature extractor, with its defaults as data.

A backbone maps a batch to penultimate features ``(B, feature_dim)``. Image backbones take float
``(B, C, H, W)`` in [0, 1] and own their input adaptation (:class:`ImageInput`: channel repeat or
average, optional resize, mean/std normalisation), so a checkpoint carries its preprocessing.
Vector backbones (``mlp``) take float ``(B, D)`` feature vectors of any modality.

Registered: ``small_cnn`` (28x28 grayscale, trains in seconds on 2 CPU cores), torchvision
``resnet18`` and ``mobilenet_v2`` (random init, or ImageNet-style weights from a local
``weights_path``), ``mlp``. On 28 px inputs ResNet-18's stride-32 stem leaves a 1x1 map: use
``small_input=True`` (3x3 stride-1 stem, no max-pool; pretrained conv1 weights are then dropped)
or ``resize`` (e.g. 64, or 224 to match ImageNet weights, at a large compute cost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from activekd.errors import InvalidArgument, NotFound, shown

log = logging.getLogger(__name__)

IMAGENET_MEAN: list[float] = [0.485, 0.456, 0.406]
IMAGENET_STD: list[float] = [0.229, 0.224, 0.225]

BuildFn = Callable[[dict[str, Any]], tuple[nn.Module, int]]


@dataclass(frozen=True)
class BackboneSpec:
    """Registry entry. ``input_kind`` is ``"image"`` or ``"vector"``; ``defaults`` lists every
    accepted ``backbone_args`` key with its default value."""

    name: str
    input_kind: str
    description: str
    build: BuildFn
    defaults: Mapping[str, Any] = field(default_factory=dict)


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Adds (or replaces) a backbone in the registry."""
    if spec.input_kind not in ("image", "vector"):
        raise InvalidArgument(f"backbone {spec.name}: input_kind must be 'image' or 'vector'")
    BACKBONES[spec.name] = spec
    return spec


def available_backbones() -> dict[str, str]:
    """``{name: description}`` of the registered backbones."""
    return {name: spec.description for name, spec in sorted(BACKBONES.items())}


def build_backbone(name: str, args: Mapping[str, Any] | None = None) -> tuple[nn.Module, int]:
    """``(module, feature_dim)`` for a registered backbone with ``args`` over its defaults."""
    if name not in BACKBONES:
        raise InvalidArgument(
            f"unknown backbone {shown(name)}: use one of {', '.join(sorted(BACKBONES))}"
        )
    spec = BACKBONES[name]
    merged = dict(spec.defaults)
    merged.update(args or {})
    return spec.build(merged)


# ------------------------------------------------------------------------------ input adapter
class ImageInput(nn.Module):
    """Float (B, C, H, W) in [0, 1] -> the backbone's channels, size and normalisation.

    1 channel -> ``channels`` by repetition; 3 -> 1 by averaging; ``resize`` (int side) by
    bilinear interpolation; then ``(x - mean) / std`` per channel (stored as buffers).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        channels: int,
        mean: list[float] | float,
        std: list[float] | float,
        resize: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = int(channels)
        self.resize = int(resize) if resize else None
        m = torch.as_tensor(mean, dtype=torch.float32).flatten()
        s = torch.as_tensor(std, dtype=torch.float32).flatten()
        if m.numel() not in (1, self.channels) or s.numel() not in (1, self.channels):
            raise InvalidArgument(
                f"mean/std need 1 or {self.channels} values, got {m.numel()} and {s.numel()}"
            )
        if bool((s <= 0).any()):
            raise InvalidArgument("std values must be > 0")
        self.register_buffer("mean", m.expand(self.channels).clone().view(1, -1, 1, 1))
        self.register_buffer("std", s.expand(self.channels).clone().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c != self.channels:
            if c == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif self.channels == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                raise InvalidArgument(f"image has {c} channels; the backbone takes {self.channels}")
        if self.resize and (x.shape[-2] != self.resize or x.shape[-1] != self.resize):
            x = F.interpolate(
                x, size=(self.resize, self.resize), mode="bilinear", align_corners=False
            )
        return (x - self.mean) / self.std


class _WithInput(nn.Module):
    def __init__(self, adapter: ImageInput, body: nn.Module) -> None:
        super().__init__()
        self.input = adapter
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.input(x))


def _adapter(args: dict[str, Any]) -> ImageInput:
    return ImageInput(args["in_channels"], args["mean"], args["std"], args.get("resize"))


def load_weights_file(
    module: nn.Module, path: str | Path, *, drop_prefixes: tuple[str, ...] = ()
) -> list[str]:
    """Loads a local state-dict file into ``module``; returns the keys left at random init.

    Accepts a bare state dict or ``{"state_dict": ...}``; strips ``module.`` prefixes; skips keys
    under ``drop_prefixes`` (classifier heads) and keys whose shape differs only when they are under
    ``drop_prefixes`` too. Any other missing, unexpected or mis-shaped key raises InvalidArgument.
    """
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"backbone weights file {str(p)!r} does not exist", field="weights_path")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise InvalidArgument(f"cannot read backbone weights {str(p)!r}: {exc}") from exc
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise InvalidArgument(f"backbone weights {str(p)!r} hold no state dict")
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    own = module.state_dict()
    keep: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith(drop_prefixes):
            continue
        if k not in own:
            raise InvalidArgument(f"backbone weights {str(p)!r}: unexpected key {shown(k)}")
        if tuple(own[k].shape) != tuple(v.shape):
            raise InvalidArgument(
                f"backbone weights {str(p)!r}: {k} has shape {tuple(v.shape)}, "
                f"the model needs {tuple(own[k].shape)}"
            )
        keep[k] = v
    missing = [k for k in own if k not in keep]
    hard_missing = [k for k in missing if not k.startswith(drop_prefixes)]
    if hard_missing:
        raise InvalidArgument(
            f"backbone weights {str(p)!r} lack {len(hard_missing)} keys, e.g. {hard_missing[:3]}"
        )
    module.load_state_dict(keep, strict=False)
    if missing:
        log.info("backbone weights %s: %d keys left at random init", p, len(missing))
    return missing


# ------------------------------------------------------------------------------ small_cnn
def _build_small_cnn(args: dict[str, Any]) -> tuple[nn.Module, int]:
    widths = [int(w) for w in args["widths"]]
    if not widths or min(widths) < 1:
        raise InvalidArgument("small_cnn: widths must be a non-empty list of positive ints")
    layers: list[nn.Module] = []
    c_in = int(args["in_channels"])
    for i, w in enumerate(widths):
        layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        c_in = w
    pool = int(args["pool"])
    hidden = int(args["hidden"])
    layers += [nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Linear(c_in * pool * pool, hidden)]
    layers += [nn.ReLU()]
    if float(args["dropout"]) > 0:
        layers.append(nn.Dropout(float(args["dropout"])))
    return _WithInput(_adapter(args), nn.Sequential(*layers)), hidden


register_backbone(
    BackboneSpec(
        name="small_cnn",
        input_kind="image",
        description="3 conv-BN-ReLU stages + linear; for 28x28 grayscale, fast on CPU",
        build=_build_small_cnn,
        defaults={
            "in_channels": 1,
            "widths": [32, 64, 128],
            "pool": 3,
            "hidden": 256,
            "dropout": 0.0,
            "mean": [0.5],
            "std": [0.5],
            "resize": None,
        },
    )
)


# ------------------------------------------------------------------------------ torchvision
def _build_resnet18(args: dict[str, Any]) -> tuple[nn.Module, int]:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.fc = nn.Identity()  # type: ignore[assignment]
    drop: tuple[str, ...] = ("fc.",)
    if args["small_input"]:
        net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()  # type: ignore[assignment]
        drop = ("fc.", "conv1.")
    if args["weights_path"]:
        load_weights_file(net, args["weights_path"], drop_prefixes=drop)
    if int(args["in_channels"]) != 3:
        raise InvalidArgument("resnet18: in_channels must be 3 (grayscale input is repeated)")
    return _WithInput(_adapter(args), net), 512


def _build_mobilenet_v2(args: dict[str, Any]) -> tuple[nn.Module, int]:
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None, width_mult=float(args["width_mult"]))
    net.classifier = nn.Identity()  # type: ignore[assignment]
    if args["small_input"]:
        first = net.features[0][0]
        assert isinstance(first, nn.Conv2d)
        first.stride = (1, 1)
    if args["weights_path"]:
        load_weights_file(net, args["weights_path"], drop_prefixes=("classifier.",))
    if int(args["in_channels"]) != 3:
        raise InvalidArgument("mobilenet_v2: in_channels must be 3 (grayscale input is repeated)")
    return _WithInput(_adapter(args), net), int(net.last_channel)


_TV_DEFAULTS = {
    "weights_path": None,
    "in_channels": 3,
    "resize": None,
    "small_input": False,
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
}

register_backbone(
    BackboneSpec(
        name="resnet18",
        input_kind="image",
        description="torchvision ResNet-18 (512-d); random init or weights_path; "
        "small_input=True or resize for 28 px",
        build=_build_resnet18,
        defaults=dict(_TV_DEFAULTS),
    )
)
register_backbone(
    BackboneSpec(
        name="mobilenet_v2",
        input_kind="image",
        description="torchvision MobileNetV2 (1280-d at width 1); random init or weights_path",
        build=_build_mobilenet_v2,
        defaults={**_TV_DEFAULTS, "width_mult": 1.0},
    )
)


# ------------------------------------------------------------------------------ mlp
def _build_mlp(args: dict[str, Any]) -> tuple[nn.Module, int]:
    if args["input_dim"] is None:
        raise InvalidArgument("mlp: backbone_args.input_dim is not set (train_round infers it)")
    d = int(args["input_dim"])
    if d < 1:
        raise InvalidArgument(f"mlp: input_dim = {d} must be >= 1")
    layers: list[nn.Module] = []
    if args["input_norm"]:
        layers.append(nn.BatchNorm1d(d))
    for h in args["hidden"]:
        layers += [nn.Linear(d, int(h)), nn.ReLU()]
        if float(args["dropout"]) > 0:
            layers.append(nn.Dropout(float(args["dropout"])))
        d = int(h)
    return (nn.Sequential(*layers) if layers else nn.Identity()), d


register_backbone(
    BackboneSpec(
        name="mlp",
        input_kind="vector",
        description="MLP over precomputed feature vectors (any modality); "
        "features = last hidden layer",
        build=_build_mlp,
        defaults={"input_dim": None, "hidden": [256], "dropout": 0.1, "input_norm": True},
    )
)
