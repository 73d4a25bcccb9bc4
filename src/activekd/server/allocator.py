"""glibc malloc setting applied by every service at start (``ACTIVEKD_MALLOC_MMAP_THRESHOLD``).

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
import platform
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


def apply_malloc_settings(mmap_threshold: int) -> bool | None:
    """:func:`set_mmap_threshold` and log the outcome (INFO when set, WARNING when refused)."""
    applied = set_mmap_threshold(mmap_threshold)
    if applied:
        log.info("malloc mmap threshold fixed", extra={"malloc_mmap_threshold": mmap_threshold})
    elif applied is False:
        log.warning("mallopt refused the mmap threshold", extra={"value": mmap_threshold})
    else:
        log.info("malloc settings left at their defaults", extra={"malloc_mmap_threshold": 0})
    return applied


__all__ = [
    "DEFAULT_MMAP_THRESHOLD",
    "MAX_MMAP_THRESHOLD",
    "SERVICE_DEFAULTS",
    "SMALLEST_MMAP_THRESHOLD",
    "apply_malloc_settings",
    "check_mmap_threshold",
    "set_mmap_threshold",
]
