"""Sizes the KV block pool from the allocator's budget and allocates it."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from tokenmill.errors import TokenmillError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class KVPool:
    """The allocated pool and the sizes derived from it."""

    kv_caches: list[torch.Tensor]
    num_blocks: int
    block_size: int
    bytes_per_block: int  # over all layers
    max_model_len: int


def bytes_per_block(attn_backend: Any, num_layers: int, dtype: torch.dtype) -> int:
    """Bytes one block takes over every layer, from the backend's own layout."""
    per_layer = math.prod(attn_backend.kv_cache_shape(1)) * torch.empty((), dtype=dtype).element_size()
    return per_layer * num_layers


def allocate_pool(allocator: Any, attn_backend: Any, *, num_layers: int, dtype: torch.dtype,
                  block_size: int, requested_bytes: int | None, max_model_len: int,
                  max_len_was_set: bool, reserved_blocks: int = 0) -> KVPool:
    """Ask the allocator for its budget, turn it into whole blocks, allocate, and fit max_model_len.

    `dtype` is the KV-cache dtype. `reserved_blocks` (the null block of static-shape platforms)
    are allocated but not counted in `num_blocks`, the blocks requests may use; they are the
    pool's last block ids.
    """
    try:
        budget = allocator.available_kv_bytes(requested_bytes)
    except ValueError as exc:
        raise TokenmillError(f"KV cache memory: {exc}") from None
    per_block = bytes_per_block(attn_backend, num_layers, dtype)
    num_blocks = budget // per_block - reserved_blocks
    if num_blocks < 2:
        raise TokenmillError(
            f"the KV cache budget of {budget} bytes holds {num_blocks} blocks of {per_block} bytes; "
            f"raise --kv-cache-memory to at least {(2 + reserved_blocks) * per_block} bytes"
        )
    capacity = num_blocks * block_size
    if max_model_len > capacity:
        if max_len_was_set:
            raise TokenmillError(
                f"--max-model-len {max_model_len} exceeds the {capacity} tokens the KV cache can hold "
                f"({num_blocks} blocks); lower --max-model-len or raise --kv-cache-memory"
            )
        log.warning("max_model_len lowered from %d to the KV cache's %d tokens", max_model_len, capacity)
        max_model_len = capacity
    caches = allocator.allocate(num_layers, attn_backend.kv_cache_shape(num_blocks + reserved_blocks), dtype)
    return KVPool(caches, num_blocks, block_size, per_block, max_model_len)
