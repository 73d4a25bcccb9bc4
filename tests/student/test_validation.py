"""Bad inputs to train_round / score_pool / evaluate fail early with InvalidArgument naming the
field, before any training happens."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from activekd.errors import FailedPrecondition, InvalidArgument
from activekd.student import StudentConfig, evaluate, score_pool, train_round

CFG = StudentConfig(
    num_classes=4,
    backbone_args={"widths": [4], "pool": 1, "hidden": 8},
    steps=1,
    batch_size_labeled=2,
    batch_size_unlabeled=2,
)


def call(tiny: Any, **over: Any) -> None:
    args: dict[str, Any] = dict(
        config=CFG,
        x_labeled=tiny.x[tiny.labeled],
        y_labeled=tiny.y[tiny.labeled],
        x_all=tiny.x,
        teacher_probs_all=tiny.t,
        teacher_probs_labeled=tiny.t[tiny.labeled],
        device="cpu",
    )
    args.update(over)
    train_round(**args)


def test_valid_call_passes(tiny: Any) -> None:
    call(tiny)  # the baseline of every case below trains without error


@pytest.mark.parametrize(
    ("make", "field", "needle"),
    [
        (
            lambda d: {"y_labeled": np.array([0, 1, 4, 0, 0, 0, 0, 0])},
            "y_labeled",
            "outside [0, 4)",
        ),
        (lambda d: {"y_labeled": np.array([0, -1, 1, 0, 0, 0, 0, 0])}, "y_labeled", "outside"),
        (lambda d: {"y_labeled": np.array([0.5] * 8)}, "y_labeled", "integer"),
        (lambda d: {"y_labeled": d.y[:3]}, "y_labeled", "3 labels for 8"),
        (
            lambda d: {
                "x_labeled": d.x[:0],
                "y_labeled": d.y[:0],
                "teacher_probs_labeled": d.t[:0],
            },
            "y_labeled",
            "empty",
        ),
        (lambda d: {"teacher_probs_all": d.t[:, :3].copy()}, "teacher_probs_all", "3 classes"),
        (lambda d: {"teacher_probs_all": d.t[:40]}, "teacher_probs_all", "40 rows for 48"),
        (lambda d: {"teacher_probs_all": d.t * 2}, "teacher_probs_all", "not a probability"),
        (  # rows sum to 1 but hold a negative entry
            lambda d: {
                "teacher_probs_all": np.tile(np.array([-0.5, 0.5, 0.5, 0.5], np.float32), (48, 1))
            },
            "teacher_probs_all",
            "row 0 is not a probability",
        ),
        (
            lambda d: {"teacher_probs_all": np.where(np.arange(48)[:, None] == 7, np.nan, d.t)},
            "teacher_probs_all",
            "row 7",
        ),
        (lambda d: {"teacher_probs_all": d.t.astype(np.int64)}, "teacher_probs_all", "float"),
        (lambda d: {"teacher_probs_labeled": d.t[:2]}, "teacher_probs_labeled", "2 rows for 8"),
        (lambda d: {"teacher_probs_all": None}, "teacher_probs_all", "required"),
        (lambda d: {"teacher_probs_labeled": None}, "teacher_probs_labeled", "required"),
        (lambda d: {"x_all": d.x[:, :, :5]}, "x_labeled", "rows have shape"),
        (lambda d: {"x_all": d.x.reshape(48, -1)}, "x_all", "images"),
        (lambda d: {"x_all": d.x.astype(np.int32)}, "x_all", "uint8"),
        (lambda d: {"x_all": d.x.tolist()}, "x_all", "numpy array"),
        (lambda d: {"x_all": np.zeros((48, 3, 5, 3), np.uint8)}, "x_all", "ambiguous"),
        (
            lambda d: {"x_all": np.where(np.arange(48)[:, None, None] == 5, np.inf, d.x / 255.0)},
            "x_all",
            "row 5",
        ),
        (lambda d: {"x_all": d.x[:0]}, "x_all", "empty"),
    ],
)
def test_bad_inputs(tiny: Any, make: Any, field: str, needle: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        call(tiny, **make(tiny))
    assert err.value.field == field, str(err.value)
    assert needle in str(err.value)


def test_vector_inputs(tiny: Any) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6)).astype(np.float32)
    cfg = StudentConfig(num_classes=4, backbone="mlp", steps=1, batch_size_unlabeled=4)
    res = train_round(cfg, None, tiny.y[:5], x, tiny.t, labeled_rows=np.arange(5), device="cpu")
    assert res.config.backbone_args["input_dim"] == 6  # inferred and recorded
    with pytest.raises(InvalidArgument, match="has 5 features"):
        score_pool(res.model, x[:, :5])
    with pytest.raises(InvalidArgument, match=r"feature vectors \(N, D\)"):
        train_round(cfg, None, tiny.y[:5], tiny.x, tiny.t, labeled_rows=np.arange(5))


def test_labeled_rows_checks(tiny: Any) -> None:
    for rows, needle in [(np.array([0, 48]), r"\[0, 48\)"), (np.array([0.0, 1.0]), "integer")]:
        with pytest.raises(InvalidArgument, match=needle):
            train_round(CFG, None, tiny.y[:2], tiny.x, tiny.t, labeled_rows=rows)
    with pytest.raises(InvalidArgument, match="x_labeled is missing"):
        train_round(CFG, None, tiny.y[:2], tiny.x, tiny.t)


def test_bad_config_and_device(tiny: Any) -> None:
    with pytest.raises(InvalidArgument, match="backbone"):
        call(tiny, config=CFG.__class__(backbone="nope"))
    if torch.cuda.is_available():  # the CUDA path: bf16/fp16 autocast, outputs float32
        res = train_round(
            CFG, None, tiny.y[:4], tiny.x, tiny.t, labeled_rows=np.arange(4), device="cuda"
        )
        assert res.device.startswith("cuda")
        probs = score_pool(res.model, tiny.x).probs
        assert probs.dtype == np.float32 and np.isfinite(probs).all()
    else:
        with pytest.raises(FailedPrecondition, match="CUDA is not available"):
            call(tiny, device="cuda")
    with pytest.raises(InvalidArgument, match="not a torch device"):
        call(tiny, device="tpu9")
    with pytest.raises(InvalidArgument, match="needs CUDA"):
        call(tiny, config=CFG.replace(precision="bf16"), device="cpu")


def test_evaluate_and_score_checks(tiny: Any) -> None:
    res = train_round(CFG, None, tiny.y[:4], tiny.x, tiny.t, labeled_rows=np.arange(4))
    with pytest.raises(InvalidArgument, match="outside"):
        evaluate(res.model, tiny.x, np.full(48, 9))
    with pytest.raises(InvalidArgument, match="3 classes"):
        evaluate(res.model, tiny.x, tiny.y, tiny.t[:, :3].copy())
    with pytest.raises(InvalidArgument, match="batch_size"):
        score_pool(res.model, tiny.x, batch_size=-1)
