"""``SelectionResult``: the picks of one selection, as every layer of the library returns them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SelectionResult:
    """Picks in order, one score per pick, numeric stats, the compute path and the time taken.

    ``indices``: int64 pool row ids in pick order (never labeled/excluded, no repeats).
    ``scores``: one float64 per pick (see ``activekd.selection.strategies`` for each meaning).
    ``stats``: numeric diagnostics, e.g. ``pruned_fraction`` for the k-center strategies.
    ``backend``: compute path used, e.g. ``"faiss:cpu"``, ``"torch:cuda"``.
    ``strategy`` and ``elapsed_seconds`` (validation included) are set by ``select_batch``;
    ``kcenter_greedy`` and the strategies leave them empty.
    """

    indices: np.ndarray
    scores: np.ndarray
    stats: dict[str, float] = field(default_factory=dict)
    backend: str = "numpy:cpu"
    strategy: str = ""
    elapsed_seconds: float = 0.0


__all__ = ["SelectionResult"]
