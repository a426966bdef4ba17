"""An OpenAI-compatible HTTP server for a GPT-J model: ``create_app(model)`` is a FastAPI app.

>>> from gptj_ggml import Model
>>> from gptj_ggml.server import create_app
>>> app = create_app(Model("gpt-j-6b-q4_0.gguf"), n_slots=2, api_key="secret")
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8080)

``gptj-ggml serve MODEL`` does the same from the command line. The modules: ``app`` (routes and
streaming), ``schemas`` (OpenAI's request and response bodies), ``request_options`` (a request ->
prompt ids and generate options), ``responses`` (results -> bodies and chunks), ``scheduler`` (slots
and the queue), ``metrics`` (Prometheus), ``middleware`` (API key, body limit), ``errors`` (OpenAI's
error bodies), ``limits`` (the defaults). Needs the ``server`` extra: ``pip install "gptj_ggml[server]"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]

_SERVER_DEPENDENCIES = ("fastapi", "starlette", "uvicorn", "pydantic", "pydantic_core", "prometheus_client")


def __getattr__(name: str) -> Any:
    # Imported on first use, so that the scheduler and the limits import without the web framework.
    if name != "create_app":
        raise AttributeError(f"module 'gptj_ggml.server' has no attribute {name!r}")
    try:
        from .app import create_app
    except ModuleNotFoundError as error:
        if error.name in _SERVER_DEPENDENCIES:
            raise ModuleNotFoundError(
                f"the server needs {error.name}, from the server extra: pip install 'gptj_ggml[server]'",
                name=error.name,
            ) from error
        raise
    return create_app
