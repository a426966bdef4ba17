"""``gptj-ggml serve``: the OpenAI-compatible HTTP server (``gptj_ggml.server``) under uvicorn, or as
Ray Serve replicas behind Ray's HTTP proxy (``--replicas N``, :mod:`gptj_ggml.server.replicas`)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from ..chat_templates import TEMPLATES
from .cache_flags import add_cache_flags, cache_options_from_args
from .lookup_flag import add_lookup_flag, lookup_from_args
from .sampling_flags import add_sampling_flags, sampling_from_args

#: Where the API key may come from instead of the command line (which other users can read in ``ps``).
API_KEY_ENV = "GPTJ_GGML_API_KEY"


def add_serve(subparsers: argparse._SubParsersAction) -> None:
    from ..server.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_QUEUE

    parser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (OpenAI's completions and chat completions, and a chat page)",
        description="Serve MODEL over HTTP: POST /v1/completions and /v1/chat/completions as OpenAI's API "
        "(streaming included), GET /v1/models, /props, /health, /metrics, and the chat page at /. "
        "Needs the server extra: pip install 'gptj_ggml[server]'.",
    )
    parser.add_argument("model", help="the .gguf model file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    parser.add_argument(
        "--slots",
        type=int,
        default=None,
        metavar="N",
        help="generations at once, each with its own KV cache, decoded together (default 4)",
    )
    parser.add_argument(
        "--queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        metavar="N",
        help=f"requests that may wait for a slot; more get 503 (default {DEFAULT_MAX_QUEUE})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV} if set, else no key)",
    )
    parser.add_argument(
        "--chat-template",
        default=None,
        metavar="NAME|FILE",
        help=f"a named template ({', '.join(TEMPLATES)}) or a Jinja file (default: the model's)",
    )
    parser.add_argument(
        "--ctx", type=int, default=None, metavar="N", help="context per slot in tokens (default: the model's)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="threads per slot (default: up to the physical cores, fewer while the cores are busy)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from ORIGIN (e.g. http://localhost:3000) to call the API; repeatable (default: none)",
    )
    parser.add_argument(
        "--max-body",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="BYTES",
        help=f"largest request body; larger is 413 (default {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "-n",
        "--max-tokens",
        type=int,
        default=None,
        metavar="N",
        help="max_tokens of a request that gives none (default: the context size: until end-of-text, a stop "
        "string or a full context)",
    )
    parser.add_argument(
        "--no-repack",
        dest="repack",
        action="store_false",
        help="keep every weight mapped from the file: one copy in the page cache for all processes and "
        "replicas of this machine (default: matrices ggml's kernels multiply faster interleaved -- q4_K on "
        "AVX2-only CPUs, iq4_nl; q4_0 and q4_K where the CPU has AVX-512 without VNNI -- are copied into "
        "that layout, a copy per process)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="N > 1: N Ray Serve replicas (processes, each with the model and its --slots) behind Ray's HTTP "
        "proxy, a session's requests (header X-Session-Id) on one replica; on the Ray cluster in $RAY_ADDRESS, "
        "else a local one. Needs the ray extra: pip install 'gptj_ggml[ray]' (default 1: this process alone)",
    )
    add_lookup_flag(parser, "; the default of requests that do not set lookup")
    add_cache_flags(parser)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_sampling_flags(parser).description = "defaults for requests that do not set them"
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..server import create_app
    except ModuleNotFoundError as error:
        print(f"error: {error}; serve needs the server extra: pip install 'gptj_ggml[server]'", file=sys.stderr)
        return 1
    from ..model import Model

    for name in ("slots", "ctx", "threads", "max_body", "max_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.queue < 0:
        raise ValueError(f"--queue must be >= 0, got {args.queue}")
    if args.replicas < 1:
        raise ValueError(f"--replicas must be positive, got {args.replicas}")
    cache = cache_options_from_args(args)
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    app_options = {
        "n_slots": args.slots,
        "max_queue": args.queue,
        "n_ctx": args.ctx,
        "n_threads": args.threads,
        "api_key": api_key,
        "chat_template": args.chat_template,
        "sampling": sampling_from_args(args),
        "cors_origins": args.cors_origin,
        "max_body_bytes": args.max_body,
        "max_tokens": args.max_tokens,
        "lookup": lookup_from_args(args),
    }
    if not _is_loopback(args.host) and not api_key:
        print(
            f"warning: listening on {args.host} without an API key: anyone who can reach this port can use the "
            f"model (set --api-key or ${API_KEY_ENV})",
            file=sys.stderr,
        )
    if args.replicas > 1:
        from .serve_replicas import serve_replicas

        return serve_replicas(args, app_options, cache)
    model = Model(args.model, repack=args.repack, **cache)  # the context and threads are the slots' own (create_app)
    app = create_app(model, **app_options)
    served = app.state.served
    print(
        f"serving {served.model_id} on http://{args.host}:{args.port} ({_count(len(served.scheduler.slots), 'slot')} of "
        f"{served.scheduler.n_ctx} tokens, queue {args.queue}, chat template {served.preparer.chat_template.name}"
        f"{', API key required' if api_key else ''})",
        file=sys.stderr,
    )
    # A stream in progress ends within a few seconds of Ctrl-C (its generation is cancelled).
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=3, access_log=False
    )
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully on Ctrl-C, then raises the signal again; stopping a server
        # that way is its normal end.
        pass
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
