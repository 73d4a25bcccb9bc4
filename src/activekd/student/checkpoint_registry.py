"""Where the trainer keeps round checkpoints: ``<root>/<experiment>/round-<r>.ckpt``.

Files are written by :func:`activekd.student.checkpoint.save_checkpoint` (temp file + fsync +
rename), so a crash mid-save leaves the previous file and a ``.round-<r>.ckpt.*.tmp`` temp file,
which :meth:`CheckpointRegistry.clean_temp_files` removes. :class:`CheckpointInfo` is the one
description of a stored checkpoint (the trainer client returns it too, without ``path``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from activekd.errors import InvalidArgument, NotFound, shown
from activekd.state.round_records import check_experiment_id

_CKPT_NAME = re.compile(r"^round-(\d+)\.ckpt$")


@dataclass(frozen=True)
class CheckpointInfo:
    """A stored student checkpoint; ``sha256`` is of the whole file's bytes (what a download
    gets). ``path`` is the file on the trainer's disk (None where the file is remote)."""

    checkpoint_id: str
    experiment_id: str
    round: int
    size_bytes: int
    sha256: str
    created_unix: float
    path: Path | None = None


def file_sha256(fh: BinaryIO, chunk_bytes: int = 1 << 20) -> tuple[str, int]:
    """SHA-256 hex digest and byte count of ``fh`` read from its current position to the end."""
    digest, size = hashlib.sha256(), 0
    while True:
        block = fh.read(chunk_bytes)
        if not block:
            return digest.hexdigest(), size
        digest.update(block)
        size += len(block)


def _missing(experiment_id: str, round_: int) -> NotFound:
    return NotFound(
        f"experiment {shown(experiment_id)} has no checkpoint for round {round_}", field="round"
    )


class CheckpointRegistry:
    """Checkpoint files under ``root``: paths, info (hash cached by mtime/size/inode), listing,
    reading and temp-file cleanup. Thread-safe."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._sha_by_file: dict[tuple[str, int, int, int], str] = {}

    def path(self, experiment_id: str, round_: int) -> Path:
        """``<root>/<experiment>/round-<r>.ckpt`` (the id is validated first)."""
        check_experiment_id(experiment_id)
        if round_ < 0:
            raise InvalidArgument(f"round {round_} must be >= 0", field="round")
        return self.root / experiment_id / f"round-{int(round_)}.ckpt"

    def describe(self, experiment_id: str, round_: int, path: Path | None = None) -> CheckpointInfo:
        """Info of the round's file (or of ``path``); FileNotFoundError when it is absent."""
        path = path or self.path(experiment_id, round_)
        stat = path.stat()
        cache_key = (str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)
        sha = self._sha_by_file.get(cache_key)
        if sha is None:
            with path.open("rb") as fh:
                sha, _ = file_sha256(fh)
        with self._lock:
            self._sha_by_file = {
                key: value for key, value in self._sha_by_file.items() if key[0] != str(path)
            }
            self._sha_by_file[cache_key] = sha
        return CheckpointInfo(
            checkpoint_id=f"{experiment_id}/round-{round_}",
            experiment_id=experiment_id,
            round=round_,
            path=path,
            size_bytes=stat.st_size,
            sha256=sha,
            created_unix=stat.st_mtime,
        )

    def info(self, experiment_id: str, round_: int) -> CheckpointInfo:
        """Info of the stored checkpoint; NotFound when the round has none."""
        try:
            return self.describe(experiment_id, round_)
        except FileNotFoundError:
            raise _missing(experiment_id, round_) from None

    def list(self, experiment_id: str) -> list[CheckpointInfo]:
        """Every stored checkpoint of an experiment, by round."""
        folder = self.root / check_experiment_id(experiment_id)
        found = []
        for path in folder.glob("round-*.ckpt") if folder.is_dir() else []:
            match = _CKPT_NAME.match(path.name)
            if match:
                with contextlib.suppress(FileNotFoundError):
                    found.append(self.describe(experiment_id, int(match.group(1)), path))
        return sorted(found, key=lambda info: info.round)

    @contextlib.contextmanager
    def open(self, experiment_id: str, round_: int) -> Iterator[tuple[BinaryIO, CheckpointInfo]]:
        """The checkpoint file opened for reading (at offset 0) and its info, hashed from the same
        open file so a concurrent re-save cannot make the two disagree. NotFound when absent."""
        path = self.path(experiment_id, round_)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise _missing(experiment_id, round_) from None
        with fh:
            sha, size = file_sha256(fh)
            fh.seek(0)
            info = CheckpointInfo(
                checkpoint_id=f"{experiment_id}/round-{round_}",
                experiment_id=experiment_id,
                round=round_,
                path=path,
                size_bytes=size,
                sha256=sha,
                created_unix=os.fstat(fh.fileno()).st_mtime,
            )
            yield fh, info

    def clean_temp_files(
        self, experiment_id: str | None = None, round_: int | None = None, older_than: float = 0.0
    ) -> int:
        """Removes temp files left by interrupted saves (of one round, one experiment or all)
        older than ``older_than`` seconds; returns how many."""
        if experiment_id is None:
            folders = [p for p in self.root.glob("*") if p.is_dir()]
        else:
            folders = [self.root / experiment_id]
        pattern = f".round-{round_}.ckpt.*.tmp" if round_ is not None else ".round-*.ckpt.*.tmp"
        now, removed = time.time(), 0
        for folder in folders:
            for path in folder.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    if now - path.stat().st_mtime >= older_than:
                        path.unlink()
                        removed += 1
        return removed


__all__ = ["CheckpointInfo", "CheckpointRegistry", "file_sha256"]
