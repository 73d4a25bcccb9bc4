"""ExperimentService: protos <-> :class:`ExperimentStore` + :class:`Driver`.

Messages are converted by :mod:`activekd.wire.experiment_convert` (shared with the client).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc

from activekd.errors import InvalidArgument
from activekd.orchestration.driver import Driver
from activekd.selection import available_strategies
from activekd.server import metrics
from activekd.server.limits import remaining_seconds
from activekd.state.experiments import ExperimentStore, RoundState, labels_by_item
from activekd.v1 import experiment_pb2, experiment_pb2_grpc
from activekd.wire.experiment_convert import event_to_proto, experiment_to_proto, spec_from_proto

WATCH_BLOCK_MS = 5_000
MAX_WATCHERS = 64  # blocking stream reads get their own threads, never the default executor's


class ExperimentServicer(experiment_pb2_grpc.ExperimentServiceServicer):
    """The transitions' work runs in a thread so health checks stay responsive."""

    def __init__(self, store: ExperimentStore, driver: Driver) -> None:
        self.store, self.driver = store, driver
        self._locks: dict[str, asyncio.Lock] = {}
        self._watchers = ThreadPoolExecutor(MAX_WATCHERS, thread_name_prefix="watch")

    def shutdown(self) -> None:
        """Stop the watcher threads (open watches end with the server's grace period)."""
        self._watchers.shutdown(wait=False, cancel_futures=True)

    async def CreateExperiment(
        self, request: experiment_pb2.CreateExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiment_pb2.CreateExperimentResponse:
        if not request.HasField("spec"):
            raise InvalidArgument("spec is required", field="spec")
        spec = spec_from_proto(request.spec)
        exp = await asyncio.to_thread(
            self.driver.create, spec, request.experiment_id or None, set(available_strategies())
        )
        return experiment_pb2.CreateExperimentResponse(experiment=experiment_to_proto(exp))

    async def GetExperiment(
        self, request: experiment_pb2.GetExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiment_pb2.GetExperimentResponse:
        return experiment_pb2.GetExperimentResponse(
            experiment=experiment_to_proto(self.store.get(request.experiment_id))
        )

    async def ListExperiments(
        self, request: experiment_pb2.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> experiment_pb2.ListExperimentsResponse:
        items, token = self.store.list(request.page_size, request.page_token)
        return experiment_pb2.ListExperimentsResponse(
            experiments=[experiment_to_proto(e) for e in items], next_page_token=token
        )

    async def DeleteExperiment(
        self, request: experiment_pb2.DeleteExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiment_pb2.DeleteExperimentResponse:
        return experiment_pb2.DeleteExperimentResponse(
            deleted=self.store.delete(request.experiment_id) > 0
        )

    async def AdvanceRound(
        self, request: experiment_pb2.AdvanceRoundRequest, context: grpc.aio.ServicerContext
    ) -> experiment_pb2.AdvanceRoundResponse:
        remaining = remaining_seconds(context)  # the caller's deadline bounds the calls it makes
        deadline = None if remaining is None else time.monotonic() + remaining
        lock = self._locks.setdefault(request.experiment_id, asyncio.Lock())
        async with lock:  # one transition per experiment at a time in this process
            before, exp = await asyncio.to_thread(
                self.driver.step,
                request.experiment_id,
                request.expected_version or None,
                deadline=deadline,
            )
        trained = exp.rounds[exp.current_round] if before is RoundState.TEACHER_SCORED else None
        if trained is not None and trained.accuracy is not None:
            metrics.record_round_result(
                exp.experiment_id,
                exp.spec.strategy,
                exp.spec.dataset or "unknown",
                trained.labeled_count,
                trained.accuracy,
            )
        scored = exp.rounds[exp.current_round] if before is RoundState.STUDENT_TRAINED else None
        if scored is not None:
            metrics.record_stop_signal(
                exp.experiment_id,
                exp.spec.strategy,
                exp.spec.dataset or "unknown",
                scored.stability,
                scored.stop_set_teacher_agreement,
            )
        return experiment_pb2.AdvanceRoundResponse(
            experiment=experiment_to_proto(exp),
            from_state=f"ROUND_STATE_{before.name}",
            to_state=f"ROUND_STATE_{exp.state.name}",
        )

    async def SubmitLabels(
        self, request: experiment_pb2.SubmitLabelsRequest, context: grpc.aio.ServicerContext
    ) -> experiment_pb2.SubmitLabelsResponse:
        labels = labels_by_item((item.item_id, item.label) for item in request.labels)
        submitted = self.store.submit_labels(
            request.experiment_id,
            labels,
            overwrite=request.overwrite,
            withdraw=list(request.withdraw_item_ids),
        )
        return experiment_pb2.SubmitLabelsResponse(
            accepted=submitted.accepted,
            unchanged=submitted.unchanged,
            remaining=submitted.remaining,
            withdrawn=submitted.withdrawn,
            deferred=submitted.deferred,
            experiment=experiment_to_proto(self.store.get(request.experiment_id)),
        )

    async def WatchExperiment(
        self, request: experiment_pb2.WatchExperimentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[experiment_pb2.WatchExperimentResponse]:
        after = "0-0"
        self.store.get(request.experiment_id)  # NOT_FOUND before streaming anything
        while True:
            events = await asyncio.get_running_loop().run_in_executor(
                self._watchers, self.store.events, request.experiment_id, after, WATCH_BLOCK_MS
            )
            for ev in events:
                after = ev.event_id
                yield experiment_pb2.WatchExperimentResponse(event=event_to_proto(ev))
                if ev.state is RoundState.FINISHED:
                    return
