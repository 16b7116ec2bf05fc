"""CpuAttentionBackend: paged attention on the host, a native decode kernel plus torch SDPA.

Cache layout per layer: (2, N, S, Hkv, D), k at [0] and v at [1]. Each step, `forward` scatters
the new keys/values into their slots, then attends:
- decode requests (one new token each), all together: by the native kernel (paged_decode.cpp),
  which reads each request's blocks in place, once; where it cannot build, by gathering the blocks
  into a dense run and one padded, masked SDPA call (GQA folded into the query axis);
- each prefill chunk: SDPA, causal on the new tokens alone, or over the gathered cache with a mask
  offset by the request's cached length (GQA folded into the query axis, which keeps SDPA on its
  fused kernel: enable_gqa with a mask falls back to the slow math path).

A spec with a sliding window W (contract 2.x, optional): every query attends only keys
p - W < j <= p. The native kernel skips the blocks before the window; the torch paths mask them
(the masks are built once per step, by the first windowed layer). A spec with logits_soft_cap c
turns scores s into c * tanh(s / c) before the softmax, which SDPA cannot do: those layers run a
plain matmul-softmax-matmul over the same masks (the native kernel is not used for them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokenmill.interfaces import AttentionBatch, AttentionSpec

from tokenmill_cpu.attention_metadata import CpuAttentionMetadata, DecodePlan, KVRows, PrefillPlan, build_metadata
from tokenmill_cpu.paged_decode import paged_decode_kernel

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class CpuAttentionBackend:
    """Paged attention for one AttentionSpec on the CPU."""

    name = "cpu_paged"
    supports_sliding_window = True  # optional contract member: reads spec.sliding_window
    supports_logits_soft_cap = True  # optional contract member: reads spec.logits_soft_cap

    def __init__(self, spec: AttentionSpec, native: bool = True) -> None:
        """`native=False` keeps decode on the gather + SDPA path (the kernel's fallback and reference)."""
        self.spec = spec
        self.window = getattr(spec, "sliding_window", None)
        self.soft_cap = getattr(spec, "logits_soft_cap", None)
        self._general = bool(self.window or self.soft_cap)  # masks on every prefill, not is_causal
        native = native and not self.soft_cap
        self._kernel = paged_decode_kernel(spec.dtype, spec.kv_cache_dtype, spec.head_size) if native else None

    def unsupported_reasons(self, spec: AttentionSpec) -> list[str]:
        """Why `spec` cannot run here; empty when it can."""
        reasons = []
        if spec.num_kv_heads < 1 or spec.num_heads % spec.num_kv_heads:
            reasons.append(
                f"num_heads {spec.num_heads} must be a positive multiple of num_kv_heads {spec.num_kv_heads}"
            )
        if spec.head_size < 1:
            reasons.append(f"head_size must be positive, got {spec.head_size}")
        if spec.block_size < 1:
            reasons.append(f"block_size must be positive, got {spec.block_size}")
        window, cap = getattr(spec, "sliding_window", None), getattr(spec, "logits_soft_cap", None)
        if window is not None and (not isinstance(window, int) or window < 1):
            reasons.append(f"sliding_window must be a positive number of keys, got {window!r}")
        if cap is not None and not cap > 0:
            reasons.append(f"logits_soft_cap must be positive, got {cap!r}")
        for what, dtype in (("dtype", spec.dtype), ("kv_cache_dtype", spec.kv_cache_dtype)):
            if dtype not in SUPPORTED_DTYPES:
                reasons.append(f"{what} {dtype} is not one of float32, bfloat16, float16")
        return reasons

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        """(2, N, S, Hkv, D): keys then values, block-major, one token's heads contiguous."""
        return (2, num_blocks, self.spec.block_size, self.spec.num_kv_heads, self.spec.head_size)

    def build_metadata(self, batch: AttentionBatch) -> CpuAttentionMetadata:
        """Gather indices and masks for the step; shared by every layer."""
        return build_metadata(batch, self.spec.block_size, self.spec.num_heads // self.spec.num_kv_heads)

    def forward(
        self,
        query: torch.Tensor,  # [T, Hq, D]
        key: torch.Tensor,  # [T, Hkv, D]
        value: torch.Tensor,  # [T, Hkv, D]
        kv_cache: torch.Tensor,  # [2, N, S, Hkv, D]
        metadata: CpuAttentionMetadata,
        scale: float,
    ) -> torch.Tensor:  # [T, Hq, D]
        """Write the new k/v at slot_mapping, then attend causally over each request's cache."""
        if key.dtype != kv_cache.dtype:  # a --kv-cache-dtype other than the model's: convert on the write
            key, value = key.to(kv_cache.dtype), value.to(kv_cache.dtype)
        decode = metadata.decode
        if metadata.pure_decode and self._kernel_fits(kv_cache) and self._kernel.can_write(key, value, kv_cache):
            return self._decode(query, kv_cache, decode, scale, (key, value, metadata.slot_mapping))  # writes too
        self._write(key, value, kv_cache, metadata.slot_mapping)
        if metadata.pure_decode:
            return self._decode(query, kv_cache, decode, scale, None, metadata)  # pure decode: no output scatter
        out = torch.empty_like(query)
        if decode is not None:
            out[decode.rows] = self._decode(query[decode.rows], kv_cache, decode, scale, None, metadata)
        for index, plan in enumerate(metadata.prefills):
            if self._general:
                mask = metadata.prefill_mask(index, self.window, self.spec.num_heads // self.spec.num_kv_heads)
                out[plan.start : plan.end] = self._prefill_masked(query, key, value, kv_cache, plan, mask, scale)
            else:
                out[plan.start : plan.end] = self._prefill(query, key, value, kv_cache, plan, scale)
        return out

    def _write(self, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
        """key, value [T, Hkv, D] into their slots: natively where the kernel can, else two index_copy_."""
        if (self._kernel_fits(kv_cache) and self._kernel.can_write(key, value, kv_cache)
                and slot_mapping.dtype == torch.int64 and slot_mapping.is_contiguous()):
            self._kernel.write(key, value, kv_cache, slot_mapping)
            return
        slots = kv_cache.view(2, -1, *kv_cache.shape[3:])  # [2, N * S, Hkv, D]
        slots[0].index_copy_(0, slot_mapping, key)
        slots[1].index_copy_(0, slot_mapping, value)

    def _kernel_fits(self, kv_cache: torch.Tensor) -> bool:
        return self._kernel is not None and kv_cache.stride(-1) == 1

    def _decode(self, query: torch.Tensor, kv_cache: torch.Tensor, plan: DecodePlan, scale: float,
                new_kv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                metadata: CpuAttentionMetadata | None = None) -> torch.Tensor:
        """query [Bd, Hq, D] (one token per request) -> [Bd, Hq, D]; new_kv (native kernel only) is
        written into the cache by the same call."""
        if self._kernel_fits(kv_cache):
            out = self._kernel(query, kv_cache, plan.block_table, plan.seq_lens, scale, new_kv, self.window)
            return out.to(query.dtype)
        mask = plan.mask if metadata is None else metadata.decode_mask(self.window)
        return self._decode_sdpa(query, kv_cache, plan, scale, mask)

    def _decode_sdpa(self, query: torch.Tensor, kv_cache: torch.Tensor, plan: DecodePlan, scale: float,
                     mask: torch.Tensor | None) -> torch.Tensor:
        """The fallback: gather the blocks densely, then one padded SDPA call; [Bd, Hq, D] -> [Bd, Hq, D]."""
        num_reqs, num_heads, head_size = query.shape
        num_kv_heads = kv_cache.shape[3]
        kv = _gather(kv_cache, plan.kv_rows)  # [2, Bd * nb * S, Hkv, D]
        kv = kv.view(2, num_reqs, -1, num_kv_heads, head_size)[:, :, : plan.max_len]  # [2, Bd, L, Hkv, D]
        # GQA folded into the query axis: the G query heads of one KV head become G query rows,
        # which is exact for decode because all rows of a request see the same keys.
        q = query.reshape(num_reqs, num_kv_heads, num_heads // num_kv_heads, head_size)  # [Bd, Hkv, G, D]
        kv = kv.to(query.dtype)  # no copy when the cache has the model's dtype
        out = self._attend(q, kv[0].transpose(1, 2), kv[1].transpose(1, 2), mask, scale)  # [Bd, Hkv, G, D]
        return out.reshape(num_reqs, num_heads, head_size)

    def _prefill(
        self,
        query: torch.Tensor,  # [T, Hq, D]
        key: torch.Tensor,  # [T, Hkv, D]
        value: torch.Tensor,  # [T, Hkv, D]
        kv_cache: torch.Tensor,  # [2, N, S, Hkv, D]
        plan: PrefillPlan,
        scale: float,
    ) -> torch.Tensor:  # [ql, Hq, D]
        # 4-D [1, H, len, D] operands: SDPA's fused CPU kernel takes only 4-D input (3-D falls back
        # to the much slower math path).
        if plan.kv_rows is None:  # nothing cached: plain causal attention over the new keys
            q = query[plan.start : plan.end].transpose(0, 1).unsqueeze(0)  # [1, Hq, ql, D]
            k = key[plan.start : plan.end].transpose(0, 1).unsqueeze(0).to(q.dtype)  # [1, Hkv, ql, D]
            v = value[plan.start : plan.end].transpose(0, 1).unsqueeze(0).to(q.dtype)
            gqa = q.shape[1] != k.shape[1]
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)  # [1, Hq, ql, D]
            return out[0].transpose(0, 1)  # [ql, Hq, D]
        return self._prefill_on_cache(query[plan.start : plan.end], kv_cache, plan, scale)

    def _prefill_on_cache(
        self, query: torch.Tensor, kv_cache: torch.Tensor, plan: PrefillPlan, scale: float
    ) -> torch.Tensor:
        """query [ql, Hq, D] over the gathered cache, GQA folded into the query axis -> [ql, Hq, D]."""
        query_len, num_heads, head_size = query.shape
        num_kv_heads = kv_cache.shape[3]
        kv = _gather(kv_cache, plan.kv_rows)[:, : plan.seq_len].to(query.dtype)  # [2, L, Hkv, D]
        k, v = kv[0].transpose(0, 1).unsqueeze(0), kv[1].transpose(0, 1).unsqueeze(0)  # [1, Hkv, L, D]
        q = query.view(query_len, num_kv_heads, -1, head_size).permute(1, 2, 0, 3)  # [Hkv, G, ql, D]
        q = q.reshape(1, num_kv_heads, -1, head_size)  # [1, Hkv, G * ql, D]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.mask, scale=scale)  # [1, Hkv, G * ql, D]
        out = out.view(num_kv_heads, -1, query_len, head_size).permute(2, 0, 1, 3)  # [ql, Hkv, G, D]
        return out.reshape(query_len, num_heads, head_size)


    def _prefill_masked(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                        plan: PrefillPlan, mask: torch.Tensor, scale: float) -> torch.Tensor:
        """A windowed or soft-capped prefill chunk, GQA folded into the query axis -> [ql, Hq, D].

        Keys come from the new rows when nothing was cached, else from the gathered cache."""
        q_rows = query[plan.start : plan.end]  # [ql, Hq, D]
        query_len, num_heads, head_size = q_rows.shape
        num_kv_heads = key.shape[1]
        if plan.kv_rows is None:
            kv = torch.stack((key[plan.start : plan.end], value[plan.start : plan.end])).to(query.dtype)  # [2, L, Hkv, D]
        else:
            kv = _gather(kv_cache, plan.kv_rows)[:, : plan.seq_len].to(query.dtype)  # [2, L, Hkv, D]
        k, v = kv[0].transpose(0, 1).unsqueeze(0), kv[1].transpose(0, 1).unsqueeze(0)  # [1, Hkv, L, D]
        q = q_rows.view(query_len, num_kv_heads, -1, head_size).permute(1, 2, 0, 3)  # [Hkv, G, ql, D]
        q = q.reshape(1, num_kv_heads, -1, head_size)  # [1, Hkv, G * ql, D]
        out = self._attend(q, k, v, mask, scale)  # [1, Hkv, G * ql, D]
        out = out.view(num_kv_heads, -1, query_len, head_size).permute(2, 0, 1, 3)  # [ql, Hkv, G, D]
        return out.reshape(query_len, num_heads, head_size)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                scale: float) -> torch.Tensor:
        """q [..., M, D] over k, v [..., L, D] with a bool mask broadcast to [..., M, L] -> [..., M, D]."""
        if not self.soft_cap:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # [..., M, L]
        scores = torch.tanh(scores / self.soft_cap) * self.soft_cap
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.matmul(torch.softmax(scores, dim=-1), v.float()).to(q.dtype)


def _gather(kv_cache: torch.Tensor, rows: KVRows) -> torch.Tensor:
    """kv_cache [2, N, S, Hkv, D] -> the rows' blocks as [2, M * S, Hkv, D] (one copy)."""
    two, num_blocks, block_size, num_kv_heads, head_size = kv_cache.shape
    flat = kv_cache.view(two * num_blocks, block_size * num_kv_heads * head_size)  # [2N, S*Hkv*D]
    return flat.index_select(0, rows.for_pool(num_blocks)).view(two, -1, num_kv_heads, head_size)
