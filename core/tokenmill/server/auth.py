"""API keys: `Authorization: Bearer <key>` checked in constant time, before the body is read.

Routes and their keys: /v1/*, /tokenize and /detokenize want --api-key when one is set;
/metrics wants --metrics-api-key when one is set, and is open otherwise (an explicit choice:
Prometheus scrapers are usually configured without keys, and metrics carry no request text);
/health, /version, /docs and /openapi.json are always open.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from tokenmill.server.error_handlers import ApiError

_FLAGS = {"api_key": "--api-key or TOKENMILL_API_KEY", "metrics_api_key": "--metrics-api-key"}


def check_key(request: Request, key: str | None, key_field: str = "api_key") -> None:
    """Raise a 401 unless the request carries `key` (None: no key configured, let all through)."""
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(401, f"missing or wrong API key; send the header `Authorization: Bearer <key>` "
                            f"with the key the server was started with ({_FLAGS[key_field]})",
                       code="invalid_api_key")


def validate_key(key: str | None, flag: str) -> str | None:
    """A configured key as given; an empty one is refused, since it would silently switch auth off."""
    if key is not None and not key.strip():
        raise ValueError(f"{flag} is empty, which would turn authentication off; give a non-empty key, "
                         f"or leave {flag} unset to serve without one")
    return key


async def require_api_key(request: Request) -> None:
    """A route dependency doing `check_key` with the server's --api-key (GuardedRoute does it earlier)."""
    from tokenmill.server.state import get_state

    check_key(request, get_state(request).api_key)
