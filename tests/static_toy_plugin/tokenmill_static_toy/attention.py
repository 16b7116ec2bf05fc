"""Paged attention with no data-dependent shapes: gathers over block tables, masks, and a functional cache.

Written the way an XLA backend must be: every tensor's shape comes from the padded step (T, B,
W), never from sequence lengths, and the cache comes back from `forward` instead of being
relied on as written in place. Padding follows interfaces.AttentionBatch: padding tokens write
into the null block and padding requests read only it, so nothing here tests for padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokenmill.interfaces import AttentionBatch, AttentionSpec

from tokenmill_static_toy.recorder import RECORDER

TOKEN_CHUNK = 128  # tokens whose gathered keys are held at once (bounds memory at T x L)


@dataclass(slots=True)
class StaticMetadata:
    """Per-step tensors, each shaped by the padded step alone."""

    slot_mapping: torch.Tensor  # int64 [T]
    token_request: torch.Tensor  # int64 [T], the request each token belongs to
    token_position: torch.Tensor  # int64 [T], its position in its sequence
    block_tables: torch.Tensor  # int64 [B, W]


class StaticAttentionBackend:
    """Gather-then-attend paged attention for one AttentionSpec; declares a functional cache."""

    name = "static_gather"
    functional_cache = True

    def __init__(self, spec: AttentionSpec) -> None:
        self.spec = spec

    def unsupported_reasons(self, spec: AttentionSpec) -> list[str]:
        """Why `spec` cannot run here; empty when it can."""
        if spec.num_kv_heads < 1 or spec.num_heads % spec.num_kv_heads:
            return [f"num_heads {spec.num_heads} must be a positive multiple of num_kv_heads {spec.num_kv_heads}"]
        return []

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        """(2, N, S, Hkv, D), as the in-tree backends lay it out."""
        return (2, num_blocks, self.spec.block_size, self.spec.num_kv_heads, self.spec.head_size)

    def build_metadata(self, batch: AttentionBatch) -> StaticMetadata:
        """See static_metadata; records the shape it was handed."""
        RECORDER.record_batch(batch)
        return static_metadata(batch)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                metadata: StaticMetadata, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """q [T, Hq, D], k/v [T, Hkv, D], cache [2, N, S, Hkv, D] -> ([T, Hq, D], the updated cache)."""
        cache = _written(kv_cache, key, value, metadata.slot_mapping)
        keys, values = _gathered(cache, metadata.block_tables)  # [B, L, Hkv, D] each
        out = torch.cat([
            _attend(query[i: i + TOKEN_CHUNK], keys, values, metadata.token_request[i: i + TOKEN_CHUNK],
                    metadata.token_position[i: i + TOKEN_CHUNK], scale)
            for i in range(0, query.shape[0], TOKEN_CHUNK)
        ])
        return out, cache


def static_metadata(batch: AttentionBatch) -> StaticMetadata:
    """Token-to-request and position maps from the host lists."""
    requests, positions = [], []
    for b, (query_len, seq_len) in enumerate(zip(batch.query_lens_cpu, batch.seq_lens_cpu)):
        requests += [b] * query_len
        positions += range(seq_len - query_len, seq_len)
    device = batch.slot_mapping.device
    return StaticMetadata(
        slot_mapping=batch.slot_mapping.to(torch.int64),
        token_request=torch.tensor(requests, dtype=torch.int64, device=device),
        token_position=torch.tensor(positions, dtype=torch.int64, device=device),
        block_tables=batch.block_tables.to(torch.int64),
    )


def _written(kv_cache: torch.Tensor, key: torch.Tensor, value: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """The cache with every token's k/v at its slot. Written in place, which the functional form
    allows on an eager device (XLA turns the same ops into an update of a donated buffer)."""
    flat = kv_cache.view(2, -1, *kv_cache.shape[3:])  # [2, N * S, Hkv, D]
    flat[0].index_copy_(0, slots, key.to(kv_cache.dtype))
    flat[1].index_copy_(0, slots, value.to(kv_cache.dtype))
    return kv_cache


def _gathered(cache: torch.Tensor, tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cache [2, N, S, Hkv, D], tables [B, W] -> keys, values [B, W * S, Hkv, D]."""
    num_reqs, width = tables.shape
    blocks = cache[:, tables.reshape(-1)]  # [2, B * W, S, Hkv, D]
    blocks = blocks.reshape(2, num_reqs, width * cache.shape[2], *cache.shape[3:])
    return blocks[0], blocks[1]


def _attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, request: torch.Tensor,
            position: torch.Tensor, scale: float) -> torch.Tensor:
    """query [C, Hq, D] of tokens in `request` [C] at `position` [C] -> [C, Hq, D].

    One masked SDPA call with each token as its own batch entry and GQA folded into the query axis
    (G query heads of a KV head become G query rows), which keeps SDPA on its fused kernel.
    """
    num_tokens, num_heads, head_size = query.shape
    num_kv_heads = keys.shape[2]
    k = keys.index_select(0, request).transpose(1, 2).to(query.dtype)  # [C, Hkv, L, D]
    v = values.index_select(0, request).transpose(1, 2).to(query.dtype)
    q = query.view(num_tokens, num_kv_heads, num_heads // num_kv_heads, head_size)  # [C, Hkv, G, D]
    visible = torch.arange(k.shape[2], device=query.device) <= position.unsqueeze(1)  # [C, L]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible.view(num_tokens, 1, 1, -1), scale=scale)
    return out.reshape(num_tokens, num_heads, head_size)  # [C, Hkv, G, D] -> [C, Hq, D]
