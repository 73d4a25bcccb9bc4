"""A round's picks as Label Studio tasks, and the predictions that order them.

Each task's data holds the image (a PNG data URL), ``item_id``, ``experiment``, ``round`` and
``rank`` (0 = picked first), so the free edition's Data Manager can sort by ``round``/``rank``.
Its prediction carries the round's ``model_version`` and a ``score`` that is **a rank, not a
confidence**: ``(n - rank) / n`` for the ``n`` picks of the round, so sorting by score
(descending) lists the picks in the order the strategy chose them. The predicted choice is the
class the current model gives the item (its probabilities come from the pool store).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from activekd.annotation.classes import ClassMap
from activekd.errors import InvalidArgument


def model_version(experiment_id: str, round_: int) -> str:
    """The ``model_version`` of round ``round_``'s predictions."""
    return f"{experiment_id}/round-{int(round_)}"


def rank_score(rank: int, n: int) -> float:
    """The prediction score of the pick at ``rank`` (0-based) of ``n``: 1.0 first, 1/n last."""
    if n <= 0 or not 0 <= rank < n:
        raise InvalidArgument(f"rank {rank} is outside 0..{n - 1}")
    return (n - rank) / n


def image_data_url(image: np.ndarray) -> str:
    """A uint8 (H, W) or (H, W, 3|4) image as a ``data:image/png;base64,...`` URL."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InvalidArgument(f"images must be uint8 to show annotators, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise InvalidArgument(f"an image must be (H, W) or (H, W, C), got {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def prediction(classes: ClassMap, predicted: int, score: float, version: str) -> dict[str, Any]:
    """One Label Studio prediction choosing class ``predicted``."""
    ctl = classes.control
    return {
        "model_version": version,
        "score": float(score),
        "result": [
            {
                "from_name": ctl.from_name,
                "to_name": ctl.to_name,
                "type": "choices",
                "value": {"choices": [classes.name(predicted)]},
            }
        ],
    }


def round_tasks(
    experiment_id: str,
    round_: int,
    picks: Sequence[str],
    images: Mapping[str, np.ndarray],
    predicted: Mapping[str, int],
    classes: ClassMap,
) -> list[dict[str, Any]]:
    """The tasks of round ``round_``'s ``picks`` (in pick order), with ranked predictions."""
    version = model_version(experiment_id, round_)
    out = []
    for rank, item in enumerate(picks):
        task: dict[str, Any] = {
            "data": {
                classes.control.data_key: image_data_url(images[item]),
                "item_id": item,
                "experiment": experiment_id,
                "round": int(round_),
                "rank": rank,
            }
        }
        if item in predicted:
            task["predictions"] = [
                prediction(classes, predicted[item], rank_score(rank, len(picks)), version)
            ]
        out.append(task)
    return out


__all__ = ["image_data_url", "model_version", "prediction", "rank_score", "round_tasks"]
