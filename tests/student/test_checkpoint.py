"""Checkpoints: round trip, atomic replacement, and corruption detection."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from activekd.errors import FailedPrecondition, NotFound
from activekd.student import (
    CheckpointCorruptError,
    StudentConfig,
    TrainResult,
    dumps_checkpoint,
    load_checkpoint,
    load_student,
    loads_checkpoint,
    save_checkpoint,
    score_pool,
    train_round,
)
from activekd.student.checkpoint import MAGIC


def trained(tiny: Any, seed: int = 0) -> TrainResult:
    cfg = StudentConfig(
        num_classes=4,
        backbone_args={"widths": [4, 8], "pool": 2, "hidden": 16},
        steps=3,
        batch_size_labeled=4,
        batch_size_unlabeled=8,
        seed=seed,
    )
    return train_round(cfg, None, tiny.y[tiny.labeled], tiny.x, tiny.t, labeled_rows=tiny.labeled)


def test_round_trip(tiny: Any, tmp_path: Path) -> None:
    res = trained(tiny)
    path = save_checkpoint(tmp_path / "a" / "round-1.ckpt", res.model, res.config, {"round": 1})
    assert path.exists() and path.read_bytes().startswith(MAGIC)
    ckpt = load_checkpoint(path)
    assert ckpt.config == res.config
    assert ckpt.metadata == {"round": 1}
    assert len(ckpt.sha256) == 64 and ckpt.created_at > 0
    model, _ = load_student(path)
    for k, v in res.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    np.testing.assert_array_equal(
        score_pool(model, tiny.x).probs, score_pool(res.model, tiny.x).probs
    )
    # A state dict saves the same way as a model, and the bytes API matches the file API.
    assert loads_checkpoint(dumps_checkpoint(res.state_dict(), res.config)).config == res.config


def test_failed_write_keeps_the_old_checkpoint(
    tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "student.ckpt"
    old = trained(tiny, seed=0)
    save_checkpoint(path, old.model, old.config, {"round": 1})
    old_bytes = path.read_bytes()

    def crash(src: Any, dst: Any) -> None:  # the process dies between write and rename
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    new = trained(tiny, seed=1)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, new.model, new.config, {"round": 2})
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert load_checkpoint(path).metadata == {"round": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.ckpt"]  # no temp file left

    save_checkpoint(path, new.model, new.config, {"round": 2})
    assert load_checkpoint(path).metadata == {"round": 2}


@pytest.mark.parametrize("where", ["truncate_half", "truncate_1", "flip_payload", "flip_header"])
def test_damaged_files_never_load(tiny: Any, tmp_path: Path, where: str) -> None:
    res = trained(tiny)
    path = save_checkpoint(tmp_path / "c.ckpt", res.model, res.config)
    data = bytearray(path.read_bytes())
    if where == "truncate_half":
        data = data[: len(data) // 2]
    elif where == "truncate_1":
        data = data[:-1]
    elif where == "flip_payload":
        data[len(data) - 100] ^= 0x01  # inside the last tensor's bytes: torch.load alone accepts it
    else:
        data[3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError) as err:
        load_checkpoint(path)
    assert isinstance(err.value, FailedPrecondition)


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointCorruptError, match="bad header"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointCorruptError):
        loads_checkpoint(b"")


def test_metadata_must_be_json(tiny: Any, tmp_path: Path) -> None:
    res = trained(tiny)
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "m.ckpt", res.model, res.config, {"bad": object()})
    assert not any(tmp_path.iterdir())
