"""The ``n`` choices of one request: a scheduler job each, admitted all together or not at all, their
events merged on the event loop and tagged with their choice's index, and cancelled together.

Each choice is its own :class:`~.scheduler.Job` (its own slot and KV cache, its own seed, stop
strings and ``max_tokens``), so one choice's tokens can only ever reach its own index. The jobs'
sinks run in the scheduler's threads and hand every event to the event loop through
``loop.call_soon_threadsafe``; the route reads them in the order they happened.

Admission is all or nothing: when the free slots and the free places in the queue cannot take all
``n`` jobs, none is submitted (:class:`~.scheduler.QueueFullError`, the route's 503). Only the event
loop submits jobs, and it does not yield between the check and the submits, so the room can only
grow in between (a slot freeing); should a submit still be refused (a count read while a slot was
changing jobs), the jobs already submitted are cancelled before the error goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .responses import Ending
from .scheduler import Event, FailedEvent, FinishedEvent, Job, QueueFullError

if TYPE_CHECKING:
    from .request_options import PreparedRequest
    from .scheduler import Scheduler


@dataclasses.dataclass(frozen=True)
class ChoiceEvent:
    """An event of the job of choice ``index``."""

    index: int
    event: Event


class Choices:
    """The jobs of one request's choices and their merged events.

    Args:
        scheduler: where the jobs run.
        max_queue: the scheduler's queue size (the room check counts its free places).
        prepared: the checked request (``n``, the prompt, each choice's options).
        arrived: ``time.perf_counter()`` at the request's arrival (time to first token).
        on_first: called once, with the seconds to the request's first token of any choice (the
            metrics' histogram).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        max_queue: int,
        prepared: PreparedRequest,
        arrived: float,
        on_first: Callable[[float], None],
    ) -> None:
        self._scheduler = scheduler
        self._max_queue = max_queue
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[ChoiceEvent] = asyncio.Queue()
        self._arrived = arrived
        self._on_first: Callable[[float], None] | None = on_first
        self.jobs = [Job(prepared.prompt, prepared.choice_options(i), self._sink(i)) for i in range(prepared.n)]
        #: Per choice: from the arrival to its first token (or to its end, for a reply of no tokens).
        self.ttft_ms: list[float | None] = [None] * prepared.n

    @property
    def n(self) -> int:
        return len(self.jobs)

    def _sink(self, index: int) -> Callable[[Event], None]:
        def sink(event: Event) -> None:  # in a scheduler thread
            self._loop.call_soon_threadsafe(self._queue.put_nowait, ChoiceEvent(index, event))

        return sink

    # -- admission and cancelling ------------------------------------------------------------
    def submit(self) -> None:
        """Submit every job, or none.

        Raises:
            QueueFullError: the slots and the queue cannot take all of them now.
            SchedulerClosedError: the scheduler is shutting down.
        """
        if self.n > 1:  # for one job the scheduler's own check is the exact one
            room = self._room()
            if self.n > room:
                raise QueueFullError(
                    f"n={self.n} choices need {self.n} free slots or queue places, and {room} are free now"
                )
        submitted: list[Job] = []
        try:
            for job in self.jobs:
                self._scheduler.submit(job)
                submitted.append(job)
        except BaseException:
            for job in submitted:
                self._scheduler.cancel(job)
            raise

    def _room(self) -> int:
        scheduler = self._scheduler
        free_slots = len(scheduler.slots) - scheduler.slots_busy
        return free_slots + max(0, self._max_queue - scheduler.queue_depth)

    def cancel(self) -> None:
        """Stop every job (waiting ones leave the queue; running ones stop before their next step)."""
        for job in self.jobs:
            self._scheduler.cancel(job)

    # -- events ----------------------------------------------------------------------------
    def _seen(self, item: ChoiceEvent) -> ChoiceEvent:
        if self.ttft_ms[item.index] is None and not isinstance(item.event, FailedEvent):
            seconds = time.perf_counter() - self._arrived
            self.ttft_ms[item.index] = seconds * 1e3
            if self._on_first is not None:
                self._on_first(seconds)
                self._on_first = None
        return item

    async def get(self) -> ChoiceEvent:
        return self._seen(await self._queue.get())

    def ready(self) -> list[ChoiceEvent]:
        """The events already waiting (none if none): several tokens go out in one write."""
        items = []
        while not self._queue.empty():
            items.append(self._seen(self._queue.get_nowait()))
        return items

    def ending(self, item: ChoiceEvent) -> Ending:
        """How the choice of ``item`` (a finished event) ended."""
        event = item.event
        assert isinstance(event, FinishedEvent)
        return Ending(event.finish_reason, event.timings, self.ttft_ms[item.index])
