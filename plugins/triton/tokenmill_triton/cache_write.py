"""reshape_and_cache: the kernel that writes new tokens' K/V into the paged cache via slot_mapping."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill_triton.pdl import launch_options, wait_for_previous


@triton.jit
def _reshape_and_cache_kernel(
    key_ptr,  # [T, Hkv, D], rows `key_stride` apart, (Hkv, D) contiguous
    value_ptr,  # [T, Hkv, D], rows `value_stride` apart
    cache_ptr,  # [2, N, S, Hkv, D] contiguous
    slot_ptr,  # int64 [T]; a negative slot means "padding, write nothing"
    key_stride,
    value_stride,
    v_offset,  # elements between cache[0] and cache[1]: N * S * Hkv * D
    ROW: tl.constexpr,  # Hkv * D
    BLOCK: tl.constexpr,  # next power of two >= ROW
    USE_PDL: tl.constexpr,
):
    wait_for_previous(USE_PDL)
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot < 0:
        return
    cols = tl.arange(0, BLOCK)
    mask = cols < ROW
    k = tl.load(key_ptr + token.to(tl.int64) * key_stride + cols, mask=mask)
    v = tl.load(value_ptr + token.to(tl.int64) * value_stride + cols, mask=mask)
    dst = cache_ptr + slot * ROW + cols
    tl.store(dst, k.to(cache_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + v_offset, v.to(cache_ptr.dtype.element_ty), mask=mask)


def rows_contiguous(x: torch.Tensor) -> torch.Tensor:
    """x [T, H, D] with each token's (H, D) block contiguous (a view of a wider row is fine)."""
    if x.stride(2) == 1 and x.stride(1) == x.shape[2]:
        return x
    return x.contiguous()


def reshape_and_cache(
    key: torch.Tensor,  # [T, Hkv, D]
    value: torch.Tensor,  # [T, Hkv, D]
    kv_cache: torch.Tensor,  # [2, N, S, Hkv, D]
    slot_mapping: torch.Tensor,  # int64 [T], -1 for padded tokens
) -> None:
    """Write every token's key and value into its cache slot (block * S + offset), in place."""
    num_tokens = key.shape[0]
    if num_tokens == 0:
        return
    key, value = rows_contiguous(key), rows_contiguous(value)
    row = key.shape[1] * key.shape[2]
    _reshape_and_cache_kernel[(num_tokens,)](
        key, value, kv_cache, slot_mapping,
        key.stride(0), value.stride(0), kv_cache[0].numel(),
        ROW=row, BLOCK=triton.next_power_of_2(row), num_warps=4 if row >= 1024 else 1, **launch_options(),
    )
