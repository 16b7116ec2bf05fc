"""AsyncEngine over a real EngineCore (default SmolLM2, CPU): streams, cancellation, failures, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from tokenmill.config import EngineArgs
from tokenmill.engine.async_engine import AsyncEngine, EngineRequestFailed, EngineShuttingDown
from tokenmill.engine.core import EngineCore
from tokenmill.errors import RequestError
from tokenmill.sampling.params import SamplingParams

PROMPT = "The quick brown fox"
GREEDY = SamplingParams(temperature=0.0, max_tokens=8)


@pytest.fixture(scope="module")
def core_and_reference():
    """The engine, plus the greedy output of PROMPT computed synchronously before any AsyncEngine."""
    core = EngineCore(EngineArgs(dtype="float32", max_model_len=256, kv_cache_memory=48 * 2**20))
    core.add_request("reference", PROMPT, GREEDY)
    final = None
    while core.has_unfinished_requests():
        for output in core.step():
            final = output
    return core, final


@pytest.fixture
def core(core_and_reference):
    return core_and_reference[0]


def _run(core, body, timeout=120):
    """Run `body(engine)` on a fresh AsyncEngine over `core`, then shut that engine down."""

    async def main():
        engine = AsyncEngine(core)
        try:
            return await asyncio.wait_for(body(engine), timeout)
        finally:
            await engine.shutdown()

    return asyncio.run(main())


async def _final(engine, prompt, params, request_id):
    outputs = [o async for o in engine.generate(prompt, params, request_id)]
    return outputs


def _blocks_all_free(core):
    stats = core.stats()
    return stats.num_free_blocks == stats.num_total_blocks and not core.has_unfinished_requests()


def test_stream_is_cumulative_and_matches_the_sync_engine(core_and_reference):
    core, reference = core_and_reference
    outputs = _run(core, lambda engine: _final(engine, PROMPT, GREEDY, "a"))
    assert [o.finished for o in outputs] == [False] * (len(outputs) - 1) + [True]
    token_counts = [len(o.outputs[0].token_ids) for o in outputs]
    assert token_counts == sorted(token_counts)  # cumulative, never shrinking
    assert outputs[-1].outputs[0].token_ids == reference.outputs[0].token_ids
    assert outputs[-1].outputs[0].text == reference.outputs[0].text
    assert _blocks_all_free(core)


def test_concurrent_requests_all_finish(core):
    async def body(engine):
        prompts = [f"Number {i} is" for i in range(8)]
        return await asyncio.gather(*(_final(engine, p, GREEDY, f"c{i}") for i, p in enumerate(prompts)))

    results = _run(core, body)
    assert all(r[-1].finished and len(r[-1].outputs[0].token_ids) >= 1 for r in results)
    assert _blocks_all_free(core)


def test_cancelling_the_consumer_aborts_and_frees_blocks(core):
    aborted_before = core.stats().num_aborted_total

    async def body(engine):
        seen = 0

        async def consume():
            nonlocal seen
            async for _ in engine.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True), "long"):
                seen += 1
                if seen == 3:
                    await asyncio.sleep(3600)  # a client that stalls until it is cancelled

        task = asyncio.ensure_future(consume())
        while seen < 3 and not task.done():
            await asyncio.sleep(0.01)
        assert not task.done(), task.exception()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(500):  # the abort is processed by the step loop between steps
            if engine.latest_stats.num_aborted_total > aborted_before and not engine.num_in_flight:
                break
            await asyncio.sleep(0.02)
        return engine.latest_stats

    stats = _run(core, body)
    assert stats.num_aborted_total == aborted_before + 1
    assert stats.num_free_blocks == stats.num_total_blocks
    assert _blocks_all_free(core)


def test_request_errors_reach_the_caller(core):
    async def body(engine):
        with pytest.raises(RequestError, match="max_tokens"):
            await _final(engine, PROMPT, SamplingParams(max_tokens=10_000), "too-long")
        with pytest.raises(RequestError, match="empty"):
            await _final(engine, "", GREEDY, "empty")
        return await _final(engine, PROMPT, GREEDY, "after")  # the loop still serves

    assert _run(core, body)[-1].finished


def test_a_failing_request_fails_alone(core, monkeypatch):
    real_add = core.add_request

    def add_request(request_id, prompt, params, *, priority=0):
        if request_id == "bad":
            raise RuntimeError("boom")  # fault injection inside the engine
        return real_add(request_id, prompt, params, priority=priority)

    monkeypatch.setattr(core, "add_request", add_request)

    async def body(engine):
        good = asyncio.ensure_future(_final(engine, PROMPT, GREEDY, "good"))
        with pytest.raises(EngineRequestFailed):
            await _final(engine, PROMPT, GREEDY, "bad")
        return await good

    assert _run(core, body)[-1].finished


def test_a_failing_step_fails_in_flight_requests_and_the_loop_goes_on(core, monkeypatch):
    real_step, calls = core.step, {"n": 0}

    def step():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("step broke")
        return real_step()

    monkeypatch.setattr(core, "step", step)

    async def body(engine):
        with pytest.raises(EngineRequestFailed):
            await _final(engine, PROMPT, SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True), "victim")
        return await _final(engine, PROMPT, GREEDY, "next")

    assert _run(core, body)[-1].finished
    assert _blocks_all_free(core)


def test_shutdown_lets_short_requests_finish_and_aborts_long_ones(core):
    async def body(engine):
        short = asyncio.ensure_future(_final(engine, PROMPT, SamplingParams(temperature=0.0, max_tokens=2), "short"))
        # the long request must outlast sleep + grace: 240 tokens in 0.5 s would take ~480 tok/s (the CPU
        # step runner decodes this model at ~260 tok/s on a 2-core AVX-512 Xeon, so 200 in 2.2 s finished)
        long = asyncio.ensure_future(_final(engine, PROMPT, SamplingParams(temperature=0.0, max_tokens=240, ignore_eos=True), "long"))
        await asyncio.sleep(0.2)
        await engine.shutdown(grace_s=0.3)
        with pytest.raises(EngineShuttingDown):
            await _final(engine, PROMPT, GREEDY, "late")
        results = await asyncio.gather(short, long, return_exceptions=True)
        return results, engine.is_running

    (short, long), running = _run(core, body)
    assert short[-1].finished
    assert isinstance(long, EngineShuttingDown)
    assert not running
    assert _blocks_all_free(core)
