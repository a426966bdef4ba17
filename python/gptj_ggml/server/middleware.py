"""The server's guards as ASGI middleware: the API key and the body size limit.

Both answer before any route runs, in OpenAI's error shape. They are plain ASGI (not Starlette's
``BaseHTTPMiddleware``) so that a streamed response passes through untouched and a client that goes
away is still seen by the route.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import ApiError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def send_error(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiKeyMiddleware:
    """Requires ``Authorization: Bearer <key>`` on every path that ``is_open`` does not exempt.

    The comparison is :func:`hmac.compare_digest`, whose time does not depend on where the strings
    differ. CORS preflights (``OPTIONS``) carry no credentials by design and pass; the CORS
    middleware outside this one answers them.
    """

    def __init__(self, app: ASGIApp, api_key: str, is_open: Callable[[str], bool]) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()
        self.is_open = is_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or self.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            message = "a valid API key is required: send it as 'Authorization: Bearer KEY'"
            if not given:
                message = "no API key given: send it as 'Authorization: Bearer KEY'"
            await send_error(
                send, ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            )
            return
        await self.app(scope, receive, send)


class BodyTooLargeError(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes", code="request_too_large")


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413.

    A ``Content-Length`` over the limit is refused before reading; a body without one (chunked) is
    counted as it arrives, and the read that passes the limit raises :class:`BodyTooLargeError`
    (an :class:`ApiError`, answered by the app's handler), so no body larger than the limit is ever
    held in memory.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:  # a bad one: h11 refuses it
            await send_error(send, BodyTooLargeError(self.max_bytes))
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        await self.app(scope, counted_receive, send)
