"""SelectionService: protos <-> ``select_batch`` + ``PoolArrays`` + ``SelectionLog.select_once``."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from functools import partial
from typing import TYPE_CHECKING, TypeAlias

import grpc
import numpy as np

from activekd import selection
from activekd.errors import InvalidArgument, shown
from activekd.server import metrics
from activekd.server.config import ServerConfig
from activekd.state.selections import SelectionLog
from activekd.store import PoolStore
from activekd.store.pool_arrays import PoolArrays, check_chunk
from activekd.v1 import common_pb2, selection_pb2, selection_pb2_grpc
from activekd.wire.pool_info import pool_info
from activekd.wire.tensors import from_proto

if TYPE_CHECKING:
    from activekd.distributed.pool_select import ShardedSelector

pb = selection_pb2
Ctx: TypeAlias = grpc.aio.ServicerContext
Request: TypeAlias = pb.SelectBatchRequest
#: SelectionRecord fields that SelectBatchResponse / GetSelections' records carry
_RESPONSE_FIELDS = ("item_ids", "rows", "scores", "strategy", "request_id", "stats")
_RECORD_FIELDS = ("round", "request_id", "strategy", "item_ids", "scores", "created_unix")


def _params_hash(request: Request) -> str:
    """Hash of everything but the request id, to catch a request id reused for another request."""
    copy = Request()
    copy.CopyFrom(request)
    copy.request_id = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


class SelectionServicer(selection_pb2_grpc.SelectionServiceServicer):
    """Adapts SelectionService to the library; holds no state of its own beyond its clients."""

    def __init__(
        self,
        store: PoolStore,
        log: SelectionLog,
        config: ServerConfig,
        sharded: ShardedSelector | None = None,
    ) -> None:
        self.store, self.log, self.config, self.sharded = store, log, config, sharded

    def _pool(self, request: Request) -> PoolArrays:
        which = request.WhichOneof("pool")
        if which is None:
            raise InvalidArgument(
                "set either pool_ref (a registered pool) or inline_pool", field="pool"
            )
        if which == "pool_ref":
            ref = request.pool_ref
            names = ref.probs_array or "probs", ref.features_array or "features"
            pool = PoolArrays.open(self.store, ref.pool_id, *names)
            if ref.features_pool_id and ref.features_pool_id != ref.pool_id:
                pool.features = self._joined_features(pool, ref.features_pool_id, names[1])
            return pool
        t = request.inline_pool
        probs = from_proto(t.probs, "inline_pool.probs") if t.HasField("probs") else None
        feats = from_proto(t.features, "inline_pool.features") if t.HasField("features") else None
        return PoolArrays.inline(probs, feats, t.item_ids)

    def _joined_features(self, pool: PoolArrays, features_pool_id: str, array: str) -> np.ndarray:
        """Array ``array`` of pool ``features_pool_id``, its rows in the order of ``pool``'s item
        ids (InvalidArgument saying how many of them it lacks)."""
        field = "pool_ref.features_pool_id"
        meta = self.store.describe(features_pool_id)
        if array not in meta.arrays:
            raise InvalidArgument(
                f"features pool {shown(features_pool_id)} has no array {shown(array)}; it has "
                f"{sorted(meta.arrays) or 'none'}",
                field=field,
            )
        feats = self.store.open_array(features_pool_id, array)
        theirs = self.store.item_ids(features_pool_id).astype(str)
        ours = pool.item_ids.astype(str)
        if len(theirs) == len(ours) and np.array_equal(theirs, ours):
            return feats  # same rows in the same order: keep the memory map
        order = np.argsort(theirs, kind="stable")
        pos = np.minimum(np.searchsorted(theirs, ours, sorter=order), max(len(theirs) - 1, 0))
        rows = order[pos] if len(theirs) else np.zeros(len(ours), dtype=np.int64)
        found = theirs[rows] == ours if len(theirs) else np.zeros(len(ours), dtype=bool)
        if not found.all():
            missing = ours[~found]
            raise InvalidArgument(
                f"{len(missing)} of the {len(ours)} items of pool {shown(pool.pool_id)} are not in "
                f"features pool {shown(features_pool_id)} (e.g. {', '.join(missing[:3].tolist())}): "
                "features are joined by item id",
                field=field,
            )
        return np.asarray(feats[rows])

    def _select_sharded(
        self, request: Request, earlier: set[str]
    ) -> tuple[selection.SelectionResult, np.ndarray] | None:
        """A strategy with a sharded form (``activekd.distributed.pool_select``) over a sharded
        pool's files on Ray, when configured and it applies."""
        if self.sharded is None or request.WhichOneof("pool") != "pool_ref":
            return None
        from activekd.distributed.pool_select import READS_FEATURES, ShardedRequest

        ref, opts = request.pool_ref, request.options
        plain = (
            not opts.strategy_params
            and ref.features_pool_id in ("", ref.pool_id)
            and (opts.device or self.config.device) in ("auto", "cpu")
            and (request.strategy in READS_FEATURES or ref.probs_array in ("", "probs"))
        )
        if not self.sharded.applies(self.store, ref.pool_id, request.strategy, plain=plain):
            return None

        ids = PoolArrays(None, None, self.store.item_ids(ref.pool_id), self.store, ref.pool_id)
        array = ref.probs_array or "probs"
        if request.strategy in READS_FEATURES:
            array = ref.features_array or "features"
        res = self.sharded.select(
            self.store,
            ShardedRequest(
                ref.pool_id,
                request.strategy,
                request.budget,
                array,
                labeled=ids.rows_for(request.labeled_item_ids, "labeled_item_ids"),
                exclude=ids.rows_present(earlier),
                prune=not opts.disable_pruning,
                seed=request.seed,
                labels=np.asarray(request.labels, dtype=np.int64) if request.labels else None,
                features_array=ref.features_array or "features",
            ),
        )
        return res, ids.item_ids

    def _select(
        self, request: Request, earlier: set[str]
    ) -> tuple[selection.SelectionResult, np.ndarray]:
        sharded = self._select_sharded(request, earlier)
        if sharded is not None:
            res, item_ids = sharded
            metrics.observe_selection(
                request.strategy, len(item_ids), res.elapsed_seconds, len(res.indices)
            )
            return sharded
        pool = self._pool(request)
        opts = request.options
        res = selection.select_batch(
            request.strategy,
            request.budget,
            probs=pool.probs,
            features=pool.features,
            labeled=pool.rows_for(request.labeled_item_ids, "labeled_item_ids"),
            exclude=pool.rows_present(earlier),
            labels=np.asarray(request.labels, dtype=np.int64) if request.labels else None,
            seed=request.seed,
            prune=not opts.disable_pruning,
            device=opts.device or self.config.device,
            threads=opts.threads or self.config.threads or None,
            params=dict(opts.strategy_params) or None,
        )
        metrics.observe_selection(
            request.strategy, len(pool.item_ids), res.elapsed_seconds, len(res.indices)
        )
        return res, pool.item_ids

    async def SelectBatch(self, request: Request, context: Ctx) -> pb.SelectBatchResponse:
        start = time.perf_counter()
        if not request.strategy:  # unset on the wire
            raise InvalidArgument(
                f"strategy is required; one of {selection.available_strategies()}", field="strategy"
            )
        rec, replayed = await asyncio.to_thread(
            self.log.select_once,
            partial(self._select, request),
            experiment_id=request.experiment_id,
            request_id=request.request_id,
            labeled_ids=request.labeled_item_ids,
            round_=request.round,
            params_hash=_params_hash(request),
        )
        return pb.SelectBatchResponse(
            **{k: getattr(rec, k) for k in _RESPONSE_FIELDS},
            replayed=replayed,
            timing=common_pb2.Timing(
                compute_seconds=rec.stats.get("compute_seconds", 0.0),
                total_seconds=time.perf_counter() - start,
            ),
        )

    async def UploadPool(
        self, request_iterator: AsyncIterator[pb.UploadPoolRequest], context: Ctx
    ) -> pb.UploadPoolResponse:
        writer = None
        try:
            async for msg in request_iterator:
                if msg.WhichOneof("part") == "header":
                    if writer is not None:
                        raise InvalidArgument("UploadPool got a second header", field="header")
                    h = msg.header
                    meta = dict(h.metadata)
                    writer = self.store.begin(
                        h.pool_id,
                        h.num_items,
                        metadata=meta,
                        overwrite=h.overwrite,
                        shard_rows=h.shard_rows,
                    )
                    continue
                if writer is None:
                    raise InvalidArgument(
                        "UploadPool must start with a header message", field="header"
                    )
                c = msg.chunk
                arrays = {k: from_proto(t, f"chunk.arrays[{k}]") for k, t in c.arrays.items()}
                check_chunk(arrays, f"chunk at {c.offset}")
                writer.write(c.offset, item_ids=list(c.item_ids) or None, arrays=arrays)
            if writer is None:
                raise InvalidArgument("UploadPool got no messages", field="header")
            info = writer.commit()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        return pb.UploadPoolResponse(pool=pool_info(info))

    async def DescribePool(
        self, request: pb.DescribePoolRequest, context: Ctx
    ) -> pb.DescribePoolResponse:
        return pb.DescribePoolResponse(pool=pool_info(self.store.describe(request.pool_id)))

    async def ListPools(self, request: pb.ListPoolsRequest, context: Ctx) -> pb.ListPoolsResponse:
        pools, token = self.store.list(request.page_size or 100, request.page_token)
        return pb.ListPoolsResponse(pools=[pool_info(p) for p in pools], next_page_token=token)

    async def DeletePool(
        self, request: pb.DeletePoolRequest, context: Ctx
    ) -> pb.DeletePoolResponse:
        return pb.DeletePoolResponse(deleted=self.store.delete(request.pool_id))

    async def ListStrategies(
        self, request: pb.ListStrategiesRequest, context: Ctx
    ) -> pb.ListStrategiesResponse:
        infos = selection.STRATEGY_INFO.values()
        return pb.ListStrategiesResponse(strategies=[pb.StrategyInfo(**asdict(s)) for s in infos])

    async def GetSelections(
        self, request: pb.GetSelectionsRequest, context: Ctx
    ) -> pb.GetSelectionsResponse:
        if not request.experiment_id:
            raise InvalidArgument("experiment_id is required", field="experiment_id")
        records = self.log.records(request.experiment_id)
        return pb.GetSelectionsResponse(
            records=[
                pb.SelectionRecord(**{k: getattr(r, k) for k in _RECORD_FIELDS}) for r in records
            ]
        )
