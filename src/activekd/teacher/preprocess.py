"""Batched uint8 -> model-input preprocessing in torch (no per-image PIL round trip)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from activekd.errors import InvalidArgument

PREPROCESS_VERSION = "v1"
_MODES = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocess:
    """Resize the shortest side to ``size`` and centre-crop, gray -> 3 channels, optional
    inversion (for white-on-black images such as Fashion-MNIST), scale to [0, 1], normalise."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    invert: bool = False

    def __post_init__(self) -> None:
        if self.size < 1:
            raise InvalidArgument(f"image size {self.size} must be >= 1", field="image_size")
        if self.interpolation not in _MODES:
            raise InvalidArgument(
                f"interpolation {self.interpolation!r} must be one of {_MODES}",
                field="interpolation",
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise InvalidArgument(f"mean/std must be 3 values with std > 0: {self.mean} {self.std}")

    def describe(self) -> str:
        """Canonical text for the teacher identity."""
        mean = ",".join(f"{m:.6g}" for m in self.mean)
        std = ",".join(f"{s:.6g}" for s in self.std)
        return (
            f"{PREPROCESS_VERSION};invert={int(self.invert)};gray->rgb;"
            f"resize_shortest={self.size}:{self.interpolation}+center_crop;"
            f"scale=1/255;mean={mean};std={std}"
        )

    def __call__(self, images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 (B, H, W) or (B, H, W, 3) -> float32 (B, 3, size, size) on ``device``."""
        arr = np.ascontiguousarray(images)
        if not arr.flags.writeable:  # torch warns on read-only arrays (e.g. cached datasets)
            arr = arr.copy()
        x = torch.from_numpy(arr).to(device)
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = x.float()
        if self.invert:
            x = 255.0 - x
        x = self._resize_crop(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1) * 255.0
        return ((x - mean) / std).contiguous()

    def _resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.size
        if (h, w) != (s, s):
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            kwargs: dict[str, object] = {}
            if self.interpolation != "nearest":
                kwargs = {"align_corners": False, "antialias": scale < 1.0}
            x = F.interpolate(x, size=(nh, nw), mode=self.interpolation, **kwargs)  # type: ignore[arg-type]
            if self.interpolation == "bicubic":
                x = x.clamp_(0.0, 255.0)
            top, left = (nh - s) // 2, (nw - s) // 2
            x = x[:, :, top : top + s, left : left + s]
        return x
