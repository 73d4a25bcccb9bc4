"""Greedy k-center with each row shard of a ``.npy`` pool memory-mapped by its own Ray actor.

The coordinator is :func:`activekd.selection.sharded.kcenter_over_shards` (one copy of the
algorithm and its ties rule); this module only puts :class:`~activekd.selection.sharded.LocalWorker`
into actors. Each actor maps the pool file read-only and touches only its rows, so its memory is
its shard plus O(shard rows) bookkeeping. The file must be readable at the same path by every
node (a shared volume; object storage is the pool store's job).

Ray's token authentication stays on: :class:`RayCluster` starts a local instance with
``RAY_AUTH_MODE=token`` and a private token file (0600, one per process, kept while it lives)
when Ray is not imported yet (Ray reads these variables at import, so later local instances in
the same process reuse that file); otherwise with Ray's own default for local clusters
(token auth on since Ray 2.59, token in ``~/.ray/auth_token``), and it refuses to run when the
instance came up without token auth. ``address`` connects to a cluster with the token the
environment gives (``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``).
"""

from __future__ import annotations

import atexit
import itertools
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from activekd.errors import ActiveKDError
from activekd.selection._distance import DEFAULT_CHUNK_BYTES, compute_dtype
from activekd.selection.kcenter import ProgressFn
from activekd.selection.result import SelectionResult
from activekd.selection.sharded import (
    LocalWorker,
    ShardSpec,
    chunk_rows,
    kcenter_over_shards,
    owners_of,
    shard_bounds,
)
from activekd.store.remote import RemoteShard, local_file


def _ray() -> Any:
    """Ray, imported on first use (its auth settings must be in the environment by then)."""
    import ray  # without the extra: MissingExtraError naming 'ray'

    return ray


#: the token file this process made for Ray (Ray reads RAY_AUTH_TOKEN_PATH once, at import, so
#: the file lives as long as the process and every later local instance reuses it)
_PROCESS_TOKEN: list[Path] = []


def _process_token() -> Path:
    """The private (0600) token file of this process's local Ray instances, made once."""
    if not _PROCESS_TOKEN:
        folder = Path(tempfile.mkdtemp(prefix="akd-ray-token-"))
        atexit.register(shutil.rmtree, folder, True)
        token = folder / "token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        _PROCESS_TOKEN.append(token)
    return _PROCESS_TOKEN[0]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RayCluster:
    """A Ray connection with token auth: ``address=None`` starts a local instance (``num_cpus``)
    in a private temp dir; otherwise connects to ``address`` (e.g. ``ray://head:10001``).
    ``dashboard``: the local instance also serves the dashboard and Jobs API on loopback
    (``dashboard_url`` once started; token auth covers it too)."""

    def __init__(
        self, address: str | None = None, *, num_cpus: int | None = None, dashboard: bool = False
    ) -> None:
        self.address, self.num_cpus, self.dashboard = address, num_cpus, dashboard
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        #: ``http://127.0.0.1:PORT`` of the local dashboard / Jobs API ("" when none)
        self.dashboard_url = ""

    def start(self) -> RayCluster:
        if self.address is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="akd-ray-")
            ours = bool(_PROCESS_TOKEN) and os.environ.get("RAY_AUTH_TOKEN_PATH") == str(
                _PROCESS_TOKEN[0]
            )
            if "ray" not in sys.modules or ours:  # Ray reads its auth settings at import
                # set for the process's lifetime: a Ray imported with them keeps using them
                os.environ["RAY_AUTH_MODE"] = "token"
                os.environ["RAY_AUTH_TOKEN_PATH"] = str(_process_token())
            ray = _ray()
            web = {"dashboard_host": "127.0.0.1", "dashboard_port": _free_port()}
            ctx = ray.init(
                num_cpus=self.num_cpus,
                include_dashboard=self.dashboard,
                log_to_driver=False,
                _temp_dir=str(Path(self._tmp.name) / "r"),
                **(web if self.dashboard else {}),
            )
            if self.dashboard and ctx.dashboard_url:
                self.dashboard_url = f"http://{ctx.dashboard_url}"
        else:
            mode = os.environ.get("RAY_AUTH_MODE")
            if mode is None and "ray" not in sys.modules:
                # unset: token mode, set before Ray's import reads it (the token itself comes
                # from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH, as the cluster's pods have it)
                os.environ["RAY_AUTH_MODE"] = mode = "token"
            if mode != "token":
                raise RuntimeError(
                    "RAY_AUTH_MODE must be 'token' (set before Ray is imported) to connect to a "
                    "cluster"
                )
            ray = _ray()
            ray.init(address=self.address, log_to_driver=False)
        if os.environ.get("RAY_AUTH_MODE") != "token":
            ray.shutdown()
            raise RuntimeError(
                "the Ray instance runs without token authentication: set RAY_AUTH_MODE=token "
                "(and RAY_AUTH_TOKEN_PATH) before Ray is imported"
            )
        return self

    def stop(self) -> None:
        _ray().shutdown()  # the token settings stay: Ray read them at import
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: seconds the actors of one selection may take to be placed and started before the call fails
#: (a cluster without room for every shard's actor would otherwise leave it waiting forever)
ACTOR_START_SECONDS = 120.0


