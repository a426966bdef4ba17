"""The HTTP app: OpenAI's completions and chat completions (streamed as server-sent events), the
model list, the server's properties, health, metrics, and the chat page.

Routes, as ``docs/server-contract.md`` fixes them (every one but ``/health``, ``/`` and
``/static/*`` needs the API key when one is set):

=============================  =========================================================================
``POST /v1/completions``       continue ``prompt`` (text or token ids)
``POST /v1/chat/completions``  reply to ``messages`` through the chat template
``GET /v1/models``             the one model served (``/v1/models/{id}``: it alone)
``GET /props``                 context size, slots, chat templates, the default generation settings
``GET /slots``                 each slot's state and how full its cache is
``POST /tokenize``             text -> token ids; ``POST /detokenize``: ids -> text
``GET /health``                ``{"status": "ok"}`` with slot and queue counts
``GET /metrics``               Prometheus text
``GET /``                      the chat page (``static/index.html``; 404 while it is absent)
=============================  =========================================================================

A request's ``n`` choices are ``n`` jobs of the scheduler (see :mod:`.choices`), admitted all
together or not at all; their events reach the event loop through ``loop.call_soon_threadsafe``. A
streamed response waits for the first event (of any choice) before it sends its headers, so a
request that fails at the start gets its own status (400, 500) even when streamed; a failure later
is an ``{"error": ...}`` event, then ``[DONE]``. A choice's failure is the request's: the other
choices are cancelled. A client that goes away -- mid-stream, or while a non-streamed request
waits -- cancels all its choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware
from starlette.staticfiles import StaticFiles

from ..chat import ChatTemplate, resolve_template
from ..chat_templates import TEMPLATES
from ..errors import ContextFullError
from ..sampling import SamplingParams
from . import schemas
from .choices import ChoiceEvent, Choices
from .errors import ApiError, install_handlers, logger
from .limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_QUEUE, RETRY_AFTER_SECONDS
from .metrics import CONTENT_TYPE_LATEST, RequestMetricsMiddleware, ServerMetrics
from .middleware import ApiKeyMiddleware, BodyLimitMiddleware
from .request_options import PreparedRequest, RequestPreparer, unknown_model
from .responses import ChatFormat, CompletionFormat, Ending, FinishedChoice, ResponseFormat
from .scheduler import (
    FailedEvent,
    FinishedEvent,
    QueueFullError,
    Scheduler,
    SchedulerClosedError,
    TokenEvent,
    default_slot_count,
)

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from ..model import Model

T = TypeVar("T")

STATIC_DIR = Path(__file__).parent / "static"
#: A status for the logs and metrics when the client went away before its answer (as nginx logs it).
CLIENT_CLOSED_REQUEST = 499


def create_app(
    model: Model,
    *,
    n_slots: int | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    api_key: str | None = None,
    chat_template: str | ChatTemplate | None = None,
    sampling: SamplingParams | None = None,
    cors_origins: Iterable[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_tokens: int | None = None,
    model_id: str | None = None,
    static_dir: str | os.PathLike[str] = STATIC_DIR,
    lookup: int = 0,
) -> FastAPI:
    """The server for ``model`` as a FastAPI app (run it with uvicorn, or ``gptj-ggml serve``).

    Args:
        model: the loaded model; each slot makes its own Session (KV cache) of it.
        n_slots: generations at once (one per request, or per choice of a request), decoded
            together; default 4.
        max_queue: jobs (a request's choices are one each) that may wait for a slot; beyond, 503
            with ``Retry-After``. A request may ask for as many choices (``n``) as the slots and
            the queue hold together, at most ``schemas.MAX_CHOICES``.
        n_ctx: each slot's context in tokens (default: the model's).
        n_threads: threads per slot (default: adaptive to how busy the cores are).
        api_key: when set, every route but ``/health``, ``/`` and ``/static`` needs
            ``Authorization: Bearer <api_key>``.
        chat_template: a named template, a template file (read here, once) or a ChatTemplate;
            default: the model's own. A request may name another of the named templates.
        sampling: the sampler settings of a request that gives none (default: ``SamplingParams()``).
        cors_origins: origins allowed to call from a browser (default: none, CORS off).
        max_body_bytes: the largest request body; larger is a 413.
        max_tokens: ``max_tokens`` of a request that gives none (default: the context size, so a
            reply goes on until end-of-text, a stop string or the end of the context).
        model_id: the name in ``/v1/models`` and responses (default: the file's stem).
        static_dir: the page's folder: ``/`` is its ``index.html``, ``/static/<file>`` its files
            (default: the package's ``server/static``).
        lookup: ``lookup`` of a request that gives none: prompt lookup speculative decoding's most
            drafted tokens per step, 1 to 15 (default 0: off). Replies are the same, only faster
            where they repeat their prompt.

    The slots' sessions are made here; their threads stop when the app's lifespan ends.
    """
    metrics = ServerMetrics()
    n_slots = default_slot_count() if n_slots is None else n_slots
    scheduler = Scheduler(
        model,
        n_slots=n_slots,
        max_queue=max_queue,
        n_ctx=n_ctx,
        n_threads=n_threads,
        on_finish=metrics.record_finished,
    )
    metrics.watch(scheduler)
    template = (
        chat_template if isinstance(chat_template, ChatTemplate) else resolve_template(chat_template, model.metadata)
    )
    served = _Served(
        model=model,
        model_id=model_id or Path(model.path).stem,
        scheduler=scheduler,
        metrics=metrics,
        preparer=RequestPreparer(
            model,
            scheduler.n_ctx,
            sampling or SamplingParams(),
            template,
            max_tokens,
            capacity=n_slots + max_queue,
            lookup=lookup,
        ),
        max_queue=max_queue,
        api_key_required=bool(api_key),
        max_body_bytes=max_body_bytes,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(scheduler.close)

    app = FastAPI(title="gptj_ggml", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    install_handlers(app)
    _add_routes(app, served, Path(static_dir))
    # Added innermost first: requests pass CORS, then metrics, the key, the body limit, the routes.
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key, is_open=_is_open_path)
    app.add_middleware(RequestMetricsMiddleware, metrics=served.metrics)
    origins = list(cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-session-id"],
            max_age=600,
        )
    return app


def _is_open_path(path: str) -> bool:
    """Paths reachable without the API key: health for monitors, the page and its files (the page
    asks for the key and sends it with its API calls)."""
    return path in ("/health", "/") or path.startswith("/static/")


class _Served:
    """What the routes share: the model, the scheduler, the metrics and the request preparer."""

    def __init__(
        self,
        *,
        model: Model,
        model_id: str,
        scheduler: Scheduler,
        metrics: ServerMetrics,
        preparer: RequestPreparer,
        max_queue: int,
        api_key_required: bool,
        max_body_bytes: int,
    ) -> None:
        self.model = model
        self.model_id = model_id
        self.scheduler = scheduler
        self.metrics = metrics
        self.preparer = preparer
        self.max_queue = max_queue
        self.api_key_required = api_key_required
        self.max_body_bytes = max_body_bytes
        self.created = int(time.time())

    def model_card(self) -> dict[str, Any]:
        return {"id": self.model_id, "object": "model", "owned_by": "gptj_ggml", "created": self.created}

    def check_model(self, name: str | None) -> None:
        # A request may leave the model out, or name it by id or by file name.
        if name and name not in (self.model_id, Path(self.model.path).name):
            raise unknown_model(name, self.model_id)


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (read after the body, ``receive`` has nothing else to say)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_client_gone(work: Awaitable[T], gone: asyncio.Future[None]) -> T | None:
    """``work``'s result, or None when the client goes away first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    return None


def _failure(event: FailedEvent) -> ApiError:
    error = event.error
    if isinstance(error, ApiError):
        return error
    if isinstance(error, SchedulerClosedError):
        return ApiError(503, str(error), code="shutting_down")
    if isinstance(error, (ValueError, TypeError, ContextFullError)):
        return ApiError(400, str(error), code="invalid_value")
    logger.error("generation failed", exc_info=(type(error), error, error.__traceback__))
    return ApiError(500, f"the generation failed ({type(error).__name__}); see the server's log")


def _sse(data: str) -> str:
    return f"data: {data}\n\n"


class _JobStreamingResponse(StreamingResponse):
    """A stream that cancels its jobs however it ends (also when it never started: a client gone
    before the first byte)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _add_routes(app: FastAPI, served: _Served, static_dir: Path) -> None:
    scheduler = served.scheduler

    async def generate(
        request: Request,
        parsed: schemas.CompletionRequest | schemas.ChatCompletionRequest,
        prepared: PreparedRequest,
        response_format: ResponseFormat,
        arrived: float,
    ) -> Response:
        choices = Choices(scheduler, served.max_queue, prepared, arrived, served.metrics.time_to_first_token.observe)
        try:
            choices.submit()
        except QueueFullError as error:
            raise ApiError(
                503, str(error), code="queue_full", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from None
        except SchedulerClosedError as error:
            raise ApiError(503, str(error), code="shutting_down") from None
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            if parsed.stream:
                first = await _unless_client_gone(choices.get(), gone)
                if first is None:
                    choices.cancel()
                    return Response(status_code=CLIENT_CLOSED_REQUEST)
                if isinstance(first.event, FailedEvent):
                    raise _failure(first.event)
                gone.cancel()  # from here on the streaming response watches the client
                include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
                chunks = _stream(choices, first, response_format, include_usage)
                return _JobStreamingResponse(chunks, on_close=choices.cancel)
            collected = await _unless_client_gone(_collect(choices), gone)
            if collected is None:
                choices.cancel()
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            if isinstance(collected, FailedEvent):
                raise _failure(collected)
            return Response(response_format.response(collected), media_type="application/json")
        except BaseException:
            # A failure (a choice's, or here), or the server stopping: no slot may keep generating.
            choices.cancel()
            raise
        finally:
            gone.cancel()

    async def parse(request: Request, model: type[schemas._GenerationRequest]) -> Any:
        body = await request.body()
        parsed = model.model_validate_json(body or b"null")  # ValidationError: a 400 naming the field
        served.check_model(parsed.model)
        return parsed

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        arrived = time.perf_counter()
        parsed = await parse(request, schemas.CompletionRequest)
        prepared = await run_in_threadpool(served.preparer.completion, parsed)
        response_format = CompletionFormat(
            served.model_id, served.model.tokenizer, prepared.top_logprobs, len(prepared.prompt)
        )
        return await generate(request, parsed, prepared, response_format, arrived)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        arrived = time.perf_counter()
        parsed = await parse(request, schemas.ChatCompletionRequest)
        prepared = await run_in_threadpool(served.preparer.chat, parsed)
        response_format = ChatFormat(
            served.model_id, served.model.tokenizer, prepared.top_logprobs, len(prepared.prompt)
        )
        return await generate(request, parsed, prepared, response_format, arrived)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [served.model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id not in (served.model_id, Path(served.model.path).name):
            raise unknown_model(model_id, served.model_id)
        return served.model_card()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        busy = scheduler.slots_busy
        return {
            "status": "ok",
            "slots_idle": len(scheduler.slots) - busy,
            "slots_processing": busy,
            "queued": scheduler.queue_depth,
        }

    @app.get("/slots")
    async def slots() -> list[dict[str, Any]]:
        return [
            {
                "id": slot.index,
                "state": "idle" if slot.job is None else "processing",
                "n_past": slot.n_past,
                "n_ctx": scheduler.n_ctx,
            }
            for slot in scheduler.slots
        ]

    @app.get("/props")
    async def props() -> dict[str, Any]:
        preparer = served.preparer
        return {
            "model": served.model_id,
            "n_ctx": scheduler.n_ctx,
            "n_slots": len(scheduler.slots),
            "cache_type": served.model.cache_type,
            "flash_attn": served.model.flash_attn,
            "chat_template": preparer.chat_template.name,
            "chat_templates": list(TEMPLATES),
            "default_generation_settings": {
                **preparer.sampling.settings(),
                "max_tokens": preparer.max_tokens,
                "lookup": preparer.lookup,
            },
            "api_key_required": served.api_key_required,
        }

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        parsed = schemas.TokenizeRequest.model_validate_json(await request.body() or b"null")
        ids = await run_in_threadpool(served.preparer.tokenize, parsed.content, "content")
        if parsed.add_special:
            ids = [served.model.tokenizer.bos_id, *ids]
        return {"tokens": ids}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        parsed = schemas.DetokenizeRequest.model_validate_json(await request.body() or b"null")
        ids = served.preparer.checked_ids(parsed.tokens, "tokens")
        return {"content": await run_in_threadpool(served.model.detokenize, ids)}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(served.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/")
    async def page() -> Response:
        index = static_dir / "index.html"
        if not index.is_file():
            raise ApiError(404, "the chat page is not installed (no static/index.html); the API is at /v1")
        return FileResponse(index, media_type="text/html")

    # check_dir=False: the folder may hold only .gitkeep, or be absent in a trimmed install.
    app.mount("/static", StaticFiles(directory=static_dir, check_dir=False), name="static")


async def _collect(choices: Choices) -> list[FinishedChoice] | FailedEvent:
    """Every choice's tokens and ending, in index order; or the first failure."""
    tokens: list[list[Any]] = [[] for _ in range(choices.n)]
    endings: dict[int, Ending] = {}
    while len(endings) < choices.n:
        item = await choices.get()
        event = item.event
        if isinstance(event, TokenEvent):
            tokens[item.index].append(event.token)
        elif isinstance(event, FailedEvent):
            return event
        else:
            endings[item.index] = choices.ending(item)
    return [(tokens[index], endings[index]) for index in range(choices.n)]


async def _stream(
    choices: Choices, first: ChoiceEvent, response_format: ResponseFormat, include_usage: bool
) -> AsyncIterator[str]:
    """The SSE body: ``data: {chunk}`` per token of each choice (tagged with its index), each
    choice's end as it comes, the usage once every choice ended (when asked), ``data: [DONE]``."""
    chunks = [_sse(chunk) for chunk in response_format.start(choices.n)]
    pending = [first]
    text_offsets = [0] * choices.n  # characters of each choice's text already sent
    endings: dict[int, Ending] = {}
    while True:
        for item in pending:
            event, index = item.event, item.index
            if isinstance(event, TokenEvent):
                chunks += [_sse(chunk) for chunk in response_format.tokens([event.token], text_offsets[index], index)]
                text_offsets[index] += len(event.token.text)
            elif isinstance(event, FinishedEvent):
                endings[index] = choices.ending(item)
                chunks.append(_sse(response_format.end(endings[index], index)))
            else:
                assert isinstance(event, FailedEvent)
                choices.cancel()  # the others must not go on generating for nobody
                chunks += [_sse(json.dumps(_failure(event).body())), _sse("[DONE]")]
                yield "".join(chunks)
                return
        if len(endings) == choices.n:
            if include_usage:
                chunks.append(_sse(response_format.usage_chunk([endings[i] for i in range(choices.n)])))
            chunks.append(_sse("[DONE]"))
            yield "".join(chunks)
            return
        yield "".join(chunks)
        chunks = []
        pending = [await choices.get(), *choices.ready()]
