"""Slots, the queue and the step loop: first come first served, the slot sharing the longest prefix,
continuous batching, cancellation.

The scheduler is tested on its own (jobs with a recording sink, no HTTP): jobs that run together
produce exactly what each produces alone (Session.complete on a fresh session), a long prompt is
read in chunks while the others keep generating, a failing job fails alone. Then cancellation end
to end: a client that goes away stops its generation within the step already running, and frees
the slot.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from gptj_ggml import Model
from gptj_ggml.server import create_app
from gptj_ggml.server.scheduler import FailedEvent, FinishedEvent, Job, QueueFullError, Scheduler, TokenEvent

from server_fixtures import TIMEOUT_SECONDS, running_server, sse_events

GREEDY = {"temperature": 0.0}
LONG = {"max_tokens": 1500, "ignore_eos": True, **GREEDY}  # seconds of work: it holds its slot


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f32"))


class Recorder:
    """A job's sink that keeps its events and lets the test wait for them; ``log``, shared by
    several recorders, keeps the order in which all their events arrived."""

    def __init__(
        self, finished_order: list[Recorder] | None = None, log: list | None = None, hold_at: int | None = None
    ) -> None:
        self.events: list = []
        self._changed = threading.Condition()
        self._finished_order = finished_order
        self._log = log
        # With hold_at=n the step loop waits in this sink at the n-th token until release(): the
        # test then acts while this job is surely mid-generation, however fast the machine.
        self._hold_at = hold_at
        self._released = threading.Event()

    def __call__(self, event) -> None:  # in the step loop's thread
        with self._changed:
            self.events.append(event)
            if self._log is not None:
                self._log.append((self, event))
            if not isinstance(event, TokenEvent) and self._finished_order is not None:
                self._finished_order.append(self)
            self._changed.notify_all()
            hold = isinstance(event, TokenEvent) and len(self.tokens) == self._hold_at
        if hold and not self._released.wait(TIMEOUT_SECONDS):
            raise AssertionError("the test never released the step loop")

    def release(self) -> None:
        self._released.set()

    @property
    def tokens(self) -> list:
        return [event.token for event in self.events if isinstance(event, TokenEvent)]

    @property
    def last(self):
        return self.events[-1] if self.events and not isinstance(self.events[-1], TokenEvent) else None

    def wait_for(self, condition, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, timeout=TIMEOUT_SECONDS):
                raise AssertionError(f"timed out waiting for {what}")

    def wait_for_tokens(self, n: int) -> None:
        self.wait_for(lambda: len(self.tokens) >= n or self.last is not None, f"{n} tokens")

    def wait_until_done(self):
        self.wait_for(lambda: self.last is not None, "the end")
        return self.last


def job(model, prompt, recorder: Recorder, **options) -> Job:
    ids = model.tokenize(prompt) if isinstance(prompt, str) else prompt
    return Job(ids, {**GREEDY, "max_tokens": 8, **options}, recorder)


def alone(model, prompt, **options) -> list[int]:
    """The token ids the job's generation gives alone, on a fresh session."""
    return model.session(n_ctx=2048).complete(prompt, **{**GREEDY, "max_tokens": 8, **options}).tokens


def ids(recorder: Recorder) -> list[int]:
    return [token.id for token in recorder.tokens]


@pytest.fixture
def scheduler_factory(model):
    made = []

    def make(**kwargs) -> Scheduler:
        scheduler = Scheduler(model, **{"n_slots": 1, "max_queue": 4, "n_ctx": 2048, **kwargs})
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close()


def test_a_job_streams_the_tokens_the_library_generates_then_its_end(model, scheduler_factory):
    scheduler = scheduler_factory()
    recorder = Recorder()

    scheduler.submit(job(model, "Once upon a time", recorder))
    end = recorder.wait_until_done()

    expected = model.session().complete("Once upon a time", max_tokens=8, **GREEDY)
    assert [token.id for token in recorder.tokens] == expected.tokens
    assert isinstance(end, FinishedEvent) and end.finish_reason == "length" and end.timings.generated_tokens == 8


