"""TPU paged attention: a functional cache in the ragged-paged-attention layout, and two ways to attend.

Layout: one layer's cache is (1, N, S, 2 * Hkv, D): blocks on dim 1 as the contract asks, and
cache[0] is exactly the `kv_pages` [N, S, 2 * Hkv, D] of torch_xla's ragged paged attention, keys
and values interleaved by head (k at even heads, v at odd ones). On a TPU `forward` calls that
Pallas kernel (torch_xla.experimental.custom_kernel.ragged_paged_attention); elsewhere, including
XLA's CPU device, it runs the same attention in XLA-friendly torch ops: gathers over the block
tables and a position mask, every shape set by the padded step (T, B, W), none by the data. The
cache is returned, never written in place (functional_cache), so XLA threads it through the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokenmill.interfaces import AttentionBatch, AttentionSpec

CACHE_DTYPES = (torch.float32, torch.bfloat16)
FEW_REQUESTS = 4  # up to this many requests (B), every token is scored against every request's keys (attend_all)
TOKEN_CHUNK = 256  # tokens whose gathered keys are held at once (bounds memory at chunk x W*S; fewer chunks, smaller graphs)
KERNEL = "torch_xla ragged_paged_attention (Pallas)"
GATHER = "XLA gather + SDPA"


@dataclass(slots=True)
class TpuMetadata:
    """Per-step device tensors, each shaped by the padded step alone."""

    slot_mapping: torch.Tensor  # int64 [T]
    token_request: torch.Tensor  # int64 [T], the request each token belongs to
    token_position: torch.Tensor  # int64 [T], its position in its sequence
    block_tables: torch.Tensor  # int32 [B, W]
    seq_lens: torch.Tensor  # int32 [B]
    query_start_loc: torch.Tensor  # int32 [B + 1]
    num_seqs: torch.Tensor  # int32 [1], B (padding requests attend harmlessly over the null block)


def build_tpu_metadata(batch: AttentionBatch, device: torch.device) -> TpuMetadata:
    """Token maps from the host lists, every tensor moved to the device once."""
    requests, positions = [], []
    for b, (query_len, seq_len) in enumerate(zip(batch.query_lens_cpu, batch.seq_lens_cpu)):
        requests += [b] * query_len
        positions += range(seq_len - query_len, seq_len)
    host = dict(
        slot_mapping=batch.slot_mapping.to(torch.int64),
        token_request=torch.tensor(requests, dtype=torch.int64),
        token_position=torch.tensor(positions, dtype=torch.int64),
        block_tables=batch.block_tables.to(torch.int32),
        seq_lens=batch.seq_lens.to(torch.int32),
        query_start_loc=batch.query_start_loc.to(torch.int32),
        num_seqs=torch.tensor([len(batch.seq_lens_cpu)], dtype=torch.int32),
    )
    return TpuMetadata(**{name: t.to(device) for name, t in host.items()})


class TpuAttentionBackend:
    """Paged attention for one AttentionSpec on an XLA device; `kernel` says which path runs."""

    functional_cache = True

    def __init__(self, spec: AttentionSpec, device: torch.device, use_kernel: bool) -> None:
        self.spec = spec
        self.device = device
        self.use_kernel = use_kernel
        self.kernel = KERNEL if use_kernel else GATHER
        self.name = "tpu_ragged_paged" if use_kernel else "tpu_xla_gather"

    def unsupported_reasons(self, spec: AttentionSpec) -> list[str]:
        """GQA head counts that divide; a float32 or bfloat16 cache of the model's dtype on the kernel path."""
        reasons = []
        if spec.num_kv_heads < 1 or spec.num_heads % spec.num_kv_heads:
            reasons.append(f"num_heads {spec.num_heads} must be a positive multiple of num_kv_heads {spec.num_kv_heads}")
        if spec.kv_cache_dtype not in CACHE_DTYPES:
            reasons.append(f"a {spec.kv_cache_dtype} KV cache is not supported on tpu; use float32 or bfloat16")
        if self.use_kernel and spec.kv_cache_dtype != spec.dtype:
            reasons.append("the ragged paged-attention kernel reads the cache in the model dtype; use --kv-cache-dtype auto")
        return reasons

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        """(1, N, S, 2 * Hkv, D): cache[0] is the kernel's kv_pages, keys at even heads, values at odd."""
        s = self.spec
        return (1, num_blocks, s.block_size, 2 * s.num_kv_heads, s.head_size)

    def build_metadata(self, batch: AttentionBatch) -> TpuMetadata:
        """See build_tpu_metadata."""
        return build_tpu_metadata(batch, self.device)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                metadata: TpuMetadata, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """q [T, Hq, D], k/v [T, Hkv, D], cache (1, N, S, 2Hkv, D) -> ([T, Hq, D], the updated cache)."""
        cache = written(kv_cache, key, value, metadata.slot_mapping)
        if self.use_kernel:
            return _kernel_attention(query, cache, metadata, scale), cache
        keys, values = gather_blocks(cache, metadata.block_tables)  # [B, W * S, Hkv, D] each
        chunk_attention = attend_all if keys.shape[0] <= FEW_REQUESTS else attend  # B is static: chosen at trace time
        out = torch.cat([
            chunk_attention(query[i: i + TOKEN_CHUNK], keys, values, metadata.token_request[i: i + TOKEN_CHUNK],
                            metadata.token_position[i: i + TOKEN_CHUNK], scale)
            for i in range(0, query.shape[0], TOKEN_CHUNK)
        ])
        return out, cache


