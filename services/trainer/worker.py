"""A blocking job with a progress callback, run in a worker thread and read from the event loop.

TrainRound streams the progress of a round that trains for minutes: the training runs in a thread
(so health checks and other RPCs stay responsive), its events cross to the event loop through an
asyncio queue, and a ``threading.Event`` asks the job to stop when the client goes away.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar, cast

EventT = TypeVar("EventT")
ResultT = TypeVar("ResultT")

_ENDED = object()


def _mark_retrieved(task: asyncio.Future[Any]) -> None:
    """Done callback: mark the job's exception as seen when nobody awaits it any more."""
    if not task.cancelled():
        task.exception()


class ThreadedJob(Generic[EventT, ResultT]):
    """Starts ``job(emit, cancel)`` in a worker thread (call from a coroutine).

    ``async for event in job.events()`` yields what the job emitted until it ends; then
    :meth:`result` is its return value (or raises its exception). :meth:`stop` sets ``cancel``
    when the job is still running.
    """

    def __init__(self, job: Callable[[Callable[[EventT], None], threading.Event], ResultT]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self.cancel = threading.Event()
        self._task = asyncio.ensure_future(asyncio.to_thread(job, self._emit, self.cancel))
        self._task.add_done_callback(_mark_retrieved)
        self._task.add_done_callback(lambda _task: self._queue.put_nowait(_ENDED))

    def _emit(self, event: EventT) -> None:  # worker thread
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def events(self) -> AsyncIterator[EventT]:
        while (event := await self._queue.get()) is not _ENDED:
            yield cast(EventT, event)

    def result(self) -> ResultT:
        return self._task.result()

    def stop(self, on_stopped: Callable[[], None] | None = None) -> bool:
        """Asks a still running job to stop (returns True then); False when it has ended.

        ``on_stopped`` runs on the event loop once the worker thread has really returned (it
        finishes its current step first), so a caller can tell "asked to stop" from "stopped".
        """
        if self._task.done():
            return False
        self.cancel.set()
        if on_stopped is not None:
            self._task.add_done_callback(lambda _task: on_stopped())
        return True
