"""``select_batch``: the one entry point of the selection library."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from activekd.errors import InvalidArgument, shown
from activekd.selection.kcenter import ProgressFn
from activekd.selection.result import SelectionResult
from activekd.selection.strategies import (
    PARAM_RULES,
    STRATEGIES,
    STRATEGY_INFO,
    SelectionInputs,
    validate_strategy,
)
from activekd.selection.threads import limit_threads
from activekd.selection.validation import validate_params, validate_request

BACKENDS: tuple[str, ...] = ("auto", "faiss", "numpy", "torch")
#: strategies whose k-center runs on probs (``backend`` applies to it)
_PROBS_KCENTER = (
    "pcoreset", "pcoreset_teacher", "pcoreset_ce", "typiclust_pcoreset", "pcoreset_typical"
)  # fmt: skip


def select_batch(
    strategy: str,
    budget: int,
    *,
    probs: np.ndarray | None = None,
    features: np.ndarray | None = None,
    labeled: Any = None,
    exclude: Any = None,
    labels: Any = None,
    seed: int = 0,
    prune: bool = True,
    device: str = "auto",
    threads: int | None = None,
    backend: str = "auto",
    progress: ProgressFn | None = None,
    params: Mapping[str, float] | None = None,
) -> SelectionResult:
    """Picks ``budget`` pool rows to label next: the result holds the picks (``indices``, int64
    row ids in pick order), one float64 ``score`` each, ``stats``, ``backend``, ``strategy`` and
    ``elapsed_seconds`` (validation included).

    Args:
        strategy: a name from ``available_strategies()`` (pcoreset, coreset, badge, entropy, ...).
        budget: how many rows to pick, 1..(rows not labeled and not excluded).
        probs: (N, C) class probabilities of the whole pool, labeled rows included
            (float16/32/64 ndarray or memmap; rows sum to 1 within ``PROB_SUM_ATOL``).
        features: (N, D) features of the whole pool (coreset, badge, typiclust, probcover and
            the hybrids; e.g. the teacher's image embeddings).
        labeled: row ids already labeled: never picked; k-center centres.
        exclude: row ids already selected but not labeled yet: never picked and, for the
            k-center strategies, treated as centres like labeled rows (they will be labeled);
            class_balanced counts their predicted classes as pending labels.
        labels: optional known labels of ``labeled`` (same order), used by class_balanced.
        seed: seeds the random strategies (random, badge, class_balanced).
        prune: triangle-inequality pruning in k-center (exact: same picks either way).
        device: 'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N' (see
            ``activekd.devices.resolve_device``).
        threads: cap faiss/torch/BLAS threads during the call (None or 0: library default).
        backend: k-center kernel, 'auto' (torch on CUDA, faiss for float32/16 on CPU, numpy for
            float64 on CPU), 'faiss' (float32/16 input only), 'numpy' or 'torch'
            (torch with device='cpu' runs the torch path on the CPU).
            typiclust and probcover always run on the CPU (faiss k-means / kNN, BLAS) and
            ignore ``backend``; the hybrids use it for their k-center part.
        progress: optional callback ``progress(done, budget)`` for the k-center strategies.
        params: the strategy's parameters, a mapping name -> number (None: the defaults in
            ``STRATEGY_INFO[strategy].params``; unknown names are an error).

    Raises:
        InvalidArgument: unknown strategy, missing input the strategy needs, bad shapes, dtypes,
            probabilities, ids, budget, seed, device or threads (the message says what to fix).
        FailedPrecondition: device='cuda' on a machine without CUDA.
    """
    t0 = time.perf_counter()
    name = validate_strategy(strategy)
    info = STRATEGY_INFO[name]
    if backend not in BACKENDS:
        raise InvalidArgument(
            f"backend {shown(backend)} is not one of {', '.join(BACKENDS)}", field="backend"
        )
    strategy_params = validate_params(name, params, info.params, PARAM_RULES)
    req = validate_request(
        name,
        budget,
        probs=probs,
        features=features,
        labeled=labeled,
        exclude=exclude,
        labels=labels,
        seed=seed,
        device=device,
        threads=threads,
        needs_probs=info.needs_probs,
        needs_features=info.needs_features,
    )
    if backend == "faiss":
        used = probs if name in _PROBS_KCENTER else features
        if used is not None and used.dtype == np.float64:
            raise InvalidArgument(
                "backend 'faiss' computes in float32: send float32/float16 arrays or use "
                "backend 'numpy' or 'torch' for float64",
                field="backend",
            )
    t_valid = time.perf_counter() - t0
    inp = SelectionInputs(
        budget=req.budget,
        seed=req.seed,
        eligible=req.eligible,
        labeled=req.labeled,
        exclude=req.exclude,
        probs=probs,
        features=features,
        labels=req.labels,
        prune=bool(prune),
        device=req.device,
        backend=backend,
        threads=req.threads,
        progress=progress,
        params=strategy_params,
    )
    with limit_threads(req.threads):
        res = STRATEGIES[name](inp)
    res.indices = np.asarray(res.indices, dtype=np.int64)
    res.scores = np.asarray(res.scores, dtype=np.float64)
    res.stats["validate_seconds"] = t_valid
    res.strategy = name
    res.elapsed_seconds = time.perf_counter() - t0
    return res
