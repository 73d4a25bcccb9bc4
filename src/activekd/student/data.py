"""Input validation and batch conversion for the student.

Accepted inputs (numpy arrays or memory-maps, indexed batch by batch):

* images: ``uint8`` (scaled by 1/255) or float in [0, 1]; ``(N, H, W)`` grayscale,
  ``(N, H, W, C)`` channels-last or ``(N, C, H, W)`` channels-first with C in {1, 3}
  (the layout is read from where the size-1/3 axis is; ambiguous shapes are rejected).
* vectors: float ``(N, D)``.
* labels: integer ``(N,)`` in ``[0, num_classes)``.
* teacher probabilities: ``(N, num_classes)``, checked by
  :func:`activekd.arrays.check_probabilities` (finite, >= 0, rows summing to 1 within
  ``PROB_SUM_ATOL``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from activekd.arrays import iter_row_chunks
from activekd.errors import InvalidArgument


def image_layout(shape: tuple[int, ...], name: str = "x") -> str:
    """``"NHW"``, ``"NHWC"`` or ``"NCHW"`` for an image batch shape."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        first, last = shape[1] in (1, 3), shape[3] in (1, 3)
        if last and not first:
            return "NHWC"
        if first and not last:
            return "NCHW"
        raise InvalidArgument(
            f"{name} has ambiguous image shape {shape}: channels (1 or 3) must be on exactly "
            "one of axis 1 (N, C, H, W) or axis 3 (N, H, W, C)",
            field=name,
        )
    raise InvalidArgument(
        f"{name} must be images (N, H, W), (N, H, W, C) or (N, C, H, W); got shape {shape}",
        field=name,
    )


def validate_x(x: Any, input_kind: str, name: str, input_dim: int | None = None) -> np.ndarray:
    """Checks an input array for ``input_kind`` (``image``/``vector``); returns it unchanged."""
    if not isinstance(x, np.ndarray):
        raise InvalidArgument(f"{name} must be a numpy array, got {type(x).__name__}", field=name)
    if x.dtype.kind not in "uif":
        raise InvalidArgument(f"{name} has dtype {x.dtype}; use uint8 or float", field=name)
    if input_kind == "image":
        image_layout(x.shape, name)
        if x.dtype.kind in "iu" and x.dtype != np.uint8:
            raise InvalidArgument(
                f"{name}: integer images must be uint8 (0..255), got {x.dtype}", field=name
            )
    else:
        if x.ndim != 2:
            raise InvalidArgument(
                f"{name} must be feature vectors (N, D) for this backbone; got shape {x.shape}",
                field=name,
            )
        if input_dim is not None and x.shape[1] != input_dim:
            raise InvalidArgument(
                f"{name} has {x.shape[1]} features; the backbone's input_dim is {input_dim}",
                field=name,
            )
    if x.dtype.kind == "f":
        row_bytes = int(np.prod(x.shape[1:], dtype=np.int64)) * x.itemsize
        for sl in iter_row_chunks(x.shape[0], row_bytes):
            finite = np.isfinite(x[sl]).reshape(sl.stop - sl.start, -1).all(axis=1)
            if not finite.all():
                bad = sl.start + int(np.flatnonzero(~finite)[0])
                raise InvalidArgument(f"{name} row {bad} has NaN or inf values", field=name)
    return x


def validate_labels(y: Any, n: int, num_classes: int, name: str = "y_labeled") -> np.ndarray:
    """int64 copy of labels; checks length ``n`` and range ``[0, num_classes)``."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise InvalidArgument(f"{name} must be 1-D, got shape {arr.shape}", field=name)
    if arr.size == 0:
        raise InvalidArgument(
            f"{name} is empty: at least one labeled example is needed", field=name
        )
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InvalidArgument(f"{name} must hold integer class ids", field=name)
    elif arr.dtype.kind not in "iu":
        raise InvalidArgument(f"{name} must hold integer class ids, got {arr.dtype}", field=name)
    if arr.shape[0] != n:
        raise InvalidArgument(f"{name} has {arr.shape[0]} labels for {n} labeled rows", field=name)
    out = arr.astype(np.int64)
    bad = np.flatnonzero((out < 0) | (out >= num_classes))
    if bad.size:
        raise InvalidArgument(
            f"{name}[{int(bad[0])}] = {int(out[bad[0]])} is outside [0, {num_classes})", field=name
        )
    return out


def to_tensor(x: np.ndarray, input_kind: str, device: torch.device) -> torch.Tensor:
    """A batch as float32 on ``device``: images (B, C, H, W) in [0, 1], vectors (B, D)."""
    arr = np.ascontiguousarray(x)
    t = torch.from_numpy(arr) if arr.flags.writeable else torch.from_numpy(arr.copy())
    t = t.to(device, non_blocking=True)
    if input_kind == "image":
        layout = image_layout(tuple(arr.shape))
        if layout == "NHW":
            t = t.unsqueeze(1)
        elif layout == "NHWC":
            t = t.permute(0, 3, 1, 2)
        t = t.float() / 255.0 if arr.dtype == np.uint8 else t.float()
        return t.contiguous()
    return t.float()


def random_crop_flip(
    x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Per-sample random crop (zero padding ``padding``) and horizontal flip of (B, C, H, W)."""
    b, _, h, w = x.shape
    if padding > 0:
        xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        bidx = torch.arange(b, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[bidx, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand((b,), generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x.contiguous()
