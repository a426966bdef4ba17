"""The server as Ray Serve replicas: the same app (``create_app``) in N processes, one machine or many.

>>> import ray
>>> from gptj_ggml.server.replicas import run_replicas
>>> ray.init()  # or ray.init(address="auto") on a node of a running cluster
>>> run_replicas("gpt-j-6b-q4_0.gguf", replicas=2, n_slots=2, port=8080)

Each replica is a Ray actor that opens the model file itself (the path must name the file on every
machine that runs a replica; the weights mapped from it are one copy in each machine's page cache
however many replicas it runs, the matrices ``repack`` copies one per replica) and serves
``create_app``'s app through ``@serve.ingress``; Ray's HTTP proxy on each machine forwards
requests to them, streams included. A client that goes away is
seen by the proxy, which cancels the request in the replica: the route's task is cancelled and
frees its slot, as under uvicorn. Requests with an ``X-Session-Id`` header go to their session's
replica (:mod:`.session_router`), where the slot that served the last turn still holds the
transcript. Every response names its replica in ``X-Replica-Id``.

``gptj-ggml serve MODEL --replicas N`` does the same from the command line; ``serve run
gptj_ggml.server.replicas:build model=PATH replicas=N`` with Ray's own CLI. Needs the ``ray``
extra: ``pip install "gptj_ggml[ray]"``. See docs/ray.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve.config import BackpressureConfig, RequestRouterConfig

from .. import _checks
from .limits import DEFAULT_MAX_QUEUE, RETRY_AFTER_SECONDS
from .session_router import SESSION_ROUTER_CLASS

if TYPE_CHECKING:
    from fastapi import FastAPI
    from ray.serve.handle import DeploymentHandle
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The response header that names the replica which answered (Ray's replica id).
REPLICA_ID_HEADER = "X-Replica-Id"
#: The Serve application's name (``serve status``, the logs).
APP_NAME = "gptj_ggml"
#: Failed replica starts Ray retries before the deployment fails: a model that does not open will
#: not open on a retry, and Ray's default (20) hides the error for minutes.
CONSTRUCTOR_RETRIES = 2


@serve.deployment(max_constructor_retry_count=CONSTRUCTOR_RETRIES)
@serve.ingress()
class GptjReplica:
    """One replica: the model, opened in this process, and ``create_app``'s app over it."""

    def __init__(self, model_path: str, model_options: dict[str, Any], app_options: dict[str, Any]) -> None:
        from ..model import Model

        self._model = Model(model_path, **model_options)
        self._app_options = app_options

    def __serve_build_asgi_app__(self) -> FastAPI:
        from . import create_app

        app = create_app(self._model, **self._app_options)
        # Outermost, so that every response names its replica, errors included.
        app.add_middleware(ReplicaIdMiddleware, replica_id=serve.get_replica_context().replica_id.unique_id)
        return app


class ReplicaIdMiddleware:
    """Adds ``X-Replica-Id: <replica_id>`` to every HTTP response."""

    def __init__(self, app: ASGIApp, replica_id: str) -> None:
        self.app = app
        self.header = (REPLICA_ID_HEADER.lower().encode(), replica_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_replica_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_replica_id)


