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
    apply_malloc_settings,
    check_allocator,
    check_mmap_threshold,
    find_jemalloc,
    launch_env,
    loaded_allocator,
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
        env={
            k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"
        },
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


# --- jemalloc (ACTIVEKD_MALLOC) ---------------------------------------------------------------
_WHICH = (
    "import json; from activekd.server.allocator import loaded_allocator; "
    "print(json.dumps(loaded_allocator()))"
)


def _which(env: dict[str, str]) -> str:
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    out = subprocess.run(
        [sys.executable, "-c", _WHICH], capture_output=True, text=True, check=True,
        env={**base, **env},
    )  # fmt: skip
    return str(json.loads(out.stdout))


def test_allocator_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServerConfig.load("selection", []).malloc == "jemalloc"
    monkeypatch.setenv("ACTIVEKD_MALLOC", "glibc")
    assert ServerConfig.load("teacher", []).malloc == "glibc"
    assert check_allocator("glibc") == "glibc"
    with pytest.raises(SystemExit, match="ACTIVEKD_MALLOC='tcmalloc' must be one of jemalloc"):
        check_allocator("tcmalloc")


def test_launch_env_preloads_only_when_asked_and_installed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = find_jemalloc()
    assert path is not None, "libjemalloc2 is a system dependency (scripts/setup.sh)"
    assert launch_env({}) == {"LD_PRELOAD": path}
    assert launch_env({"ACTIVEKD_MALLOC": "jemalloc", "LD_PRELOAD": "/x/libfoo.so"}) == {
        "LD_PRELOAD": f"{path} /x/libfoo.so"
    }
    assert launch_env({"ACTIVEKD_MALLOC": "glibc"}) == {}
    assert launch_env({"LD_PRELOAD": path}) == {}  # already there: not twice
    assert find_jemalloc((str(tmp_path / "none.so"),)) is None


def test_loaded_allocator_sees_what_the_process_runs_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert _which(launch_env({})) == "jemalloc"  # a really preloaded jemalloc
    assert _which({}) == ("glibc" if GLIBC else "system")
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert loaded_allocator(maps) == "jemalloc"
    assert loaded_allocator(tmp_path / "missing") == ("glibc" if GLIBC else "system")


def test_mismatch_is_logged_and_glibc_keeps_its_threshold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="activekd.server")
    active = apply_malloc_settings(0, "jemalloc")  # this test process: no preload
    assert active == ("glibc" if GLIBC else "system")
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "ACTIVEKD_MALLOC=jemalloc but the process runs on" in warned[0].msg
    assert "LD_PRELOAD=" in warned[0].msg
    caplog.clear()
    assert apply_malloc_settings(0, "glibc") == active
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
