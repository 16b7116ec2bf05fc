"""Conformance: a real engine run on a tiny random Llama, end to end, on the platform under test.

One greedy workload (engine_probe.run_workload: prefill-only, mixed and decode-only steps, a
chunked prompt and a prefix-cache hit) runs on the platform with its own step runner, execution
context, op overrides and attention backend. Its tokens must equal the CPU reference plugin's,
token for token, in float32.
"""

from __future__ import annotations

import pytest

from tokenmill.testing.engine_probe import FIRST_WAVE, MAX_TOKENS, SECOND_WAVE


def test_greedy_generation_equals_the_cpu_reference(engine_run, reference_tokens, engine_dtype, tokenmill_platform):
    """Every request's greedy tokens, in float32, equal the CPU plugin's."""
    if engine_dtype != "float32":
        pytest.skip(f"{tokenmill_platform.name} does not run float32, which the token-for-token comparison needs")
    tokens, _, _ = engine_run
    assert set(tokens) == set(FIRST_WAVE) | set(SECOND_WAVE), f"requests finished: {sorted(tokens)}"
    for request_id, want in reference_tokens.items():
        assert len(want) == MAX_TOKENS
        assert tokens[request_id] == want, (
            f"request {request_id!r}: {tokenmill_platform.name} generated {tokens[request_id]}, the CPU reference {want}")


def test_workload_covers_prefill_mixed_and_decode_steps(engine_run):
    """The kit's own check that the run above exercised every kind of step (and so the padding rules)."""
    _, recording, _ = engine_run
    kinds = set()
    for batch in recording.batches:
        real = batch.query_lens_cpu[: len(batch.query_lens_cpu) - batch.num_padded_reqs]
        decodes = sum(q == 1 for q in real)
        kinds.add("decode" if decodes == len(real) else "prefill" if decodes == 0 else "mixed")
    assert kinds == {"prefill", "mixed", "decode"}, f"the workload ran only {sorted(kinds)} steps"
    assert len(recording.steps) == len(recording.batches), (
        f"{len(recording.batches)} build_metadata calls but {len(recording.steps)} model steps: one each per step")
