"""TemplateAttentionBackend: paged attention in plain torch, one request at a time.

The cache of one layer is (2, N, S, Hkv, D): keys then values, N blocks of S tokens. Each step
the new tokens' keys and values are written at their slots, then each request attends over its
own blocks. A device backend replaces `forward` with its kernels and `build_metadata` with
whatever those kernels take; the layout may change too, as long as blocks stay on dim 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokenmill.interfaces import AttentionBatch, AttentionSpec

CACHE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(slots=True)
class TemplateMetadata:
    """What `forward` needs from one step's AttentionBatch (built once, used by every layer)."""

    slot_mapping: torch.Tensor  # int64 [T]
    block_tables: torch.Tensor  # int32 [B, W]
    query_lens: list[int]  # [B], on the host
    seq_lens: list[int]  # [B], on the host


class TemplateAttentionBackend:
    """Gathers each request's blocks and runs scaled_dot_product_attention on them, in float32."""

    name = "template_sdpa"

    def __init__(self, spec: AttentionSpec) -> None:
        self.spec = spec

    def unsupported_reasons(self, spec: AttentionSpec) -> list[str]:
        """Why `spec` cannot run here; the core refuses to start with these reasons."""
        reasons = []
        if spec.num_kv_heads < 1 or spec.num_heads % spec.num_kv_heads:
            reasons.append(f"{spec.num_heads} query heads do not split evenly over {spec.num_kv_heads} KV heads")
        if spec.kv_cache_dtype not in CACHE_DTYPES:
            reasons.append(f"KV-cache dtype {spec.kv_cache_dtype} is not one of {CACHE_DTYPES}")
        return reasons

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        """(2, N, S, Hkv, D) for one layer."""
        return (2, num_blocks, self.spec.block_size, self.spec.num_kv_heads, self.spec.head_size)

    def build_metadata(self, batch: AttentionBatch) -> TemplateMetadata:
        """Keep the fields forward reads; the host lists spare it any device-to-host copy."""
        return TemplateMetadata(batch.slot_mapping, batch.block_tables, batch.query_lens_cpu, batch.seq_lens_cpu)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                metadata: TemplateMetadata, scale: float) -> torch.Tensor:
        """q [T, Hq, D], k/v [T, Hkv, D], cache (2, N, S, Hkv, D) -> [T, Hq, D] in q's dtype."""
        flat = kv_cache.view(2, -1, *kv_cache.shape[3:])  # [2, N * S, Hkv, D]
        flat[0].index_copy_(0, metadata.slot_mapping, key.to(kv_cache.dtype))
        flat[1].index_copy_(0, metadata.slot_mapping, value.to(kv_cache.dtype))
        out = torch.empty_like(query)
        start = 0
        for b, (num_new, seq_len) in enumerate(zip(metadata.query_lens, metadata.seq_lens)):
            if num_new:
                keys, values = self._gather(kv_cache, metadata.block_tables[b], seq_len)  # [L, Hkv, D] each
                out[start: start + num_new] = _causal(query[start: start + num_new], keys, values, scale)
            start += num_new
        return out

    def _gather(self, kv_cache: torch.Tensor, table: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One request's cached keys and values [seq_len, Hkv, D], from its block-table row."""
        num_blocks = -(-seq_len // self.spec.block_size)
        blocks = kv_cache.index_select(1, table[:num_blocks].long())  # [2, nb, S, Hkv, D]
        blocks = blocks.flatten(1, 2)[:, :seq_len]  # [2, L, Hkv, D]
        return blocks[0], blocks[1]


def _causal(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """query [Q, Hq, D], the sequence's newest Q tokens, over keys/values [L, Hkv, D] -> [Q, Hq, D]."""
    num_new, num_heads, _ = query.shape
    seq_len, num_kv_heads = keys.shape[0], keys.shape[1]
    group = num_heads // num_kv_heads  # query head h reads KV head h // group
    k = keys.float().repeat_interleave(group, dim=1).transpose(0, 1)  # [Hq, L, D]
    v = values.float().repeat_interleave(group, dim=1).transpose(0, 1)
    q = query.float().transpose(0, 1)  # [Hq, Q, D]
    positions = torch.arange(seq_len - num_new, seq_len, device=query.device).unsqueeze(1)  # [Q, 1]
    visible = torch.arange(seq_len, device=query.device).unsqueeze(0) <= positions  # [Q, L]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=scale)  # [Hq, Q, D]
    return out.transpose(0, 1).to(query.dtype)
