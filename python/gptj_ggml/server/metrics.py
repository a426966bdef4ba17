"""``GET /metrics``: Prometheus counters, gauges and histograms of the server, in its own registry.

The registry belongs to the app (not prometheus_client's global one), so several apps in one process
-- tests, or a program serving two models -- keep separate figures. Request counts come from an ASGI
middleware (every response, errors included, by route and status); token counts and rates from the
scheduler when a job ends (:meth:`ServerMetrics.record_finished`, its ``on_finish``); queue depth and
busy slots are read from the scheduler when scraped (:meth:`ServerMetrics.watch`). A request of ``n``
choices is ``n`` generations (``n`` slot uses, ``n`` queue places) but one request and one time to
first token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .scheduler import FailedEvent, FinishedEvent

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .scheduler import Event, Job, Scheduler

__all__ = ["CONTENT_TYPE_LATEST", "RequestMetricsMiddleware", "ServerMetrics"]

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TOKENS_PER_SECOND = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class ServerMetrics:
    """Every metric of one app; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gptj_requests", "HTTP requests answered, by route and status", ["endpoint", "status"], registry=registry
        )
        self.prompt_tokens = Counter(
            "gptj_prompt_tokens",
            "prompt tokens evaluated (not counting those reused from a slot's cache)",
            registry=registry,
        )
        self.prompt_tokens_reused = Counter(
            "gptj_prompt_tokens_reused",
            "prompt tokens a slot's cache already held, not evaluated again",
            registry=registry,
        )
        self.generated_tokens = Counter("gptj_generated_tokens", "tokens generated", registry=registry)
        self.lookup_drafted_tokens = Counter(
            "gptj_lookup_drafted_tokens",
            "tokens drafted by prompt lookup (requests' lookup) and verified",
            registry=registry,
        )
        self.lookup_accepted_tokens = Counter(
            "gptj_lookup_accepted_tokens",
            "drafted tokens the model agreed with (each a token generated without a step of its own)",
            registry=registry,
        )
        self.finished = Counter(
            "gptj_generations",
            "generations ended, by reason (cancelled: the client went away)",
            ["reason"],
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "gptj_time_to_first_token_seconds",
            "from the request's arrival to its first token (queueing and prompt evaluation included)",
            buckets=_SECONDS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "gptj_queue_wait_seconds",
            "time a generation (one choice of a request) waited for a free slot",
            buckets=_SECONDS,
            registry=registry,
        )
        self.tokens_per_second = Histogram(
            "gptj_generation_tokens_per_second",
            "per-generation rate (one choice of a request: tokens after the first, over the time they took)",
            buckets=_TOKENS_PER_SECOND,
            registry=registry,
        )
        self.evaluated_after_cancel = Histogram(
            "gptj_tokens_evaluated_after_cancel",
            "tokens a slot evaluated after its request was cancelled (the step already running)",
            buckets=(0, 1, 2, 4, 16, 64, 256),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "gptj_queue_depth", "generations (a request's choices, one each) waiting for a slot", registry=registry
        )
        self.slots_busy = Gauge("gptj_slots_busy", "slots generating", registry=registry)
        self.slots = Gauge("gptj_slots", "slots (sessions with their own KV cache)", registry=registry)

    def watch(self, scheduler: Scheduler) -> None:
        """Read the queue depth and the busy slots from ``scheduler`` at every scrape."""
        self.queue_depth.set_function(lambda: scheduler.queue_depth)
        self.slots_busy.set_function(lambda: scheduler.slots_busy)
        self.slots.set(len(scheduler.slots))

    def record_finished(self, job: Job, event: Event) -> None:
        """The scheduler's ``on_finish``: count what an ended job did (in the scheduler's step loop)."""
        if job.queued_seconds is not None:
            self.queue_wait.observe(job.queued_seconds)
        if job.evaluated_after_cancel is not None:
            self.evaluated_after_cancel.observe(job.evaluated_after_cancel)
        if isinstance(event, FailedEvent):
            self.finished.labels(reason="error").inc()
        if not isinstance(event, FinishedEvent):
            return
        timings = event.timings
        self.finished.labels(reason=event.finish_reason).inc()
        self.prompt_tokens.inc(timings.prompt_tokens)
        self.prompt_tokens_reused.inc(timings.reused_tokens)
        self.generated_tokens.inc(timings.generated_tokens)
        self.lookup_drafted_tokens.inc(timings.drafted_tokens)
        self.lookup_accepted_tokens.inc(timings.accepted_tokens)
        steps = timings.generated_tokens - 1
        if steps > 0 and timings.generation_ms > 0:
            self.tokens_per_second.observe(steps / timings.generation_ms * 1e3)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Counts every HTTP response by route (the path template, so ids do not multiply labels) and status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
