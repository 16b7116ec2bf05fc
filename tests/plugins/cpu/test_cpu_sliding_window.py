"""The CPU backend's windowed and soft-capped paths, native kernel and torch fallback alike, vs the
float64 reference (the kit's windowed scenario, with blocks released behind the window)."""

from __future__ import annotations

import pytest
import torch

from tokenmill.interfaces import AttentionSpec
from tokenmill.testing.attention_harness import PagedRequest, Scenario, assert_matches_reference, run_scenario
from tokenmill.testing.test_attention import WINDOW_REQUESTS, WINDOW_STEPS

from tokenmill_cpu.allocator import CpuKVAllocator
from tokenmill_cpu.attention import CpuAttentionBackend
from tokenmill_cpu.paged_decode import paged_decode_kernel


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("cap", [None, 3.0])
def test_windowed_paths_match_the_reference(native, cap):
    if native and paged_decode_kernel(torch.float32, 64) is None:
        pytest.skip("no C++ compiler: the native kernel falls back to torch, tested by native=False")
    spec = AttentionSpec(8, 2, 64, 16, torch.float32, sliding_window=24, logits_soft_cap=cap)
    backend = CpuAttentionBackend(spec, native=native)
    assert (backend._kernel is not None) == (native and cap is None)  # soft-capped decode stays on torch
    scenario = Scenario(spec, [PagedRequest(n) for n in WINDOW_REQUESTS], WINDOW_STEPS, free_behind_window=True)
    assert_matches_reference(run_scenario(backend, CpuKVAllocator(), scenario), scenario)


def test_native_kernel_window_against_full_attention_on_the_window():
    """The kernel with window W over L keys equals full attention over a table of the last W keys'."""
    kernel = paged_decode_kernel(torch.float32, 64)
    if kernel is None:
        pytest.skip("no C++ compiler")
    gen = torch.Generator().manual_seed(0)
    cache = torch.randn(2, 8, 16, 2, 64, generator=gen)  # [2, N, S, Hkv, D]
    query = torch.randn(1, 8, 64, generator=gen)
    table = torch.tensor([[5, 2, 7, 0]])  # 4 blocks, 60 keys
    windowed = kernel(query, cache, table, torch.tensor([60]), 0.125, window=32)  # keys 28..59
    flat = cache.view(2, -1, 2, 64)
    slots = (table[0].repeat_interleave(16) * 16 + torch.arange(16).repeat(4))[28:60]
    k, v = flat[0, slots].repeat_interleave(4, 1), flat[1, slots].repeat_interleave(4, 1)  # [32, Hq, D]
    probs = (torch.einsum("hd,khd->hk", query[0], k) * 0.125).softmax(-1)
    torch.testing.assert_close(windowed[0], torch.einsum("hk,khd->hd", probs, v), atol=1e-5, rtol=1e-5)
