"""A simulated annotator answering from ground truth, and the paper's k-per-class initial draw."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from activekd.errors import InvalidArgument, NotFound


def _as_labels(item_ids: Sequence[str], labels: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != len(item_ids):
        raise InvalidArgument(
            f"{len(item_ids)} item ids but labels have shape {tuple(arr.shape)}; "
            "give one label per id"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgument(f"labels must be integers, got dtype {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise InvalidArgument(f"labels must be >= 0, found {int(arr.min())}")
    return arr.astype(np.int64, copy=False)


def _check_unique(item_ids: Sequence[str]) -> None:
    if len(set(item_ids)) != len(item_ids):
        dups = sorted(x for x, c in Counter(item_ids).items() if c > 1)
        raise InvalidArgument(f"item ids repeat: {', '.join(map(repr, dups[:5]))}")


class SimulatedOracle:
    """Answers labels for item ids from the pool's ground truth (benchmarks, demos, tests)."""

    def __init__(self, item_ids: Sequence[str], labels: Sequence[int] | np.ndarray) -> None:
        ids = [str(x) for x in item_ids]
        _check_unique(ids)
        arr = _as_labels(ids, labels)
        self._labels: dict[str, int] = dict(zip(ids, arr.tolist(), strict=True))

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._labels

    def label(self, item_ids: Iterable[str]) -> dict[str, int]:
        """``{id: label}`` for every requested id; ``NotFound`` naming the unknown ids, if any."""
        wanted = list(item_ids)
        unknown = [i for i in wanted if i not in self._labels]
        if unknown:
            shown = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            raise NotFound(f"the oracle has no label for {len(unknown)} id(s): {shown}")
        return {i: self._labels[i] for i in wanted}

    __call__ = label


def initial_labels(
    item_ids: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    per_class: int,
    seed: int,
    num_classes: int | None = None,
) -> tuple[list[str], list[int]]:
    """Draw ``per_class`` items of every class at random (the paper's k-shot start).

    Deterministic for a given (ids, labels, per_class, seed): classes are visited in order
    0..C-1 with one ``numpy.random.default_rng(seed)``. Returns ``(ids, labels)`` sorted by item
    id. ``C`` is ``num_classes`` or ``max(label) + 1``; ``InvalidArgument`` when a class has fewer
    than ``per_class`` items or a label is outside ``[0, C)``.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise InvalidArgument(f"per_class {per_class!r} must be an integer >= 1")
    ids = [str(x) for x in item_ids]
    _check_unique(ids)
    arr = _as_labels(ids, labels)
    if arr.size == 0:
        raise InvalidArgument("the pool has no labeled items to draw from")
    n_classes = int(arr.max()) + 1 if num_classes is None else int(num_classes)
    if int(arr.max()) >= n_classes:
        raise InvalidArgument(f"label {int(arr.max())} is outside [0, {n_classes})")
    counts = np.bincount(arr, minlength=n_classes)
    short = [c for c in range(n_classes) if counts[c] < per_class]
    if short:
        detail = ", ".join(f"class {c} has {int(counts[c])}" for c in short[:5])
        raise InvalidArgument(f"cannot draw {per_class} per class: {detail}")
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for c in range(n_classes):
        rows = np.flatnonzero(arr == c)
        picked.extend(rng.choice(rows, size=per_class, replace=False).tolist())
    pairs = sorted((ids[r], int(arr[r])) for r in picked)
    return [p[0] for p in pairs], [p[1] for p in pairs]
