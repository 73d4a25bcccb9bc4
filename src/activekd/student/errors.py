"""Student-specific domain errors (subclasses of ``activekd.errors``, so the gRPC mapping holds)."""

from __future__ import annotations

from activekd.errors import FailedPrecondition


class NonFiniteLossError(FailedPrecondition):
    """Training produced a NaN/inf loss (or weights) at ``step``; nothing was returned, so the
    caller keeps its previous checkpoint. Lower ``lr``, enable ``grad_clip`` or check inputs."""

    def __init__(self, message: str, *, step: int) -> None:
        super().__init__(message)
        self.step = step


class CheckpointCorruptError(FailedPrecondition):
    """A checkpoint file is truncated, altered or not a checkpoint (checksum or format check)."""


__all__ = ["CheckpointCorruptError", "NonFiniteLossError"]
