"""EngineCoreClient (the engine core in its own process) against an in-process EngineCore: same outputs."""

from __future__ import annotations

import asyncio
import math

import pytest

from tokenmill.config import EngineArgs
from tokenmill.engine import wire
from tokenmill.engine.core_client import EngineCoreClient
from tokenmill.errors import RequestError
from tokenmill.sampling.params import SamplingParams

PROMPT = "Once upon a time, in a small village,"
ARGS = dict(dtype="float32", max_model_len=256, kv_cache_memory=48 * 2**20)
CASES = {
    "greedy": SamplingParams(temperature=0.0, max_tokens=12),
    "stop string": SamplingParams(temperature=0.0, max_tokens=24, stop=[" the", "."]),
    "stop string kept": SamplingParams(temperature=0.0, max_tokens=24, stop=[" the"], include_stop_str_in_output=True),
    "logprobs": SamplingParams(temperature=0.0, max_tokens=6, logprobs=2, prompt_logprobs=1),
    "n=2 seeded": SamplingParams(temperature=0.9, max_tokens=10, n=2, seed=7),
    "min_tokens": SamplingParams(temperature=0.0, max_tokens=16, min_tokens=10, stop=[" the"]),
}


@pytest.fixture(scope="module")
def client():
    engine = EngineCoreClient(EngineArgs(**ARGS), log_level="warning")
    yield engine
    engine.close()
    assert engine._proc.returncode == 0, "the engine process did not exit cleanly on shutdown"


@pytest.fixture(scope="module")
def reference_core():
    from tokenmill.engine.core import EngineCore

    return EngineCore(EngineArgs(**ARGS))


def _in_process(core, params: SamplingParams):
    core.add_request("ref", PROMPT, params)
    final = None
    while core.has_unfinished_requests():
        for output in core.step():
            final = output
    return final


async def _last(client, prompt, params, request_id):
    final = None
    async for output in client.generate(prompt, params, request_id):
        final = output
    return final


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_equal_the_in_process_engine(client, reference_core, case):
    params = CASES[case]
    want = _in_process(reference_core, params)
    got = asyncio.run(_last(client, PROMPT, params, f"case-{case}"))
    assert got.finished and got.prompt_token_ids == want.prompt_token_ids
    for g, w in zip(got.outputs, want.outputs, strict=True):
        assert (g.text, g.token_ids, g.finish_reason, g.stop_reason) == (w.text, w.token_ids, w.finish_reason,
                                                                           w.stop_reason)
        if w.logprobs is not None:
            assert [sorted((t, e[1], e[2]) for t, e in d.items()) for d in g.logprobs] == \
                   [sorted((t, e[1], e[2]) for t, e in d.items()) for d in w.logprobs]
            assert math.isclose(g.cumulative_logprob, w.cumulative_logprob, rel_tol=1e-5, abs_tol=1e-5)
    if want.prompt_logprobs is not None:
        assert len(got.prompt_logprobs) == len(want.prompt_logprobs) == len(want.prompt_token_ids)
        assert got.prompt_logprobs[0] is None
        assert [sorted(d) for d in got.prompt_logprobs[1:]] == [sorted(d) for d in want.prompt_logprobs[1:]]


def test_refused_request_raises_request_error_and_the_engine_keeps_serving(client):
    async def run():
        with pytest.raises(RequestError, match="outside the vocabulary"):
            await _last(client, [10**8], SamplingParams(max_tokens=2), "bad")
        return await _last(client, PROMPT, SamplingParams(temperature=0.0, max_tokens=3), "after-bad")

    assert asyncio.run(run()).outputs[0].finish_reason == "length"
    assert client.is_running


def test_leaving_a_stream_early_frees_its_blocks(client):
    async def run():
        stream = client.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True), "leaver")
        async for output in stream:
            if len(output.outputs[0].token_ids) >= 3:
                break
        await stream.aclose()
        for _ in range(200):  # the engine frees the blocks as soon as the abort arrives
            stats = client.latest_stats
            if stats.num_running == 0 and stats.num_free_blocks == stats.num_total_blocks:
                return stats
            await asyncio.sleep(0.02)
        return client.latest_stats

    stats = asyncio.run(run())
    assert stats.num_running == 0 and stats.num_free_blocks == stats.num_total_blocks
    assert stats.num_aborted_total >= 1


def test_wire_round_trips_every_sampling_field():
    params = SamplingParams(n=2, presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.2,
                            temperature=0.7, top_p=0.9, top_k=5, min_p=0.1, seed=3, stop=["a", "bc"],
                            stop_token_ids=[4], ignore_eos=True, max_tokens=9, min_tokens=2, logprobs=3,
                            prompt_logprobs=1, skip_special_tokens=False, include_stop_str_in_output=True)
    encoder, decoder = wire.command_codec()
    back = decoder.decode(encoder.encode(wire.AddRequest("x", [1, 2], params, 3)))
    assert back == wire.AddRequest("x", [1, 2], params, 3)
