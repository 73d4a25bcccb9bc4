"""Dynamic batching for an asyncio server: many callers' items merged into model-sized batches.

Items wait at most ``max_queue_delay_ms`` after the first item of a batch arrived (or until
``max_batch_size`` items are queued); the batch function then runs in a worker thread, so the
event loop (health checks, other RPCs) never blocks on inference. Each batch's queue and compute
times are recorded in :class:`BatchStats`, passed to ``on_batch`` and returned to its callers.

:func:`run_batch` is the teacher service's batch function (:class:`PredictItem` in, one
:class:`~activekd.teacher.base.ItemPrediction` per item out); :func:`map_in_order` runs a stream
of requests through it with a bound on the items in flight, answering in request order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from activekd.errors import ActiveKDError, FailedPrecondition, InvalidArgument, ResourceExhausted
from activekd.teacher.base import ItemPrediction, Teacher
from activekd.teacher.images import ImageInput, to_image_array

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchStats:
    """One executed batch: items, distinct requests, waits and compute time (ms)."""

    batch_size: int
    num_requests: int
    queue_ms_max: float
    queue_ms_mean: float
    compute_ms: float


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[tuple[R, BatchStats]]
    enqueued: float
    request_id: int


class DynamicBatcher(Generic[T, R]):
    """Merge concurrent requests into batches for ``batch_fn(items) -> results`` (same length,
    same order). Use as ``async with DynamicBatcher(fn) as b: results = await b.submit(items)``.

    If ``batch_fn`` raises, every item in that batch gets the exception. Per-item failures
    are best returned as values (e.g. :class:`~activekd.teacher.base.ItemPrediction`).
    """

    def __init__(
        self,
        batch_fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 64,
        max_queue_delay_ms: float = 5.0,
        executor: concurrent.futures.Executor | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
        history: int = 1024,
    ) -> None:
        if max_batch_size < 1:
            raise InvalidArgument(f"max_batch_size {max_batch_size} must be >= 1")
        if max_queue_delay_ms < 0:
            raise InvalidArgument(f"max_queue_delay_ms {max_queue_delay_ms} must be >= 0")
        self._fn = batch_fn
        self.max_batch_size = int(max_batch_size)
        self.max_queue_delay_s = float(max_queue_delay_ms) / 1000.0
        self._executor = executor
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending[T, R]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._next_request = 0
        self.stats: deque[BatchStats] = deque(maxlen=history)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker task on the running loop (idempotent)."""
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="dynamic-batcher")

    async def close(self) -> None:
        """Stop the worker; queued items fail with FailedPrecondition."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._queue is not None:
            while not self._queue.empty():
                p = self._queue.get_nowait()
                if not p.future.done():
                    p.future.set_exception(FailedPrecondition("batcher closed"))

    async def __aenter__(self) -> DynamicBatcher[T, R]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests ---------------------------------------------------------------------------
    async def submit_with_stats(self, items: Sequence[T]) -> tuple[list[R], list[BatchStats]]:
        """Results for ``items`` in order, plus the stats of the batch(es) they ran in."""
        if self._worker is None or self._queue is None:
            raise FailedPrecondition("DynamicBatcher not started: call start() or use async with")
        loop = asyncio.get_running_loop()
        rid = self._next_request
        self._next_request += 1
        now = time.perf_counter()
        futures: list[asyncio.Future[tuple[R, BatchStats]]] = []
        for item in items:
            fut: asyncio.Future[tuple[R, BatchStats]] = loop.create_future()
            self._queue.put_nowait(_Pending(item, fut, now, rid))
            futures.append(fut)
        try:
            done = await asyncio.gather(*futures)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        results = [r for r, _ in done]
        seen: dict[int, BatchStats] = {}
        for _, s in done:
            seen.setdefault(id(s), s)
        return results, list(seen.values())

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Results for ``items`` in order."""
        results, _ = await self.submit_with_stats(items)
        return results

    async def submit_one(self, item: T) -> R:
        """The result for one item."""
        return (await self.submit([item]))[0]

    # -- worker -----------------------------------------------------------------------------
    async def _collect(self) -> list[_Pending[T, R]]:
        assert self._queue is not None
        first = await self._queue.get()
        batch = [first]
        deadline = first.enqueued + self.max_queue_delay_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout=remaining))
            except TimeoutError:
                break
        return [p for p in batch if not p.future.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            started = time.perf_counter()
            waits = [(started - p.enqueued) * 1000.0 for p in batch]
            items = [p.item for p in batch]
            error: BaseException | None = None
            results: Sequence[R] = ()
            try:
                results = await loop.run_in_executor(self._executor, self._fn, items)
                if len(results) != len(items):
                    raise FailedPrecondition(
                        f"batch function returned {len(results)} results for {len(items)} items"
                    )
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(FailedPrecondition("batcher closed"))
                raise
            except Exception as exc:
                error = exc
            stats = BatchStats(
                batch_size=len(batch),
                num_requests=len({p.request_id for p in batch}),
                queue_ms_max=max(waits),
                queue_ms_mean=sum(waits) / len(waits),
                compute_ms=(time.perf_counter() - started) * 1000.0,
            )
            self.stats.append(stats)
            if self._on_batch is not None:
                with contextlib.suppress(Exception):
                    self._on_batch(stats)
            for i, p in enumerate(batch):
                if p.future.done():
                    continue
                if error is not None:
                    p.future.set_exception(error)
                else:
                    p.future.set_result((results[i], stats))


def check_predict_count(n: int, limit: int) -> int:
    """One Predict call carries 1..``limit`` images."""
    if n == 0:
        raise InvalidArgument("images is empty; send at least one image", field="images")
    if n > limit:
        raise ResourceExhausted(
            f"{n} images in one Predict; send at most {limit} "
            "(use PredictStream or ScorePool for more)",
            field="images",
        )
    return n


@dataclass
class PredictItem:
    """One image for :func:`run_batch`: the teacher (view) to run and the image, as encoded
    bytes, a uint8 array, or a function returning one (called in the batch's worker thread, so
    decoding stays off the event loop; what it raises becomes the item's error)."""

    teacher: Teacher
    image: ImageInput | Callable[[], ImageInput]

    def load(self) -> np.ndarray:
        """The validated uint8 (H, W) or (H, W, 3) image."""
        return to_image_array(self.image() if callable(self.image) else self.image)


def run_batch(items: Sequence[PredictItem]) -> list[ItemPrediction]:
    """The batcher's function: decode each item, group by (teacher view, shape), predict.
    Never raises: decode and inference failures become the affected items' errors."""
    results = [ItemPrediction(index=i) for i in range(len(items))]
    groups: dict[tuple[int, tuple[int, ...]], list[tuple[int, np.ndarray]]] = {}
    teachers: dict[int, Teacher] = {}
    for i, item in enumerate(items):
        try:
            arr = item.load()
        except ActiveKDError as exc:
            results[i].error = exc
            continue
        teachers[id(item.teacher)] = item.teacher
        groups.setdefault((id(item.teacher), arr.shape), []).append((i, arr))
    for (tid, _), members in groups.items():
        try:
            out = teachers[tid].predict(np.stack([a for _, a in members]))
        except ActiveKDError as exc:
            for i, _ in members:
                results[i].error = exc
            continue
        except Exception as exc:
            log.exception("teacher inference failed")
            err = ActiveKDError(f"inference failed: {type(exc).__name__}: {exc}")
            for i, _ in members:
                results[i].error = err
            continue
        for row, (i, _) in enumerate(members):
            results[i].probs, results[i].features = out.probs[row], out.features[row]
    return results


async def map_in_order(
    requests: AsyncIterator[T], fn: Callable[[T, int], Awaitable[R]], *, max_in_flight: int
) -> AsyncIterator[R]:
    """``fn(request, index)`` for each request of a stream, up to ``max_in_flight`` at once (so a
    batcher can merge them); results come in request order. An error reading ``requests`` is
    raised after the results before it; closing the iterator cancels what is still running."""
    pending: asyncio.Queue[asyncio.Future[R] | BaseException | None] = asyncio.Queue()
    slots = asyncio.Semaphore(max_in_flight)

    async def reader() -> None:
        counter = 0
        try:
            async for req in requests:
                await slots.acquire()
                pending.put_nowait(asyncio.ensure_future(fn(req, counter)))
                counter += 1
            pending.put_nowait(None)
        except BaseException as exc:
            pending.put_nowait(exc)

    read_task = asyncio.create_task(reader())
    try:
        while True:
            got = await pending.get()
            if got is None:
                break
            if isinstance(got, BaseException):
                raise got
            try:
                result = await got
            finally:
                slots.release()
            yield result
    finally:
        read_task.cancel()
        while not pending.empty():
            left = pending.get_nowait()
            if isinstance(left, asyncio.Future):
                left.cancel()
