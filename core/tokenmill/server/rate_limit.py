"""RateLimiter: an optional token bucket per API key (per client address when no key is set), 429 past it."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from tokenmill.server.error_handlers import ApiError

_MAX_CLIENTS = 10_000  # buckets kept; the least recently seen is dropped (a full bucket again)


class RateLimiter:
    """`rate` requests per second per client on average, in bursts of up to `burst`.

    Clients are told apart by their bearer token, so with one server key it bounds the callers
    of that key together; without a key, by their address. Buckets live on the event loop.
    """

    def __init__(self, rate: float, burst: int) -> None:
        if not rate > 0 or burst < 1:
            raise ValueError(f"the rate limit needs a rate > 0 and a burst >= 1, got {rate} and {burst}")
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, last time)

    def check(self, client: str) -> None:
        """Take one request from `client`'s bucket, or raise a 429 saying when to retry."""
        now = time.monotonic()
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise ApiError(429, f"rate limit reached: this client may send {self.rate:g} requests per second "
                                f"(bursts of {self.burst}); retry after {wait} s", code="rate_limit_exceeded",
                           headers={"Retry-After": str(wait)})
        self._buckets[client] = (tokens - 1.0, now)
        while len(self._buckets) > _MAX_CLIENTS:
            self._buckets.popitem(last=False)
