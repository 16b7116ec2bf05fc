"""API-key check: a route dependency that wants `Authorization: Bearer <key>` when a key is set."""

from __future__ import annotations

import hmac

from fastapi import Request

from tokenmill.server.error_handlers import ApiError
from tokenmill.server.state import get_state


async def require_api_key(request: Request) -> None:
    """Raise a 401 unless the request carries the server's key (no key configured: let all through)."""
    key = get_state(request).api_key
    if not key:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(401, "missing or wrong API key; send the header `Authorization: Bearer <key>` "
                            "with the key the server was started with (--api-key or TOKENMILL_API_KEY)",
                       code="invalid_api_key")