class ShardPlacementError(RuntimeError):
    """The cluster did not start every shard actor in time (too few CPUs for the shards)."""


def wait_actors_up(
    handles: Sequence[Any], cpus_per_worker: float, timeout: float, probe: str = "pid"
) -> list[Any]:
    """Wait until every actor answers its ``probe`` method (no arguments); returns the answers,
    so a caller that needs something from the actors asks for it in the same round-trip.
    Raises :class:`ShardPlacementError` (saying what to change) when they are not all up within
    ``timeout`` seconds."""
    ray = _ray()
    from ray.exceptions import GetTimeoutError

    try:
        return list(ray.get([getattr(h, probe).remote() for h in handles], timeout=timeout))
    except GetTimeoutError:
        have = float(ray.cluster_resources().get("CPU", 0.0))
        raise ShardPlacementError(
            f"the Ray cluster did not start the {len(handles)} shard actors of {cpus_per_worker:g} "
            f"CPU each in {timeout:g} s (the cluster has {have:g} CPUs): lower the CPUs per "
            "shard (ACTIVEKD_RAY_CPUS_PER_SHARD), store the pool in fewer, larger shards, or "
            "add nodes"
        ) from None


def launch_actors(
    actor_cls: Any,
    args: Sequence[tuple[Any, ...]],
    cpus: float,
    timeout: float,
    probe: str = "pid",
) -> tuple[list[Any], list[Any]]:
    """One ``actor_cls`` actor per argument tuple, returned once all are up
    (:func:`wait_actors_up`) with their answers to ``probe``; on failure the ones started are
    killed and the error raised."""
    ray = _ray()
    actors = [actor_cls.remote(*a) for a in args]
    try:
        answers = wait_actors_up(actors, cpus, timeout, probe)
    except BaseException:
        for h in actors:
            ray.kill(h)
        raise
    return actors, answers


class ShardActor:
    """A :class:`LocalWorker` over rows of the memory-mapped pool file (run as a Ray actor)."""

    def __init__(self, path: str | ShardFileRef, spec: ShardSpec) -> None:
        """``path``: the whole pool's ``.npy`` file, or (``spec.file_offset`` set) a shard file
        holding rows from ``spec.file_offset``: a path, or a shard reference of the pool store
        (a ``RemoteShard`` is downloaded here first, only this shard)."""
        self.base_rss = self.rss_bytes()  # the interpreter and libraries, before any pool row
        files = self._open(path)
        if files is None:
            return
        (x,) = files
        self.width, self.dtype = int(x.shape[1]), x.dtype
        self.worker = LocalWorker(x, spec)

    def _open(self, *refs: str | ShardFileRef) -> list[np.ndarray] | None:
        """The files memory-mapped (fetched first when remote), or None with ``self.error`` set:
        an error of ours (e.g. a file gone from the store: upload again) is raised from every
        call, because Ray reports a constructor's exception only as a dead actor, which the
        caller would take for a retry."""
        self.error: ActiveKDError | None = None
        try:
            return [np.load(local_file(r), mmap_mode="r") for r in refs]
        except ActiveKDError as exc:
            self.error = exc
            return None

    def _ok(self) -> None:
        if self.error is not None:
            raise self.error

    def shape(self) -> tuple[int, np.dtype]:
        """(columns, dtype) of this actor's file (the readiness probe)."""
        self._ok()
        return self.width, self.dtype

    def call(self, method: str, *args: Any) -> Any:
        self._ok()
        return getattr(self.worker, method)(*args)

    @staticmethod
    def rss_bytes() -> int:
        """This actor process's resident memory."""
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def memory(self) -> tuple[int, int]:
        """(resident bytes, resident bytes added since start: the shard's pages + state)."""
        now = self.rss_bytes()
        return now, now - self.base_rss

    def pid(self) -> int:
        return os.getpid()


