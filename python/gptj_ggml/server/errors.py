"""Errors as OpenAI sends them: ``{"error": {"message", "type", "param", "code"}}`` with a status.

Every failure the server reports goes through :class:`ApiError` and :func:`error_response`, so the
``openai`` client raises its matching exception (``BadRequestError`` for 400 with ``param``,
``AuthenticationError`` for 401, ...) and the page reads one shape. Handlers installed by
:func:`install_handlers` turn validation errors, unknown routes and unexpected exceptions into it;
an unexpected exception is logged with its traceback and answered with a 500 that does not echo it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("gptj_ggml.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """An error answered to the client: status, message, and the request field at fault (``param``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def bad_request(message: str, param: str | None, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def param_name(location: Sequence[int | str]) -> str:
    """A pydantic error location as a field path: ``("messages", 0, "role")`` -> ``messages[0].role``.

    Union members pydantic tried (``str``, ``list[int]``, ...) and its function-validator labels
    are not field names and are left out.
    """
    name = ""
    for part in location:
        if isinstance(part, int):
            name += f"[{part}]"
        elif "[" in part or part in _UNION_LABELS:
            continue
        else:
            name += f".{part}" if name else part
    return name


_UNION_LABELS = {"str", "int", "float", "bool", "list", "dict", "none", "TextPart"}


def from_validation_error(error: ValidationError) -> ApiError:
    """The first problem pydantic found, as a 400 naming its field."""
    first = error.errors(include_url=False)[0]
    param = param_name(first["loc"])
    kind = first["type"]
    if kind == "missing":
        return bad_request(f"{param} is required", param, "missing_required_parameter")
    if kind == "json_invalid":
        return bad_request(f"the body is not valid JSON: {first['msg']}", None, "invalid_json")
    if kind == "model_type" and not param:
        return bad_request("the body must be a JSON object", None, "invalid_json")
    return bad_request(f"{param}: {first['msg']}" if param else first["msg"], param or None)


def install_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(ValidationError)
    async def _validation_error(request: Request, error: ValidationError) -> JSONResponse:
        return error_response(from_validation_error(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Routing's own errors: an unknown path (404) or method (405).
        if error.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        else:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(ApiError(error.status_code, message, code=None, headers=error.headers))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(ApiError(500, f"internal error ({type(error).__name__}); see the server's log"))
