"""Device, precision and thread settings for student training and scoring."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from activekd.errors import FailedPrecondition, InvalidArgument


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None: cuda when available, else cpu. ``cuda`` without a GPU: FailedPrecondition."""
    if isinstance(device, torch.device):
        dev = device
    else:
        name = (device or "auto").lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise InvalidArgument(
                f"device {device!r} is not a torch device (auto, cpu, cuda)", field="device"
            ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FailedPrecondition(f"device {str(device)!r} asked for but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise InvalidArgument(f"device {str(device)!r}: only cpu and cuda are supported")
    return dev


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 autocast on CUDA (fp16 where bf16 is unsupported), fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision in ("bf16", "fp16") and device.type != "cuda":
        raise InvalidArgument(
            f"precision {precision} needs CUDA; use fp32 or auto on {device.type}",
            field="precision",
        )
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise InvalidArgument(f"precision {precision!r} must be auto, fp32, bf16 or fp16")
    return table[precision]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """``torch.autocast`` to ``dtype`` on CUDA; a no-op in fp32."""
    if dtype == torch.float32 or device.type != "cuda":
        yield
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Sets ``torch.set_num_threads(threads)`` for the block (0/None: unchanged), then restores."""
    if not threads:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(prev)
