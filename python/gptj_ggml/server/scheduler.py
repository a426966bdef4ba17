"""Slots and the queue: which Session runs which request, and when.

A *slot* is one :class:`~gptj_ggml.Session` of the shared Model (its own KV cache) and the worker
thread that owns it: a Session belongs to one thread, and the engine runs without the GIL, so N
slots generate N requests at once while the event loop stays free. A :class:`Job` is one request's
generation. :meth:`Scheduler.submit` gives it to a free slot at once, or appends it to a bounded
FIFO queue (first come, first served: a slot that frees takes the oldest waiting job), or raises
:class:`QueueFullError` when the queue is full.

Among free slots a job goes to the one whose cache shares the longest prefix with its prompt (ties:
the least recently used), so a chat that resends its transcript evaluates only the new turn
(``Timings.reused_tokens``). The scheduler knows nothing of HTTP or asyncio: a job reports through
its ``sink``, a function called in the worker thread with each :class:`TokenEvent` and then one
:class:`FinishedEvent` or :class:`FailedEvent` (the app's sink hands them to its event loop).

Cancelling (:meth:`Scheduler.cancel`, from any thread) removes a waiting job from the queue, or
sets a flag that the running generation reads before every engine step (``Session.generate``'s
``is_cancelled``): at most the step already running completes, and the slot is free as soon as it
does.

Batching, later: today each slot's thread advances its own job, one engine call per token. To
evaluate all active slots in one batched engine call per step, the N slot threads become one step
loop over the active jobs: each iteration gathers every job's pending tokens (a prompt, or the last
sampled token), makes one engine call that evaluates them for all their sessions' caches, and then
samples, holds back stop strings and emits per job, exactly as ``_Stream.run`` does for one. The
queue, the slot choice, the events and cancellation (checked per job at the top of each iteration)
stay as they are; :meth:`Scheduler._run` is the one place that changes.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..generation import FinishReason, Timings, Token
    from ..model import Model
    from ..session import Session

logger = logging.getLogger("gptj_ggml.server")

#: The most slots the default gives (each holds a KV cache: 896 MiB for GPT-J-6B at n_ctx 2048).
MAX_DEFAULT_SLOTS = 4


class QueueFullError(Exception):
    """Every slot is busy and the queue holds its maximum of waiting jobs."""


class SchedulerClosedError(Exception):
    """The scheduler is shutting down and takes no more jobs."""


@dataclasses.dataclass(frozen=True)
class TokenEvent:
    token: Token


@dataclasses.dataclass(frozen=True)
class FinishedEvent:
    """The generation ended (``finish_reason`` as ``Generation.finish_reason``)."""

    finish_reason: FinishReason
    timings: Timings
    seed: int
    slot: int


@dataclasses.dataclass(frozen=True)
class FailedEvent:
    """The generation raised ``error`` (the slot is free again; other jobs are unaffected)."""

    error: BaseException


Event = TokenEvent | FinishedEvent | FailedEvent


class Job:
    """One request's generation: the prompt ids, the ``Session.generate`` options, where events go.

    Args:
        prompt: the whole prompt as token ids.
        options: keyword arguments of :meth:`Session.generate` (``max_tokens``, ``sampling``, ``stop``, ...).
        sink: called in a worker thread with every event of this job, in order; it must not block.
    """

    _ids = itertools.count()

    def __init__(self, prompt: Sequence[int], options: dict[str, Any], sink: Callable[[Event], None]) -> None:
        self.id = next(self._ids)
        self.prompt = list(prompt)
        self.options = options
        self.sink = sink
        self.submitted_at = time.perf_counter()
        #: Seconds between submit and the start on a slot (None until it starts).
        self.queued_seconds: float | None = None
        #: Tokens the slot evaluated after the cancel request (the step that was running); None if not cancelled while running.
        self.evaluated_after_cancel: int | None = None
        self._lock = threading.Lock()
        self._cancelled = False
        self._n_past: int | None = None  # the slot's cache at the latest engine step
        self._n_past_at_cancel: int | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def n_past(self) -> int | None:
        """Tokens in its slot's cache as of its latest engine step (None before the first)."""
        return self._n_past

    def _request_cancel(self) -> None:
        with self._lock:
            if not self._cancelled:
                self._cancelled = True
                self._n_past_at_cancel = self._n_past  # None: cancelled before its first step

    def _before_step(self, session: Session) -> bool:
        """``is_cancelled`` for the generation: called in the worker before every engine step."""
        with self._lock:
            self._n_past = session.n_past
            if self._cancelled and self._n_past_at_cancel is None:
                self._n_past_at_cancel = self._n_past
            return self._cancelled

    def _record_end(self, session: Session) -> None:
        with self._lock:
            if self._n_past_at_cancel is not None:
                self.evaluated_after_cancel = session.n_past - self._n_past_at_cancel


@dataclasses.dataclass
class Slot:
    """A Session and the worker thread that owns it."""

    index: int
    session: Session
    #: The tokens in the session's cache, as of its last job (read here, not from the busy session).
    history: list[int] = dataclasses.field(default_factory=list)
    job: Job | None = None
    last_used: float = 0.0
    inbox: collections.deque[Job | None] = dataclasses.field(default_factory=collections.deque)
    wake: threading.Condition = dataclasses.field(default_factory=threading.Condition)
    thread: threading.Thread | None = None

    @property
    def n_past(self) -> int:
        """Tokens in the cache: as of the running job's latest step, or of the last job."""
        job = self.job
        n_past = job.n_past if job is not None else None
        return len(self.history) if n_past is None else n_past


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def default_slot_count() -> int:
    """The physical cores, at most :data:`MAX_DEFAULT_SLOTS`."""
    from .._native import core

    return max(1, min(core.physical_core_count(), MAX_DEFAULT_SLOTS))


