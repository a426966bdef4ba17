"""Slots, the queue and the step loop: which Session runs which request, and when.

A *slot* is one :class:`~gptj_ggml.Session` of the shared Model (its own KV cache). A :class:`Job`
is one request's generation. :meth:`Scheduler.submit` gives it to a free slot at once, or appends it
to a bounded FIFO queue (first come, first served: a slot that frees takes the oldest waiting job),
or raises :class:`QueueFullError` when the queue is full.

Among free slots a job goes to the one whose cache shares the longest prefix with its prompt (ties:
the least recently used), so a chat that resends its transcript evaluates only the new turn
(``Timings.reused_tokens``). The scheduler knows nothing of HTTP or asyncio: a job reports through
its ``sink``, a function called in the step loop's thread with each :class:`TokenEvent` and then one
:class:`FinishedEvent` or :class:`FailedEvent` (the app's sink hands them to its event loop).

Continuous batching: one thread, the step loop, advances every running job together, because
generation is bound by reading the weights and one forward graph over all jobs' tokens reads them
once. Each tick gathers every job's next tokens through its :class:`~gptj_ggml.decoding.Decoding`
(the logic ``Session.generate`` steps: stop strings, ``max_tokens``, the context policy, logprobs),
makes one ``BatchEvaluator`` call, then hands each job's released tokens to its sink. A generating
job brings its last sampled token; a job still reading its prompt brings a chunk of it: while
others generate, at most ``prompt_chunk`` prompt tokens per tick (all reading jobs together, oldest
first), so that a long prompt does not stall their tokens; a chunk that is not its prompt's last is
only evaluated, not sampled. A job that arrives joins at the next tick; one that ends leaves at
once, and its slot takes the next queued job.

A job fails alone: options that ``Session.generate`` refuses, or tokens the engine fails on (a
failed batched call is retried item by item, :func:`gptj_ggml.batch.evaluate_each`), give that job a
:class:`FailedEvent` while the others go on.

Cancelling (:meth:`Scheduler.cancel`, from any thread) removes a waiting job from the queue, or
sets a flag that the step loop reads before each of the job's steps (``is_cancelled``): at most the
step already running completes, and the slot is free as soon as it does.
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

from ..batch import BatchItem, evaluate_each, evaluated_tokens, item_of, with_drafts
from ..generate_arguments import check_generate_arguments

if TYPE_CHECKING:
    from ..decoding import Decoding
    from ..generation import FinishReason, Timings, Token
    from ..model import Model
    from ..session import Session

logger = logging.getLogger("gptj_ggml.server")

#: The slots the default gives. Decoded together, a slot costs memory (its KV cache: 896 MiB for
#: GPT-J-6B at n_ctx 2048), not a core of its own.
DEFAULT_SLOTS = 4

#: Prompt tokens evaluated per tick while other jobs generate. Evaluating a prompt is bound by
#: computing, not by reading the weights: each prompt token in a tick lengthens it for every job.
DEFAULT_PROMPT_CHUNK = 32


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
    """The generation failed with ``error`` (the slot is free again; other jobs are unaffected)."""

    error: BaseException


Event = TokenEvent | FinishedEvent | FailedEvent


class Job:
    """One request's generation: the prompt ids, the ``Session.generate`` options, where events go.

    Args:
        prompt: the whole prompt as token ids.
        options: keyword arguments of :meth:`Session.generate` (``max_tokens``, ``sampling``, ``stop``, ...).
        sink: called in the step loop's thread with every event of this job, in order; it must not
            block (every running job waits for it).
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
        #: Tokens the slot evaluated after the cancel request (the step that was running); None if not
        #: cancelled while running.
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
        """``is_cancelled`` for the generation: called in the step loop before each of its steps."""
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
    """A Session (its own KV cache) and the job it runs."""

    index: int
    session: Session
    #: The tokens in the session's cache, as of its last job (read here, not from the busy session).
    history: list[int] = dataclasses.field(default_factory=list)
    job: Job | None = None
    last_used: float = 0.0
    #: The running job's decoding, from its first tick (only the step loop touches it).
    decoding: Decoding | None = None

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
    """:data:`DEFAULT_SLOTS`, whatever the cores (the slots share one batched evaluation)."""
    return DEFAULT_SLOTS