def test_waiting_jobs_start_first_come_first_served_and_the_queue_is_bounded(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=1, max_queue=3)
    holder = Recorder()
    holding = job(model, "Hold", holder, **LONG)
    scheduler.submit(holding)
    holder.wait_for_tokens(1)
    finished: list[Recorder] = []
    waiting = [Recorder(finished) for _ in range(3)]

    for i, recorder in enumerate(waiting):
        scheduler.submit(job(model, f"Request {i}", recorder))
    with pytest.raises(QueueFullError):
        scheduler.submit(job(model, "One too many", Recorder()))
    assert scheduler.queue_depth == 3 and scheduler.slots_busy == 1

    scheduler.cancel(holding)
    for recorder in waiting:
        assert isinstance(recorder.wait_until_done(), FinishedEvent)
    assert finished == waiting
    assert holder.wait_until_done().finish_reason == "cancelled"


def test_a_waiting_job_that_is_cancelled_never_runs(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=1)
    holder, waiter = Recorder(), Recorder()
    holding, waiting = job(model, "Hold", holder, **LONG), job(model, "Wait", waiter)
    scheduler.submit(holding)
    holder.wait_for_tokens(1)
    scheduler.submit(waiting)

    scheduler.cancel(waiting)
    assert scheduler.queue_depth == 0
    scheduler.cancel(holding)
    holder.wait_until_done()
    after = Recorder()
    scheduler.submit(job(model, "After", after))
    after.wait_until_done()

    assert waiter.events == []


def test_a_job_goes_to_the_free_slot_sharing_the_longest_prefix_else_the_least_recently_used(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=2)

    def run(prompt: str) -> FinishedEvent:
        recorder = Recorder()
        scheduler.submit(job(model, prompt, recorder))
        return recorder.wait_until_done()

    first = run("Apples grow on trees in the orchard")
    second = run("Bridges span rivers")  # shares nothing: the slot never used
    # Continuing the second: least-recently-used would pick the first's slot; its prefix is elsewhere.
    continued = run("Bridges span rivers and valleys")
    fresh = run("Castles stand on hills")  # shares nothing: the least recently used, the first's

    assert second.slot != first.slot
    assert continued.slot == second.slot and continued.timings.reused_tokens == len(
        model.tokenize("Bridges span rivers")
    )
    assert fresh.slot == first.slot and fresh.timings.reused_tokens == 0


def test_a_cancel_from_another_thread_stops_within_the_step_already_running(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=1)
    recorder = Recorder()
    running = job(model, "Once upon a time", recorder, **LONG)
    scheduler.submit(running)
    recorder.wait_for_tokens(5)

    scheduler.cancel(running)  # from this thread, while the worker generates
    end = recorder.wait_until_done()

    assert end.finish_reason == "cancelled" and end.timings.generated_tokens < LONG["max_tokens"]
    # evaluated_after_cancel: the slot's cache growth after the cancel, as the worker counted it.
    assert running.evaluated_after_cancel is not None and running.evaluated_after_cancel <= 1
    assert scheduler.slots_busy == 0  # freed before the last event was sent


def test_a_job_cancelled_before_its_first_step_evaluates_nothing(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=1)
    before = Recorder()
    scheduler.submit(job(model, "Once upon a time", before))
    before.wait_until_done()  # the slot's cache now holds that prompt
    recorder = Recorder()
    cancelled = job(model, "A different start", recorder)

    scheduler.cancel(cancelled)  # as a client gone between submit and the slot's first step
    scheduler.submit(cancelled)
    end = recorder.wait_until_done()

    assert end.finish_reason == "cancelled" and recorder.tokens == []
    assert cancelled.evaluated_after_cancel == 0


def test_a_job_that_fails_gets_a_failed_event_and_frees_its_slot(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=1)
    failing, after = Recorder(), Recorder()

    scheduler.submit(job(model, "Hello", failing, max_tokens=-1))  # generate() refuses it
    scheduler.submit(job(model, "Hello", after))

    assert isinstance(failing.wait_until_done(), FailedEvent)
    assert isinstance(after.wait_until_done(), FinishedEvent)
    assert scheduler.slots_busy == 0


