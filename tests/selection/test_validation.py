"""Every bad input raises InvalidArgument (a ValueError) with a message that says what to fix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from activekd.arrays import check_probabilities as validate_probs
from activekd.errors import FailedPrecondition, InvalidArgument
from activekd.selection import PROB_SUM_ATOL, select_batch
from activekd.selection.validation import validate_budget, validate_indices

RNG = np.random.default_rng(0)
P = RNG.dirichlet(np.ones(4), size=50)
F = RNG.normal(size=(50, 6))


def _bad_probs(kind: str) -> np.ndarray:
    p = P.copy()
    if kind == "nan":
        p[7, 2] = np.nan
    elif kind == "inf":
        p[3, 1] = np.inf
    elif kind == "negative":
        p[9, 0] = -0.25
        p[9, 1] += 0.25
    elif kind == "sum":
        p[11] *= 1.01
    return p


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown strategy",
        {"strategy": "kmeans"},
        "unknown strategy 'kmeans': use one of",
        "strategy",
    ),
    (
        "coreset without features",
        {"strategy": "coreset", "features": None},
        "needs features",
        "features",
    ),
    ("pcoreset without probs", {"probs": None}, "needs probs", "probs"),
    (
        "badge without features",
        {"strategy": "badge", "features": None},
        "needs features",
        "features",
    ),
    ("budget zero", {"budget": 0}, "budget 0 must be in 1..47 (unlabeled rows)", "budget"),
    ("budget too big", {"budget": 48}, "budget 48 must be in 1..47", "budget"),
    ("budget float", {"budget": 2.5}, "budget must be an integer", "budget"),
    ("budget bool", {"budget": True}, "budget must be an integer", "budget"),
    ("labeled out of range", {"labeled": [1, 50]}, "row id 50, outside 0..49", "labeled"),
    ("labeled negative", {"labeled": [-1, 3]}, "row id -1, outside 0..49", "labeled"),
    ("labeled duplicate", {"labeled": [4, 4, 5]}, "lists row id 4 more than once", "labeled"),
    ("labeled floats", {"labeled": [1.0, 2.0]}, "must hold integer row ids", "labeled"),
    ("labeled 2-D", {"labeled": [[1, 2]]}, "must be a 1-D list", "labeled"),
    ("exclude out of range", {"exclude": [99]}, "exclude contains row id 99", "exclude"),
    (
        "budget with exclude",
        {"budget": 46, "exclude": [3, 4]},
        "budget 46 must be in 1..45 (unlabeled rows not in exclude)",
        "budget",
    ),
    (
        "probs NaN",
        {"probs": _bad_probs("nan")},
        "probs[7, 2] is nan: probabilities must be finite",
        "probs",
    ),
    ("probs inf", {"probs": _bad_probs("inf")}, "probs[3, 1] is inf", "probs"),
    (
        "probs negative",
        {"probs": _bad_probs("negative")},
        "probs[9, 0] = -0.25 is negative",
        "probs",
    ),
    ("probs row sum", {"probs": _bad_probs("sum")}, "probs row 11 sums to 1.01", "probs"),
    ("logits", {"probs": np.log(P)}, "is negative", "probs"),
    ("probs 1-D", {"probs": P[:, 0].copy()}, "probs must be 2-D", "probs"),
    ("probs int", {"probs": (P > 0.5).astype(np.int64)}, "dtype int64 is not supported", "probs"),
    ("probs list", {"probs": P.tolist()}, "must be a numpy array", "probs"),
    (
        "features rows",
        {"strategy": "coreset", "features": F[:40]},
        "features has 40 rows but the pool has 50",
        "features",
    ),
    (
        "features NaN",
        {"strategy": "coreset", "features": np.where(np.eye(50, 6) > 0, np.nan, F)},
        "features[0, 0] is nan",
        "features",
    ),
    ("features shape even if unused", {"features": F[:10]}, "features has 10 rows", "features"),
    (
        "labels length",
        {"strategy": "class_balanced", "labels": [0, 1]},
        "one label per labeled row",
        "labels",
    ),
    (
        "labels range",
        {"strategy": "class_balanced", "labels": [0, 1, 4]},
        "label 4 is outside 0..3",
        "labels",
    ),
    ("seed negative", {"seed": -1}, "seed -1 must be in 0..2**64-1", "seed"),
    ("seed str", {"seed": "1"}, "seed must be an integer", "seed"),
    ("device", {"device": "tpu"}, "device 'tpu' is not one of auto, cpu, cuda", "device"),
    ("threads", {"threads": -2}, "threads -2 must be >= 0", "threads"),
    ("backend", {"backend": "jax"}, "backend 'jax' is not one of", "backend"),
    ("faiss float64", {"backend": "faiss"}, "backend 'faiss' computes in float32", "backend"),
]


@pytest.mark.parametrize(("case", "override", "message", "field"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_invalid_argument(
    case: str, override: dict[str, Any], message: str, field: str
) -> None:
    kwargs: dict[str, Any] = {
        "strategy": "pcoreset",
        "budget": 5,
        "probs": P,
        "features": F,
        "labeled": [0, 1, 2],
    }
    kwargs.update(override)
    with pytest.raises(InvalidArgument) as err:
        select_batch(kwargs.pop("strategy"), kwargs.pop("budget"), **kwargs)
    assert message in str(err.value)
    assert err.value.field == field
    assert isinstance(err.value, ValueError)


def test_everything_labeled() -> None:
    with pytest.raises(InvalidArgument, match="all 50 pool rows are labeled or excluded"):
        select_batch("entropy", 1, probs=P, labeled=np.arange(40), exclude=np.arange(40, 50))


def test_cuda_on_cpu_machine_is_failed_precondition() -> None:
    import torch

    if torch.cuda.is_available():
        res = select_batch("pcoreset", 3, probs=P, device="cuda")
        assert res.backend == "torch:cuda"
    else:
        with pytest.raises(FailedPrecondition, match="CUDA is not available"):
            select_batch("pcoreset", 3, probs=P, device="cuda")


def test_row_sum_tolerance_is_the_exported_constant() -> None:
    p = P.astype(np.float32).copy()
    p[0] *= 1 + PROB_SUM_ATOL / 2  # inside the tolerance
    validate_probs(p)
    p[0] *= 1 + 2 * PROB_SUM_ATOL  # outside
    with pytest.raises(InvalidArgument, match=f"within {PROB_SUM_ATOL:g}"):
        validate_probs(p)
    # float16 softmax outputs of 1000 classes pass: rounding moves sums by < 5e-4
    q = np.random.default_rng(1).dirichlet(np.full(1000, 0.3), size=200).astype(np.float16)
    validate_probs(q)


def test_helpers_return_normalised_values() -> None:
    assert validate_indices(np.array([3, 1], dtype=np.int32), 5).dtype == np.int64
    assert validate_indices(None, 5).size == 0
    assert validate_budget(np.int64(3), 4) == 3