def replica_application(
    model_path: str | os.PathLike[str],
    *,
    replicas: int = 2,
    session_affinity: bool = True,
    cpus_per_replica: float = 1.0,
    repack: bool = True,
    cache_type: str = "f16",
    flash_attn: bool | None = None,
    **app_options: Any,
) -> serve.Application:
    """The replicas as a Ray Serve application, for ``serve.run`` (which starts it).

    Args:
        model_path: the .gguf file, at this path on every machine that runs a replica (made
            absolute here, from this process's working directory).
        replicas: how many replicas (processes, each with the model and its own slots).
        session_affinity: route by ``X-Session-Id`` (:mod:`.session_router`); False: Ray's default
            router (the less busy of two random replicas), which ignores sessions.
        cpus_per_replica: the CPUs Ray reserves for each replica (a scheduling figure: Ray places
            replicas where the CPUs are free; the engine's threads are ``n_threads``).
        repack: ``Model``'s: True copies the q4_0, q4_K and iq4_nl matrices into each replica's
            own memory, in the layout of ggml's faster single-token kernels; False keeps every
            weight mapped from the file, one copy in the page cache for all the replicas of a
            machine.
        cache_type, flash_attn: ``Model``'s: how each slot's KV cache stores keys and values.
        **app_options: :func:`~gptj_ggml.server.create_app`'s options but the model (``n_slots``,
            ``max_queue``, ``n_ctx``, ``n_threads``, ``api_key``, ``chat_template``, ...), the same
            for every replica. They travel to the replicas pickled: a ChatTemplate or a
            SamplingParams is fine, an open file is not.

    A replica takes as many requests as it has slots and queue (``n_slots + max_queue``); when
    every replica is that full, each Ray proxy holds up to ``max_queue`` more until a replica has
    room, and answers the rest 503 with ``Retry-After``, as one server does when its queue is full.
    """
    if replicas < 1:
        raise ValueError(f"replicas must be positive, got {replicas}")
    cache_type, flash_attn = _checks.cache_layout(cache_type, flash_attn)  # here, not in every replica
    if "model" in app_options:
        raise TypeError("give the model as model_path: each replica opens the file itself")
    n_slots = app_options.get("n_slots")
    if n_slots is None:
        from .scheduler import default_slot_count

        # Decided here, not in each replica, so that Ray's limit below is each replica's own.
        n_slots = app_options["n_slots"] = default_slot_count()
    max_queue = app_options.get("max_queue", DEFAULT_MAX_QUEUE)
    options: dict[str, Any] = {
        "num_replicas": replicas,
        "max_ongoing_requests": n_slots + max_queue,
        # Ray counts a request as queued while it routes it, too: 0 would refuse every request.
        "max_queued_requests": max(1, max_queue),
        "backpressure_config": BackpressureConfig(retry_after_s=RETRY_AFTER_SECONDS),
        "ray_actor_options": {"num_cpus": cpus_per_replica},
    }
    if session_affinity:
        options["request_router_config"] = RequestRouterConfig(request_router_class=SESSION_ROUTER_CLASS)
    return GptjReplica.options(**options).bind(
        os.path.abspath(model_path), {"repack": repack, "cache_type": cache_type, "flash_attn": flash_attn}, app_options
    )


def run_replicas(
    model_path: str | os.PathLike[str],
    *,
    replicas: int = 2,
    host: str = "127.0.0.1",
    port: int = 8080,
    session_affinity: bool = True,
    cpus_per_replica: float = 1.0,
    repack: bool = True,
    cache_type: str = "f16",
    flash_attn: bool | None = None,
    log_level: str | None = None,
    **app_options: Any,
) -> DeploymentHandle:
    """Start Ray Serve's HTTP proxy on ``host:port`` and the replicas behind it; return when they serve.

    Runs on the Ray cluster this process is connected to (``ray.init(...)`` first; without it Ray
    starts a local one). If Serve already runs there, its proxies keep their host and port. The
    other arguments are :func:`replica_application`'s; ``log_level`` (``"INFO"``, ``"WARNING"``,
    ...) is the replicas' logs' (Ray's default: INFO, a line per request).
    ``serve.delete(APP_NAME)`` stops the replicas; ``serve.shutdown()`` Serve as a whole.
    """
    app = replica_application(
        model_path,
        replicas=replicas,
        session_affinity=session_affinity,
        cpus_per_replica=cpus_per_replica,
        repack=repack,
        cache_type=cache_type,
        flash_attn=flash_attn,
        **app_options,
    )
    serve.start(http_options={"host": host, "port": port})
    logging_config = {"log_level": log_level} if log_level else None
    return serve.run(app, name=APP_NAME, route_prefix="/", logging_config=logging_config)


class BuildArgs(BaseModel):
    """The arguments of ``serve run gptj_ggml.server.replicas:build key=value ...`` (or a Serve
    config file's ``args``): the replicas' and ``create_app``'s options that are plain values."""

    model_config = ConfigDict(extra="forbid")

    model: str
    replicas: int = 2
    session_affinity: bool = True
    cpus_per_replica: float = 1.0
    repack: bool = True
    cache_type: str = "f16"
    flash_attn: bool | None = None
    n_slots: int | None = None
    max_queue: int = DEFAULT_MAX_QUEUE
    n_ctx: int | None = None
    n_threads: int | None = None
    api_key: str | None = None
    chat_template: str | None = None
    cors_origins: list[str] = []
    max_tokens: int | None = None
    model_id: str | None = None
    lookup: int = 0


def build(args: dict[str, Any]) -> serve.Application:
    """Ray Serve's application builder: ``serve run gptj_ggml.server.replicas:build model=PATH replicas=N``."""
    options = BuildArgs.model_validate(args).model_dump()
    model_path = options.pop("model")
    return replica_application(model_path, **options)