def test_closing_cancels_running_and_waiting_jobs(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=1)
    holder, waiter = Recorder(), Recorder()
    scheduler.submit(job(model, "Hold", holder, **LONG))
    holder.wait_for_tokens(1)
    scheduler.submit(job(model, "Wait", waiter))

    scheduler.close()

    assert holder.wait_until_done().finish_reason == "cancelled"
    assert isinstance(waiter.wait_until_done(), FailedEvent)
    assert not scheduler.thread.is_alive()


# -- continuous batching -----------------------------------------------------------------------------

PROMPTS = ["Once upon a time", "The cat sat on the", "Rivers flow to", "A"]


def test_jobs_running_together_each_produce_the_tokens_they_produce_alone(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=4)
    log: list = []
    recorders = [Recorder(log=log, hold_at=1)] + [Recorder(log=log) for _ in PROMPTS[1:]]

    for prompt, recorder in zip(PROMPTS, recorders):
        scheduler.submit(job(model, prompt, recorder, max_tokens=16, ignore_eos=True))
    recorders[0].release()  # every job is in by now, the first one at its first token
    ends = [recorder.wait_until_done() for recorder in recorders]

    assert [ids(recorder) for recorder in recorders] == [
        alone(model, p, max_tokens=16, ignore_eos=True) for p in PROMPTS
    ]
    assert all(isinstance(end, FinishedEvent) and end.finish_reason == "length" for end in ends)
    # Together, not one after the other: the last job had tokens before the first job ended.
    first_end = next(i for i, (r, event) in enumerate(log) if r is recorders[0] and not isinstance(event, TokenEvent))
    assert any(r is recorders[-1] for r, _ in log[:first_end])


def test_seeded_sampled_jobs_together_each_draw_what_their_seed_draws_alone(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=3)
    sampled = {"temperature": 0.9, "max_tokens": 12, "ignore_eos": True}
    recorders = [Recorder() for _ in range(3)]

    for i, recorder in enumerate(recorders):
        scheduler.submit(job(model, "Hello there", recorder, seed=100 + i, **sampled))
    ends = [recorder.wait_until_done() for recorder in recorders]

    assert [end.seed for end in ends] == [100, 101, 102]
    for i, recorder in enumerate(recorders):
        assert ids(recorder) == alone(model, "Hello there", seed=100 + i, **sampled)


def test_a_job_arriving_mid_generation_joins_without_changing_the_others_tokens(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=2)
    log: list = []
    first, second = Recorder(log=log, hold_at=5), Recorder(log=log)
    scheduler.submit(job(model, PROMPTS[0], first, max_tokens=40, ignore_eos=True))
    first.wait_for_tokens(5)

    scheduler.submit(job(model, PROMPTS[1], second, max_tokens=10, ignore_eos=True))
    first.release()
    first.wait_until_done(), second.wait_until_done()

    assert ids(first) == alone(model, PROMPTS[0], max_tokens=40, ignore_eos=True)
    assert ids(second) == alone(model, PROMPTS[1], max_tokens=10, ignore_eos=True)
    assert log[-1][0] is first  # the second ran and ended while the first went on


def test_a_long_prompt_is_read_in_chunks_while_the_others_keep_generating(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=2, prompt_chunk=4)
    log: list = []
    generating, reading = Recorder(log=log, hold_at=2), Recorder(log=log)
    long_prompt = list(range(1000, 1060))  # 15 ticks at 4 prompt tokens each
    scheduler.submit(job(model, PROMPTS[0], generating, max_tokens=200, ignore_eos=True))
    generating.wait_for_tokens(2)

    log.append(("submitted", None))
    scheduler.submit(job(model, long_prompt, reading, max_tokens=3, ignore_eos=True))
    generating.release()
    end = reading.wait_until_done()
    generating.wait_until_done()

    submitted = log.index(("submitted", None))
    first_token = next(i for i, (r, _) in enumerate(log) if r is reading)
    tokens_meanwhile = sum(r is generating for r, _ in log[submitted:first_token])
    assert tokens_meanwhile >= 12  # about one per chunk: the prompt stalled nobody
    assert end.timings.prompt_tokens == 60 and ids(reading) == alone(model, long_prompt, max_tokens=3, ignore_eos=True)
    assert ids(generating) == alone(model, PROMPTS[0], max_tokens=200, ignore_eos=True)


