"""Many concurrent streams, and a client that hangs up mid-stream: every KV block comes back."""

from __future__ import annotations

import asyncio
import json
import time

import httpx


def test_32_concurrent_streams_complete_and_free_the_pool(live_server):
    before = live_server.wait_idle()

    async def one(client, i):
        stream = await client.chat.completions.create(
            model=live_server.model, messages=[{"role": "user", "content": f"Count to {i}."}], max_tokens=8,
            temperature=0.7, seed=i, stream=True, stream_options={"include_usage": True})
        finish, usage = None, None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            usage = chunk.usage or usage
        return finish, usage

    async def all_of_them():
        client = live_server.async_client()
        try:
            return await asyncio.gather(*(one(client, i) for i in range(32)))
        finally:
            await client.close()

    results = asyncio.run(all_of_them())
    assert all(finish in ("stop", "length") for finish, _ in results)
    assert all(1 <= usage.completion_tokens <= 8 for _, usage in results)
    after = live_server.wait_idle()
    assert after["tokenmill:kv_cache_free_blocks"] == after["tokenmill:kv_cache_total_blocks"]
    assert after["tokenmill:num_requests_running"] == 0
    generated = after["tokenmill:generation_tokens_total"] - before["tokenmill:generation_tokens_total"]
    assert generated == sum(usage.completion_tokens for _, usage in results)
    stats = live_server.state.engine.latest_stats
    assert stats.num_free_blocks == stats.num_total_blocks and not live_server.state.engine.num_in_flight


def test_client_disconnect_aborts_the_request_and_frees_its_blocks(live_server):
    before = live_server.wait_idle()
    body = {"model": live_server.model, "prompt": "Write a very long essay about the sea.", "max_tokens": 400,
            "ignore_eos": True, "stream": True}
    chunks = 0
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", live_server.url + "/v1/completions", json=body,
                           headers=live_server.headers) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"]:
                    chunks += 1
                if chunks == 3:
                    break  # leaving both blocks closes the connection mid-stream
    deadline = time.monotonic() + 30
    while True:
        after = live_server.metrics()
        aborted = after["tokenmill:num_aborted_requests_total"] - before["tokenmill:num_aborted_requests_total"]
        if aborted >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert aborted == 1
    after = live_server.wait_idle(timeout=10)
    assert after["tokenmill:kv_cache_free_blocks"] == after["tokenmill:kv_cache_total_blocks"]
    generated = after["tokenmill:generation_tokens_total"] - before["tokenmill:generation_tokens_total"]
    assert 3 <= generated < 400


def test_non_streaming_disconnect_also_aborts(live_server):
    before = live_server.wait_idle()
    body = {"model": live_server.model, "prompt": "List every prime number.", "max_tokens": 400, "ignore_eos": True}
    try:
        httpx.post(live_server.url + "/v1/completions", json=body, headers=live_server.headers, timeout=1.5)
    except httpx.TimeoutException:
        pass  # the client gives up and closes the connection
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = live_server.metrics()
        if after["tokenmill:num_aborted_requests_total"] > before["tokenmill:num_aborted_requests_total"]:
            break
        time.sleep(0.1)
    assert after["tokenmill:num_aborted_requests_total"] == before["tokenmill:num_aborted_requests_total"] + 1
    assert live_server.wait_idle(timeout=10)["tokenmill:num_requests_running"] == 0
