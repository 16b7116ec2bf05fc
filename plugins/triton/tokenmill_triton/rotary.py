"""NeoX rotary embedding of q and k in one kernel per token, computed in float32."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill_triton.pdl import launch_options, wait_for_previous


@triton.jit
def _rotate_heads(src_ptr, dst_ptr, src_stride, dst_stride, token, cos, sin,
                  num_heads, HALF: tl.constexpr, H_PAD: tl.constexpr):
    """Rotate every head of one token: first half pairs with second half of each head."""
    h = tl.arange(0, H_PAD)
    j = tl.arange(0, HALF)
    mask = (h < num_heads)[:, None]
    offs = h[:, None] * (2 * HALF) + j[None, :]  # [H_PAD, HALF]
    src = src_ptr + token * src_stride + offs
    x1 = tl.load(src, mask=mask, other=0.0)
    x2 = tl.load(src + HALF, mask=mask, other=0.0)
    x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
    dst = dst_ptr + token * dst_stride + offs
    tl.store(dst, (x1f * cos[None, :] - x2f * sin[None, :]).to(x1.dtype), mask=mask)
    tl.store(dst + HALF, (x2f * cos[None, :] + x1f * sin[None, :]).to(x1.dtype), mask=mask)


@triton.jit
def _rotary_kernel(
    pos_ptr, q_ptr, k_ptr, q_out_ptr, k_out_ptr, cache_ptr,
    q_stride, k_stride, q_out_stride, k_out_stride, num_q_heads, num_k_heads,
    HALF: tl.constexpr, QH_PAD: tl.constexpr, KH_PAD: tl.constexpr, USE_PDL: tl.constexpr,
):
    wait_for_previous(USE_PDL)
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + token).to(tl.int64)
    j = tl.arange(0, HALF)
    cos = tl.load(cache_ptr + pos * (2 * HALF) + j)  # [HALF] float32
    sin = tl.load(cache_ptr + pos * (2 * HALF) + HALF + j)
    _rotate_heads(q_ptr, q_out_ptr, q_stride, q_out_stride, token, cos, sin, num_q_heads, HALF, QH_PAD)
    _rotate_heads(k_ptr, k_out_ptr, k_stride, k_out_stride, token, cos, sin, num_k_heads, HALF, KH_PAD)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def rotary(
    positions: torch.Tensor,  # int64 [T]
    query: torch.Tensor,  # [T, Hq * D]
    key: torch.Tensor,  # [T, Hkv * D]
    cos_sin_cache: torch.Tensor,  # float32 [max_pos, D]: cos in [:, :D/2], sin in [:, D/2:]
    head_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """New rotated q [T, Hq*D] and k [T, Hkv*D]; inputs may be strided views of a fused qkv."""
    query, key = _rows(query), _rows(key)
    q_out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    k_out = torch.empty(key.shape, dtype=key.dtype, device=key.device)
    num_tokens = positions.shape[0]
    if num_tokens:
        q_heads, k_heads = query.shape[-1] // head_size, key.shape[-1] // head_size
        _rotary_kernel[(num_tokens,)](
            positions, query, key, q_out, k_out, cos_sin_cache.contiguous(),
            query.stride(0), key.stride(0), q_out.stride(0), k_out.stride(0), q_heads, k_heads,
            HALF=head_size // 2, QH_PAD=triton.next_power_of_2(q_heads), KH_PAD=triton.next_power_of_2(k_heads),
            num_warps=4, **launch_options(),
        )
    return q_out, k_out
