"""SelectBatch over a stored sharded pool (``PoolStore.begin(..., shard_rows=R)``) on Ray.

The k-center strategies (``pcoreset`` on the probabilities, ``coreset`` on L2-normalised
features) run with one Ray actor per shard file, each memory-mapping its file alone, so no
process holds the whole pool; the row-local ones (``entropy``, ``margin``,
``least_confidence``, ``class_balanced``) run one Ray task per shard file
(``ray_rowwise``), and ``badge`` with one actor per shard holding its probabilities and
features files (``ray_badge``). Either way the picks and scores are those of ``select_batch`` on
the joined pool (tests/selection/test_ray_pool_select.py). ``typiclust`` runs its k-means on a
sample gathered from the shards and assigns rows with one Ray task per features shard file
(``ray_typiclust``). ``random`` reads no rows. Every other
strategy, and any request this path does not cover (strategy parameters, a features pool joined
by id, a non-CPU device), reads the pool through ``PoolStore.open_array``, which joins the
shards in memory, and runs in-process: probcover and the hybrids need the whole matrix (kNN
graphs) and have no sharded form yet (docs/scale-out.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from activekd.distributed.ray_rowwise import ROW_LOCAL_ON_SHARDS
from activekd.errors import (
    ActiveKDError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    shown,
)
from activekd.selection.result import SelectionResult
from activekd.selection.validation import (
    validate_budget,
    validate_indices,
    validate_labels,
    validate_seed,
)
from activekd.store.pool_store import PoolStore

#: strategy -> (the array it reads by default, whether rows are L2-normalised first)
KCENTER_ON_SHARDS: dict[str, tuple[str, bool]] = {
    "pcoreset": ("probs", False),
    "pcoreset_teacher": ("probs", False),
    "pcoreset_ce": ("probs", False),
    "coreset": ("features", True),
}


#: strategies with a sharded form of their own that reads ``probs`` and ``features`` together
PAIRED_ON_SHARDS = frozenset({"badge"})
#: strategies that cluster the ``features`` shard files with Ray tasks (``ray_typiclust``)
CLUSTERED_ON_SHARDS = frozenset({"typiclust"})
#: the strategies of this path that read ``features`` (``ShardedRequest.array``), not ``probs``
READS_FEATURES = frozenset({"coreset", *CLUSTERED_ON_SHARDS})


@dataclass(frozen=True)
class ShardedRequest:
    """What a sharded selection needs: the pool, the strategy, the budget and the centres."""

    pool_id: str
    strategy: str
    budget: int
    array: str
    labeled: np.ndarray
    exclude: np.ndarray
    prune: bool = True
    seed: int = 0
    labels: np.ndarray | None = None  # of ``labeled``, in its order (class_balanced)
    features_array: str = "features"  # what badge reads with ``array`` (the probabilities)


class ShardedSelector:
    """Runs :data:`KCENTER_ON_SHARDS`, :data:`ROW_LOCAL_ON_SHARDS` and :data:`PAIRED_ON_SHARDS`
    strategies over sharded pools on a Ray cluster, connected
    on first use: ``address`` ``"local"`` starts a private local instance (token auth on),
    else ``ray://host:10001`` (the token from ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``)."""

    def __init__(
        self, address: str, *, cpus_per_shard: float = 1.0, start_timeout: float | None = None
    ) -> None:
        if not address:
            raise ValueError("a Ray address is required ('local' or ray://host:port)")
        from activekd.distributed.ray_kcenter import ACTOR_START_SECONDS

        self.address, self.cpus_per_shard = address, cpus_per_shard
        #: seconds the shard actors of one selection may take to start (then RESOURCE_EXHAUSTED)
        self.start_timeout = ACTOR_START_SECONDS if start_timeout is None else start_timeout
        self._cluster: object | None = None
        self._lock = threading.Lock()

    def applies(self, store: PoolStore, pool_id: str, strategy: str, *, plain: bool) -> bool:
        """Whether this request runs here: a strategy with a sharded form over a sharded pool,
        ``plain`` meaning no strategy parameters, no joined features pool, a CPU device and
        (all but coreset) the ``probs`` array, whose rows UploadPool checked as probabilities."""
        known = (
            strategy in KCENTER_ON_SHARDS
            or strategy in ROW_LOCAL_ON_SHARDS
            or strategy in PAIRED_ON_SHARDS
            or strategy in CLUSTERED_ON_SHARDS
        )
        return plain and known and store.describe(pool_id).shard_rows > 0

    def connect(self) -> ShardedSelector:
        """Connect now (the service does at start, from its main thread); idempotent."""
        with self._lock:
            if self._cluster is None:
                from activekd.distributed.ray_kcenter import RayCluster

                address = None if self.address == "local" else self.address
                self._cluster = RayCluster(address).start()
        return self

    def close(self) -> None:
        """Disconnect (and stop a local instance started here)."""
        with self._lock:
            cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.stop()  # type: ignore[attr-defined]

    def select(self, store: PoolStore, req: ShardedRequest) -> SelectionResult:
        """``req.budget`` k-center picks; labeled and excluded rows are centres, never picked."""
        meta = store.describe(req.pool_id)
        paired = req.strategy in PAIRED_ON_SHARDS
        for name in (req.array, req.features_array) if paired else (req.array,):
            if name not in meta.arrays:
                raise InvalidArgument(
                    f"strategy {shown(req.strategy)} needs array {shown(name)}, which pool "
                    f"{shown(req.pool_id)} lacks; it has {sorted(meta.arrays) or 'none'}",
                    field="pool_ref",
                )
            shape, dtype = meta.arrays[name].shape, meta.arrays[name].dtype
            if len(shape) != 2 or not dtype.startswith("float"):
                raise InvalidArgument(
                    f"strategy {shown(req.strategy)} needs a 2-D float array; {shown(name)} of pool "
                    f"{shown(req.pool_id)} is {dtype}{shape}",
                    field="pool_ref",
                )
        info = meta.arrays[req.array]
        n = meta.num_items
        labeled = validate_indices(req.labeled, n, "labeled")
        exclude = validate_indices(req.exclude, n, "exclude")
        centres = np.union1d(labeled, exclude).astype(np.int64)
        if centres.size >= n:
            raise InvalidArgument(
                f"all {n} pool rows are labeled or excluded: nothing left to select",
                field="budget",
            )
        budget = validate_budget(req.budget, n - int(centres.size))
        shards = store.open_shards  # remote pools: each actor / task fetches only its own file
        if req.strategy in ROW_LOCAL_ON_SHARDS:
            labels = (
                validate_labels(req.labels, int(labeled.size), int(info.shape[1]))
                if req.labels is not None
                else None
            )
            seed = validate_seed(req.seed)
            from activekd.distributed.ray_rowwise import rowwise_on_ray_files

            res = self._on_ray(
                "task",
                lambda: rowwise_on_ray_files(
                    shards(req.pool_id, req.array, fetch=False),  # type: ignore[arg-type]
                    req.strategy,
                    budget,
                    labeled=labeled,
                    exclude=exclude,
                    labels=labels,
                    seed=seed,
                    cpus_per_task=self.cpus_per_shard,
                ),
            )
            res.elapsed_seconds = res.stats["elapsed_seconds"]
            return res
        if paired:
            seed = validate_seed(req.seed)
            from activekd.distributed.ray_badge import badge_on_ray_files

            res = self._on_ray(
                "worker",
                lambda: badge_on_ray_files(
                    shards(req.pool_id, req.array, fetch=False),  # type: ignore[arg-type]
                    shards(req.pool_id, req.features_array, fetch=False),  # type: ignore[arg-type]
                    budget,
                    labeled=labeled,
                    exclude=exclude,
                    seed=seed,
                    cpus_per_worker=self.cpus_per_shard,
                    start_timeout=self.start_timeout,
                ),
            )
            res.elapsed_seconds = res.stats["elapsed_seconds"] + res.stats["setup_seconds"]
            return res
        if req.strategy in CLUSTERED_ON_SHARDS:  # with the strategy's default parameters
            from activekd.distributed.ray_typiclust import typiclust_on_ray_files

            seed = validate_seed(req.seed)
            res = self._on_ray(
                "task",
                lambda: typiclust_on_ray_files(
                    shards(req.pool_id, req.array, fetch=False),  # type: ignore[arg-type]
                    budget,
                    labeled=labeled,
                    exclude=exclude,
                    seed=seed,
                    cpus_per_task=self.cpus_per_shard,
                ),
            )
            res.elapsed_seconds = res.stats["elapsed_seconds"]
            return res
        from activekd.distributed.ray_kcenter import kcenter_on_ray_files

        res = self._on_ray(
            "worker",
            lambda: kcenter_on_ray_files(
                shards(req.pool_id, req.array, fetch=False),  # type: ignore[arg-type]
                budget,
                centres=centres,
                normalize=KCENTER_ON_SHARDS[req.strategy][1],
                prune=req.prune,
                cpus_per_worker=self.cpus_per_shard,
                start_timeout=self.start_timeout,
            ),
        )
        res.strategy = req.strategy
        res.elapsed_seconds = res.stats.get("elapsed_seconds", 0.0) + res.stats["setup_seconds"]
        return res

    def _on_ray(self, what: str, run: Callable[[], SelectionResult]) -> SelectionResult:
        """Connect, then ``run``: a cluster without room for every shard actor is
        RESOURCE_EXHAUSTED (saying what to change), a Ray failure UNAVAILABLE (retry); either
        way there is no partial result."""
        self.connect()
        from ray.exceptions import RayError

        from activekd.distributed.ray_kcenter import ShardPlacementError

        try:
            return run()
        except ShardPlacementError as exc:
            raise ResourceExhausted(str(exc)) from exc
        except RayError as exc:  # an actor died, or a task failed past its retries
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ActiveKDError):  # ours, raised in a task: its status and
                raise cause from None  # message say what to fix (not the remote traceback)
            raise Unavailable(
                f"a Ray shard {what} failed during the selection ({type(exc).__name__}); retry"
            ) from exc


__all__ = [
    "CLUSTERED_ON_SHARDS",
    "KCENTER_ON_SHARDS",
    "PAIRED_ON_SHARDS",
    "READS_FEATURES",
    "ROW_LOCAL_ON_SHARDS",
    "ShardedRequest",
    "ShardedSelector",
]
