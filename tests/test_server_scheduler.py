"""Slots and the queue: first come first served, the slot sharing the longest prefix, cancellation.

The scheduler is tested on its own (jobs with a recording sink, no HTTP), then cancellation end to
end: a client that goes away stops its generation within the step already running, and frees the slot.
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
    """A job's sink that keeps its events and lets the test wait for them."""

    def __init__(self, finished_order: list[Recorder] | None = None) -> None:
        self.events: list = []
        self._changed = threading.Condition()
        self._finished_order = finished_order

    def __call__(self, event) -> None:  # in the worker thread
        with self._changed:
            self.events.append(event)
            if not isinstance(event, TokenEvent) and self._finished_order is not None:
                self._finished_order.append(self)
            self._changed.notify_all()

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


def job(model, prompt: str, recorder: Recorder, **options) -> Job:
    return Job(model.tokenize(prompt), {**GREEDY, "max_tokens": 8, **options}, recorder)


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
    assert all(not slot.thread.is_alive() for slot in scheduler.slots)


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


def test_a_client_leaving_a_non_streamed_request_cancels_it(server):
    body = {"prompt": "Once upon a time", **LONG}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=httpx.Timeout(30, read=0.5))

    server.wait_until_idle()

    metrics = server.metrics()
    assert metrics["gptj_generations_total{reason=cancelled}"] == 1
    assert _generated_after_cancel(server)[1] <= 1
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