#: (actor handles, their [a, b) row bounds, the sorted initial centres, (rows, width, dtype))
ShardActors = tuple[list[Any], list[tuple[int, int]], np.ndarray, tuple[int, int, np.dtype]]


class ShardFileRef(Protocol):
    """A file holding rows ``[start, stop)`` of a pool (``activekd.store.ShardFile``)."""

    @property
    def start(self) -> int: ...
    @property
    def stop(self) -> int: ...
    @property
    def path(self) -> Path: ...


ShardT = TypeVar("ShardT", bound=ShardFileRef)


def file_arg(shard: ShardFileRef) -> str | ShardFileRef:
    """What an actor or task is given for a shard file: its path, or the pool store's
    ``RemoteShard`` reference (downloaded there, only that file) for a remote store."""
    return shard if isinstance(shard, RemoteShard) else str(shard.path)


def in_row_order(shards: Sequence[ShardT]) -> list[ShardT]:
    """``shards`` sorted by their first row; ValueError unless they cover rows 0..n without gaps
    (every Ray path over a sharded pool's files starts here)."""
    out = sorted(shards, key=lambda s: s.start)
    if not out or out[0].start != 0 or any(a.stop != b.start for a, b in itertools.pairwise(out)):
        raise ValueError("the shard files must cover rows 0..n in order, without gaps")
    return out


def start_file_shard_actors(
    shards: Sequence[ShardFileRef],
    budget: int,
    *,
    centres: Sequence[int] | np.ndarray | None = None,
    normalize: bool = False,
    prune: bool = True,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    cpus_per_worker: float = 1.0,
    start_timeout: float = ACTOR_START_SECONDS,
) -> ShardActors:
    """One actor per shard file of a stored sharded pool (``PoolStore.open_shards``), each
    memory-mapping its file alone, all up (:func:`wait_actors_up`, else killed); same return as
    :func:`start_shard_actors`."""
    ray = _ray()
    shards = in_row_order(shards)
    initial = np.unique(np.asarray(centres if centres is not None else [], dtype=np.int64))
    actor_cls = ray.remote(num_cpus=cpus_per_worker, max_restarts=0)(ShardActor)
    args = [
        (
            file_arg(s),
            ShardSpec(
                s.start,
                s.stop,
                initial,
                len(initial) + budget,
                normalize=normalize,
                prune=prune,
                chunk_bytes=chunk_bytes,
                file_offset=s.start,
            ),
        )
        for s in shards
    ]
    # the readiness probe reads each file's (width, dtype): the file may be remote
    actors, shapes = launch_actors(actor_cls, args, cpus_per_worker, start_timeout, "shape")
    d, dtype = shapes[0]
    n = int(shards[-1].stop)
    return actors, [(s.start, s.stop) for s in shards], initial, (n, int(d), compute_dtype(dtype))


