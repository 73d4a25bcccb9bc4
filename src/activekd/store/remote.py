"""Pool files in object storage (s3://, gs://, ... through fsspec), read through a local cache.

The pool store keeps its layout (``<pool_id>/v-<version>/{item_ids.npy, <array>.npy}``) under a
remote URI; the remote copy is the one every replica shares. Writers write into the local cache,
then :meth:`RemoteFiles.upload` copies a finished version up *before* the Redis metadata names it,
so a reader never sees a version whose files are not all there. A reader whose cache lacks a version
downloads it once (:meth:`RemoteFiles.fetch`: into a private folder, then one rename), and from then
on memory-maps the local copy like any local pool. A ``.complete`` marker says a cached version is
whole; a folder without it (an interrupted download) is fetched again.

Credentials are fsspec's: for S3, the usual ``AWS_*`` variables or files, never a request field.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activekd.errors import FailedPrecondition, InvalidArgument, Unavailable, shown

#: Marker written into a cached version folder once all of its files are there.
COMPLETE_MARKER = ".complete"


def default_cache_dir(uri: str) -> Path:
    """``~/.cache/activekd/store/<hash of uri>``: one cache per remote root."""
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "activekd" / "store" / digest


class RemoteFiles:
    """The remote side of a pool store rooted at an fsspec URI."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        import fsspec

        protocol = uri.split("://", 1)[0]
        try:
            self.fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        except ImportError as exc:
            raise FailedPrecondition(
                f"store root {shown(uri)}: the {protocol}:// filesystem is not installed "
                f"(for s3:// install activekd[s3]): {exc}"
            ) from exc
        except ValueError as exc:
            raise InvalidArgument(f"store root {shown(uri)}: {exc}") from exc
        self.uri = uri
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        self.root = str(root).rstrip("/")

    def _version(self, pool_id: str, version: str) -> str:
        return f"{self.root}/{pool_id}/v-{version}"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One remote operation; storage errors become UNAVAILABLE without host details."""
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except PermissionError as exc:
            raise FailedPrecondition(
                f"object storage refused access while {what}; check the store's credentials"
            ) from exc
        except Exception as exc:  # botocore's connection errors are no OSError
            raise Unavailable(
                f"object storage did not answer while {what} ({type(exc).__name__}); retry"
            ) from exc

    def upload(self, local_dir: Path, pool_id: str, version: str, files: list[str]) -> None:
        """Copy the named files of one local version folder up."""
        target = self._version(pool_id, version)
        for name in files:
            self._call(
                f"uploading pool {pool_id}",
                self.fs.put_file,
                str(local_dir / name),
                f"{target}/{name}",
            )

    def fetch(self, pool_id: str, version: str, local_dir: Path) -> Path:
        """Make ``local_dir`` a complete copy of one remote version; returns ``local_dir``."""
        if (local_dir / COMPLETE_MARKER).exists():
            return local_dir
        source = self._version(pool_id, version)
        try:
            listed = self._call(
                f"listing pool {pool_id}", self.fs.ls, source, detail=False, refresh=True
            )
        except FileNotFoundError as exc:
            raise FailedPrecondition(
                f"pool {shown(pool_id)}: version {version} is registered but its files are not in "
                "object storage; upload the pool again"
            ) from exc
        tmp = local_dir.parent / f".fetch-{version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for remote in listed:
                name = str(remote).rstrip("/").rsplit("/", 1)[-1]
                if name.endswith((".npy", ".json")):
                    self._call(
                        f"downloading pool {pool_id}", self.fs.get_file, remote, str(tmp / name)
                    )
            (tmp / COMPLETE_MARKER).touch()
            if local_dir.exists():  # an interrupted download, or another process won the race
                if (local_dir / COMPLETE_MARKER).exists():
                    return local_dir
                shutil.rmtree(local_dir, ignore_errors=True)
            try:
                tmp.rename(local_dir)
            except OSError:
                if not (local_dir / COMPLETE_MARKER).exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return local_dir

    def fetch_file(self, pool_id: str, version: str, name: str, local_dir: Path) -> Path:
        """One file of a remote version into ``local_dir`` (kept when already there: files are
        only ever written whole, by one rename); returns its local path."""
        target = local_dir / name
        if target.exists():
            return target
        local_dir.mkdir(parents=True, exist_ok=True)
        part = local_dir / f".part-{uuid.uuid4().hex[:8]}-{name}"
        try:
            self._call(
                f"downloading pool {pool_id}",
                self.fs.get_file,
                f"{self._version(pool_id, version)}/{name}",
                str(part),
            )
            os.replace(part, target)
        except FileNotFoundError as exc:
            raise FailedPrecondition(
                f"pool {shown(pool_id)}: version {version} is registered but its file "
                f"{shown(name)} is not in object storage; upload the pool again"
            ) from exc
        finally:
            part.unlink(missing_ok=True)
        return target

    def remove(self, pool_id: str, version: str) -> None:
        """Delete one version's remote files (missing ones are fine)."""
        with contextlib.suppress(FileNotFoundError):
            self._call(
                f"deleting pool {pool_id}", self.fs.rm, self._version(pool_id, version), True
            )


@dataclass(frozen=True)
class RemoteShard:
    """One shard file of a pool version in object storage, fetched by whoever reads it: a Ray
    actor or task downloads only its own shard (:meth:`local_path`) into ``cache_dir`` on its
    machine, instead of every reader holding the whole pool.

    ``path`` is where the file will be once fetched. ``storage_options`` are the store's own
    client settings (``ACTIVEKD_STORE_OPTIONS``), passed to the reader with the shard.
    """

    start: int
    stop: int
    uri: str
    pool_id: str
    version: str
    name: str
    cache_dir: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)  # may hold secrets

    @property
    def path(self) -> Path:
        return Path(self.cache_dir) / self.pool_id / f"v-{self.version}" / self.name

    def local_path(self) -> Path:
        """The shard's local file, downloaded first when this machine's cache lacks it."""
        if self.path.exists():
            return self.path
        remote = RemoteFiles(self.uri, self.storage_options or None)
        return remote.fetch_file(self.pool_id, self.version, self.name, self.path.parent)


def local_file(ref: Any) -> Path:
    """The local path of a shard reference: a :class:`RemoteShard` is fetched first, anything
    else with a ``path`` (``ShardFile``) or a path itself is used as it is."""
    if isinstance(ref, RemoteShard):
        return ref.local_path()
    return Path(getattr(ref, "path", ref))
