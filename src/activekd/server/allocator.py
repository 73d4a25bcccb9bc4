"""The memory allocator of the services: jemalloc when preloaded, else a fixed glibc setting.

``ACTIVEKD_MALLOC`` names the allocator a service should run with: ``jemalloc`` (default) or
``glibc``. jemalloc cannot be switched on from inside a running Python process: the launcher
preloads it (``LD_PRELOAD``): the container image does (Dockerfile), and so does the local stack
(:func:`launch_env`, used by ``orchestration.local_services``). At start the bootstrap logs which
allocator the process really has (:func:`loaded_allocator`) and warns on a mismatch. Measured in
the soak (docs/reliability.md, "Load and soak"): with jemalloc the selection service runs at
glibc's full speed without glibc's fragmentation, and the teacher's RSS stays flat.

Without jemalloc (``ACTIVEKD_MALLOC=glibc``, or the library missing), the glibc setting below
applies (``ACTIVEKD_MALLOC_MMAP_THRESHOLD``).

glibc serves allocations of at least the mmap threshold (128 KiB at start) with their own
``mmap``, returned to the OS on ``free``. By default the threshold is dynamic: freeing an mmapped
block raises it to that block's size (up to 32 MiB). One 16 MiB selection temporary (the
k-center seeding block of a 100000 x 100 pool) lifts it to 16 MiB, after which every
temporary below that size comes from the per-thread malloc arenas. Under concurrent selections
those arenas fragment and keep growing: +0.3-0.4 MiB per SelectBatch in the soak repro, which
``malloc_trim`` does not give back. Setting the threshold explicitly (``mallopt(M_MMAP_THRESHOLD)``)
turns the dynamic adjustment off, so large temporaries keep going back to the OS.
See docs/reliability.md ("Load and soak").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("activekd.server")

#: ``mallopt`` parameter number of M_MMAP_THRESHOLD (glibc ``malloc.h``)
M_MMAP_THRESHOLD = -3
#: glibc ignores thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)
MAX_MMAP_THRESHOLD = 32 << 20
#: glibc's own initial threshold (128 KiB), made fixed: flat memory, but every temporary above
#: it is a fresh mmap (+47 % per 100k x 100 pcoreset call, +80 % per teacher image, measured)
SMALLEST_MMAP_THRESHOLD = 128 << 10
#: per-service defaults (0 = glibc's dynamic threshold). Only the selection service grew in the
#: soak; it gets the fixed 128 KiB (a 4 MiB threshold was faster but still grew +6-8 MiB/min);
#: the teacher and trainer keep glibc's faster default (the teacher's RSS plateaus with it).
#: docs/reliability.md, "Load and soak".
SERVICE_DEFAULTS: dict[str, int] = {"selection": SMALLEST_MMAP_THRESHOLD}
DEFAULT_MMAP_THRESHOLD = SERVICE_DEFAULTS["selection"]


#: values of ``ACTIVEKD_MALLOC``
ALLOCATORS: tuple[str, ...] = ("jemalloc", "glibc")
DEFAULT_ALLOCATOR = "jemalloc"
#: where jemalloc 5 lives: the image's stable link first (Dockerfile), then Debian/Ubuntu
#: multiarch, Fedora/RHEL and plain paths
JEMALLOC_PATHS: tuple[str, ...] = (
    "/usr/local/lib/libjemalloc.so.2",
    f"/usr/lib/{platform.machine()}-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
)


def check_allocator(name: str) -> str:
    """``name`` must be one of :data:`ALLOCATORS`; SystemExit naming the setting otherwise."""
    if name not in ALLOCATORS:
        raise SystemExit(f"ACTIVEKD_MALLOC={name!r} must be one of {', '.join(ALLOCATORS)}")
    return name


def find_jemalloc(paths: tuple[str, ...] = JEMALLOC_PATHS) -> str | None:
    """Path of the jemalloc shared library on this host, None when it is not installed."""
    return next((p for p in paths if os.path.isfile(p)), None)


def loaded_allocator(maps: str | Path = "/proc/self/maps") -> str:
    """The allocator this process really has: 'jemalloc' when libjemalloc is mapped, else
    'glibc' on glibc Linux, else 'system'."""
    try:
        text = Path(maps).read_text()
    except OSError:
        text = ""
    if "libjemalloc" in text:
        return "jemalloc"
    return "glibc" if _libc() is not None else "system"


def launch_env(env: Mapping[str, str]) -> dict[str, str]:
    """Variables to add to ``env`` when starting a service process: ``LD_PRELOAD`` with jemalloc
    in front when ``env``'s ``ACTIVEKD_MALLOC`` is jemalloc (the default) and the library is
    installed; nothing otherwise (also when it is preloaded already)."""
    if env.get("ACTIVEKD_MALLOC", DEFAULT_ALLOCATOR) != "jemalloc":
        return {}
    path = find_jemalloc()
    preload = env.get("LD_PRELOAD", "")
    if path is None or "libjemalloc" in preload:
        return {}
    return {"LD_PRELOAD": f"{path} {preload}".strip()}


def _libc() -> Any | None:
    """The C library when it is glibc and has ``mallopt``, else None (musl, macOS)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def check_mmap_threshold(nbytes: int) -> int:
    """``nbytes`` must be 0 (leave glibc's dynamic default) or 1..32 MiB; SystemExit otherwise."""
    if not 0 <= nbytes <= MAX_MMAP_THRESHOLD:
        raise SystemExit(
            f"ACTIVEKD_MALLOC_MMAP_THRESHOLD={nbytes} must be 0 (glibc default) or "
            f"1..{MAX_MMAP_THRESHOLD} bytes"
        )
    return nbytes


