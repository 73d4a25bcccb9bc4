"""Image decoding and raw-tensor validation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from activekd.errors import InvalidArgument, ResourceExhausted
from activekd.teacher import decode_image, validate_image_array, validate_image_batch


def _encode(arr: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_decodes_gray_rgb_rgba_palette_and_16bit() -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(_encode(gray)), gray)
    np.testing.assert_array_equal(decode_image(_encode(rgb)), rgb)
    rgba = decode_image(_encode(rgb, mode="RGBA"))
    assert rgba.shape == (20, 30, 3)
    assert decode_image(_encode(rgb, mode="P")).shape == (20, 30, 3)
    jpeg = decode_image(_encode(rgb, "JPEG"))
    assert jpeg.shape == (20, 30, 3) and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - rgb).mean() < 80  # lossy, but the same picture size
    deep = Image.fromarray(gray.astype(np.uint16) * 257)
    buf = io.BytesIO()
    deep.save(buf, format="PNG")
    d = decode_image(buf.getvalue())
    assert d.shape == (20, 30) and d.dtype == np.uint8 and d.max() == 255


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"hello, world", "could not decode"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "could not decode"),
    ],
)
def test_undecodable_bytes_raise_invalid_argument(data: bytes, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        decode_image(data)


def test_truncated_png_and_size_limits() -> None:
    png = _encode(np.zeros((64, 64), np.uint8) + np.arange(64, dtype=np.uint8))
    with pytest.raises(InvalidArgument, match=r"could not decode|truncated"):
        decode_image(png[: len(png) // 2])
    with pytest.raises(InvalidArgument, match="<= 32"):
        decode_image(png, max_size=32)
    with pytest.raises(InvalidArgument, match=r"8\.\.4096"):
        decode_image(_encode(np.zeros((4, 4), np.uint8)))


def test_decompression_bombs_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ResourceExhausted):
        decode_image(_encode(np.zeros((100, 100), np.uint8)))


def test_raw_arrays_are_validated() -> None:
    assert validate_image_array(np.zeros((9, 9, 1), np.uint8)).shape == (9, 9)
    assert validate_image_array(np.zeros((9, 12, 3), np.uint8)).shape == (9, 12, 3)
    for bad, match in [
        (np.zeros((9, 9), np.float32), "uint8"),
        (np.zeros((9, 9, 4), np.uint8), "channels"),
        (np.zeros((9,), np.uint8), "channels"),
        (np.zeros((7, 9), np.uint8), "8..4096"),
        (np.zeros((9, 5000), np.uint8), "8..4096"),
    ]:
        with pytest.raises(InvalidArgument, match=match):
            validate_image_array(bad)
    assert validate_image_batch(np.zeros((2, 9, 9, 1), np.uint8)).shape == (2, 9, 9)
    with pytest.raises(InvalidArgument, match=r"\(B, H, W\)"):
        validate_image_batch(np.zeros((9, 9), np.uint8))
    with pytest.raises(InvalidArgument, match="uint8"):
        validate_image_batch(np.zeros((1, 9, 9), np.int16))