def written(kv_cache: torch.Tensor, key: torch.Tensor, value: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """A new cache with every token's interleaved k/v row at its slot (out of place: XLA aliases it)."""
    _, num_blocks, block_size, heads2, head_size = kv_cache.shape
    rows = torch.stack([key, value], dim=2).reshape(key.shape[0], heads2, head_size)  # [T, 2Hkv, D], k0 v0 k1 v1 ..
    flat = kv_cache.reshape(num_blocks * block_size, heads2, head_size)  # [N * S, 2Hkv, D]
    return flat.index_copy(0, slots, rows.to(kv_cache.dtype)).view(kv_cache.shape)


def gather_blocks(cache: torch.Tensor, tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cache (1, N, S, 2Hkv, D), tables [B, W] -> keys, values [B, W * S, Hkv, D]."""
    num_reqs, width = tables.shape
    blocks = cache[0].index_select(0, tables.reshape(-1).to(torch.int64))  # [B * W, S, 2Hkv, D]
    blocks = blocks.reshape(num_reqs, width * cache.shape[2], *cache.shape[3:])  # [B, L, 2Hkv, D]
    return blocks[:, :, 0::2], blocks[:, :, 1::2]


def attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, request: torch.Tensor,
           position: torch.Tensor, scale: float) -> torch.Tensor:
    """query [C, Hq, D] of tokens in `request` [C] at `position` [C] -> [C, Hq, D] (keys past it masked)."""
    num_tokens, num_heads, head_size = query.shape
    num_kv_heads = keys.shape[2]
    k = keys.index_select(0, request).transpose(1, 2).to(query.dtype)  # [C, Hkv, L, D]
    v = values.index_select(0, request).transpose(1, 2).to(query.dtype)
    q = query.reshape(num_tokens, num_kv_heads, num_heads // num_kv_heads, head_size)  # [C, Hkv, G, D]
    visible = torch.arange(k.shape[2], device=query.device) <= position.unsqueeze(1)  # [C, L]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible.view(num_tokens, 1, 1, -1), scale=scale)
    return out.reshape(num_tokens, num_heads, head_size)


def attend_all(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, request: torch.Tensor,
               position: torch.Tensor, scale: float) -> torch.Tensor:
    """`attend` without a per-token copy of its request's keys: query [C, Hq, D] is scored against all B
    requests' keys, and a mask keeps its own request's keys up to its position -> [C, Hq, D]. B times the
    scores, but no [C, L, Hkv, D] gathers, which XLA's CPU device runs slowly: faster up to B ~ 4-8 (a
    2k-token prefill of B = 2: 2 s instead of 27 s), slower past it."""
    num_tokens, num_heads, head_size = query.shape
    num_reqs, length, num_kv_heads, _ = keys.shape
    q = query.reshape(num_tokens, num_kv_heads, num_heads // num_kv_heads, head_size)  # [C, Hkv, G, D]
    k = keys.reshape(num_reqs * length, num_kv_heads, head_size).to(query.dtype)  # [B * L, Hkv, D]
    v = values.reshape(num_reqs * length, num_kv_heads, head_size).to(query.dtype)
    key = torch.arange(num_reqs * length, device=query.device)  # [B * L]: request key // L, position key % L
    visible = (key // length == request.unsqueeze(1)) & (key % length <= position.unsqueeze(1))  # [C, B * L]
    scores = torch.einsum("chgd,nhd->chgn", q, k).float() * scale  # [C, Hkv, G, B * L]
    probs = scores.masked_fill(~visible.view(num_tokens, 1, 1, -1), float("-inf")).softmax(dim=-1)
    out = torch.einsum("chgn,nhd->chgd", probs.to(query.dtype), v)  # [C, Hkv, G, D]
    return out.reshape(num_tokens, num_heads, head_size)


def _kernel_attention(query: torch.Tensor, cache: torch.Tensor, md: TpuMetadata, scale: float) -> torch.Tensor:
    """torch_xla's ragged paged attention over kv_pages = cache[0] (TPU only; not run on this CI)."""
    from torch_xla.experimental.custom_kernel import ragged_paged_attention

    return ragged_paged_attention(query, cache[0], md.seq_lens, md.block_tables, md.query_start_loc, md.num_seqs,
                                  sm_scale=scale, use_kernel=True)
