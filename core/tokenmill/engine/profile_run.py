"""A dummy step at the largest batch, run before sizing the KV pool so peak activations are known."""

from __future__ import annotations

import math
from typing import Any

import torch

from tokenmill.plugin_base import optional
from tokenmill.worker.dummy_batch import first_tokens_batch


def profile_peak_activations(allocator: Any, bundle: Any, num_tokens: int, num_seqs: int, block_size: int) -> int | None:
    """Let an allocator that offers `profile_peak(fn)` watch one forward of `num_tokens` tokens.

    The allocator reports the peak so that its `available_kv_bytes` leaves room for it. Allocators
    without the optional method (the CPU plugin's) are left alone. A throwaway pool of just enough
    blocks holds the dummy step's keys and values. The caller enters the execution context.
    """
    profile = optional(allocator, "profile_peak", None)
    if profile is None:
        return None
    num_blocks = math.ceil(num_tokens / block_size) + 1
    caches = allocator.allocate(bundle.arch.num_layers, bundle.attn_backend.kv_cache_shape(num_blocks),
                                bundle.attn_spec.kv_cache_dtype)
    device = bundle.device
    batch = first_tokens_batch(num_tokens, num_blocks, device)
    input_ids = torch.zeros(num_tokens, dtype=torch.int64, device=device)  # [T]
    # [T]; wrapped so a token budget above max_model_len never reads past the rotary table
    positions = torch.arange(num_tokens, dtype=torch.int64, device=device) % bundle.max_model_len

    def step() -> None:
        hidden = bundle.model(input_ids, positions, caches, bundle.attn_backend.build_metadata(batch))  # [T, H]
        bundle.model.compute_logits(hidden[: min(num_seqs, num_tokens)])  # [B, V] float32

    try:
        return profile(step)
    finally:
        allocator.free(caches)
