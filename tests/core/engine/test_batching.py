"""Batch invariance, memory pressure with preemption, chunked prefill and prefix caching on the real engine."""

from __future__ import annotations

import pytest

from tokenmill.sampling.params import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


@pytest.fixture
def run(tools):
    def go(engine, prompts, params=GREEDY, prefix="r"):
        for i, p in enumerate(prompts):
            engine.add_request(f"{prefix}{i}", tools.chat_ids(engine, p), params)
        final = tools.run_all(engine)
        return [final[f"{prefix}{i}"].outputs[0].token_ids for i in range(len(prompts))]

    return go


def test_batch_invariance_greedy_float32(make_engine, run, tools):
    engine = make_engine()
    together = run(engine, tools.prompts)
    alone = [run(engine, [p], prefix=f"a{i}-")[0] for i, p in enumerate(tools.prompts)]
    assert all(len(t) == 24 for t in together)
    assert together == alone


def test_memory_pressure_preempts_and_matches(make_engine, run, tools):
    prompts = tools.prompts[:8]
    reference = run(make_engine(), prompts)
    # The 8 prompts (35-39 tokens) take 24 blocks of 16 and grow to 32 blocks; give them 28.
    # Prefix caching is off so that the shared chat-template blocks do not relieve the pressure.
    tight = make_engine(kv_cache_memory=28 * 30 * 2 * 16 * 3 * 64 * 4, enable_prefix_caching=False)
    assert tight.num_blocks == 28
    outputs = run(tight, prompts)
    assert tight.stats().num_preemptions_total > 0, "the pool was meant to force preemption"
    assert outputs == reference
    assert tight.kv.num_used_blocks == 0


def test_chunked_prefill_matches_large_budget(make_engine, run, tools):
    long_prompt = " ".join(tools.prompts)  # about 200 tokens with the template
    big = run(make_engine(max_num_batched_tokens=2048), [long_prompt])
    small_engine = make_engine(max_num_batched_tokens=32)
    small = run(small_engine, [long_prompt])
    prefill_steps = small_engine.stats().num_steps - (24 - 1)  # the last prefill step samples token 1
    assert prefill_steps >= 5, "a ~160-token prompt under a 32-token budget takes at least 5 steps"
    assert small == big


def test_prefix_caching_hits_and_matches(make_engine, run, tools):
    system = ("You are a meticulous assistant for a public library. Answer briefly and cite the shelf. " * 6).strip()
    first = [f"{system}\nQuestion: {p}" for p in tools.prompts[:4]]
    second = [f"{system}\nQuestion: {p}" for p in tools.prompts[4:8]]
    cached = make_engine()
    run(cached, first, prefix="f")
    before = cached.stats()
    got = run(cached, second, prefix="s")
    after = cached.stats()
    plain = make_engine(enable_prefix_caching=False)
    run(plain, first, prefix="f")
    plain_before = plain.stats()
    expected = run(plain, second, prefix="s")
    assert after.prefix_hits - before.prefix_hits >= 4 * 64, "the shared system prompt should be served from cache"
    cached_work = after.tokens_computed_total - before.tokens_computed_total
    plain_work = plain.stats().tokens_computed_total - plain_before.tokens_computed_total
    assert cached_work < plain_work
    assert got == expected