class Scheduler:
    """N slots over one Model, a bounded FIFO queue of waiting jobs, and the step loop that runs them.

    Args:
        model: the shared weights.
        n_slots: sessions, each with its own KV cache: the most jobs that run at once.
        max_queue: jobs that may wait for a slot; one more is a :class:`QueueFullError`.
        n_ctx: each session's context (default: the model's).
        n_threads: threads of the batched evaluation (default: adaptive, fewer while the cores are
            busy, so that the step loop's threads do not stall each other's barriers).
        on_finish: called in the step loop's thread with each job that ended, after its slot is free
            and before its last event (metrics).
        prompt_chunk: prompt tokens evaluated per tick while other jobs generate (see the module's
            docstring): fewer keeps their tokens coming faster, more reads a long prompt sooner.
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
        prompt_chunk: int = DEFAULT_PROMPT_CHUNK,
    ) -> None:
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        if prompt_chunk < 1:
            raise ValueError(f"prompt_chunk must be >= 1, got {prompt_chunk}")
        self.model = model
        self.max_queue = max_queue
        self.prompt_chunk = prompt_chunk
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # a job to run, or closing
        self._queue: collections.deque[Job] = collections.deque()
        self._closed = False
        self.slots = [Slot(i, model.session(n_ctx=n_ctx, n_threads=n_threads)) for i in range(n_slots)]
        self._evaluator = model._batch_evaluator(n_threads)
        #: The step loop's thread.
        self.thread = threading.Thread(target=self._step_loop, name="gptj-step-loop", daemon=True)
        self.thread.start()

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
        """Start ``job`` on a free slot (at the next tick), or queue it.

        Raises:
            QueueFullError: no slot is free and the queue is full.
            SchedulerClosedError: the scheduler is shutting down.
        """
        with self._lock:
            if self._closed:
                raise SchedulerClosedError("the server is shutting down")
            free = [slot for slot in self.slots if slot.job is None]
            if free:
                self._assign(self._best_slot(free, job.prompt), job)
            elif len(self._queue) < self.max_queue:
                self._queue.append(job)
            else:
                raise QueueFullError(
                    f"all {len(self.slots)} slots are busy and {len(self._queue)} requests are waiting"
                )

    def cancel(self, job: Job) -> None:
        """Stop ``job``: a waiting one leaves the queue (it sends no events), a running one stops
        before its next step. Safe from any thread, and for a job that already ended."""
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                job._request_cancel()
                return
        job._request_cancel()

    def close(self, timeout: float = 10.0) -> None:
        """Cancel every job, stop the step loop and wait for it."""
        with self._lock:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            running = [slot.job for slot in self.slots if slot.job is not None]
            self._work.notify()
        for job in waiting:
            job._request_cancel()
            job.sink(FailedEvent(SchedulerClosedError("the server is shutting down")))
        for job in running:
            job._request_cancel()
        self.thread.join(timeout)

    # -- inside the lock -------------------------------------------------------------------
    @staticmethod
    def _best_slot(free: list[Slot], prompt: list[int]) -> Slot:
        # Longest common prefix first; among equals, the least recently used.
        return max(free, key=lambda slot: (common_prefix_length(slot.history, prompt), -slot.last_used))

    def _assign(self, slot: Slot, job: Job) -> None:
        slot.job = job
        job.queued_seconds = time.perf_counter() - job.submitted_at
        self._work.notify()

    # -- in the step loop's thread ------------------------------------------------------------
    def _step_loop(self) -> None:
        while True:
            with self._work:
                while not self._closed and not any(slot.job is not None for slot in self.slots):
                    self._work.wait()
                running = [slot for slot in self.slots if slot.job is not None]
                if not running:
                    return  # closed, and every job has ended
            jobs = [slot.job for slot in running]
            try:
                self._tick(running)
            except Exception as error:  # a bug of the loop's own: the jobs it was running fail, the loop goes on
                logger.exception("a step of the scheduler failed")
                for slot, job in zip(running, jobs):
                    if slot.job is job:  # not a queued job that took the slot during the tick
                        self._end(slot, FailedEvent(error))

    def _tick(self, running: list[Slot]) -> None:
        """One step of every running job: its next tokens, one batched call, its released tokens."""
        wanted: list[tuple[Slot, Decoding, list[int]]] = []
        for slot in running:
            try:
                decoding = slot.decoding or self._start(slot)
                tokens = decoding.next_tokens()
            except Exception as error:  # this job's options or its context shift: this job fails
                logger.debug("job %d failed on slot %d", slot.job.id, slot.index, exc_info=True)
                self._end(slot, FailedEvent(error))
                continue
            if tokens is None:
                self._end_decoding(slot, decoding)
            else:
                wanted.append((slot, decoding, tokens))
        steps = self._plan(wanted)
        if not steps:
            return
        decodings = [decoding for _, decoding, _ in steps]
        items = with_drafts(decodings, [item for _, _, item in steps])
        n_evaluated = evaluated_tokens(decodings, items)
        outcomes = evaluate_each(self._evaluator, items)
        for (slot, decoding, item), outcome in zip(steps, outcomes):
            if isinstance(outcome, Exception):
                logger.debug("job %d failed on slot %d", slot.job.id, slot.index, exc_info=outcome)
                self._end(slot, FailedEvent(outcome))
            elif item[2] is None:
                decoding.accept_prompt_chunk(len(item[1]), outcome[0][2])
            else:
                decoding.accept_steps(outcome, n_evaluated)
                self._send_released(slot, decoding)
                if decoding.finish_reason is not None:  # a stop string or end-of-text: the slot frees now
                    self._end_decoding(slot, decoding)

    def _plan(self, wanted: list[tuple[Slot, Decoding, list[int]]]) -> list[tuple[Slot, Decoding, BatchItem]]:
        """The batched call's items: every generating job's token, then prompt tokens, oldest job
        first, within this tick's prompt budget (a prompt cut short is evaluated without sampling)."""
        generating = [entry for entry in wanted if not entry[1].reading_prompt]
        reading = sorted((entry for entry in wanted if entry[1].reading_prompt), key=lambda entry: entry[0].job.id)
        # Alone, prompts take a whole graph; beside generating jobs, a chunk that does not stall them.
        budget = self.prompt_chunk if generating else self._evaluator.n_batch
        steps = [(slot, decoding, item_of(decoding, tokens)) for slot, decoding, tokens in generating]
        for slot, decoding, tokens in reading:
            if budget <= 0:
                break
            if len(tokens) <= budget:
                steps.append((slot, decoding, item_of(decoding, tokens)))
            else:
                steps.append((slot, decoding, (decoding.session, tokens[:budget], None, False, 0, [])))
            budget -= len(tokens)
        return steps

    def _start(self, slot: Slot) -> Decoding:
        """The decoding of the slot's new job (raises what ``Session.generate`` raises for its options)."""
        job, session = slot.job, slot.session
        assert job is not None
        arguments = check_generate_arguments(
            self.model, session.n_ctx, job.prompt, is_cancelled=lambda: job._before_step(session), **job.options
        )
        slot.decoding = arguments.decoding(session._core)
        return slot.decoding

    def _send_released(self, slot: Slot, decoding: Decoding) -> None:
        job = slot.job
        assert job is not None
        for token in decoding.hand_out():
            if not self._send(job, TokenEvent(token)):
                self.cancel(job)

    def _end_decoding(self, slot: Slot, decoding: Decoding) -> None:
        """The job's decoding has ended: its last tokens, then its end (or its context error)."""
        self._send_released(slot, decoding)
        decoding.end()
        if decoding.error is not None:
            self._end(slot, FailedEvent(decoding.error))
        else:
            assert decoding.finish_reason is not None
            self._end(slot, FinishedEvent(decoding.finish_reason, decoding.timings(), decoding.seed, slot.index))

    def _end(self, slot: Slot, last_event: Event) -> None:
        """Free the slot (it takes the next queued job), report the job to ``on_finish``, send its last event."""
        job = slot.job
        assert job is not None
        if slot.decoding is not None:
            slot.decoding.end()
        job._record_end(slot.session)
        slot.history = slot.session.history
        with self._lock:
            slot.job = None
            slot.decoding = None
            slot.last_used = time.perf_counter()
            if self._queue and not self._closed:
                self._assign(slot, self._queue.popleft())
        if self._on_finish is not None:
            try:
                self._on_finish(job, last_event)
            except Exception:
                logger.exception("on_finish failed for job %d", job.id)
        self._send(job, last_event)

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
