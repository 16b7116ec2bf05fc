"""Conformance: the optional contract-2 hooks answer with what the core expects, where a plugin has them.

Start-up (tokenmill_startup), the execution context (tokenmill_execution_context) and, on
static-shape platforms, the shape buckets (tokenmill_shape_buckets). The engine run in
test_generation uses all of them for real; these tests check their answers on their own.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest
import torch

from tokenmill.interfaces import ExecutionContext, ShapeBuckets
from tokenmill.worker.padding import check_covers

LIMITS = {"max_num_batched_tokens": 2048, "max_num_seqs": 256, "max_blocks_per_seq": 128}


def test_startup_accepts_engine_options(tokenmill_manager, tokenmill_platform):
    """tokenmill_startup (optional) runs without raising; the engine calls it once, before loading."""
    tokenmill_manager.startup(tokenmill_platform, {"dtype": "auto", "kv_cache_dtype": "auto", "quantization": "auto",
                                                   "max_num_seqs": 256, "max_num_batched_tokens": 2048,
                                                   "enforce_eager": False, "block_size": 16})


def test_execution_context(tokenmill_manager, tokenmill_platform, kv_allocator):
    """guard() gives a fresh context manager each time, with grad off inside; sync() returns."""
    context = tokenmill_manager.execution_context(tokenmill_platform)
    if context is None:
        pytest.skip(f"{tokenmill_platform.name} uses the core's default: torch.inference_mode() and no sync")
    assert isinstance(context, ExecutionContext), f"{context!r} lacks guard() or sync()"
    first, second = context.guard(), context.guard()
    assert isinstance(first, AbstractContextManager) and first is not second, "guard() must return a fresh context"
    weight = torch.ones(3, requires_grad=True, device=kv_allocator.device)
    with first:
        assert not (weight * 2).requires_grad, "the guard must turn autograd off (inference_mode or no_grad)"
        context.sync()
    to_host = getattr(context, "to_host", None)  # optional: async scheduling's read-back of sampled ids
    if to_host is not None:
        tokens = torch.arange(5, dtype=torch.int64, device=kv_allocator.device) * 7  # [5]
        host = to_host(tokens).wait()
        assert host.device.type == "cpu" and host.tolist() == [0, 7, 14, 21, 28], f"to_host gave {host!r}"


def test_shape_buckets(tokenmill_manager, tokenmill_platform):
    """Static platforms: ShapeBuckets (or None for the core's default) ascending and covering the limits."""
    if not tokenmill_platform.static_shapes:
        pytest.skip(f"{tokenmill_platform.name} has static_shapes=False; shape buckets are not asked for")
    buckets = tokenmill_manager.shape_buckets(tokenmill_platform, LIMITS)
    if buckets is None:
        pytest.skip(f"{tokenmill_platform.name} takes the core's default buckets (powers of two)")
    assert isinstance(buckets, ShapeBuckets), f"tokenmill_shape_buckets returned {buckets!r}"
    for name in ("token_counts", "batch_sizes", "block_table_widths"):
        sizes = getattr(buckets, name)
        assert sizes and all(isinstance(n, int) and n > 0 for n in sizes), f"{name} {sizes} must be positive ints"
        assert list(sizes) == sorted(set(sizes)), f"{name} {sizes} must be strictly ascending"
    check_covers(buckets, LIMITS, tokenmill_platform.name)
