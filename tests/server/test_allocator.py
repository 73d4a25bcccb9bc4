"""The glibc mmap-threshold setting every service applies at start (server/allocator.py)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from activekd.server.allocator import (
    DEFAULT_MMAP_THRESHOLD,
    MAX_MMAP_THRESHOLD,
    SMALLEST_MMAP_THRESHOLD,
    check_mmap_threshold,
)
from activekd.server.config import ServerConfig

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Run in a fresh interpreter: free one 16 MiB block (which, under glibc's dynamic default,
# lifts the mmap threshold to 16 MiB), then allocate 1 MiB blocks and count, with mallinfo2,
# how many of them glibc served by mmap.
_PROBE = r"""
import ctypes, json, sys
import numpy as np
from activekd.server.allocator import set_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = set_mmap_threshold(int(sys.argv[1]))
big = np.ones(16 << 20, dtype=np.uint8)
del big
before = libc.mallinfo2().hblks
keep = [np.ones(1 << 20, dtype=np.uint8) for _ in range(8)]
print(json.dumps({"applied": applied, "mmapped": libc.mallinfo2().hblks - before}))
"""


def _probe(threshold: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(threshold)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
    )
    return json.loads(out.stdout)


def test_threshold_bounds_are_checked() -> None:
    assert check_mmap_threshold(0) == 0
    assert check_mmap_threshold(MAX_MMAP_THRESHOLD) == MAX_MMAP_THRESHOLD
    for bad in (-1, MAX_MMAP_THRESHOLD + 1):
        with pytest.raises(SystemExit, match="ACTIVEKD_MALLOC_MMAP_THRESHOLD"):
            check_mmap_threshold(bad)


def test_config_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServerConfig.load("selection", []).malloc_mmap_threshold == DEFAULT_MMAP_THRESHOLD
    assert DEFAULT_MMAP_THRESHOLD == 128 << 10
    for service in ("teacher", "trainer", "experiment"):  # glibc's faster dynamic default
        assert ServerConfig.load(service, []).malloc_mmap_threshold == 0
    monkeypatch.setenv("ACTIVEKD_MALLOC_MMAP_THRESHOLD", "0")
    assert ServerConfig.load("selection", []).malloc_mmap_threshold == 0


@pytest.mark.skipif(not GLIBC, reason="mallopt(M_MMAP_THRESHOLD) is a glibc setting")
def test_fixed_threshold_keeps_big_temporaries_on_mmap() -> None:
    dynamic = _probe(0)
    fixed = _probe(SMALLEST_MMAP_THRESHOLD)
    # glibc's dynamic default: after one 16 MiB free, 1 MiB blocks come from the heap
    assert dynamic == {"applied": None, "mmapped": 0}
    # fixed threshold: each 1 MiB block gets its own mmap, returned to the OS on free
    assert fixed == {"applied": True, "mmapped": 8}


def test_service_refuses_a_bad_threshold_before_loading_anything() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "activekd_services.selection", "--grpc-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ACTIVEKD_MALLOC_MMAP_THRESHOLD": str(MAX_MMAP_THRESHOLD + 1)},
    )
    assert out.returncode != 0
    assert "ACTIVEKD_MALLOC_MMAP_THRESHOLD" in out.stderr and "must be 0" in out.stderr
