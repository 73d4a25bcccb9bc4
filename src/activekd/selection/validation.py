"""Input validation for ``select_batch`` (ids, budget, seed, labels, threads, whole requests).

Every check raises :class:`activekd.errors.InvalidArgument` whose message says what to fix, with
``field`` naming the argument at fault. Matrix checks use the shared rules of
:mod:`activekd.arrays` (dtype, shape, probability rows) and the device rule of
:mod:`activekd.devices`; content checks stream over the rows in chunks, so they work on
memory-mapped pools larger than RAM.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from activekd.arrays import check_float_matrix, check_probabilities, iter_row_chunks
from activekd.devices import resolve_device
from activekd.errors import InvalidArgument, shown


def validate_features(features: Any, n_rows: int, name: str = "features") -> np.ndarray:
    """Checks an (N, D) feature matrix: float dtype, N rows, all values finite."""
    f = check_float_matrix(features, name)
    if f.shape[0] != n_rows:
        raise InvalidArgument(
            f"{name} has {f.shape[0]} rows but the pool has {n_rows}: one feature row per pool row",
            field=name,
        )
    for sl in iter_row_chunks(f.shape[0], f.shape[1] * f.itemsize):
        block = f[sl]
        finite = np.isfinite(block)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise InvalidArgument(
                f"{name}[{sl.start + int(bad[0])}, {int(bad[1])}] is {block[bad[0], bad[1]]}: "
                "features must be finite",
                field=name,
            )
    return f


def validate_shape(x: Any, n_rows: int, name: str) -> None:
    """Checks only dtype and shape (no content pass): for inputs a strategy does not read."""
    m = check_float_matrix(x, name)
    if m.shape[0] != n_rows:
        raise InvalidArgument(
            f"{name} has {m.shape[0]} rows but the pool has {n_rows}: one row per pool row",
            field=name,
        )


def validate_indices(ids: Any, n_rows: int, name: str = "labeled") -> np.ndarray:
    """Row ids: 1-D integers in ``0..n_rows-1``, no repeats. Returns them as int64 (order kept)."""
    if ids is None:
        return np.zeros(0, dtype=np.int64)
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1:
        raise InvalidArgument(
            f"{name} must be a 1-D list of row ids, got shape {arr.shape}", field=name
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgument(
            f"{name} must hold integer row ids, got dtype {arr.dtype.name}", field=name
        )
    out = arr.astype(np.int64)
    lo, hi = int(out.min()), int(out.max())
    if lo < 0 or hi >= n_rows:
        bad = lo if lo < 0 else hi
        raise InvalidArgument(
            f"{name} contains row id {bad}, outside 0..{n_rows - 1} (pool rows)", field=name
        )
    uniq, counts = np.unique(out, return_counts=True)
    if uniq.size != out.size:
        dup = int(uniq[np.argmax(counts > 1)])
        raise InvalidArgument(
            f"{name} lists row id {dup} more than once; ids must be unique", field=name
        )
    return out


def validate_budget(budget: Any, n_unlabeled: int, what: str = "unlabeled rows") -> int:
    """``budget`` must be an integer in ``1..n_unlabeled`` (``what`` names that count)."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise InvalidArgument(
            f"budget must be an integer, got {type(budget).__name__} {shown(budget)}",
            field="budget",
        )
    b = operator.index(budget)
    if not 1 <= b <= n_unlabeled:
        raise InvalidArgument(f"budget {b} must be in 1..{n_unlabeled} ({what})", field="budget")
    return b


def validate_seed(seed: Any) -> int:
    """``seed`` must be an integer in ``0..2**64-1``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InvalidArgument(f"seed must be an integer, got {shown(seed)}", field="seed")
    s = operator.index(seed)
    if not 0 <= s < 2**64:
        raise InvalidArgument(f"seed {s} must be in 0..2**64-1", field="seed")
    return s


def validate_labels(labels: Any, n_labeled: int, n_classes: int) -> np.ndarray | None:
    """Known labels of the labeled rows: same length as ``labeled``, integers in ``0..C-1``."""
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n_labeled:
        raise InvalidArgument(
            f"labels has shape {arr.shape} but there are {n_labeled} labeled rows: give one label "
            "per labeled row, in the same order",
            field="labels",
        )
    if n_labeled == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgument(
            f"labels must be integers, got dtype {arr.dtype.name}", field="labels"
        )
    out = arr.astype(np.int64)
    if int(out.min()) < 0 or int(out.max()) >= n_classes:
        bad = int(out.min()) if int(out.min()) < 0 else int(out.max())
        raise InvalidArgument(
            f"label {bad} is outside 0..{n_classes - 1} (columns of probs)", field="labels"
        )
    return out


def validate_threads(threads: Any) -> int | None:
    """``threads``: None or 0 (library default) or a positive integer."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise InvalidArgument(
            f"threads must be an integer or None, got {shown(threads)}", field="threads"
        )
    t = operator.index(threads)
    if t < 0:
        raise InvalidArgument(f"threads {t} must be >= 0 (0 = library default)", field="threads")
    return t or None


