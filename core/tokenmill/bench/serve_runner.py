"""Drive a running server: send requests at a Poisson rate (or all at once) under a concurrency cap."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tokenmill.bench.serve_client import RequestResult, build_payload, send_request
from tokenmill.bench.serve_dataset import ServeRequest
from tokenmill.errors import TokenmillError


@dataclass(slots=True)
class ServeBenchConfig:
    """Where to send requests and how fast."""

    base_url: str
    endpoint: str = "/v1/completions"
    model: str | None = None  # None: the first model the server lists
    api_key: str | None = None
    request_rate: float = math.inf  # requests/s of a Poisson process; inf sends all at t=0
    max_concurrency: int | None = None
    seed: int = 0
    ignore_eos: bool = False
    temperature: float = 0.0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def new_client() -> Any:
    """An httpx.AsyncClient with no connection cap and no timeout (runs can be long)."""
    try:
        import httpx
    except ImportError as exc:
        raise TokenmillError("`tokenmill bench serve` needs httpx; pip install httpx") from exc
    return httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))


async def served_model(client: Any, cfg: ServeBenchConfig) -> str:
    """The model name to put in requests: the configured one, else the server's first."""
    if cfg.model:
        return cfg.model
    try:
        response = await client.get(cfg.base_url + "/v1/models", headers=cfg.headers)
        response.raise_for_status()
        return response.json()["data"][0]["id"]
    except Exception as exc:
        raise TokenmillError(f"cannot list the models of {cfg.base_url} ({exc}); is the server running? "
                             "Start it with `tokenmill serve` or pass --base-url") from exc


async def count_tokens(client: Any, cfg: ServeBenchConfig, text: str) -> int:
    """Tokens of `text` with the served model's tokenizer (POST /tokenize)."""
    response = await client.post(cfg.base_url + "/tokenize", json={"prompt": text}, headers=cfg.headers)
    response.raise_for_status()
    return int(response.json()["count"])


async def _arrivals(requests: list[ServeRequest], rate: float, seed: int) -> AsyncIterator[ServeRequest]:
    """Yield requests at exponentially distributed gaps of mean 1/rate (all at once when rate is inf)."""
    rng = random.Random(seed)
    for request in requests:
        yield request
        if not math.isinf(rate):
            await asyncio.sleep(rng.expovariate(rate))


async def probe_server(cfg: ServeBenchConfig, request: ServeRequest, client: Any) -> str:
    """One short request of `request`'s prompt, which must succeed; returns the served model name."""
    model = await served_model(client, cfg)
    url = cfg.base_url + cfg.endpoint
    probe = ServeRequest(request.prompt, request.prompt_len, min(request.output_len, 4))
    check = await send_request(client, url, _payload(cfg, model, probe), probe, cfg.headers)
    if not check.success:
        raise TokenmillError(f"the test request to {url} failed: {check.error}")
    return model


async def run_requests(cfg: ServeBenchConfig, requests: list[ServeRequest], client: Any,
                       model: str | None = None) -> tuple[list[RequestResult], float]:
    """Send every request as its arrival time comes; returns their results and the wall time.

    Without `model` (from probe_server) a probe request goes first. Clients that start together
    probe before their common start: a probe sent after it waits behind the other clients' load.
    """
    model = model or await probe_server(cfg, requests[0], client)
    url = cfg.base_url + cfg.endpoint
    limit = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None

    async def one(request: ServeRequest) -> RequestResult:
        if limit is None:
            return await send_request(client, url, _payload(cfg, model, request), request, cfg.headers)
        async with limit:
            return await send_request(client, url, _payload(cfg, model, request), request, cfg.headers)

    start = time.perf_counter()
    tasks = [asyncio.ensure_future(one(r)) async for r in _arrivals(requests, cfg.request_rate, cfg.seed)]
    results = await asyncio.gather(*tasks)
    return list(results), time.perf_counter() - start


def _payload(cfg: ServeBenchConfig, model: str, request: ServeRequest) -> dict[str, Any]:
    return build_payload(cfg.endpoint, model, request, ignore_eos=cfg.ignore_eos, temperature=cfg.temperature)
