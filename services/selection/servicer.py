"""SelectionService: protos <-> ``activekd.selection`` + pool store + selection log."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np

from activekd import selection
from activekd.errors import Aborted, InvalidArgument
from activekd.selection.validation import validate_probs
from activekd.server import metrics
from activekd.server.config import ServerConfig
from activekd.server.pools import pool_info
from activekd.server.tensors import from_proto
from activekd.state.selections import Conflict, SelectionLog, SelectionRecord
from activekd.store import PoolStore
from activekd.v1 import common_pb2, selection_pb2, selection_pb2_grpc

_RETRIES_ON_CONFLICT = 3


@dataclass
class _Pool:
    probs: np.ndarray | None
    features: np.ndarray | None
    item_ids: np.ndarray
    index: dict[str, int]
    source: str


def _params_hash(request: selection_pb2.SelectBatchRequest) -> str:
    """Hash of everything but the request id, to catch a request id reused for another request."""
    copy = selection_pb2.SelectBatchRequest()
    copy.CopyFrom(request)
    copy.request_id = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


class SelectionServicer(selection_pb2_grpc.SelectionServiceServicer):
    """Adapts SelectionService to the library; holds no state of its own beyond its clients."""

    def __init__(self, store: PoolStore, log: SelectionLog, config: ServerConfig) -> None:
        self.store, self.log, self.config = store, log, config

    def _load_pool(self, request: selection_pb2.SelectBatchRequest) -> _Pool:
        which = request.WhichOneof("pool")
        if which is None:
            raise InvalidArgument(
                "set either pool_ref (a registered pool) or inline_pool", field="pool"
            )
        if which == "inline_pool":
            inline = request.inline_pool
            probs = (
                from_proto(inline.probs, "inline_pool.probs") if inline.HasField("probs") else None
            )
            feats = (
                from_proto(inline.features, "inline_pool.features")
                if inline.HasField("features")
                else None
            )
            n = probs.shape[0] if probs is not None else feats.shape[0] if feats is not None else 0
            ids = np.asarray(list(inline.item_ids) or [str(i) for i in range(n)])
            if len(ids) != n:
                raise InvalidArgument(
                    f"inline_pool has {len(ids)} item ids but {n} rows",
                    field="inline_pool.item_ids",
                )
            if len(set(ids.tolist())) != len(ids):
                raise InvalidArgument(
                    "inline_pool.item_ids must be unique", field="inline_pool.item_ids"
                )
            return _Pool(
                probs, feats, ids, {str(v): i for i, v in enumerate(ids.tolist())}, "inline"
            )
        ref = request.pool_ref
        meta = self.store.describe(ref.pool_id)
        probs_name, feats_name = ref.probs_array or "probs", ref.features_array or "features"
        probs = (
            self.store.open_array(ref.pool_id, probs_name) if probs_name in meta.arrays else None
        )
        feats = (
            self.store.open_array(ref.pool_id, feats_name) if feats_name in meta.arrays else None
        )
        ids = self.store.item_ids(ref.pool_id)
        return _Pool(probs, feats, ids, {}, ref.pool_id)

    def _rows(self, pool: _Pool, item_ids: list[str], what: str) -> np.ndarray:
        if pool.source != "inline":
            return self.store.rows_for(pool.source, item_ids)
        missing = [i for i in item_ids if i not in pool.index]
        if missing:
            raise InvalidArgument(
                f"{what}: {len(missing)} id(s) not in the pool: {missing[:5]}", field=what
            )
        return np.asarray([pool.index[i] for i in item_ids], dtype=np.int64)

    def _select(self, request: selection_pb2.SelectBatchRequest) -> SelectionRecord:
        pool = self._load_pool(request)
        labeled_ids = list(request.labeled_item_ids)
        if len(set(labeled_ids)) != len(labeled_ids):
            raise InvalidArgument("labeled_item_ids contains duplicates", field="labeled_item_ids")
        labeled = self._rows(pool, labeled_ids, "labeled_item_ids")
        labels = np.asarray(request.labels, dtype=np.int64) if request.labels else None
        if labels is not None and len(labels) != len(labeled_ids):
            raise InvalidArgument(
                f"labels has {len(labels)} entries for {len(labeled_ids)} labeled ids",
                field="labels",
            )
        earlier = self.log.selected_ids(request.experiment_id) - set(labeled_ids)
        exclude = self._known_rows(pool, earlier)
        opts = request.options
        start = time.perf_counter()
        res = selection.select_batch(
            request.strategy,
            request.budget,
            probs=pool.probs,
            features=pool.features,
            labeled=labeled,
            seed=request.seed,
            exclude=exclude,
            prune=not opts.disable_pruning,
            device=opts.device or self.config.device,
            threads=opts.threads or self.config.threads or None,
            labels=labels,
        )
        elapsed = time.perf_counter() - start
        metrics.observe_selection(request.strategy, len(pool.item_ids), elapsed, len(res.indices))
        stats = {k: float(v) for k, v in (res.stats or {}).items()}
        stats["compute_seconds"] = elapsed
        return SelectionRecord(
            request_id=request.request_id,
            strategy=request.strategy,
            item_ids=[str(pool.item_ids[i]) for i in res.indices],
            scores=[float(s) for s in res.scores],
            rows=[int(i) for i in res.indices],
            round=request.round,
            experiment_id=request.experiment_id,
            stats=stats,
            params_hash=_params_hash(request),
        )

    @staticmethod
    def _known_rows(pool: _Pool, ids: set[str]) -> np.ndarray:
        """Rows of those ``ids`` that are in the pool (earlier selections may span other pools)."""
        if not ids:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(np.isin(pool.item_ids, np.asarray(sorted(ids)))).astype(np.int64)

    async def SelectBatch(
        self, request: selection_pb2.SelectBatchRequest, context: grpc.aio.ServicerContext
    ) -> selection_pb2.SelectBatchResponse:
        start = time.perf_counter()
        if not request.strategy:
            raise InvalidArgument(
                f"strategy is required; one of {selection.available_strategies()}", field="strategy"
            )
        for attempt in range(_RETRIES_ON_CONFLICT + 1):
            stored = self.log.lookup(request.experiment_id, request.request_id)
            if stored is not None:
                replayed = True
            else:
                rec = await asyncio.to_thread(self._select, request)
                try:
                    stored, replayed = self.log.record(rec, list(request.labeled_item_ids))
                except Conflict:
                    if attempt == _RETRIES_ON_CONFLICT:
                        raise Aborted(
                            "concurrent selections in this experiment kept taking the same items; retry"
                        ) from None
                    continue
            if replayed and stored.params_hash and stored.params_hash != _params_hash(request):
                raise InvalidArgument(
                    f"request_id {request.request_id!r} was already used for a different request",
                    field="request_id",
                )
            total = time.perf_counter() - start
            return selection_pb2.SelectBatchResponse(
                item_ids=stored.item_ids,
                rows=stored.rows,
                scores=stored.scores,
                strategy=stored.strategy,
                replayed=replayed,
                request_id=stored.request_id,
                stats=stored.stats,
                timing=common_pb2.Timing(
                    compute_seconds=stored.stats.get("compute_seconds", 0.0), total_seconds=total
                ),
            )
        raise Aborted("selection could not be recorded")  # pragma: no cover - loop always returns

    async def UploadPool(
        self,
        request_iterator: AsyncIterator[selection_pb2.UploadPoolRequest],
        context: grpc.aio.ServicerContext,
    ) -> selection_pb2.UploadPoolResponse:
        writer = None
        try:
            async for msg in request_iterator:
                if msg.WhichOneof("part") == "header":
                    if writer is not None:
                        raise InvalidArgument("UploadPool got a second header", field="header")
                    h = msg.header
                    writer = self.store.begin(
                        h.pool_id, h.num_items, metadata=dict(h.metadata), overwrite=h.overwrite
                    )
                    continue
                if writer is None:
                    raise InvalidArgument(
                        "UploadPool must start with a header message", field="header"
                    )
                chunk = msg.chunk
                arrays = {
                    name: from_proto(t, f"chunk.arrays[{name}]") for name, t in chunk.arrays.items()
                }
                if "probs" in arrays:
                    validate_probs(arrays["probs"], name=f"chunk at {chunk.offset}: probs")
                for name, arr in arrays.items():
                    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                        raise InvalidArgument(
                            f"chunk at {chunk.offset}: {name} has NaN or inf values"
                        )
                writer.write(chunk.offset, item_ids=list(chunk.item_ids) or None, arrays=arrays)
            if writer is None:
                raise InvalidArgument("UploadPool got no messages", field="header")
            meta = writer.commit()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        return selection_pb2.UploadPoolResponse(pool=pool_info(meta))

    async def DescribePool(
        self, request: selection_pb2.DescribePoolRequest, context: grpc.aio.ServicerContext
    ) -> selection_pb2.DescribePoolResponse:
        return selection_pb2.DescribePoolResponse(
            pool=pool_info(self.store.describe(request.pool_id))
        )

    async def ListPools(
        self, request: selection_pb2.ListPoolsRequest, context: grpc.aio.ServicerContext
    ) -> selection_pb2.ListPoolsResponse:
        pools, token = self.store.list(request.page_size or 100, request.page_token)
        return selection_pb2.ListPoolsResponse(
            pools=[pool_info(p) for p in pools], next_page_token=token
        )

    async def DeletePool(
        self, request: selection_pb2.DeletePoolRequest, context: grpc.aio.ServicerContext
    ) -> selection_pb2.DeletePoolResponse:
        return selection_pb2.DeletePoolResponse(deleted=self.store.delete(request.pool_id))

    async def ListStrategies(
        self, request: selection_pb2.ListStrategiesRequest, context: grpc.aio.ServicerContext
    ) -> selection_pb2.ListStrategiesResponse:
        return selection_pb2.ListStrategiesResponse(
            strategies=[
                selection_pb2.StrategyInfo(
                    name=s.name,
                    description=s.description,
                    needs_probs=s.needs_probs,
                    needs_features=s.needs_features,
                )
                for s in selection.STRATEGY_INFO.values()
            ]
        )

    async def GetSelections(
        self, request: selection_pb2.GetSelectionsRequest, context: grpc.aio.ServicerContext
    ) -> selection_pb2.GetSelectionsResponse:
        if not request.experiment_id:
            raise InvalidArgument("experiment_id is required", field="experiment_id")
        return selection_pb2.GetSelectionsResponse(
            records=[
                selection_pb2.SelectionRecord(
                    round=r.round,
                    request_id=r.request_id,
                    strategy=r.strategy,
                    item_ids=r.item_ids,
                    scores=r.scores,
                    created_unix=r.created_unix,
                )
                for r in self.log.records(request.experiment_id)
            ]
        )
