"""Gaudi paged attention: block-table gathers, a position mask and SDPA, with no data-dependent shapes.

Every tensor's shape comes from the padded step (T tokens, B requests, W blocks per row), so one
HPU graph serves every step of a bucket. The cache is written in place (index_copy_ at the slot
mapping): a replayed HPU graph repeats the same in-place write into the same pool, which a
functional cache threaded through Python would not. Padding needs no test here: padding tokens
write into the null block and padding requests read only it (interfaces.AttentionBatch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokenmill.interfaces import AttentionBatch, AttentionSpec

CACHE_DTYPES = (torch.float32, torch.bfloat16)
TOKEN_CHUNK = 256  # tokens whose gathered keys are held at once (bounds memory at chunk x W*S)


@dataclass(slots=True)
class GaudiMetadata:
    """Per-step tensors on the device, each shaped by the padded step alone."""

    slot_mapping: torch.Tensor  # int64 [T]
    token_request: torch.Tensor  # int64 [T], the request each token belongs to
    token_position: torch.Tensor  # int64 [T], its position in its sequence
    block_tables: torch.Tensor  # int64 [B, W]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The fields in order (what an HPU graph keeps static buffers of)."""
        return (self.slot_mapping, self.token_request, self.token_position, self.block_tables)


def build_gaudi_metadata(batch: AttentionBatch, device: torch.device) -> GaudiMetadata:
    """Token-to-request and position maps from the host lists (no device read)."""
    requests, positions = [], []
    for b, (query_len, seq_len) in enumerate(zip(batch.query_lens_cpu, batch.seq_lens_cpu)):
        requests += [b] * query_len
        positions += range(seq_len - query_len, seq_len)
    return GaudiMetadata(
        slot_mapping=batch.slot_mapping.to(device=device, dtype=torch.int64),
        token_request=torch.tensor(requests, dtype=torch.int64).to(device),
        token_position=torch.tensor(positions, dtype=torch.int64).to(device),
        block_tables=batch.block_tables.to(device=device, dtype=torch.int64),
    )


class GaudiAttentionBackend:
    """Gather-then-attend paged attention over the (2, N, S, Hkv, D) cache, written in place."""

    name = "gaudi_gather_sdpa"
    functional_cache = False

    def __init__(self, spec: AttentionSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device

    def unsupported_reasons(self, spec: AttentionSpec) -> list[str]:
        """GQA head counts that divide, and a float32 or bfloat16 cache."""
        reasons = []
        if spec.num_kv_heads < 1 or spec.num_heads % spec.num_kv_heads:
            reasons.append(f"num_heads {spec.num_heads} must be a positive multiple of num_kv_heads {spec.num_kv_heads}")
        if spec.kv_cache_dtype not in CACHE_DTYPES:
            reasons.append(f"a {spec.kv_cache_dtype} KV cache is not supported on gaudi; use float32 or bfloat16")
        return reasons

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        """(2, N, S, Hkv, D)."""
        s = self.spec
        return (2, num_blocks, s.block_size, s.num_kv_heads, s.head_size)

    def build_metadata(self, batch: AttentionBatch) -> GaudiMetadata:
        """See build_gaudi_metadata."""
        return build_gaudi_metadata(batch, self.device)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                metadata: GaudiMetadata, scale: float) -> torch.Tensor:
        """q [T, Hq, D], k/v [T, Hkv, D], cache [2, N, S, Hkv, D] -> [T, Hq, D]; the cache is written in place."""
        flat = kv_cache.view(2, -1, *kv_cache.shape[3:])  # [2, N * S, Hkv, D]
        flat[0].index_copy_(0, metadata.slot_mapping, key.to(kv_cache.dtype))
        flat[1].index_copy_(0, metadata.slot_mapping, value.to(kv_cache.dtype))
        keys, values = gather_blocks(kv_cache, metadata.block_tables)  # [B, W * S, Hkv, D] each
        return torch.cat([
            attend(query[i: i + TOKEN_CHUNK], keys, values, metadata.token_request[i: i + TOKEN_CHUNK],
                   metadata.token_position[i: i + TOKEN_CHUNK], scale)
            for i in range(0, query.shape[0], TOKEN_CHUNK)
        ])


def gather_blocks(cache: torch.Tensor, tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cache [2, N, S, Hkv, D], tables [B, W] -> keys, values [B, W * S, Hkv, D]."""
    num_reqs, width = tables.shape
    blocks = cache.index_select(1, tables.reshape(-1))  # [2, B * W, S, Hkv, D]
    blocks = blocks.reshape(2, num_reqs, width * cache.shape[2], *cache.shape[3:])
    return blocks[0], blocks[1]


def attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, request: torch.Tensor,
           position: torch.Tensor, scale: float) -> torch.Tensor:
    """query [C, Hq, D] of tokens in `request` [C] at `position` [C] -> [C, Hq, D].

    Each token is its own SDPA batch entry, its G query heads per KV head folded into the query
    axis; keys past the token's position are masked (stale and null-block entries included).
    """
    num_tokens, num_heads, head_size = query.shape
    num_kv_heads = keys.shape[2]
    k = keys.index_select(0, request).transpose(1, 2).to(query.dtype)  # [C, Hkv, L, D]
    v = values.index_select(0, request).transpose(1, 2).to(query.dtype)
    q = query.reshape(num_tokens, num_kv_heads, num_heads // num_kv_heads, head_size)  # [C, Hkv, G, D]
    visible = torch.arange(k.shape[2], device=query.device) <= position.unsqueeze(1)  # [C, L]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible.view(num_tokens, 1, 1, -1), scale=scale)
    return out.reshape(num_tokens, num_heads, head_size)  # [C, Hkv, G, D] -> [C, Hq, D]
