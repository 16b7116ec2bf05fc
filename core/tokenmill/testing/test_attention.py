"""Conformance: the platform's paged attention agrees with the dense causal reference."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tokenmill import contract_version
from tokenmill.errors import PluginError
from tokenmill.interfaces import AttentionSpec, ShapeBuckets
from tokenmill.plugin_base import optional
from tokenmill.testing.attention_harness import PagedRequest, Scenario, assert_matches_reference, run_scenario

HEADS = {"gqa": (8, 2), "mha": (4, 4)}


def _spec(heads: str, head_size: int, block_size: int, dtype: torch.dtype) -> AttentionSpec:
    num_heads, num_kv_heads = HEADS[heads]
    return AttentionSpec(num_heads, num_kv_heads, head_size, block_size, dtype)


@pytest.fixture()
def check(make_backend, kv_allocator, step_sync):
    """Run a Scenario through the platform's backend for its spec (or `backend`) and compare with the reference."""

    def run(scenario: Scenario, steps: set[int] | None = None, backend=None) -> None:
        backend = backend or make_backend(scenario.spec)
        assert_matches_reference(run_scenario(backend, kv_allocator, scenario, step_sync), scenario, steps)

    return run


@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize("head_size", [64, 128])
@pytest.mark.parametrize("heads", list(HEADS))
def test_ragged_steps_mixing_prefill_chunks_and_decodes(check, heads, head_size, block_size, dtype):
    """Ragged prefills, chunks on cached KV, one-token prompts and decodes, in one batch and in any order."""
    spec = _spec(heads, head_size, block_size, dtype)
    requests = [PagedRequest(n) for n in (37, 3, 70, 16, 45)]
    steps = [
        [(0, 20), (1, 1), (2, 33), (3, 15)],  # ragged prefills; request 1 has a one-token prompt
        [(1, 1), (0, 17), (2, 1), (3, 1)],  # decode rows split by a chunk on cached KV
        [(4, 40), (2, 30), (1, 1)],  # a fresh prefill, a long chunk on cached KV, a decode
        [(2, 1), (4, 1)],  # pure decode at ragged lengths
        [(4, 1), (2, 1)],
        [(4, 3), (2, 4)],  # short chunks on cached KV
    ]
    check(Scenario(spec, requests, steps))


@pytest.mark.parametrize("block_size", [16, 32])
def test_prefix_hit_reuses_another_requests_blocks(check, block_size, dtype):
    """A request whose first blocks are another's cached prefix computes only its new tokens."""
    spec = _spec("gqa", 64, block_size, dtype)
    requests = [PagedRequest(3 * block_size + 5), PagedRequest(2 * block_size + 10, shares_blocks_of=0, shared_blocks=2)]
    steps = [[(0, 3 * block_size + 3)], [(1, 9), (0, 1)], [(0, 1), (1, 1)]]
    check(Scenario(spec, requests, steps))


@pytest.mark.parametrize("block_size", [16, 32])
def test_chunked_prefill_unaligned_over_two_layers(check, block_size):
    """7-token chunks across block borders, then decodes; one metadata serves two layers' caches."""
    spec = _spec("gqa", 64, block_size, torch.float32)
    requests = [PagedRequest(75), PagedRequest(31)]
    steps = [[(0, 7)] + ([(1, 7)] if i < 4 else []) for i in range(10)]
    steps += [[(0, 2), (1, 2)], [(1, 1), (0, 1)], [(0, 1)]]
    check(Scenario(spec, requests, steps, num_layers=2))


@pytest.mark.slow
def test_decode_at_long_context(check, dtype):
    """Decode steps at 2k tokens of context, batched with a shorter request (padded keys masked)."""
    spec = _spec("gqa", 128, 16, dtype)
    requests = [PagedRequest(2051), PagedRequest(613)]
    steps = [[(0, 2048), (1, 610)], [(0, 1), (1, 1)], [(1, 1), (0, 1)], [(0, 1)]]
    check(Scenario(spec, requests, steps), steps={1, 2, 3})


def test_backend_declares_its_cache_and_refuses_bad_specs(make_backend):
    """kv_cache_shape puts blocks on dim 1 (the allocator copies along it); bad head ratios are refused."""
    spec = _spec("gqa", 64, 16, torch.float32)
    backend = make_backend(spec)
    shape = backend.kv_cache_shape(11)
    assert all(isinstance(n, int) for n in shape) and shape[1] == 11, f"blocks must be dim 1 of {shape}"
    assert backend.unsupported_reasons(spec) == []
    reasons = backend.unsupported_reasons(AttentionSpec(6, 4, 64, 16, torch.float32))
    assert reasons and all(isinstance(r, str) and r for r in reasons), "6 query heads over 4 KV heads must be refused"


# Small buckets, so every step below is padded in T, in B and in the block-table width.
BUCKETS = ShapeBuckets(token_counts=(16, 64, 128), batch_sizes=(2, 4, 8), block_table_widths=(2, 4, 8))


