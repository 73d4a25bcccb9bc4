"""Client of ``activekd.v1.SelectionService``: pools in, picks out (numpy in, dataclasses out)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from activekd.v1 import selection_pb2, selection_pb2_grpc
from activekd.wire.channel import BaseClient
from activekd.wire.pool_records import PoolInfo
from activekd.wire.tensors import to_proto

CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class SelectBatchResult:
    """SelectBatch's picks: item ids and pool rows in pick order, scores, timings."""

    item_ids: list[str]
    rows: np.ndarray
    scores: np.ndarray
    strategy: str
    request_id: str
    replayed: bool
    compute_seconds: float
    total_seconds: float
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StrategyInfo:
    """A registered strategy and which pool arrays it reads."""

    name: str
    description: str
    needs_probs: bool
    needs_features: bool
    #: parameter name -> default (``strategy_params`` of select_batch)
    params: dict[str, float] = field(default_factory=dict)
    #: selects by default on the teacher's features: pass ``features_pool_id`` (teacher's pool)
    teacher_features: bool = False
    #: the probabilities it selects on: combined (the student's), ce or teacher
    probs_source: str = "combined"


@dataclass(frozen=True)
class PastSelection:
    """One stored SelectBatch result of an experiment (GetSelections)."""

    round: int
    request_id: str
    strategy: str
    item_ids: list[str]
    scores: list[float]
    created_unix: float


class SelectionClient(BaseClient):
    """SelectionService: pools and SelectBatch."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self.stub = selection_pb2_grpc.SelectionServiceStub(self.channel)

    def select_batch(
        self,
        strategy: str,
        budget: int,
        *,
        pool_id: str | None = None,
        probs: np.ndarray | None = None,
        features: np.ndarray | None = None,
        item_ids: Sequence[str] | None = None,
        labeled: Sequence[str] = (),
        labels: Sequence[int] | None = None,
        seed: int = 0,
        request_id: str | None = None,
        experiment_id: str = "",
        round: int = 0,
        prune: bool = True,
        device: str = "",
        probs_array: str = "",
        features_array: str = "",
        features_pool_id: str = "",
        strategy_params: Mapping[str, float] | None = None,
        timeout: float | None = None,
    ) -> SelectBatchResult:
        """Pick ``budget`` items; pass ``pool_id`` (registered pool) or ``probs``/``features`` inline.

        ``features_pool_id``: with ``pool_id``, read the features from this other registered pool
        (joined by item id). ``strategy_params``: the strategy's parameters (see
        :meth:`list_strategies`)."""
        req = selection_pb2.SelectBatchRequest(
            strategy=strategy,
            budget=budget,
            seed=seed,
            request_id=request_id or uuid.uuid4().hex,
            labeled_item_ids=list(labeled),
            experiment_id=experiment_id,
            round=round,
            labels=list(labels or []),
            options=selection_pb2.SelectionOptions(
                disable_pruning=not prune,
                device=device,
                strategy_params={k: float(v) for k, v in (strategy_params or {}).items()},
            ),
        )
        if pool_id is not None:
            req.pool_ref.CopyFrom(
                selection_pb2.PoolReference(
                    pool_id=pool_id,
                    probs_array=probs_array,
                    features_array=features_array,
                    features_pool_id=features_pool_id,
                )
            )
        else:
            inline = req.inline_pool
            if probs is not None:
                inline.probs.CopyFrom(to_proto(probs))
            if features is not None:
                inline.features.CopyFrom(to_proto(features))
            inline.item_ids.extend(list(item_ids or []))
        resp = self.stub.SelectBatch(req, timeout=self._deadline(timeout))
        return SelectBatchResult(
            item_ids=list(resp.item_ids),
            rows=np.asarray(resp.rows, dtype=np.int64),
            scores=np.asarray(resp.scores),
            strategy=resp.strategy,
            request_id=resp.request_id,
            replayed=resp.replayed,
            compute_seconds=resp.timing.compute_seconds,
            total_seconds=resp.timing.total_seconds,
            stats=dict(resp.stats),
        )

    def upload_pool(
        self,
        pool_id: str,
        *,
        arrays: dict[str, np.ndarray],
        item_ids: Sequence[str] | None = None,
        overwrite: bool = False,
        metadata: dict[str, str] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        shard_rows: int = 0,
        timeout: float | None = None,
    ) -> PoolInfo:
        """Client-streaming upload in chunks of about ``chunk_bytes``; ``shard_rows`` > 0 stores
        the pool sharded in files of that many rows (docs/scale-out.md)."""
        n = len(next(iter(arrays.values()))) if arrays else len(item_ids or [])
        row_bytes = sum(a[:1].nbytes for a in arrays.values()) + 32
        rows_per_chunk = max(1, chunk_bytes // max(row_bytes, 1))

        def messages() -> Iterator[selection_pb2.UploadPoolRequest]:
            yield selection_pb2.UploadPoolRequest(
                header=selection_pb2.UploadPoolHeader(
                    pool_id=pool_id,
                    num_items=n,
                    overwrite=overwrite,
                    metadata=metadata or {},
                    shard_rows=shard_rows,
                )
            )
            for start in range(0, n, rows_per_chunk):
                end = min(n, start + rows_per_chunk)
                chunk = selection_pb2.UploadPoolChunk(offset=start)
                if item_ids is not None:
                    chunk.item_ids.extend(str(i) for i in item_ids[start:end])
                for name, arr in arrays.items():
                    chunk.arrays[name].CopyFrom(to_proto(np.asarray(arr[start:end])))
                yield selection_pb2.UploadPoolRequest(chunk=chunk)

        resp = self.stub.UploadPool(messages(), timeout=self._deadline(timeout))
        return PoolInfo.from_proto(resp.pool)

    def describe_pool(self, pool_id: str, timeout: float | None = None) -> PoolInfo:
        resp = self.stub.DescribePool(
            selection_pb2.DescribePoolRequest(pool_id=pool_id), timeout=self._deadline(timeout)
        )
        return PoolInfo.from_proto(resp.pool)

    def list_pools(self, page_size: int = 100) -> Iterator[PoolInfo]:
        """Every pool, fetching pages as needed."""
        token = ""
        while True:
            resp = self.stub.ListPools(
                selection_pb2.ListPoolsRequest(page_size=page_size, page_token=token),
                timeout=self.timeout,
            )
            yield from (PoolInfo.from_proto(p) for p in resp.pools)
            token = resp.next_page_token
            if not token:
                return

    def delete_pool(self, pool_id: str) -> bool:
        return self.stub.DeletePool(
            selection_pb2.DeletePoolRequest(pool_id=pool_id), timeout=self.timeout
        ).deleted

    def list_strategies(self) -> list[StrategyInfo]:
        resp = self.stub.ListStrategies(selection_pb2.ListStrategiesRequest(), timeout=self.timeout)
        return [
            StrategyInfo(
                s.name,
                s.description,
                s.needs_probs,
                s.needs_features,
                dict(s.params),
                s.teacher_features,
                s.probs_source or "combined",
            )
            for s in resp.strategies
        ]

    def get_selections(self, experiment_id: str) -> list[PastSelection]:
        resp = self.stub.GetSelections(
            selection_pb2.GetSelectionsRequest(experiment_id=experiment_id), timeout=self.timeout
        )
        return [
            PastSelection(
                r.round, r.request_id, r.strategy, list(r.item_ids), list(r.scores), r.created_unix
            )
            for r in resp.records
        ]
