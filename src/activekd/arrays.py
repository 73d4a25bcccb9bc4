"""The one probability-matrix and class-label check, shared by selection, student and teacher.

Content checks (finite, non-negative, rows summing to 1) stream over the rows in chunks, so they
work on memory-mapped pools larger than RAM. Every failure is
:class:`~activekd.errors.InvalidArgument` with ``field`` naming the argument and a message that
says which row is wrong and what to send instead.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from activekd.errors import InvalidArgument

#: Rows of a probability matrix must sum to 1 within this absolute tolerance (any float dtype);
#: no entry may be negative. float16 rounding of C values moves a row sum by at most
#: 2**-11 ~ 4.9e-4, so 1e-3 admits float16 and float32 softmax outputs while still catching
#: logits, percentages and unnormalised scores.
PROB_SUM_ATOL: float = 1e-3

#: dtypes accepted for probability and feature matrices.
SUPPORTED_FLOAT_DTYPES: tuple[str, ...] = ("float16", "float32", "float64")

#: Bytes of one matrix processed at a time by the streaming checks.
CHECK_CHUNK_BYTES: int = 32 << 20


def iter_row_chunks(
    n_rows: int, row_bytes: int, chunk_bytes: int = CHECK_CHUNK_BYTES
) -> Iterator[slice]:
    """Slices ``[a, b)`` covering ``0..n_rows`` with about ``chunk_bytes`` per chunk."""
    step = max(1, chunk_bytes // max(1, row_bytes))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


#: float16 blocks of at least this many values are widened by torch when the process has it
#: loaded (vectorised: ~10x numpy's float16 cast on 2 cores here); the values are the same, as
#: a float16 -> float32/64 cast is exact. Importing torch just for this is not worth it: the
#: selection engine loads it (its extra brings torch), other processes keep numpy's cast.
TORCH_WIDEN_MIN = 1 << 14


def widen(block: np.ndarray, dtype: Any, *, owned: bool = False) -> np.ndarray:
    """``block`` as a fresh C-contiguous array of float ``dtype`` (``owned``: ``block`` is
    already the caller's private copy, returned as is when it has that form)."""
    dt = np.dtype(dtype)
    torch = sys.modules.get("torch")
    if torch is not None and block.dtype == np.float16 and block.size >= TORCH_WIDEN_MIN:
        with warnings.catch_warnings():  # read-only memmaps: torch only reads them here
            warnings.simplefilter("ignore", UserWarning)
            src = torch.from_numpy(np.ascontiguousarray(block))
        return np.asarray(src.to(torch.float64 if dt == np.float64 else torch.float32).numpy())
    if owned and block.dtype == dt and block.flags.c_contiguous and block.flags.writeable:
        return block
    return np.array(block, dtype=dt, order="C", copy=True)


def check_float_matrix(x: Any, name: str) -> np.ndarray:
    """``x`` must be a non-empty 2-D float16/32/64 ndarray (or memmap); returned unchanged."""
    if not isinstance(x, np.ndarray):
        raise InvalidArgument(
            f"{name} must be a numpy array (np.ndarray or np.memmap), got {type(x).__name__}",
            field=name,
        )
    if x.ndim != 2:
        raise InvalidArgument(
            f"{name} must be 2-D (N, C) = (rows, columns), got shape {tuple(x.shape)}", field=name
        )
    if x.dtype.name not in SUPPORTED_FLOAT_DTYPES:
        raise InvalidArgument(
            f"{name} dtype {x.dtype.name} is not supported: send floating-point "
            f"{', '.join(SUPPORTED_FLOAT_DTYPES)}",
            field=name,
        )
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise InvalidArgument(
            f"{name} has shape {tuple(x.shape)}: need at least one row and one column", field=name
        )
    return x


def check_probabilities(
    probs: Any,
    name: str = "probs",
    *,
    rows: int | None = None,
    classes: int | None = None,
    classes_owner: str = "the model",
    atol: float = PROB_SUM_ATOL,
    where: str = "",
) -> np.ndarray:
    """Checks an (N, C) probability matrix and returns it unchanged.

    float dtype, ``rows`` rows and ``classes`` columns when given, every value finite and
    >= 0, every row summing to 1 within ``atol``. ``where`` (e.g. ``"chunk at 0"``) starts the
    message of a failure, for a matrix that is one part of a larger upload.
    """
    try:
        return _check_probabilities(probs, name, rows, classes, classes_owner, atol)
    except InvalidArgument as exc:
        if not where:
            raise
        raise InvalidArgument(f"{where}: {exc}", field=exc.field) from None


def _check_probabilities(
    probs: Any, name: str, rows: int | None, classes: int | None, classes_owner: str, atol: float
) -> np.ndarray:
    p = check_float_matrix(probs, name)
    n, c = p.shape
    if classes is not None and c != classes:
        raise InvalidArgument(
            f"{name} has {c} classes; {classes_owner} has num_classes = {classes}", field=name
        )
    if rows is not None and n != rows:
        raise InvalidArgument(f"{name} has {n} rows for {rows} inputs", field=name)
    acc = np.float32 if p.dtype != np.float64 else np.float64
    for sl in iter_row_chunks(n, c * p.itemsize):
        block = widen(p[sl], acc) if p.dtype == np.float16 else p[sl]
        sums = block.sum(axis=1, dtype=acc)
        if not np.isfinite(sums).all():
            i, j = (int(v) for v in np.argwhere(~np.isfinite(block))[0])
            r = sl.start + i
            raise InvalidArgument(
                f"{name} row {r} has NaN or inf values (row {r} is not a probability vector): "
                f"{name}[{r}, {j}] is {block[i, j]}: probabilities must be finite",
                field=name,
            )
        if block.min() < 0:
            i, j = (int(v) for v in np.argwhere(block < 0)[0])
            r = sl.start + i
            raise InvalidArgument(
                f"{name} row {r} has negative values (row {r} is not a probability vector): "
                f"{name}[{r}, {j}] = {float(block[i, j]):.6g} is negative: probabilities must "
                "be >= 0 (send softmax outputs, not logits)",
                field=name,
            )
        off = np.abs(sums.astype(np.float64) - 1.0)
        worst = int(np.argmax(off))
        if off[worst] > atol:
            raise InvalidArgument(
                f"{name} row {sl.start + worst} sums to {float(sums[worst]):.6g} (row "
                f"{sl.start + worst} is not a probability vector): each row must sum to 1 "
                f"within {atol:g} (apply softmax / normalise rows)",
                field=name,
            )
    return p