class Scheduler:
    """N slots over one Model and a bounded FIFO queue of waiting jobs.

    Args:
        model: the shared weights.
        n_slots: sessions, each with its own KV cache and worker thread.
        max_queue: jobs that may wait for a slot; one more is a :class:`QueueFullError`.
        n_ctx: each session's context (default: the model's).
        n_threads: each session's thread count (default: adaptive, fewer while the cores are busy,
            so N slots on few cores do not stall each other's barriers).
        on_finish: called in the worker thread with each job that ended, after its slot is free
            and before its last event (metrics).
    """

    def __init__(
        self,
        model: Model,
        *,
        n_slots: int,
        max_queue: int,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        on_finish: Callable[[Job, Event], None] | None = None,
    ) -> None:
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.model = model
        self.max_queue = max_queue
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._queue: collections.deque[Job] = collections.deque()
        self._closed = False
        self.slots = [Slot(i, model.session(n_ctx=n_ctx, n_threads=n_threads)) for i in range(n_slots)]
        for slot in self.slots:
            slot.thread = threading.Thread(
                target=self._serve, args=(slot,), name=f"gptj-slot-{slot.index}", daemon=True
            )
            slot.thread.start()

    # -- state ---------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.slots[0].session.n_ctx

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for a slot."""
        return len(self._queue)

    @property
    def slots_busy(self) -> int:
        return sum(slot.job is not None for slot in self.slots)

    # -- submitting and cancelling ---------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Start ``job`` on a free slot, or queue it.

        Raises:
            QueueFullError: no slot is free and the queue is full.
            SchedulerClosedError: the scheduler is shutting down.
        """
        with self._lock:
            if self._closed:
                raise SchedulerClosedError("the server is shutting down")
            free = [slot for slot in self.slots if slot.job is None]
            if free:
                self._start(self._best_slot(free, job.prompt), job)
            elif len(self._queue) < self.max_queue:
                self._queue.append(job)
            else:
                raise QueueFullError(
                    f"all {len(self.slots)} slots are busy and {len(self._queue)} requests are waiting"
                )

    def cancel(self, job: Job) -> None:
        """Stop ``job``: a waiting one leaves the queue (it sends no events), a running one stops
        before its next engine step. Safe from any thread, and for a job that already ended."""
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                job._request_cancel()
                return
        job._request_cancel()

    def close(self, timeout: float = 10.0) -> None:
        """Cancel every job, stop the worker threads and wait for them."""
        with self._lock:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            running = [slot.job for slot in self.slots if slot.job is not None]
        for job in waiting:
            job._request_cancel()
            job.sink(FailedEvent(SchedulerClosedError("the server is shutting down")))
        for job in running:
            job._request_cancel()
        for slot in self.slots:
            self._deliver(slot, None)
        for slot in self.slots:
            if slot.thread is not None:
                slot.thread.join(timeout)

    # -- inside the lock -------------------------------------------------------------------
    @staticmethod
    def _best_slot(free: list[Slot], prompt: list[int]) -> Slot:
        # Longest common prefix first; among equals, the least recently used.
        return max(free, key=lambda slot: (common_prefix_length(slot.history, prompt), -slot.last_used))

    def _start(self, slot: Slot, job: Job) -> None:
        slot.job = job
        job.queued_seconds = time.perf_counter() - job.submitted_at
        self._deliver(slot, job)

    @staticmethod
    def _deliver(slot: Slot, job: Job | None) -> None:
        with slot.wake:
            slot.inbox.append(job)
            slot.wake.notify()

    # -- in the slot's worker thread --------------------------------------------------------
    def _serve(self, slot: Slot) -> None:
        while True:
            with slot.wake:
                while not slot.inbox:
                    slot.wake.wait()
                job = slot.inbox.popleft()
            if job is None:
                return
            last_event = self._run(slot, job)
            self._free(slot)
            if self._on_finish is not None:
                try:
                    self._on_finish(job, last_event)
                except Exception:
                    logger.exception("on_finish failed for job %d", job.id)
            self._send(job, last_event)

    def _run(self, slot: Slot, job: Job) -> Event:
        """Generate ``job`` on the slot's session, sending each token; return the last event."""
        session = slot.session
        generation = None
        try:
            generation = session.generate(job.prompt, is_cancelled=lambda: job._before_step(session), **job.options)
            for token in generation:
                if not self._send(job, TokenEvent(token)):
                    self.cancel(job)
            assert generation.finish_reason is not None
            return FinishedEvent(generation.finish_reason, generation.timings, generation.seed, slot.index)
        except Exception as error:  # this request's failure only: the slot goes on with the next job
            logger.debug("job %d failed on slot %d", job.id, slot.index, exc_info=True)
            return FailedEvent(error)
        finally:
            if generation is not None:
                generation.close()
            job._record_end(session)
            slot.history = session.history

    def _free(self, slot: Slot) -> None:
        with self._lock:
            slot.job = None
            slot.last_used = time.perf_counter()
            if self._queue and not self._closed:
                self._start(slot, self._queue.popleft())

    @staticmethod
    def _send(job: Job, event: Event) -> bool:
        """Hand ``event`` to the job's sink; False if the sink failed (its reader is gone)."""
        if job.cancelled and isinstance(event, TokenEvent):
            return True  # nobody reads it; the generation stops at its next step
        try:
            job.sink(event)
            return True
        except Exception:
            logger.debug("the sink of job %d failed", job.id, exc_info=True)
            return False
