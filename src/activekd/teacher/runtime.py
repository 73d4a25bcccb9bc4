"""Device and precision selection for teacher backends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from activekd.errors import FailedPrecondition, InvalidArgument

_PRECISIONS = {"auto", "fp32", "bf16", "fp16"}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU -> FailedPrecondition."""
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise InvalidArgument(f"device {device!r} is not a torch device (auto, cpu, cuda)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FailedPrecondition(f"device {device!r} asked for but CUDA is not available")
    return dev


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Compute dtype: ``auto`` is bf16 (fp16 when bf16 is unsupported) on CUDA, fp32 on CPU."""
    p = (precision or "auto").lower()
    if p not in _PRECISIONS:
        raise InvalidArgument(f"precision {precision!r} must be one of {sorted(_PRECISIONS)}")
    if p == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if p in ("bf16", "fp16") and device.type != "cuda":
        raise InvalidArgument(f"precision {p} needs CUDA; use fp32 or auto on {device.type}")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[p]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Autocast to ``dtype`` on CUDA for reduced precision; a no-op for fp32."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")
