"""The numba kernels of the int8 greedy screen (:mod:`activekd.selection._int8_screen` has the
bound and its proof). Imported only when numba is installed; compiled once per checkout
(``cache=True``, numba's cache next to this file or in its user cache).

Two LLVM intrinsics keep the dot product fast: numba types ``int32 * int32`` as int64, which
turns a row's dot product into 4-lane int64 arithmetic; ``_madd_i32`` keeps it in int32 so LLVM
emits ``pmaddwd`` (16 int8 products a cycle). ``_prefetch`` asks for a row a few candidates
ahead: candidate rows are scattered, so the hardware prefetcher cannot guess the next one, and
one row at a time would wait on memory latency.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

#: Relative bound on the float64 rounding of s^2|q|^2 + t^2|r|^2 - 2 s t (q . r): each term carries
#: at most ~3 ulps (2.2e-16 each), the sum two more; 1e-15 of the terms' magnitude covers them.
FORM_SLACK = 1e-15
#: Inflation of every float64 norm and bound (sqrt and sum rounding, ~D ulps at most).
NORM_SLACK = 1e-9
#: Rows (and centres) whose max |x| is outside [TINY, HUGE] get an infinite error bound, so the
#: screen keeps them: below TINY, float64 squares of their scale underflow (s^2 < 1e-300); above
#: HUGE they overflow. float32 pools never reach TINY except for all-zero-ish rows of subnormals.
TINY = 1e-140
HUGE = 1e140
#: Rows prefetched ahead of the one being screened (measured: 4 ~ 8 > 2 > 1 on 1000-byte rows).
PREFETCH_AHEAD = 4


@intrinsic
def _madd_i32(typingctx: Any, acc: Any, a: Any, b: Any) -> Any:
    """``acc + int32(a) * int32(b)`` for int8 ``a``, ``b``, in int32 (exact: |a b| <= 127^2 and
    the caller bounds the row width)."""
    sig = types.int32(types.int32, types.int8, types.int8)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        prod = builder.mul(builder.sext(args[1], i32), builder.sext(args[2], i32))
        return builder.add(args[0], prod)

    return sig, codegen


@intrinsic
def _prefetch(typingctx: Any, arr: Any, row: Any, col: Any) -> Any:
    """A read prefetch of ``arr[row, col]``'s cache line (locality 0: the row is read once)."""
    sig = types.void(arr, row, col)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(
            context, builder, aryty, ary, [args[1], args[2]], wraparound=False
        )
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(
            fn,
            [
                builder.bitcast(ptr, i8p),
                ir.Constant(i32, 0),
                ir.Constant(i32, 0),
                ir.Constant(i32, 1),
            ],
        )
        return context.get_dummy_value()

    return sig, codegen


#: The intrinsics as numba calls them (mypy sees their typing-context argument otherwise).
madd_i32: Any = _madd_i32
prefetch: Any = _prefetch


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def quantize(
    block: np.ndarray, q: np.ndarray, scale: np.ndarray, qnorm: np.ndarray, err: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Rows of ``block`` into ``q`` (int8), their scales, |q|^2 and bounds on ||x - s q||.

    The error is summed in units of the scale (e' = x * inv - r, |e'| <= 0.5 + rounding), so it
    cannot underflow, then multiplied by ``s``: ||x - s r|| = s ||x / s - r|| and
    |x / s - fl(x * inv)| <= 127.5 * 3 eps per value (inv = 127 / amax rounded, the product
    rounded). The float sums may be reordered: the bound holds for any order. All-zero rows are
    exact (err 0); rows with max |x| outside [TINY, HUGE] (or not finite) get err = inf."""
    n, d = block.shape
    for i in range(n):
        amax = 0.0
        for j in range(d):
            amax = max(amax, abs(float(block[i, j])))
        if not (amax == 0.0 or TINY <= amax <= HUGE):
            for j in range(d):
                q[i, j] = 0
            scale[i] = 0.0
            qnorm[i] = 0
            err[i] = np.inf
            continue
        s = amax / 127.0
        inv = 127.0 / amax if amax > 0.0 else 0.0
        acc_q = 0.0  # a sum of integers < 2^53: exact in any order
        acc_e = 0.0
        for j in range(d):
            y = float(block[i, j]) * inv
            r = min(max(math.floor(y + 0.5), -127.0), 127.0)
            q[i, j] = np.int8(r)
            acc_q += r * r
            e = y - r
            acc_e += e * e
        scale[i] = s
        qnorm[i] = np.int64(acc_q)
        scaled = math.sqrt(acc_e) * (1.0 + NORM_SLACK) + math.sqrt(d) * 127.5 * 4.0 * 2.0**-52
        err[i] = s * scaled * (1.0 + NORM_SLACK)


@numba.njit(nogil=True, cache=True)
def _keeps(
    dot: Any,
    s: float,
    qn: int,
    e: float,
    tc: float,
    c2: float,
    ec: float,
    mind: float,
    slack: float,
    floor: float,
) -> bool:  # pragma: no cover - compiled
    """Whether a row (scale ``s``, |q|^2 ``qn``, error bound ``e``) at integer dot ``dot`` with
    the centre (scale ``tc``, |c^|^2 ``c2``, error bound ``ec``) may come closer than ``mind``."""
    x2 = s * s * float(qn)
    cross = 2.0 * s * tc * float(dot)
    dq2 = x2 + c2 - cross
    dq2 -= FORM_SLACK * (x2 + c2 + abs(cross))
    lb = math.sqrt(dq2) * (1.0 - NORM_SLACK) if dq2 > 0.0 else 0.0
    lb -= e + ec
    if lb <= 0.0:
        return True
    return lb * lb * (1.0 - NORM_SLACK) < mind * slack + floor


@numba.njit(nogil=True, cache=True, boundscheck=False)
def screen(
    q: np.ndarray,
    pos: np.ndarray,
    a: int,
    b: int,
    qc: np.ndarray,
    tc: float,
    rnc: float,
    ec: float,
    scale: np.ndarray,
    qnorm: np.ndarray,
    err: np.ndarray,
    mind: np.ndarray,
    slack: float,
    floor: float,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``out[t]`` for ``t`` in ``a:b``: may row ``pos[t]`` come closer than ``mind[pos[t]]``
    (float64 bound, no fast-math)."""
    d = q.shape[1]
    c2 = tc * tc * rnc
    for t in range(a, min(b, a + PREFETCH_AHEAD)):
        for off in range(0, d, 64):
            prefetch(q, pos[t], off)
    for t in range(a, b):
        if t + PREFETCH_AHEAD < b:
            nxt = pos[t + PREFETCH_AHEAD]
            for off in range(0, d, 64):
                prefetch(q, nxt, off)
        i = pos[t]
        row = q[i]
        dot = np.int32(0)
        for j in range(d):
            dot = madd_i32(dot, row[j], qc[j])
        out[t] = _keeps(dot, scale[i], qnorm[i], err[i], tc, c2, ec, float(mind[i]), slack, floor)


__all__ = ["FORM_SLACK", "HUGE", "NORM_SLACK", "TINY", "quantize", "screen"]
