"""Every failure becomes an OpenAI-style error object with the right HTTP status, never a stack trace."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokenmill.engine.async_engine import EngineRequestFailed, EngineShuttingDown
from tokenmill.errors import RequestError
from tokenmill.server.protocol import ErrorInfo, ErrorResponse

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error the server answers with directly: status, message and OpenAI's param/code fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers


class SafeJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: always encodable, even text holding a lone
    surrogate (which UTF-8 cannot encode, and which made the default encoder raise mid-response)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


# SamplingParams' messages open with the field they refuse ("top_p must be ...", "min_tokens (3) ...").
_FIELD_FIRST = re.compile(r"^([a-z_]+) (?:must|\()")


def request_error_param(message: str) -> str | None:
    """The field a RequestError message names first, for the error object's `param`."""
    match = _FIELD_FIRST.match(message)
    return match.group(1) if match else None


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON object OpenAI's API returns for an error (also used for a stream's final error event)."""
    info = ErrorInfo(message=message, type=_TYPES.get(status, "invalid_request_error"), param=param, code=code)
    return ErrorResponse(error=info).model_dump()


def error_for(exc: BaseException) -> tuple[int, str]:
    """The status and client-safe message of an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, RequestError):
        return 400, str(exc)
    if isinstance(exc, EngineShuttingDown):
        return 503, str(exc)
    if isinstance(exc, EngineRequestFailed):
        return 500, str(exc)
    log.error("unexpected error while serving a request", exc_info=exc)
    return 500, "internal server error; see the server log"


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return SafeJSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def _counted(request: Request, status: int, message: str, param: str | None = None,
             code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    state = getattr(request.app.state, "tokenmill", None)
    if state is not None:
        state.metrics.on_error(status)
    return error_response(status, message, param, code, headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    problems, param = [], None
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            problems.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
            continue
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        where = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        if err.get("type") == "extra_forbidden":
            problems.append(f"{where}: unknown field; remove it (see the API reference for valid fields)")
        else:
            problems.append(f"{where}: {err.get('msg', 'invalid value')}")
    return "invalid request: " + "; ".join(problems), param


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into OpenAI error objects."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _counted(request, exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return _counted(request, 400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _counted(request, exc.status_code, str(exc.detail))

    async def _known(request: Request, exc: Exception) -> JSONResponse:
        status, message = error_for(exc)
        return _counted(request, status, message, request_error_param(message) if status == 400 else None)

    for known in (RequestError, EngineShuttingDown, EngineRequestFailed):
        app.add_exception_handler(known, _known)

    @app.exception_handler(Exception)  # last resort: answered by Starlette's ServerErrorMiddleware
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        return _counted(request, *error_for(exc))
