"""GuardedRoute: what every request passes before FastAPI parses it: the key, the body size, valid text.

FastAPI reads and parses a JSON body before any dependency runs, so an API key checked in a
dependency comes after a 400 for bad JSON, and a body of any size is read whole. This route
class runs first instead: it checks the key, reads the body up to the server's limit (413
beyond it), parses the JSON once (Starlette keeps the result, and FastAPI's own parse reuses
it) and refuses text that cannot be encoded as UTF-8 (a lone UTF-16 surrogate such as
"\\ud800", which JSON allows) with a 400 that names the field, before a tokenizer or a response
encoder meets it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

from tokenmill.server.auth import check_key
from tokenmill.server.error_handlers import ApiError
from tokenmill.server.state import get_state

# A lone surrogate can only come from a \uD800-\uDFFF escape or from the raw bytes ED A0..BF xx
# (json.loads decodes bytes with "surrogatepass"); bodies without either skip the walk.
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class GuardedRoute(APIRoute):
    """A route whose requests are authenticated, size-checked and text-checked before parsing.

    `key_field` names the ServerState attribute holding the key this route wants (None: open).
    """

    key_field: ClassVar[str | None] = "api_key"

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        key_field = self.key_field

        async def guarded(request: Request) -> Response:
            state = get_state(request)
            if key_field is not None:
                check_key(request, getattr(state, key_field), key_field)
                if state.rate_limiter is not None and key_field == "api_key":
                    state.rate_limiter.check(_client_of(request))
            if request.method in ("POST", "PUT", "PATCH"):
                await _load_json(request, state.limits.max_body_bytes)
            return await handler(request)

        return guarded


class OpenRoute(GuardedRoute):
    """A route anyone may call (/health, /version): the body checks, no key."""

    key_field = None


class MetricsRoute(GuardedRoute):
    """/metrics: wants --metrics-api-key when one is set, else open (scrapers rarely send keys)."""

    key_field = "metrics_api_key"


def _client_of(request: Request) -> str:
    """Who a request counts against for rate limiting: its bearer token, else its address."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    if token:
        return "key:" + token
    return "addr:" + (request.client.host if request.client else "unknown")


async def _load_json(request: Request, limit: int) -> None:
    body = await _read_body(request, limit)
    if not body:
        return
    try:
        parsed = json.loads(body)
        where = _surrogate_path(parsed, "") if _MAYBE_SURROGATE.search(body) else None
    except ValueError as exc:  # also UnicodeDecodeError: bytes that are not UTF-8
        raise ApiError(400, f"invalid request: the request body is not valid JSON ({exc}); send a JSON object",
                       code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "invalid request: the request body nests too deeply; send a flatter JSON object",
                       code="invalid_json") from None
    if where is not None:
        raise ApiError(400, f"invalid request: {where or 'body'} holds a lone UTF-16 surrogate (an unpaired "
                            f"\\ud800-\\udfff escape), which is not valid Unicode text; send UTF-8 text or a "
                            f"complete surrogate pair", param=where or None, code="invalid_unicode")
    request._json = parsed  # Starlette's cache: FastAPI's request.json() returns this, unparsed again


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's cache, read by FastAPI
    return body


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"the request body is at least {size} bytes, more than this server's limit of {limit}; "
                         f"send a smaller request (the limit is set with --max-request-body-bytes)",
                    code="request_too_large")


def _surrogate_path(value: Any, path: str) -> str | None:
    """The dotted path (list items as [i]) of the first string or key holding a lone surrogate."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{_safe(key)}" if path else _safe(key)
            if _SURROGATE.search(key):
                return here
            found = _surrogate_path(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _safe(key: str) -> str:
    """A key fit for an error message: surrogates escaped."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")