@dataclass(frozen=True)
class ParamRule:
    """Values one strategy parameter accepts: ``lo <= v <= hi`` (``lo < v`` when ``lo_open``),
    finite, integral when ``integer``; ``doc`` says what it does."""

    lo: float
    hi: float
    integer: bool = False
    lo_open: bool = False
    doc: str = ""

    def accepts(self, v: float) -> bool:
        """True when ``v`` is allowed."""
        if not math.isfinite(v) or v > self.hi or v < self.lo or (self.lo_open and v == self.lo):
            return False
        return not self.integer or v == int(v)

    def describe(self) -> str:
        """The rule in words, e.g. "an integer in 1..1000"."""
        what = "an integer" if self.integer else "a number"
        lo = f"{self.lo:g}"
        if self.lo_open:
            return f"{what} > {lo} and <= {self.hi:g}"
        return f"{what} in {lo}..{self.hi:g}"


def validate_params(
    strategy: str,
    params: Any,
    defaults: Mapping[str, float],
    rules: Mapping[str, ParamRule],
) -> dict[str, float]:
    """The strategy's parameters: ``defaults`` overridden by ``params`` (a mapping name -> number;
    None = all defaults). Unknown names and values their rule refuses are InvalidArgument
    (field ``params``) naming the allowed parameters or the accepted range."""
    out = {k: float(v) for k, v in defaults.items()}
    if params is None:
        return out
    if not isinstance(params, Mapping):
        raise InvalidArgument(
            f"params must map parameter names to numbers, got {type(params).__name__}",
            field="params",
        )
    allowed = ", ".join(f"{k} (default {v:g})" for k, v in sorted(out.items()))
    for key, value in params.items():
        if key not in out:
            hint = f"allowed: {allowed}" if out else "it takes no parameters"
            raise InvalidArgument(
                f"strategy {shown(strategy)} has no parameter {shown(key)}: {hint}", field="params"
            )
        rule = rules[key]
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not ok or not rule.accepts(float(value)):
            raise InvalidArgument(
                f"params[{shown(key)}] of strategy {shown(strategy)} is {shown(value)}: it must be "
                f"{rule.describe()} ({rule.doc})",
                field="params",
            )
        out[key] = float(value)
    return out


@dataclass(frozen=True)
class ValidatedRequest:
    """Normalised inputs of one selection request."""

    budget: int
    seed: int
    labeled: np.ndarray
    exclude: np.ndarray
    eligible: np.ndarray
    labels: np.ndarray | None
    device: str
    threads: int | None


def validate_request(
    strategy: str,
    budget: Any,
    *,
    probs: Any = None,
    features: Any = None,
    labeled: Any = None,
    exclude: Any = None,
    labels: Any = None,
    seed: Any = 0,
    device: Any = "auto",
    threads: Any = None,
    needs_probs: bool,
    needs_features: bool,
) -> ValidatedRequest:
    """Validates a whole request for a strategy with the given needs (see ``STRATEGIES``).

    Inputs the strategy reads get a full content check; others given only a shape check.
    """
    if needs_probs and probs is None:
        raise InvalidArgument(
            f"strategy {shown(strategy)} needs probs (an (N, C) array of class probabilities)",
            field="probs",
        )
    if needs_features and features is None:
        raise InvalidArgument(
            f"strategy {shown(strategy)} needs features (an (N, D) array of embeddings)",
            field="features",
        )
    if probs is None and features is None:
        raise InvalidArgument("give probs and/or features: the pool is empty", field="probs")
    if probs is not None:
        n = int(check_float_matrix(probs, "probs").shape[0])
    else:
        n = int(check_float_matrix(features, "features").shape[0])
    if probs is not None:
        if needs_probs:
            check_probabilities(probs)
        else:
            validate_shape(probs, n, "probs")
    if features is not None:
        if needs_features:
            validate_features(features, n)
        else:
            validate_shape(features, n, "features")
    lab = validate_indices(labeled, n, "labeled")
    exc = validate_indices(exclude, n, "exclude")
    taken = np.zeros(n, dtype=bool)
    taken[lab] = True
    taken[exc] = True
    eligible = np.flatnonzero(~taken).astype(np.int64)
    if eligible.size == 0:
        raise InvalidArgument(
            f"all {n} pool rows are labeled or excluded: nothing left to select", field="budget"
        )
    what = "unlabeled rows not in exclude" if exc.size else "unlabeled rows"
    b = validate_budget(budget, int(eligible.size), what)
    n_classes = int(probs.shape[1]) if probs is not None else 0
    if labels is not None and probs is None:
        raise InvalidArgument(
            "labels need probs (their columns define the classes)", field="labels"
        )
    lbl = validate_labels(labels, int(lab.size), n_classes) if labels is not None else None
    return ValidatedRequest(
        budget=b,
        seed=validate_seed(seed),
        labeled=lab,
        exclude=exc,
        eligible=eligible,
        labels=lbl,
        device=resolve_device(device),
        threads=validate_threads(threads),
    )


__all__ = [
    "ParamRule",
    "ValidatedRequest",
    "validate_budget",
    "validate_features",
    "validate_indices",
    "validate_labels",
    "validate_params",
    "validate_request",
    "validate_seed",
    "validate_shape",
    "validate_threads",
]
