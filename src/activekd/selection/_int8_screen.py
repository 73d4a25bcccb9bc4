"""An int8 screen for the greedy phase of k-center: which candidate rows may get closer to a new
centre, from a quarter of the bytes, with a proven bound (no pick ever changes).

Each eligible row x (transformed, compute dtype) is stored once as ``q`` (int8, D) with a per-row
scale ``s`` = max|x| / 127, so x^ = s q; ``err`` >= ||x - x^|| is measured per row when the copy is
built. A new centre c gets the same (c^ = t r, ``ec`` >= ||c - c^||). Then, exactly:

* ``q . r`` is an integer sum (int32; |q|, |r| <= 127 so D < 133,000 cannot overflow), and
  ||x^ - c^||^2 = s^2 |q|^2 + t^2 |r|^2 - 2 s t (q . r) is formed in float64 with its rounding
  error bounded by 1e-15 (s^2|q|^2 + t^2|r|^2 + 2 s t |q . r|) and subtracted;
* ||x - c|| >= ||x^ - c^|| - err - ec (triangle inequality), so LB^2 <= d(x, c)^2.

The exact kernel's float32 (float64) distance, a sum of D squared differences, is at least
(1 - (D + 2) eps) d^2 - 2 D tiny: the relative term is the rounding of normal numbers, the
absolute one covers squares and sums that underflow (``tiny`` the smallest normal number, which
also covers flush-to-zero). So a row is skipped only when
``LB^2 >= mind * (1 + margin) + 4 D tiny`` with ``margin`` >= 4 D eps (the engine's pruning
margin, floored there even when a caller overrides it): its computed distance cannot fall below
its current ``mind``. The rows left are measured exactly as before, so picks and scores are those
of the unscreened engine, bit for bit. The error bound of a row is summed in units of its scale,
so it cannot underflow; rows (and centres) whose max |x| lies outside [1e-140, 1e140] get an
infinite bound (always measured), since squares of their scales would leave float64's range.

On the benchmark pools (100k x 1000 probabilities) fewer than 1 % of the rows the triangle
inequality leaves survive the screen, so a pick reads ~1 byte per value instead of 4.

The kernels are numba functions (``activekd[selection]`` brings numba); without numba the engine
runs unscreened. They release the GIL and run on the exact kernel's threads.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from activekd.selection._distance import rounding_floor, rounding_margin

#: Set to True/False to force the int8 greedy screen on or off (None: the rule of
#: :func:`use_int8_screen`).
GREEDY_INT8: bool | None = None
#: The int8 copy lives in RAM (D + 24 bytes a row): above this size the engine runs unscreened.
INT8_MAX_COPY_BYTES = 4 << 30
#: Below this width a row's exact distance costs little next to the per-row bookkeeping (and the
#: int8 copy, D bytes a row, would be a larger share of memory than it saves in reads).
INT8_MIN_DIM = 256
#: int32 dot products of values in [-127, 127] stay exact below this width.
INT8_MAX_DIM = (2**31 - 1) // (127 * 127)


@functools.cache
def _numba() -> Any | None:
    try:
        import numba
    except ImportError:
        return None
    return numba


def available() -> bool:
    """Whether the int8 kernels can run (numba imports)."""
    return _numba() is not None


def copy_bytes(rows: int, d: int) -> int:
    """RAM the int8 copy of ``rows`` rows of width ``d`` takes (values, scale, |q|^2, error)."""
    return rows * (d + 24)


def use_int8_screen(rows: int, d: int, *, on_cpu: bool, mapped: bool) -> bool:
    """Whether the greedy phase screens in int8: ``GREEDY_INT8`` if set (forcing it on without
    numba raises), else numba present, a CPU kernel, INT8_MIN_DIM <= D <= INT8_MAX_DIM, a pool in
    RAM (``mapped``: an ``np.memmap`` is kept out of RAM on purpose) and a copy of at most
    ``INT8_MAX_COPY_BYTES``."""
    if GREEDY_INT8 is not None:
        if GREEDY_INT8 and not available():
            raise RuntimeError(
                "the int8 greedy screen needs numba: pip install 'activekd[selection]'"
            )
        return GREEDY_INT8 and d <= INT8_MAX_DIM
    return (
        on_cpu
        and not mapped
        and INT8_MIN_DIM <= d <= INT8_MAX_DIM
        and copy_bytes(rows, d) <= INT8_MAX_COPY_BYTES
        and available()
    )


@functools.cache
def _kernels() -> tuple[Callable[..., None], Callable[..., None]]:
    """The compiled (quantize, screen) pair (:mod:`activekd.selection._int8_kernels`)."""
    from activekd.selection import _int8_kernels

    return _int8_kernels.quantize, _int8_kernels.screen


def warm_up() -> float:
    """Loads (or compiles, once per checkout) the kernels on a tiny input, so the first wide
    selection does not pay it; returns the seconds it took (0.0 without numba)."""
    if not available():
        return 0.0
    t0 = time.perf_counter()
    x = np.linspace(-1.0, 1.0, 2 * INT8_MIN_DIM, dtype=np.float32).reshape(2, INT8_MIN_DIM)
    screen = Int8Screen(
        lambda a, b: x[a:b], 2, INT8_MIN_DIM, x.dtype, 1e-3, lambda fn, n: fn(0, n), 2
    )
    screen.maybe_closer(x[0], np.arange(2), np.ones(2, dtype=np.float32))
    return time.perf_counter() - t0


class Int8Screen:
    """The int8 copy of one shard's eligible rows (by position) and the screen of a new centre.

    ``run_split(fn, n)`` runs ``fn(a, b)`` over a split of ``range(n)`` (the exact kernel's
    threads); the kernels release the GIL.
    """

    def __init__(
        self,
        rows: Callable[[int, int], np.ndarray],
        m_rows: int,
        d: int,
        dtype: np.dtype,
        margin: float,
        run_split: Callable[[Callable[[int, int], None], int], None],
        block_rows: int,
    ) -> None:
        quantize, self._screen = _kernels()
        self.d, self.run_split = d, run_split
        #: the relative and absolute slack of the test (module docstring), in float64
        self.slack = 1.0 + max(float(margin), rounding_margin(d, dtype))
        self.floor = rounding_floor(d, dtype)
        self.q = np.empty((m_rows, d), dtype=np.int8)
        self.scale = np.empty(m_rows, dtype=np.float64)
        self.qnorm = np.empty(m_rows, dtype=np.int64)
        self.err = np.empty(m_rows, dtype=np.float64)
        self._quantize = quantize
        for a in range(0, m_rows, block_rows):
            block = np.ascontiguousarray(rows(a, min(m_rows, a + block_rows)))

            def part(u: int, v: int, a: int = a, block: np.ndarray = block) -> None:
                at = slice(a + u, a + v)
                quantize(block[u:v], self.q[at], self.scale[at], self.qnorm[at], self.err[at])

            run_split(part, len(block))

    @property
    def nbytes(self) -> int:
        """Memory held by the copy."""
        return self.q.nbytes + self.scale.nbytes + self.qnorm.nbytes + self.err.nbytes

    def maybe_closer(self, centre: np.ndarray, cand: np.ndarray, mind: np.ndarray) -> np.ndarray:
        """Mask over ``cand`` (positions) of the rows whose distance to ``centre`` may fall below
        ``mind`` (indexed by position); the others provably do not."""
        qc = np.empty((1, self.d), dtype=np.int8)
        tc, rnc, ec = np.empty(1), np.empty(1, dtype=np.int64), np.empty(1)
        self._quantize(np.ascontiguousarray(centre[None, :]), qc, tc, rnc, ec)
        pos = np.ascontiguousarray(cand, dtype=np.int64)
        out = np.empty(len(pos), dtype=np.bool_)
        args = (qc[0], float(tc[0]), float(rnc[0]), float(ec[0]), self.scale, self.qnorm, self.err)

        def run(a: int, b: int) -> None:
            self._screen(self.q, pos, a, b, *args, mind, self.slack, self.floor, out)

        if len(pos):
            self.run_split(run, len(pos))
        return out


__all__ = [
    "GREEDY_INT8",
    "INT8_MAX_COPY_BYTES",
    "INT8_MIN_DIM",
    "Int8Screen",
    "available",
    "copy_bytes",
    "use_int8_screen",
    "warm_up",
]