def kcenter_on_ray_files(
    shards: Sequence[ShardFileRef],
    budget: int,
    *,
    centres: Sequence[int] | np.ndarray | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> SelectionResult:
    """:func:`kcenter_on_ray` over the shard files of a stored sharded pool, one actor each:
    the picks and scores of ``kcenter_greedy`` on the joined pool, whatever the shard size
    (the pool mean is summed over the single-process chunk grid). ``options`` as for
    :func:`start_file_shard_actors`."""
    chunk_bytes = int(options.get("chunk_bytes", DEFAULT_CHUNK_BYTES))
    t0 = time.perf_counter()
    started = start_file_shard_actors(shards, budget, centres=centres, **options)
    start_seconds = time.perf_counter() - t0
    _, _, _, (_, d, cd) = started
    res = kcenter_on_ray(
        "",
        budget,
        len(started[0]),
        progress=progress,
        actors=started,
        grid=chunk_rows(d, cd, chunk_bytes),
        own=True,
    )
    res.stats["setup_seconds"] += start_seconds
    return res


def start_shard_actors(
    path: str | Path,
    workers: int,
    budget: int,
    *,
    centres: Sequence[int] | np.ndarray | None = None,
    normalize: bool = False,
    prune: bool = True,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    cpus_per_worker: float = 1.0,
    start_timeout: float = ACTOR_START_SECONDS,
) -> ShardActors:
    """Start one actor per shard of the ``.npy`` pool at ``path``, all up
    (:func:`wait_actors_up`, else killed): (actors, bounds, initial centres, (n, d, compute
    dtype))."""
    ray = _ray()
    x = np.load(str(path), mmap_mode="r")
    n, d = int(x.shape[0]), int(x.shape[1])
    cd = compute_dtype(x.dtype)
    del x
    initial = np.unique(np.asarray(centres if centres is not None else [], dtype=np.int64))
    bounds = shard_bounds(n, workers, align=chunk_rows(d, cd, chunk_bytes))
    actor_cls = ray.remote(num_cpus=cpus_per_worker, max_restarts=0)(ShardActor)
    args = [
        (
            str(path),
            ShardSpec(
                a,
                b,
                initial,
                len(initial) + budget,
                normalize=normalize,
                prune=prune,
                chunk_bytes=chunk_bytes,
            ),
        )
        for a, b in bounds
    ]
    actors, _ = launch_actors(actor_cls, args, cpus_per_worker, start_timeout)
    return actors, bounds, initial, (n, d, cd)


def kcenter_on_ray(
    path: str | Path,
    budget: int,
    workers: int,
    *,
    centres: Sequence[int] | np.ndarray | None = None,
    progress: ProgressFn | None = None,
    actors: ShardActors | None = None,
    grid: int = 0,
    own: bool | None = None,
    **options: Any,
) -> SelectionResult:
    """``budget`` greedy k-center picks over the ``.npy`` pool at ``path`` split into
    ``workers`` Ray actors (a connected :class:`RayCluster` or ``ray.init`` first): the same
    picks and scores as ``kcenter_greedy(np.load(path), budget, centres=centres, ...)`` on CPU.

    ``options`` (normalize, prune, chunk_bytes, cpus_per_worker, start_timeout) go to
    :func:`start_shard_actors`, which returns once every actor is up. ``actors``: reuse what it
    (or :func:`start_file_shard_actors`) returned (the caller kills them); else they are started
    and killed here. Stats add ``setup_seconds``, ``worker_rss_bytes_max`` and
    ``worker_data_bytes_max`` (the most resident memory an actor added after it started: its
    shard's pages and the k-center state). ``grid``: see :func:`kcenter_over_shards`; ``own``:
    kill the actors at the end (default: when started here).
    """
    ray = _ray()
    t0 = time.perf_counter()
    own = actors is None if own is None else own
    started = actors or start_shard_actors(path, workers, budget, centres=centres, **options)
    handles, bounds, initial, (n, d, cd) = started
    setup = time.perf_counter() - t0
    try:

        def call_all(method: str, args: tuple[Any, ...]) -> list[Any]:
            return list(ray.get([h.call.remote(method, *args) for h in handles]))

        def gather(w: int, rows: np.ndarray) -> np.ndarray:
            return np.asarray(ray.get(handles[w].call.remote("gather", rows)))

        res = kcenter_over_shards(
            call_all, owners_of(bounds), gather, n, d, cd, budget, initial, progress, grid=grid
        )
        mem = ray.get([h.memory.remote() for h in handles])
    finally:
        if own:
            for h in handles:
                ray.kill(h)
    res.stats["setup_seconds"] = setup
    res.stats["worker_rss_bytes_max"] = float(max(m[0] for m in mem))
    res.stats["worker_data_bytes_max"] = float(max(m[1] for m in mem))
    res.backend = f"ray:{len(handles)}"
    return res


__all__ = [
    "ACTOR_START_SECONDS",
    "RayCluster",
    "ShardActor",
    "ShardFileRef",
    "ShardPlacementError",
    "file_arg",
    "in_row_order",
    "kcenter_on_ray",
    "kcenter_on_ray_files",
    "launch_actors",
    "start_file_shard_actors",
    "start_shard_actors",
    "wait_actors_up",
]
