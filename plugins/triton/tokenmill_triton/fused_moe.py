"""fused_moe in Triton: two grouped GEMMs over expert-sorted, block-padded (token, expert) pairs.

The pairs are sorted by expert on the device and each expert's segment is padded to a multiple
of BLOCK_M, so every BLOCK_M-row tile belongs to one expert (a tile map says which; tiles past
the end say -1 and exit). Kernel pass 1 gathers the tiles' token rows of x and multiplies them by
that expert's w13, pass 2 multiplies the activated rows by w2 and scales by the routing weight;
the K outputs of each token are summed in float32. Nothing here reads the device from the host,
so a step can be captured in a CUDA graph. The tile shape is chosen by the average rows per
expert: decode steps (about one row per expert) take short, narrow tiles that spread the weight
stream over many programs; prefill takes wide ones for tensor-core reuse.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill_triton.activation import silu_and_mul
from tokenmill_triton.paged_tile import dot_precision, interpreting

# (max average rows per expert, BLOCK_M, BLOCK_N, BLOCK_K, num_warps)
TILE_BUCKETS = ((2, 16, 64, 128, 4), (32, 32, 64, 64, 4), (None, 64, 128, 64, 8))


def tile_config(num_pairs: int, num_experts: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) for `num_pairs` (token, expert) pairs over the experts."""
    rows_per_expert = num_pairs / num_experts
    for limit, block_m, block_n, block_k, warps in TILE_BUCKETS:
        if limit is None or rows_per_expert <= limit:
            return block_m, block_n, block_k, warps
    raise AssertionError("the last bucket has no limit")


@triton.jit
def _moe_gemm_kernel(
    a_ptr,  # [rows, K]: x (row = pair // TOP_K) or the activated pairs (row = pair)
    w_ptr,  # [E, N, K]
    out_ptr,  # [num_pairs, N], indexed by pair
    sorted_ids_ptr,  # int64 [num_tiles * BLOCK_M]: pair ids by expert, padded with num_pairs
    tile_expert_ptr,  # int64 [num_tiles]: each tile's expert, -1 past the end
    weights_ptr,  # float32 [num_pairs]: routing weights (read when MUL_WEIGHT)
    N, K, num_pairs, a_stride, w_stride_e, w_stride_n, out_stride,
    ROW_DIV: tl.constexpr, MUL_WEIGHT: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    expert = tl.load(tile_expert_ptr + pid_m)
    if expert < 0:
        return
    pairs = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))  # [BM]
    valid = pairs < num_pairs
    rows = tl.where(valid, pairs // ROW_DIV, 0)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    col_ok = cols < N
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows[:, None] * a_stride + ks[None, :]  # [BM, BK]
    w_ptrs = w_ptr + expert * w_stride_e + cols[None, :].to(tl.int64) * w_stride_n + ks[:, None]  # [BK, BN]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = ks + k0 < K
        a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if UPCAST:  # the interpreter's numpy dot misreads bf16 (paged_tile.interpreting)
            a, w = a.to(tl.float32), w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=DOT_PREC)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    result = acc.to(a_ptr.dtype.element_ty)  # each expert's output rounds to the model dtype, as the reference's
    if MUL_WEIGHT:
        scale = tl.load(weights_ptr + pairs, mask=valid, other=0.0)
        result = result.to(tl.float32) * scale[:, None]
    out_ptrs = out_ptr + pairs[:, None] * out_stride + cols[None, :]
    tl.store(out_ptrs, result.to(out_ptr.dtype.element_ty), mask=valid[:, None] & col_ok[None, :])


def align_pairs(topk_ids: torch.Tensor, num_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [T, K] -> (sorted pair ids int64 [tiles * BLOCK_M], tile experts int64 [tiles]), on the device.

    `tiles` is an upper bound (one partial tile per expert that has pairs, plus the full ones), so
    the shapes depend only on T, K and E, never on the routing.
    """
    flat = topk_ids.reshape(-1).to(torch.int64)  # [P]
    num_pairs = flat.numel()
    tiles = min(num_experts, num_pairs) + triton.cdiv(num_pairs, block_m)
    order = torch.sort(flat, stable=True).indices  # [P]
    counts = torch.zeros(num_experts, dtype=torch.int64, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))  # [E]; bincount would read its max on the host
    padded = (counts + block_m - 1) // block_m * block_m  # [E]
    padded_end = padded.cumsum(0)
    sorted_experts = flat.index_select(0, order)  # [P]
    rank = torch.arange(num_pairs, device=flat.device) - (counts.cumsum(0) - counts).index_select(0, sorted_experts)
    dest = (padded_end - padded).index_select(0, sorted_experts) + rank  # [P]: each pair's padded slot
    sorted_ids = torch.full((tiles * block_m,), num_pairs, dtype=torch.int64, device=flat.device)
    sorted_ids.index_copy_(0, dest, order)
    tile_start = torch.arange(tiles, device=flat.device) * block_m
    tile_expert = torch.searchsorted(padded_end, tile_start, right=True)  # first expert whose end passes the start
    return sorted_ids, torch.where(tile_expert < num_experts, tile_expert, -1)


def _gemm(a, w, out, sorted_ids, tile_expert, weights, row_div, mul_weight, config):
    block_m, block_n, block_k, warps = config
    n, k = w.shape[1], w.shape[2]
    grid = (tile_expert.numel(), triton.cdiv(n, block_n))
    _moe_gemm_kernel[grid](
        a, w, out, sorted_ids, tile_expert, weights, n, k, out.shape[0], a.stride(0), w.stride(0), w.stride(1),
        out.stride(0), ROW_DIV=row_div, MUL_WEIGHT=mul_weight, DOT_PREC=dot_precision(a.dtype), UPCAST=interpreting(),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
    )


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor) -> torch.Tensor:
    """x [T, H], w13 [E, 2I, H], w2 [E, H, I], weights float32 [T, K], ids [T, K] -> [T, H] in x's dtype."""
    num_tokens, top_k = topk_ids.shape
    num_experts, num_pairs = w13.shape[0], topk_ids.numel()
    if num_pairs == 0:
        return torch.zeros_like(x)
    x, w13, w2 = x.contiguous(), w13.contiguous(), w2.contiguous()
    config = tile_config(num_pairs, num_experts)
    sorted_ids, tile_expert = align_pairs(topk_ids, num_experts, config[0])
    weights = topk_weights.reshape(-1).float().contiguous()  # [P]
    hidden = torch.empty(num_pairs, w13.shape[1], dtype=x.dtype, device=x.device)  # [P, 2I]
    _gemm(x, w13, hidden, sorted_ids, tile_expert, weights, top_k, False, config)
    act = silu_and_mul(hidden)  # [P, I]
    out = torch.empty(num_pairs, w2.shape[1], dtype=torch.float32, device=x.device)  # [P, H], weighted
    _gemm(act, w2, out, sorted_ids, tile_expert, weights, 1, True, config)
    return out.view(num_tokens, top_k, -1).sum(dim=1).to(x.dtype)
