"""Conformance: the KV allocator sizes, allocates, copies and frees the block pool, and swaps where it can."""

from __future__ import annotations

import pytest
import torch

from tokenmill.interfaces import AttentionSpec, KVCacheAllocator, SwappingAllocator
from tokenmill.plugin_base import optional

MiB = 1 << 20


def test_allocator_satisfies_the_protocol(kv_allocator):
    assert isinstance(kv_allocator, KVCacheAllocator)


def test_budget_default_request_and_refusal(kv_allocator):
    default = kv_allocator.available_kv_bytes(None)
    assert isinstance(default, int) and default > 0
    assert kv_allocator.available_kv_bytes(MiB) == MiB
    with pytest.raises(ValueError):
        kv_allocator.available_kv_bytes(1 << 62)  # 4 EiB fits nowhere


def _pool(make_backend, kv_allocator, dtype: torch.dtype, num_blocks: int) -> tuple[list[torch.Tensor], tuple[int, ...]]:
    shape = make_backend(AttentionSpec(4, 2, 64, 16, dtype)).kv_cache_shape(num_blocks)
    return kv_allocator.allocate(2, shape, dtype), shape


def test_allocate_gives_zeroed_tensors_per_layer(make_backend, kv_allocator, dtype):
    caches, shape = _pool(make_backend, kv_allocator, dtype, 8)
    assert len(caches) == 2
    for cache in caches:
        assert tuple(cache.shape) == shape and cache.dtype == dtype and cache.device.type == kv_allocator.device.type
        assert not cache.any(), "allocate must return zeroed tensors"
    # Writing one layer must leave the other zero (data_ptr() is 0 for every XLA tensor, so compare storage by use).
    caches[0].fill_(1)
    assert not caches[1].any(), "each layer needs its own tensor"


def _written_pool(make_backend, kv_allocator, dtype):
    caches, shape = _pool(make_backend, kv_allocator, dtype, 8)
    gen = torch.Generator().manual_seed(0)
    for cache in caches:
        cache.copy_(torch.randn(shape, generator=gen))
    return caches, [cache.detach().cpu().clone() for cache in caches]


def test_copy_blocks_and_free(make_backend, kv_allocator, dtype):
    """Copy-on-write copies whole blocks (dim 1) in every layer and nothing else; free empties the list."""
    caches, written = _written_pool(make_backend, kv_allocator, dtype)
    kv_allocator.copy_blocks(caches, [(1, 5), (2, 6)])
    kv_allocator.copy_blocks(caches, [])  # a step with nothing to copy
    for cache, before in zip(caches, written):
        expected = before.clone()
        expected[:, 5], expected[:, 6] = before[:, 1], before[:, 2]
        torch.testing.assert_close(cache.cpu(), expected, rtol=0, atol=0)
    kv_allocator.free(caches)
    assert caches == []


def test_swap_round_trip(make_backend, kv_allocator, dtype):
    """Swap some blocks out, clobber them, swap them back in (only for allocators that swap)."""
    if not isinstance(kv_allocator, SwappingAllocator):
        pytest.skip(f"{type(kv_allocator).__name__} has no swap_out/swap_in; the scheduler never swaps (optional)")
    caches, written = _written_pool(make_backend, kv_allocator, dtype)
    host = kv_allocator.swap_out(caches, [3, 5])
    assert len(host) == len(caches)
    for copy, before in zip(host, written):
        assert copy.device.type == "cpu", "swap_out must return host tensors"
        torch.testing.assert_close(copy, before[:, [3, 5]], rtol=0, atol=0)
    for cache in caches:
        cache.zero_()  # the blocks' device memory is reused while they are out
    kv_allocator.swap_in(caches, host, [3, 5])
    for cache, before in zip(caches, written):
        torch.testing.assert_close(cache.cpu()[:, [3, 5]], before[:, [3, 5]], rtol=0, atol=0)
    kv_allocator.free(caches)


def test_profile_peak_when_offered(kv_allocator):
    """Optional profile_peak(fn) runs fn once and returns its peak bytes (an int >= 0) or None."""
    profile = optional(kv_allocator, "profile_peak", None)
    if profile is None:
        pytest.skip(f"{type(kv_allocator).__name__} has no profile_peak; the core skips the profile run")
    calls = []
    peak = profile(lambda: calls.append(torch.ones(1 << 16, device=kv_allocator.device).sum()))
    assert len(calls) == 1, f"profile_peak ran the step {len(calls)} times; it must run it once"
    assert peak is None or (isinstance(peak, int) and peak >= 0), f"profile_peak returned {peak!r}"
