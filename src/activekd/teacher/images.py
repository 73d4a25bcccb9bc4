"""Image decoding and validation for teacher inputs (uint8 arrays, PNG/JPEG bytes)."""

from __future__ import annotations

import io
import warnings
from typing import Union

import numpy as np

from activekd.errors import InvalidArgument, ResourceExhausted

MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 4096

ImageInput = Union[bytes, bytearray, memoryview, np.ndarray]  # noqa: UP007 (runtime alias)


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    min_size: int = MIN_IMAGE_SIZE,
    max_size: int = MAX_IMAGE_SIZE,
) -> np.ndarray:
    """Decode PNG/JPEG (any format PIL reads) bytes to uint8 (H, W) for grayscale or (H, W, 3).

    Raises InvalidArgument for empty or undecodable bytes or a size outside
    ``min_size..max_size`` per side, ResourceExhausted for decompression bombs.
    """
    from PIL import Image, UnidentifiedImageError

    raw = bytes(data)
    if not raw:
        raise InvalidArgument("image bytes are empty; send PNG or JPEG bytes", field="encoded")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                w, h = img.size
                if max(w, h) > max_size:
                    raise InvalidArgument(
                        f"image is {w}x{h}; each side must be <= {max_size}", field="encoded"
                    )
                img.load()
                if img.mode in ("L", "1", "I;16", "I", "F"):
                    if img.mode in ("I;16", "I", "F"):
                        arr = np.asarray(img, dtype=np.float64)
                        hi = arr.max() if arr.size and arr.max() > 0 else 1.0
                        arr = np.clip(arr / hi * 255.0, 0, 255).round().astype(np.uint8)
                    else:
                        arr = np.asarray(img.convert("L"), dtype=np.uint8)
                else:
                    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ResourceExhausted(
            f"image too large to decode safely: {exc}", field="encoded"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidArgument(
            f"could not decode image ({len(raw)} bytes, starts {raw[:8]!r}); "
            "send PNG or JPEG bytes",
            field="encoded",
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, InvalidArgument):
            raise
        raise InvalidArgument(
            f"could not decode image ({len(raw)} bytes): {exc}; the file may be truncated",
            field="encoded",
        ) from exc
    return validate_image_array(np.ascontiguousarray(arr), min_size=min_size, max_size=max_size)


def validate_image_array(
    array: np.ndarray, *, min_size: int = MIN_IMAGE_SIZE, max_size: int = MAX_IMAGE_SIZE
) -> np.ndarray:
    """Check a raw image: uint8, (H, W) or (H, W, 1|3), each side in ``min_size..max_size``.

    Returns (H, W) or (H, W, 3) (a single channel axis is dropped).
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise InvalidArgument(f"image dtype is {arr.dtype}; send uint8 pixels", field="pixels")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise InvalidArgument(
            f"image shape {arr.shape} must be (H, W) or (H, W, 1|3) (channels last)",
            field="pixels",
        )
    h, w = arr.shape[:2]
    if min(h, w) < min_size or max(h, w) > max_size:
        raise InvalidArgument(
            f"image is {h}x{w}; each side must be in {min_size}..{max_size}", field="pixels"
        )
    return arr


def validate_image_batch(
    images: np.ndarray, *, min_size: int = MIN_IMAGE_SIZE, max_size: int = MAX_IMAGE_SIZE
) -> np.ndarray:
    """Check a batch: uint8 (B, H, W) or (B, H, W, 1|3); returns (B, H, W) or (B, H, W, 3)."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise InvalidArgument(f"images dtype is {arr.dtype}; send uint8 pixels", field="images")
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] != 3):
        raise InvalidArgument(
            f"images shape {arr.shape} must be (B, H, W) or (B, H, W, 1|3)", field="images"
        )
    h, w = arr.shape[1:3]
    if min(h, w) < min_size or max(h, w) > max_size:
        raise InvalidArgument(
            f"images are {h}x{w}; each side must be in {min_size}..{max_size}", field="images"
        )
    return arr


def to_image_array(item: ImageInput) -> np.ndarray:
    """Encoded bytes or a raw array -> validated uint8 (H, W) or (H, W, 3)."""
    if isinstance(item, bytes | bytearray | memoryview):
        return decode_image(item)
    if isinstance(item, np.ndarray):
        return validate_image_array(item)
    raise InvalidArgument(
        f"image must be encoded bytes or a uint8 array, got {type(item).__name__}"
    )
