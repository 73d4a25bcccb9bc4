"""Student checkpoints: config + weights + metadata in one checksummed file, written atomically.

File layout: ``MAGIC`` | payload length (8 bytes, big-endian) | SHA-256 of the payload (32 bytes)
| payload (``torch.save`` of plain data: config JSON, metadata JSON, state dict). Writes go to a
temporary file in the same folder, are fsynced and then ``os.replace``-d over the target, so a
reader sees either the old file or the new one; a truncated or altered file fails the length or
checksum test and raises :class:`CheckpointCorruptError` instead of loading.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from activekd.devices import torch_device
from activekd.errors import InvalidArgument, NotFound
from activekd.student.config import StudentConfig
from activekd.student.errors import CheckpointCorruptError
from activekd.student.model import DualHeadStudent, build_student

MAGIC = b"ACTIVEKD-STUDENT\x00v1\n"
FORMAT_VERSION = 1
_HEADER = len(MAGIC) + 8 + 32


@dataclass
class Checkpoint:
    """A loaded checkpoint: resolved ``config``, CPU ``state_dict``, free-form JSON ``metadata``,
    ``created_at`` (unix seconds) and the payload's ``sha256`` hex digest."""

    config: StudentConfig
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    sha256: str = ""


def _state_of(model_or_state: DualHeadStudent | Mapping[str, torch.Tensor]) -> dict[str, Any]:
    raw = (
        model_or_state.state_dict()
        if isinstance(model_or_state, torch.nn.Module)
        else model_or_state
    )
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in raw.items()}


def dumps_checkpoint(
    model_or_state: DualHeadStudent | Mapping[str, torch.Tensor],
    config: StudentConfig,
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """The checkpoint file's bytes (see module docstring)."""
    try:
        meta_json = json.dumps(dict(metadata or {}), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"checkpoint metadata must be JSON-serialisable: {exc}") from exc
    payload = {
        "format_version": FORMAT_VERSION,
        "config": config.to_json(),
        "metadata": meta_json,
        "created_at": time.time(),
        "state_dict": _state_of(model_or_state),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    return MAGIC + len(body).to_bytes(8, "big") + hashlib.sha256(body).digest() + body


def loads_checkpoint(data: bytes, source: str = "<bytes>") -> Checkpoint:
    """Parses and verifies checkpoint bytes; CheckpointCorruptError when anything is off."""
    if len(data) < _HEADER or not data.startswith(MAGIC):
        raise CheckpointCorruptError(
            f"checkpoint {source} is not a student checkpoint (bad header)"
        )
    length = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "big")
    digest = data[len(MAGIC) + 8 : _HEADER]
    body = data[_HEADER:]
    if len(body) != length:
        raise CheckpointCorruptError(
            f"checkpoint {source} is truncated or padded: {len(body)} payload bytes, "
            f"header says {length}"
        )
    sha = hashlib.sha256(body)
    if sha.digest() != digest:
        raise CheckpointCorruptError(f"checkpoint {source} fails its SHA-256 check")
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
        if payload.get("format_version") != FORMAT_VERSION:
            raise CheckpointCorruptError(
                f"checkpoint {source} has format {payload.get('format_version')!r}, "
                f"this code reads {FORMAT_VERSION}"
            )
        config = StudentConfig.from_json(payload["config"])
        metadata = json.loads(payload["metadata"])
        state = dict(payload["state_dict"])
    except CheckpointCorruptError:
        raise
    except Exception as exc:
        raise CheckpointCorruptError(f"checkpoint {source} cannot be decoded: {exc}") from exc
    return Checkpoint(
        config=config,
        state_dict=state,
        metadata=metadata,
        created_at=float(payload.get("created_at", 0.0)),
        sha256=sha.hexdigest(),
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model_or_state: DualHeadStudent | Mapping[str, torch.Tensor],
    config: StudentConfig,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically writes a checkpoint (temp file + fsync + ``os.replace`` + folder fsync).

    ``config`` should be the resolved one (``TrainResult.config``) so the model can be rebuilt.
    Creates missing parent folders. Returns the final path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = dumps_checkpoint(model_or_state, config, metadata)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return target
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Reads and verifies a checkpoint; NotFound if missing, CheckpointCorruptError if damaged."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"checkpoint {str(p)!r} does not exist") from exc
    return loads_checkpoint(data, repr(str(p)))


def load_student(
    path_or_checkpoint: str | os.PathLike[str] | Checkpoint, device: str | torch.device = "cpu"
) -> tuple[DualHeadStudent, Checkpoint]:
    """Rebuilds the student of a checkpoint (eval mode, on ``device``)."""
    ckpt = (
        path_or_checkpoint
        if isinstance(path_or_checkpoint, Checkpoint)
        else load_checkpoint(path_or_checkpoint)
    )
    cfg = ckpt.config
    args = dict(cfg.backbone_args)
    if args.get("weights_path"):
        args["weights_path"] = None  # the checkpoint holds the trained weights already
        cfg = cfg.replace(backbone_args=args)
    model = build_student(cfg)
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        raise CheckpointCorruptError(f"checkpoint weights do not fit its config: {exc}") from exc
    model.to(torch_device(device))
    model.eval()
    return model, ckpt