def set_mmap_threshold(nbytes: int) -> bool | None:
    """Fix glibc's mmap threshold at ``nbytes`` (0: change nothing). Returns True when glibc
    accepted it, False when it refused, None when nothing was done (0, or not glibc)."""
    check_mmap_threshold(nbytes)
    if nbytes == 0:
        return None
    libc = _libc()
    if libc is None:
        return None
    return bool(libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(nbytes)))


def apply_malloc_settings(mmap_threshold: int, allocator: str = DEFAULT_ALLOCATOR) -> str:
    """Log the allocator in use (WARNING when it is not the one ``allocator`` asks for) and,
    under glibc, apply :func:`set_mmap_threshold`. Returns the allocator in use."""
    check_allocator(allocator)
    active = loaded_allocator()
    if active != allocator:
        hint = (
            f"start it with LD_PRELOAD={find_jemalloc()} (the container image and the local "
            "stack do)"
            if allocator == "jemalloc" and find_jemalloc()
            else "install libjemalloc2"
            if allocator == "jemalloc"
            else "unset LD_PRELOAD"
        )
        log.warning(
            f"ACTIVEKD_MALLOC={allocator} but the process runs on {active}: {hint}",
            extra={"malloc": active, "malloc_wanted": allocator},
        )
    if active == "jemalloc":
        log.info("allocator: jemalloc", extra={"malloc": active})
        return active
    applied = set_mmap_threshold(mmap_threshold)
    if applied:
        log.info("malloc mmap threshold fixed", extra={"malloc_mmap_threshold": mmap_threshold})
    elif applied is False:
        log.warning("mallopt refused the mmap threshold", extra={"value": mmap_threshold})
    else:
        log.info("malloc settings left at their defaults", extra={"malloc_mmap_threshold": 0})
    return active


__all__ = [
    "ALLOCATORS",
    "DEFAULT_ALLOCATOR",
    "DEFAULT_MMAP_THRESHOLD",
    "JEMALLOC_PATHS",
    "MAX_MMAP_THRESHOLD",
    "SERVICE_DEFAULTS",
    "SMALLEST_MMAP_THRESHOLD",
    "apply_malloc_settings",
    "check_allocator",
    "check_mmap_threshold",
    "find_jemalloc",
    "launch_env",
    "loaded_allocator",
    "set_mmap_threshold",
]
