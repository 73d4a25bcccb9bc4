"""Pool access and squared-L2 distance kernels used by the k-center engine.

A :class:`PoolView` hands out rows of an (N, D) pool in the compute dtype (float64 for float64
input, float32 otherwise), optionally L2-normalised, a chunk at a time: the input (ndarray or
``np.memmap``, float16/32/64) is never converted as a whole.

Kernels compute squared distances from one centre vector to a set of pool rows:

* ``faiss`` (float32): ``faiss.fvec_L2sqr_by_idx`` straight on the pool when it is a C-contiguous
  float32 array (memmaps included: no copy, only the candidate rows are touched), else on
  gathered float32 chunks (a row's distance never depends on the rows batched with it).
* ``numpy`` (float64 or float32): gathered chunks, ``einsum`` of the difference.
* ``torch`` (CPU or CUDA): the pool as a tensor on the device, ``index_select`` + reduction.

All kernels compute ``sum((row - centre) ** 2)`` directly (no ``|a|^2 + |b|^2 - 2ab`` shortcut),
so the relative error stays ~D*eps even for tiny distances; pruning relies on this. Nearest-centre
assignment for many initial centres uses a blocked GEMM (on rows centred at the centres' mean) to
find the nearest centre and then recomputes the distance to it directly; on CPUs with native
bfloat16 the GEMM is a bf16 screen with a proven error bound followed by exact distances to every
centre the bound cannot rule out (:class:`_Bf16Screen`).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from activekd.arrays import widen

DEFAULT_CHUNK_BYTES = 16 << 20


def rounding_margin(d: int, dtype: np.dtype) -> float:
    """Relative rounding of a D-term float sum of squares in ``dtype``, with room to spare
    (4 D eps): the floor of every relative safety margin the k-center engine tests with."""
    return 4.0 * d * float(np.finfo(dtype).eps)


def rounding_floor(d: int, dtype: np.dtype) -> float:
    """Absolute rounding of a D-term float sum of squares in ``dtype`` where it underflows
    (4 D tiny, ``tiny`` the smallest normal number): the absolute term every pruning or
    screening test of the k-center engine adds to its relative margin."""
    return 4.0 * d * float(np.finfo(dtype).tiny)


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float64 input computes in float64; float16/float32 compute in float32."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


class PoolView:
    """Rows of an (N, D) pool in the compute dtype, chunked, optionally L2-normalised."""

    def __init__(self, x: np.ndarray, *, normalize: bool, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.x = x
        self.n, self.d = int(x.shape[0]), int(x.shape[1])
        self.cd = compute_dtype(x.dtype)
        self.normalize = normalize
        if x.dtype == np.float16:
            _load_torch()  # arrays.widen casts float16 with torch once it is loaded
        self.chunk_rows = max(64, chunk_bytes // max(1, self.d * self.cd.itemsize))
        self.inv_norm: np.ndarray | None = None
        if normalize:
            inv = np.empty(self.n, dtype=self.cd)
            for a in range(0, self.n, self.chunk_rows):
                b = min(self.n, a + self.chunk_rows)
                block = np.asarray(x[a:b], dtype=self.cd)
                norms = np.sqrt(np.einsum("ij,ij->i", block, block))
                with np.errstate(divide="ignore"):
                    inv[a:b] = np.where(norms > 0, 1.0 / norms, 0.0)
            self.inv_norm = inv

    @property
    def direct_float32(self) -> bool:
        """True when faiss can read the pool in place (float32, C-contiguous, untransformed)."""
        return (
            self.x.dtype == np.float32
            and not self.normalize
            and bool(self.x.flags.c_contiguous)
            and isinstance(self.x, np.ndarray)
        )

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` as a fresh (len(ids), D) array in the compute dtype (transformed)."""
        block = widen(self.x[ids], self.cd, owned=True)  # fancy indexing copies
        if self.inv_norm is not None:
            block *= self.inv_norm[ids, None]
        return block

    def slice(self, a: int, b: int) -> np.ndarray:
        """Rows ``a:b`` as a fresh (b - a, D) array in the compute dtype (transformed): what
        ``gather(arange(a, b))`` gives, read as one slice of the (possibly mapped) file."""
        block = widen(self.x[a:b], self.cd)
        if self.inv_norm is not None:
            block *= self.inv_norm[a:b, None]
        return block

    def row(self, i: int) -> np.ndarray:
        """One transformed row as a contiguous compute-dtype vector."""
        return self.gather(np.array([i], dtype=np.int64))[0]

    def chunks(self, ids: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(offset, ids[offset:offset+chunk]) pieces of ``ids``."""
        step = self.chunk_rows
        return [(a, ids[a : a + step]) for a in range(0, len(ids), step)]

    def chunk_sums(self) -> np.ndarray:
        """float64 sums of the (transformed) rows, one per chunk of ``chunk_rows`` rows, (K, D)."""
        out = np.zeros((-(-self.n // self.chunk_rows), self.d), dtype=np.float64)
        for i, a in enumerate(range(0, self.n, self.chunk_rows)):
            b = min(self.n, a + self.chunk_rows)
            out[i] = self.gather(np.arange(a, b, dtype=np.int64)).sum(axis=0, dtype=np.float64)
        return out

    def mean(self) -> np.ndarray:
        """Mean of all (transformed) rows: :meth:`chunk_sums` added in order (float64), in the
        compute dtype. Sharded k-center adds its shards' chunk sums the same way."""
        return mean_of_chunk_sums(self.chunk_sums(), self.n, self.cd)


def _load_torch() -> None:
    with contextlib.suppress(ImportError):  # the selection extra brings torch; else numpy casts
        import torch  # noqa: F401


def mean_of_chunk_sums(sums: np.ndarray, n: int, cd: np.dtype) -> np.ndarray:
    """The pool mean from its per-chunk float64 sums, added in chunk order."""
    acc = np.zeros(sums.shape[1], dtype=np.float64)
    for part in sums:
        acc += part
    return (acc / n).astype(cd)


class Kernel(Protocol):
    """Squared-distance kernel over a :class:`PoolView`."""

    name: str
    device: str

    def sqdist(self, centre: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Squared L2 distance from ``centre`` (compute dtype, (D,)) to pool rows ``ids``."""
        ...

    def close(self) -> None:
        """Releases helper threads (if any)."""
        ...

    def nearest(self, ids: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For pool rows ``ids``: index of the nearest row of ``centres`` (K, D) and the squared
        distance to it (recomputed directly)."""
        ...


def _gemm_rows(pool: PoolView, k: int) -> int:
    """Rows per GEMM block so a block and its (rows, k) distance tile stay ~chunk sized."""
    per_row = max(pool.d, k) * pool.cd.itemsize
    return max(64, min(pool.chunk_rows, (16 << 20) // max(1, per_row)))


class NumpyKernel:
    """Gathered chunks, ``einsum`` of the difference. Works for float32 and float64."""

    name = "numpy"
    device = "cpu"

    def __init__(self, pool: PoolView):
        self.pool = pool

    def close(self) -> None:
        """Releases helper threads (if any)."""

    def run_split(self, fn: Callable[[int, int], None], n: int) -> None:
        """Runs ``fn(a, b)`` over ``range(n)``: here in one piece (see ``FaissKernel``)."""
        fn(0, n)

    def sqdist(self, centre: np.ndarray, ids: np.ndarray) -> np.ndarray:
        out = np.empty(len(ids), dtype=self.pool.cd)
        for a, part in self.pool.chunks(ids):
            block = self.pool.gather(part)
            block -= centre
            out[a : a + len(part)] = np.einsum("ij,ij->i", block, block)
        return out

    def nearest(self, ids: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = centres.shape[0]
        cn = np.einsum("ij,ij->i", centres, centres)
        assign = np.empty(len(ids), dtype=np.int32)
        d2 = np.empty(len(ids), dtype=self.pool.cd)
        step = _gemm_rows(self.pool, k)
        for a in range(0, len(ids), step):
            block = self.pool.gather(ids[a : a + step])
            g = block @ centres.T
            g *= -2.0
            g += cn
            nn = np.argmin(g, axis=1)
            assign[a : a + len(nn)] = nn
            block -= centres[nn]
            d2[a : a + len(nn)] = np.einsum("ij,ij->i", block, block)
        return assign, d2


class FaissKernel(NumpyKernel):
    """faiss' float32 distance kernel ``fvec_L2sqr_by_idx`` (in place or on gathered chunks)."""

    name = "faiss"

    def __init__(self, pool: PoolView):
        if pool.cd != np.float32:
            raise ValueError("the faiss kernel computes in float32 only")
        super().__init__(pool)
        import faiss

        self.faiss = faiss
        self.base = pool.x if pool.direct_float32 else None
        self.threads = max(1, int(faiss.omp_get_max_threads()))
        self._pool: ThreadPoolExecutor | None = None
        #: seeding counters: rows screened in bf16, rows sent to the float32 GEMM, exact pairs
        self.counters = {"bf16_rows": 0, "bf16_hard_rows": 0, "bf16_pairs": 0}

    #: Below this many rows one thread does the whole distance pass.
    PARALLEL_MIN_ROWS = 1024

    def _split(self, n: int) -> list[tuple[int, int]]:
        t = self.threads if n >= self.PARALLEL_MIN_ROWS else 1
        step = max(1, -(-n // t))
        return [(a, min(n, a + step)) for a in range(0, n, step)]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="akd-kcenter")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def sqdist_in(self, base: np.ndarray, centre: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Squared distances from ``centre`` to rows ``ids`` of a C-contiguous float32 ``base``,
        read in place by ``fvec_L2sqr_by_idx``; large sets are split over the threads (scattered
        rows are memory-latency bound, and faiss releases the GIL)."""
        f = self.faiss
        c = np.ascontiguousarray(centre, dtype=np.float32)
        idx = np.ascontiguousarray(ids, dtype=np.int64)
        out = np.empty(len(idx), dtype=np.float32)

        def run(a: int, b: int) -> None:
            f.fvec_L2sqr_by_idx(
                f.swig_ptr(out[a:]),
                f.swig_ptr(c),
                f.swig_ptr(base),
                f.swig_ptr(idx[a:b]),
                base.shape[1],
                1,
                b - a,
            )

        self.run_split(run, len(idx))
        return out

    def run_split(self, fn: Callable[[int, int], None], n: int) -> None:
        """Runs ``fn(a, b)`` over a split of ``range(n)`` on the kernel's threads (one piece
        below ``PARALLEL_MIN_ROWS``); ``fn`` should release the GIL."""
        parts = self._split(n)
        if len(parts) == 1:
            fn(*parts[0])
        elif parts:
            list(self._executor().map(lambda ab: fn(*ab), parts))

    def sqdist(self, centre: np.ndarray, ids: np.ndarray) -> np.ndarray:
        f = self.faiss
        c = np.ascontiguousarray(centre, dtype=np.float32)
        out = np.empty(len(ids), dtype=np.float32)
        if len(ids) == 0:
            return out
        d = self.pool.d
        if self.base is not None:
            return self.sqdist_in(self.base, c, ids)
        # by_idx over the gathered block, not fvec_L2sqr_ny: ny's small-D kernels (D=4, ...)
        # round a row differently by its position in the block, and a row's distance must not
        # depend on which rows share its batch (sharded k-center equals single-process).
        for a, part in self.pool.chunks(ids):
            block = self.pool.gather(part)
            local = np.arange(len(part), dtype=np.int64)
            f.fvec_L2sqr_by_idx(
                f.swig_ptr(out[a:]),
                f.swig_ptr(c),
                f.swig_ptr(block),
                f.swig_ptr(local),
                d,
                1,
                len(part),
            )
        return out

    def nearest(self, ids: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if use_bf16_screen(self.pool.d):
            return self._nearest(ids, centres)
        # The float32 path's only faiss call is one exact distance per row, interleaved with
        # BLAS GEMMs: run it on one OpenMP thread (this thread's setting), so faiss' workers do
        # not spin on the cores the next GEMM needs (2M x 100 seeding on 2 cores: 8.5 s -> 4.2 s).
        prev = self.faiss.omp_get_max_threads()
        self.faiss.omp_set_num_threads(1)
        try:
            return self._nearest(ids, centres)
        finally:
            self.faiss.omp_set_num_threads(prev)

    def _nearest(self, ids: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = centres.shape[0]
        cen = np.ascontiguousarray(centres, dtype=np.float32)
        # GEMM screens run on data centred at the centres' mean (distances are translation
        # invariant; |p|^2 - 2p.c + |c|^2 cancels far less); exact distances use the raw rows.
        mu = cen.mean(axis=0, dtype=np.float64).astype(np.float32)
        cen_c = cen - mu
        screen = _Bf16Screen(cen_c, cen, self.pool.d) if use_bf16_screen(self.pool.d) else None
        cen_m2 = cen_c * np.float32(-2.0)
        cn = np.einsum("ij,ij->i", cen_c, cen_c)
        assign = np.empty(len(ids), dtype=np.int32)
        d2 = np.empty(len(ids), dtype=np.float32)
        step = _gemm_rows(self.pool, k)
        # Mostly-eligible in-RAM pools: GEMM straight on row slices (no gather copy), then keep
        # the eligible rows of each slice. Otherwise gather the eligible rows chunk by chunk.
        by_slice = len(ids) >= self.pool.n // 2
        spans = (
            [(a, min(self.pool.n, a + step)) for a in range(0, self.pool.n, step)]
            if by_slice
            else [(a, min(len(ids), a + step)) for a in range(0, len(ids), step)]
        )
        for a, b in spans:
            if by_slice:
                block = self.base[a:b] if self.base is not None else self.pool.slice(a, b)
                lo, hi = np.searchsorted(ids, [a, b])
                keep = ids[lo:hi] - a
            else:
                block = self.pool.gather(ids[a:b])
                lo, hi = a, b
                keep = None
            block = np.ascontiguousarray(block)
            block_c = block - mu
            if screen is not None:
                nn, dd, hard = screen.nearest(block_c, block, self.faiss)
                self.counters["bf16_rows"] += len(block)
                self.counters["bf16_hard_rows"] += len(hard)
                self.counters["bf16_pairs"] += screen.last_pairs
                if len(hard):
                    nn[hard], dd[hard] = self._nearest_fp32(
                        block_c[hard], np.ascontiguousarray(block[hard]), cen, cen_m2, cn
                    )
            else:
                nn, dd = self._nearest_fp32(block_c, block, cen, cen_m2, cn)
            if keep is not None:
                nn, dd = nn[keep], dd[keep]
            assign[lo:hi] = nn
            d2[lo:hi] = dd
        return assign, d2

    def _nearest_fp32(
        self,
        block_c: np.ndarray,
        block: np.ndarray,
        cen: np.ndarray,
        cen_m2: np.ndarray,
        cn: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """float32 GEMM argmin of |c|^2 - 2 p.c on centred rows (``block_c``, ``cen_m2`` = -2 *
        centred centres, ``cn`` their squared norms), then the raw distance to that centre."""
        f = self.faiss
        g = block_c @ cen_m2.T  # BLAS sgemm, multi-threaded
        g += cn
        nn64 = np.ascontiguousarray(np.argmin(g, axis=1), dtype=np.int64)
        dd = np.empty(len(nn64), dtype=np.float32)
        # exact distance to the chosen centre: row j of the block vs centres[nn[j]]
        f.fvec_L2sqr_by_idx(
            f.swig_ptr(dd),
            f.swig_ptr(block),
            f.swig_ptr(cen),
            f.swig_ptr(nn64),
            self.pool.d,
            len(nn64),
            1,
        )
        return nn64, dd


#: Set to True/False to force the bfloat16 screening GEMM on or off (None: on when the CPU has
#: native bf16 dot products, avx512_bf16 or amx_bf16).
SEED_BF16: bool | None = None
#: Rows with more candidate centres than this after bf16 screening use the float32 GEMM.
BF16_MAX_CANDIDATES = 32
#: The screen pays off when the GEMM dominates its per-(row, centre) passes: D >= this.
BF16_MIN_DIM = 256


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16_screen(d: int) -> bool:
    """Whether nearest-centre seeding of D-dim rows screens with a bfloat16 GEMM (see
    :class:`_Bf16Screen`): ``SEED_BF16`` if set, else native bf16 CPU and D >= BF16_MIN_DIM."""
    if SEED_BF16 is not None:
        return SEED_BF16
    return _cpu_has_bf16() and d >= BF16_MIN_DIM


class _Bf16Screen:
    """Exact nearest centre with a bfloat16 GEMM as a screen (native bf16 runs ~4x float32 here).

    On rows and centres centred at the centres' mean, one GEMM of [p, 1] with [-2c, |c|^2] (both
    rounded to bf16, accumulated in float32, output rounded to bf16) gives F~(c) ~ |c|^2 - 2 p.c,
    whose argmin is the nearest centre. With u = 2^-8 and g = (D+1) 2^-24, rounding analysis gives
    |F~(c) - F(c)| <= E(p) = a |p| max|c| + b max|c|^2, a = 1.25 (6u + 3u^2 + 3g),
    b = 1.25 (2u + 2u^2 + 4g) (1.25 = safety). The true nearest centre c* then satisfies
    F~(c*) <= min F~ + 2 E(p), so it is among those candidates; every candidate's distance is
    computed directly (float32, raw rows) and the smallest wins (ties: lowest index). Rows with
    more than ``BF16_MAX_CANDIDATES`` candidates go to the float32 GEMM instead.
    """

    def __init__(self, cen_c: np.ndarray, cen: np.ndarray, d: int):
        import torch

        self.torch = torch
        self.cen = cen
        self.d = d
        u = 2.0**-8
        g = (d + 1) * 2.0**-24
        self.a = 1.25 * (6 * u + 3 * u * u + 3 * g)
        self.b = 1.25 * (2 * u + 2 * u * u + 4 * g)
        ct = torch.from_numpy(cen_c)
        cn = (ct * ct).sum(dim=1)
        aug = torch.empty((len(cen), d + 1), dtype=torch.bfloat16)
        aug[:, :d] = ct * -2.0
        aug[:, d] = cn
        self.aug_t = aug.t()
        cn_max = float(cn.max()) * (1 + 1e-6) if len(cn) else 0.0
        self.c_max = float(np.sqrt(cn_max))
        self.cn_max = cn_max
        self._buf: Any = None
        self.last_pairs = 0

    def nearest(
        self, block_c: np.ndarray, block: np.ndarray, faiss: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(nearest centre, exact squared distance, rows left for the float32 path) for the rows
        ``block`` (raw) / ``block_c`` (centred like the centres given to the constructor)."""
        torch = self.torch
        n, d = block_c.shape
        if self._buf is None or self._buf.shape[0] < n:
            self._buf = torch.empty((n, d + 1), dtype=torch.bfloat16)
            self._buf[:, d] = 1.0
        buf = self._buf[:n]
        bt = torch.from_numpy(block_c)
        buf[:, :d] = bt
        pn = (bt * bt).sum(dim=1).sqrt_()
        f_approx = torch.mm(buf, self.aug_t)  # (n, K) bf16
        fmin = f_approx.amin(dim=1).float()
        e_row = pn * (self.a * self.c_max) + self.b * self.cn_max
        thr = fmin + 2.0 * e_row + 4 * 2.0**-24 * fmin.abs() + 1e-30
        pairs = torch.nonzero(f_approx <= thr[:, None]).numpy()
        del f_approx
        rows = pairs[:, 0]
        counts = np.bincount(rows, minlength=n)
        hard = np.flatnonzero(counts > BF16_MAX_CANDIDATES)
        if len(hard):
            keep = counts[rows] <= BF16_MAX_CANDIDATES
            pairs = pairs[keep]
        rows = np.ascontiguousarray(pairs[:, 0], dtype=np.int64)
        cols = np.ascontiguousarray(pairs[:, 1], dtype=np.int64)
        self.last_pairs = len(rows)
        nn = np.zeros(n, dtype=np.int64)
        dd = np.zeros(n, dtype=np.float32)
        if len(rows) == 0:
            return nn, dd, hard
        dis = np.empty(len(rows), dtype=np.float32)
        faiss.pairwise_indexed_L2sqr(
            d,
            len(rows),
            faiss.swig_ptr(block),
            faiss.swig_ptr(rows),
            faiss.swig_ptr(self.cen),
            faiss.swig_ptr(cols),
            faiss.swig_ptr(dis),
        )
        # pairs come row-major with columns ascending: per row, the first pair at the row minimum
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        row_min = np.minimum.reduceat(dis, starts)
        seg = np.cumsum(np.r_[False, rows[1:] != rows[:-1]])
        at_min = np.flatnonzero(dis == row_min[seg])
        first = at_min[np.r_[True, rows[at_min][1:] != rows[at_min][:-1]]]
        nn[rows[first]] = cols[first]
        dd[rows[first]] = dis[first]
        return nn, dd, hard


class TorchKernel:
    """The pool as a torch tensor on ``device`` (CPU or CUDA); same arithmetic as numpy."""

    name = "torch"

    def __init__(self, pool: PoolView, device: str):
        import torch

        self.torch = torch
        self.pool = pool
        self.dev = torch.device(device)
        self.device = str(self.dev)
        self.cd = torch.float64 if pool.cd == np.float64 else torch.float32
        x = pool.x
        if self.dev.type == "cpu" and x.flags.c_contiguous:
            with warnings.catch_warnings():  # read-only memmaps: we never write through it
                warnings.simplefilter("ignore", UserWarning)
                self.xt = torch.from_numpy(np.asarray(x))
        else:
            self.xt = torch.empty(tuple(x.shape), dtype=_torch_dtype(x.dtype), device=self.dev)
            step = pool.chunk_rows
            for a in range(0, pool.n, step):
                self.xt[a : a + step].copy_(torch.from_numpy(np.ascontiguousarray(x[a : a + step])))
        self.inv = (
            torch.from_numpy(pool.inv_norm).to(self.dev) if pool.inv_norm is not None else None
        )

    def close(self) -> None:
        """Nothing to release."""

    def _rows(self, idx: Any) -> Any:
        rows = self.xt.index_select(0, idx).to(self.cd)
        if self.inv is not None:
            rows = rows * self.inv.index_select(0, idx)[:, None]
        return rows

    def sqdist(self, centre: np.ndarray, ids: np.ndarray) -> np.ndarray:
        torch = self.torch
        out = np.empty(len(ids), dtype=self.pool.cd)
        c = torch.from_numpy(np.ascontiguousarray(centre)).to(self.dev)
        for a, part in self.pool.chunks(ids):
            idx = torch.from_numpy(np.ascontiguousarray(part, dtype=np.int64)).to(self.dev)
            diff = self._rows(idx) - c
            out[a : a + len(part)] = (diff * diff).sum(dim=1).cpu().numpy()
        return out

    def nearest(self, ids: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        cen = torch.from_numpy(np.ascontiguousarray(centres)).to(self.dev)
        cn = (cen * cen).sum(dim=1)
        assign = np.empty(len(ids), dtype=np.int32)
        d2 = np.empty(len(ids), dtype=self.pool.cd)
        step = _gemm_rows(self.pool, centres.shape[0])
        for a in range(0, len(ids), step):
            idx = torch.from_numpy(np.ascontiguousarray(ids[a : a + step], dtype=np.int64)).to(
                self.dev
            )
            rows = self._rows(idx)
            g = cn - 2.0 * (rows @ cen.T)
            nn = torch.argmin(g, dim=1)
            diff = rows - cen.index_select(0, nn)
            assign[a : a + len(idx)] = nn.cpu().numpy()
            d2[a : a + len(idx)] = (diff * diff).sum(dim=1).cpu().numpy()
        return assign, d2


def _torch_dtype(dtype: np.dtype) -> Any:
    import torch

    return {
        np.dtype(np.float16): torch.float16,
        np.dtype(np.float32): torch.float32,
        np.dtype(np.float64): torch.float64,
    }[np.dtype(dtype)]


def uses_torch(kernel: Kernel) -> bool:
    """Whether ``kernel`` runs torch work that wants torch's threads (the torch kernel, or a
    bf16 seeding screen). Otherwise a selection keeps torch at one thread
    (``threads.quiet_torch``): torch's OpenMP workers spin after each parallel cast while the
    next BLAS GEMM or faiss call wants the same cores (2M x 100 float16 seeding on 2 cores:
    9-12 s with two torch threads, 4-5 s with one)."""
    if isinstance(kernel, TorchKernel):
        return True
    return isinstance(kernel, FaissKernel) and use_bf16_screen(kernel.pool.d)


def make_kernel(pool: PoolView, backend: str, device: str) -> Kernel:
    """Builds the kernel for ``backend`` ('auto', 'faiss', 'numpy', 'torch') on ``device``.

    'auto' is torch on CUDA, faiss for float32 compute on CPU, numpy for float64 on CPU.
    """
    cpu_backend = "faiss" if pool.cd == np.float32 else "numpy"
    if backend == "auto":
        backend = "torch" if device.startswith("cuda") else cpu_backend
    if backend == "torch" and device.startswith("cuda") and not _fits_on_gpu(pool, device):
        backend, device = cpu_backend, "cpu"  # pool larger than free GPU memory: stay on CPU
    if backend == "torch":
        return TorchKernel(pool, device)
    if backend == "faiss":
        return FaissKernel(pool)
    return NumpyKernel(pool)


def _fits_on_gpu(pool: PoolView, device: str, headroom: float = 0.7) -> bool:
    """True when the pool (kept in its input dtype) fits in ``headroom`` of free GPU memory."""
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return pool.n * pool.d * pool.x.itemsize < headroom * free
