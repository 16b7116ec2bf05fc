"""Admission control: past the queue limits requests get 503 with Retry-After, and none waits unbounded."""

from __future__ import annotations

import asyncio
import time

import httpx


async def _fire(live_server, count, body):
    async def one(client):
        start = time.monotonic()
        response = await client.post("/v1/completions", json=body, headers=live_server.headers)
        return response, time.monotonic() - start

    async with httpx.AsyncClient(base_url=live_server.url, timeout=120,
                                 limits=httpx.Limits(max_connections=count)) as client:
        return await asyncio.gather(*(one(client) for _ in range(count)))


def test_64_concurrent_requests_over_the_queue_limit(live_server, monkeypatch):
    """8 queued sequences at most: of 64 requests at once some get 503 + Retry-After at once, the
    rest are served, and every one is answered within its bound (queue wait 20 s + generation)."""
    limits = live_server.state.limits
    monkeypatch.setattr(limits, "max_queued_seqs", 8)
    monkeypatch.setattr(limits, "max_queue_wait_s", 20.0)
    live_server.wait_idle()
    results = asyncio.run(_fire(live_server, 64, {"prompt": "Count: one, two,", "max_tokens": 4}))
    statuses = [r.status_code for r, _ in results]
    busy = [(r, t) for r, t in results if r.status_code == 503]
    assert set(statuses) <= {200, 503} and busy and statuses.count(200) >= 8, statuses
    for response, elapsed in busy:
        assert response.headers["retry-after"] == str(limits.retry_after_s)
        assert response.json()["error"]["code"] == "server_busy" and "--max-queued-seqs" in response.text
    assert max(t for _, t in results) < 20.0 + 30.0
    assert live_server.state.admission.queued_seqs == 0 and live_server.state.admission.pending_tokens == 0
    idle = live_server.wait_idle()
    assert idle["tokenmill:kv_cache_free_blocks"] == idle["tokenmill:kv_cache_total_blocks"]


def test_pending_prompt_tokens_limit(live_server, monkeypatch):
    limits = live_server.state.limits
    monkeypatch.setattr(limits, "max_pending_prompt_tokens", 200)
    alone = httpx.post(live_server.url + "/v1/completions", headers=live_server.headers, timeout=60,
                       json={"prompt": "word " * 300, "max_tokens": 1})
    assert alone.status_code == 400 and "--max-pending-prompt-tokens" in alone.text  # retrying cannot help
    results = asyncio.run(_fire(live_server, 16, {"prompt": "word " * 60, "max_tokens": 2}))
    statuses = [r.status_code for r, _ in results]
    assert 503 in statuses and 200 in statuses, statuses
    assert live_server.state.admission.pending_tokens == 0


def test_a_request_that_cannot_start_within_the_wait_bound_gets_503_and_frees_its_blocks(live_server, monkeypatch):
    monkeypatch.setattr(live_server.state.limits, "max_queue_wait_s", 0.001)
    for stream in (False, True):
        start = time.monotonic()
        response = httpx.post(live_server.url + "/v1/completions", headers=live_server.headers, timeout=60,
                              json={"prompt": "Tell me a story.", "max_tokens": 50, "stream": stream})
        assert response.status_code == 503 and "--max-queue-wait" in response.text
        assert response.headers["retry-after"] and time.monotonic() - start < 10
    monkeypatch.undo()
    idle = live_server.wait_idle()
    assert idle["tokenmill:kv_cache_free_blocks"] == idle["tokenmill:kv_cache_total_blocks"]
    assert live_server.state.admission.queued_seqs == 0