@pytest.mark.parametrize("block_size", [16, 32])
def test_padded_steps_as_the_engine_pads_them(tokenmill_platform, check, block_size, dtype):
    """Static-shape platforms: padded prefill, mixed and decode steps (null block, padding requests)."""
    if not tokenmill_platform.static_shapes:
        pytest.skip(f"{tokenmill_platform.name} has static_shapes=False: the engine never pads its steps")
    spec = _spec("gqa", 64, block_size, dtype)
    requests = [PagedRequest(n) for n in (40, 5, 52)]
    steps = [
        [(0, 20), (1, 2)],  # a prefill: T 22 -> 64, B 2 -> 4 (one padding request holds the padding)
        [(1, 1), (0, 17), (2, 40)],  # mixed, on cached KV
        [(0, 1), (1, 1), (2, 10)],
        [(0, 1), (2, 1)],  # pure decode: B 2 stays 2 (T == B)
        [(2, 1), (0, 1), (1, 1)],  # pure decode: B 3 -> 4, one one-token padding request
    ]
    check(Scenario(spec, requests, steps, num_layers=2, buckets=BUCKETS))


def test_functional_cache_form(make_backend, check):
    """A backend with functional_cache=True returns (output, updated cache); the next step reads that cache."""
    spec = _spec("gqa", 64, 16, torch.float32)
    backend = make_backend(spec)
    if not optional(backend, "functional_cache", False):
        pytest.skip(f"{backend.name} writes its cache in place (functional_cache is False)")
    requests = [PagedRequest(40), PagedRequest(20)]
    steps = [[(0, 30), (1, 19)], [(0, 5), (1, 1)], [(0, 1)], [(0, 1)]]
    check(Scenario(spec, requests, steps, num_layers=2))


@pytest.mark.parametrize("kv_dtype", ["float32", "bfloat16", "float16"])
def test_kv_cache_dtype_other_than_the_models(tokenmill_platform, make_backend, check, kv_dtype):
    """A cache in another dtype than q/k/v (--kv-cache-dtype): accepted or refused with reasons."""
    model = next((getattr(torch, n) for n in ("float32", "bfloat16") if n in tokenmill_platform.supported_dtypes), None)
    cache = getattr(torch, kv_dtype)
    if model is None or cache == model or kv_dtype not in tokenmill_platform.supported_dtypes:
        pytest.skip(f"{kv_dtype} is the model dtype here or not in {tokenmill_platform.name}'s supported_dtypes")
    if (contract_version.parse(tokenmill_platform.contract_version) or (2, 0))[0] < 2:
        pytest.skip("a contract-1 plugin is never handed a cache dtype other than the model's (the core refuses it)")
    spec = AttentionSpec(8, 2, 64, 16, model, kv_cache_dtype=cache)
    try:
        make_backend(spec)
    except PluginError as exc:
        pytest.skip(f"the backend refuses a {kv_dtype} cache with reasons, as the contract allows: {exc}")
    requests = [PagedRequest(n) for n in (38, 5, 22)]
    steps = [[(0, 30), (1, 3), (2, 20)], [(0, 7), (1, 1), (2, 1)], [(0, 1), (2, 1), (1, 1)]]
    check(Scenario(spec, requests, steps))


def _feature_backend(make_backend, spec: AttentionSpec, member: str, what: str):
    """The backend for `spec`, or a skip naming why: the base backend does not declare `member`."""
    base = make_backend(dataclasses.replace(spec, sliding_window=None, logits_soft_cap=None))
    if not optional(base, member, False):
        pytest.skip(f"{base.name} does not declare {member}: the core never hands it {what} "
                    "(windowed models get their context capped at the window; soft-capped ones are refused)")
    return make_backend(spec)


# Windowed steps: prefills longer than the window, chunks whose window starts inside cached
# blocks, and decodes far past it; window 24 is not a multiple of the block size.
WINDOW_REQUESTS = (100, 41, 7, 70)
WINDOW_STEPS = [
    [(0, 60), (1, 30), (2, 7)],  # prefills longer than the window
    [(0, 25), (1, 1), (3, 33)],  # a chunk on cached KV, a decode, a fresh prefill
    [(0, 1), (1, 1), (3, 20)],
    [(0, 1), (1, 1), (3, 1)],  # pure decode, each request past its window
    [(0, 13), (1, 8), (3, 16)],  # short chunks whose windows begin in released blocks' neighbours
]


@pytest.mark.parametrize("block_size", [16, 32])
def test_sliding_window_with_blocks_released_behind_it(make_backend, check, block_size, dtype):
    """A spec with sliding_window: each query sees its last W keys; blocks behind the window are
    garbage and their table entries the null block (as the KV manager leaves them)."""
    spec = AttentionSpec(8, 2, 64, block_size, dtype, sliding_window=24)
    backend = _feature_backend(make_backend, spec, "supports_sliding_window", "a windowed spec")
    scenario = Scenario(spec, [PagedRequest(n) for n in WINDOW_REQUESTS], WINDOW_STEPS, num_layers=2,
                        free_behind_window=True)
    check(scenario, backend=backend)


def test_logits_soft_cap(make_backend, check, dtype):
    """A spec with logits_soft_cap (Gemma 2): scores s become cap * tanh(s / cap), windowed or not."""
    for window in (None, 20):
        spec = AttentionSpec(8, 2, 64, 16, dtype, sliding_window=window, logits_soft_cap=2.0)
        backend = _feature_backend(make_backend, spec, "supports_logits_soft_cap", "a soft-capped spec")
        if window is not None and not optional(backend, "supports_sliding_window", False):
            continue
        requests = [PagedRequest(n) for n in (47, 9, 31)]
        steps = [[(0, 30), (1, 9), (2, 5)], [(0, 15), (2, 1)], [(0, 1), (2, 24)], [(2, 1), (0, 1)]]
        check(Scenario(spec, requests, steps))
