"""The one device and precision rule of activekd (selection, student and teacher all use it).

``auto`` (or ``None``) means CUDA when torch sees a GPU, else the CPU; ``cuda`` (or ``cuda:N``)
without a GPU is :class:`~activekd.errors.FailedPrecondition`; anything else is
:class:`~activekd.errors.InvalidArgument`. torch is imported only when a caller needs a
``torch.device`` or dtype, so code paths without torch (the selection engine on numpy) can use
:func:`resolve_device` on a machine without torch.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from activekd.errors import FailedPrecondition, InvalidArgument, shown

if TYPE_CHECKING:
    import torch

#: Device names a caller may give (``cuda:N`` names one GPU).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

#: Precision names: ``auto`` is bf16 (fp16 where bf16 is unsupported) on CUDA, fp32 on the CPU.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

_DEVICE_NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: Any = "auto") -> str:
    """The device to run on: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Accepts a name (case-insensitive), ``None`` (= ``auto``) or a ``torch.device``.
    """
    if device is None:
        name = "auto"
    elif isinstance(device, str):
        name = device.lower()
    elif type(device).__name__ == "device" and hasattr(device, "type"):  # torch.device
        name = str(device)
    else:
        name = ""
    if not _DEVICE_NAME.match(name):
        raise InvalidArgument(
            f"device {shown(device)} is not one of auto, cpu, cuda, cuda:N "
            "(not a torch device activekd runs on)",
            field="device",
        )
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name.startswith("cuda") and not cuda_available():
        raise FailedPrecondition(
            f"device {shown(name)} was requested but CUDA is not available here; use 'auto' or 'cpu'",
            field="device",
        )
    return name


def torch_device(device: Any = "auto") -> torch.device:
    """:func:`resolve_device` as a ``torch.device``."""
    import torch

    return torch.device(resolve_device(device))


def resolve_precision(precision: str | None, device: Any) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device`` (a name or ``torch.device``)."""
    import torch

    p = (precision or "auto").lower()
    if p not in PRECISIONS:
        raise InvalidArgument(
            f"precision {shown(precision)} must be one of {', '.join(PRECISIONS)}",
            field="precision",
        )
    on_cuda = str(getattr(device, "type", device)).startswith("cuda")
    if p == "auto":
        if not on_cuda:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if p in ("bf16", "fp16") and not on_cuda:
        kind = getattr(device, "type", device)
        raise InvalidArgument(
            f"precision {p} needs CUDA; use fp32 or auto on {kind}", field="precision"
        )
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[p]


@contextlib.contextmanager
def autocast(device: Any, dtype: torch.dtype) -> Iterator[None]:
    """``torch.autocast`` to ``dtype`` on CUDA; a no-op in fp32 or on the CPU."""
    import torch

    on_cuda = str(getattr(device, "type", device)).startswith("cuda")
    if dtype == torch.float32 or not on_cuda:
        yield
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the block (0/None: unchanged), then restores."""
    if not threads:
        yield
        return
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(prev)