def test_alone_a_long_prompt_takes_whole_graphs_not_chunks(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=1, prompt_chunk=4)
    recorder = Recorder()
    calls = []
    real = scheduler._evaluator

    class CountingEvaluator:
        n_batch = real.n_batch

        def evaluate_and_verify(self, items):
            calls.append(sum(len(item[1]) for item in items))
            return real.evaluate_and_verify(items)

    scheduler._evaluator = CountingEvaluator()
    scheduler.submit(job(model, list(range(1000, 1060)), recorder, max_tokens=2, ignore_eos=True))
    recorder.wait_until_done()

    assert calls == [60, 1]


def test_stop_strings_end_each_job_on_its_own(model, scheduler_factory):
    texts = [model.session().complete(p, max_tokens=12, ignore_eos=True, **GREEDY).text for p in PROMPTS[:2]]
    stop = texts[0][len(texts[0]) // 2 :][:3]
    assert stop and stop not in texts[1]
    scheduler = scheduler_factory(n_slots=2)
    recorders = [Recorder(), Recorder()]

    for prompt, recorder in zip(PROMPTS[:2], recorders):
        scheduler.submit(job(model, prompt, recorder, max_tokens=12, ignore_eos=True, stop=[stop]))
    ends = [recorder.wait_until_done() for recorder in recorders]

    assert [end.finish_reason for end in ends] == ["stop", "length"]
    assert ["".join(t.text for t in r.tokens) for r in recorders] == [texts[0][: texts[0].index(stop)], texts[1]]


def test_a_job_that_fails_in_the_engine_fails_alone(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=2)
    running, failing = Recorder(hold_at=3), Recorder()
    scheduler.submit(job(model, PROMPTS[0], running, max_tokens=30, ignore_eos=True))
    running.wait_for_tokens(3)
    nothing_to_sample = {token: float("-inf") for token in range(model.n_vocab)}

    scheduler.submit(job(model, PROMPTS[1], failing, temperature=0.8, logit_bias=nothing_to_sample))
    running.release()
    failed, finished = failing.wait_until_done(), running.wait_until_done()

    assert isinstance(failed, FailedEvent) and "every token has a logit of -inf" in str(failed.error)
    assert failing.tokens == []
    assert isinstance(finished, FinishedEvent) and finished.finish_reason == "length"
    assert ids(running) == alone(model, PROMPTS[0], max_tokens=30, ignore_eos=True)
    assert scheduler.slots_busy == 0


def test_a_job_that_fails_mid_stream_ends_with_its_failure_and_frees_its_slot(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=2)
    real = scheduler._evaluator
    broken_session = scheduler.slots[0].session._core

    class BreakingEvaluator:
        """Fails every call that evaluates the broken slot's session after its prompt."""

        n_batch = real.n_batch

        def evaluate_and_verify(self, items):
            if any(item[0] is broken_session and broken_session.n_past > 0 for item in items):
                raise RuntimeError("the engine broke")
            return real.evaluate_and_verify(items)

    scheduler._evaluator = BreakingEvaluator()
    victim, other = Recorder(), Recorder()
    scheduler.submit(job(model, PROMPTS[0], victim, max_tokens=20, ignore_eos=True))  # slot 0: never used
    scheduler.submit(job(model, PROMPTS[1], other, max_tokens=20, ignore_eos=True))

    assert isinstance(victim.wait_until_done(), FailedEvent) and len(victim.tokens) == 1
    assert isinstance(other.wait_until_done(), FinishedEvent)
    assert ids(other) == alone(model, PROMPTS[1], max_tokens=20, ignore_eos=True)
    assert scheduler.slots_busy == 0 and scheduler.slots[0].n_past == len(model.tokenize(PROMPTS[0]))


def test_a_full_context_fails_that_job_after_its_tokens(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=2, n_ctx=12)
    full, other = Recorder(), Recorder()

    scheduler.submit(job(model, list(range(100, 110)), full, max_tokens=20, ignore_eos=True))
    scheduler.submit(job(model, [7], other, max_tokens=5, ignore_eos=True))

    failed = full.wait_until_done()
    assert isinstance(failed, FailedEvent) and "the context is full" in str(failed.error) and len(full.tokens) == 3
    assert isinstance(other.wait_until_done(), FinishedEvent) and len(other.tokens) == 5


def test_a_cancelled_job_leaves_the_batch_and_its_slot_takes_the_next_job(model, scheduler_factory):
    scheduler = scheduler_factory(n_slots=2, max_queue=1)
    kept, cancelled, waiting = Recorder(), Recorder(), Recorder()
    scheduler.submit(job(model, PROMPTS[0], kept, max_tokens=60, ignore_eos=True))
    running = job(model, PROMPTS[1], cancelled, **LONG)
    scheduler.submit(running)
    scheduler.submit(job(model, PROMPTS[2], waiting, max_tokens=6, ignore_eos=True))
    cancelled.wait_for_tokens(3)

    scheduler.cancel(running)

    assert cancelled.wait_until_done().finish_reason == "cancelled"
    assert waiting.wait_until_done().finish_reason == "length"
    assert ids(waiting) == alone(model, PROMPTS[2], max_tokens=6, ignore_eos=True)
    kept.wait_until_done()
    assert ids(kept) == alone(model, PROMPTS[0], max_tokens=60, ignore_eos=True)


# -- end to end: the client goes away ----------------------------------------------------------------


@pytest.fixture
def server(model):
    with running_server(create_app(model, n_slots=1, n_ctx=2048)) as running:
        yield running


def _generated_after_cancel(server) -> tuple[float, float]:
    metrics = server.metrics()
    return metrics["gptj_tokens_evaluated_after_cancel_count"], metrics["gptj_tokens_evaluated_after_cancel_sum"]


def test_a_client_leaving_mid_stream_stops_its_generation_and_frees_the_slot(server):
    body = {"prompt": "Once upon a time", "stream": True, **LONG}
    with server.http.stream("POST", "/v1/completions", json=body) as response:
        events = sse_events(response)
        for _ in range(5):
            next(events)
    left = time.monotonic()  # the connection is closed

    server.wait_until_idle()
    freed_after = time.monotonic() - left

    metrics = server.metrics()
    assert metrics["gptj_generations_total{reason=cancelled}"] == 1
    assert metrics["gptj_generated_tokens_total"] < LONG["max_tokens"]
    assert _generated_after_cancel(server)[0] == 1 and _generated_after_cancel(server)[1] <= 1
    assert freed_after < 2.0  # the whole generation would take several seconds more


def test_a_client_leaving_a_non_streamed_request_cancels_it(model, server):
    prompt = "Once upon a time"
    body = {"prompt": prompt, **LONG}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=httpx.Timeout(30, read=0.5))

    server.wait_until_idle()

    metrics = server.metrics()
    assert metrics["gptj_generations_total{reason=cancelled}"] == 1
    # The step already running: one token, or the prompt when the client left while it was read (the
    # first steps of a fresh server take tenths of a second on a loaded machine).
    assert _generated_after_cancel(server)[1] <= max(1, len(model.tokenize(prompt)))
    assert metrics["gptj_generated_tokens_total"] < LONG["max_tokens"]


def test_a_client_leaving_while_its_request_waits_takes_it_off_the_queue(server):
    with server.http.stream("POST", "/v1/completions", json={"prompt": "Hold", "stream": True, **LONG}) as holding:
        events = sse_events(holding)
        next(events)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/completions", json={"prompt": "Wait"}, timeout=httpx.Timeout(30, read=0.5))
        health = server.wait_until(lambda h: h["queued"] == 0, "the queue to empty")
        assert health["slots_processing"] == 1  # the holding request still runs
    server.wait_until_idle()
