"""Paged decode attention, flash-decoding style: GQA-grouped programs, context splits, a reduction.

One program handles every query head of one KV head for one request (so each K/V tile is read
once per group, not once per query head) over one contiguous slice of the context. When a step
has too few (request, KV head) pairs to fill the GPU, the context is split across NUM_SPLITS
programs whose partial (max, sum, numerator) a second kernel merges.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill_triton.paged_tile import NEG_BIG, dot_precision, interpreting, kv_tile_offsets, softmax_step


@triton.jit
def _decode_kernel(
    q_ptr, cache_ptr, out_ptr, part_acc_ptr, part_ml_ptr,
    req_ptr, qsl_ptr, seq_lens_ptr, bt_ptr,
    q_stride_t, q_stride_h, out_stride_t, out_stride_h, bt_stride, v_offset, scale_log2,
    HKV: tl.constexpr, G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, S: tl.constexpr,
    BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    kv_head, split, pid_r = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    req = tl.load(req_ptr + pid_r)
    token = tl.load(qsl_ptr + req).to(tl.int64)
    seq_len = tl.load(seq_lens_ptr + req)
    g, d = tl.arange(0, G_PAD), tl.arange(0, D)
    head = kv_head * G + g  # [G_PAD]
    g_mask = g < G
    q = tl.load(q_ptr + token * q_stride_t + head[:, None] * q_stride_h + d[None, :], mask=g_mask[:, None], other=0.0)

    tiles_per_split = tl.cdiv(tl.cdiv(seq_len, BLOCK_N), NUM_SPLITS)
    start = split * tiles_per_split * BLOCK_N
    end = tl.minimum(seq_len, start + tiles_per_split * BLOCK_N)
    m_i = tl.full([G_PAD], NEG_BIG, tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, D], tl.float32)
    bt_row = bt_ptr + req.to(tl.int64) * bt_stride
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < end
        offs = kv_tile_offsets(bt_row, n, n_mask, kv_head, S, HKV, D)  # [BLOCK_N, D]
        k = tl.load(cache_ptr + offs, mask=n_mask[:, None], other=0.0)
        v = tl.load(cache_ptr + v_offset + offs, mask=n_mask[:, None], other=0.0)
        m_i, l_i, acc = softmax_step(q, k, v, n_mask[None, :], m_i, l_i, acc, scale_log2, DOT_PREC, UPCAST)

    if NUM_SPLITS == 1:
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        dst = out_ptr + token * out_stride_t + head[:, None] * out_stride_h + d[None, :]
        tl.store(dst, out.to(out_ptr.dtype.element_ty), mask=g_mask[:, None])
    else:
        part = (pid_r.to(tl.int64) * (HKV * G) + head) * NUM_SPLITS + split  # [G_PAD]
        tl.store(part_acc_ptr + part[:, None] * D + d[None, :], acc, mask=g_mask[:, None])
        tl.store(part_ml_ptr + part * 2, m_i, mask=g_mask)
        tl.store(part_ml_ptr + part * 2 + 1, l_i, mask=g_mask)


@triton.jit
def _decode_reduce_kernel(
    part_acc_ptr, part_ml_ptr, out_ptr, req_ptr, qsl_ptr, out_stride_t, out_stride_h,
    HQ: tl.constexpr, D: tl.constexpr, NUM_SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr,
):
    head, pid_r = tl.program_id(0), tl.program_id(1)
    req = tl.load(req_ptr + pid_r)
    token = tl.load(qsl_ptr + req).to(tl.int64)
    s, d = tl.arange(0, SPLITS_PAD), tl.arange(0, D)
    s_mask = s < NUM_SPLITS
    part = (pid_r.to(tl.int64) * HQ + head) * NUM_SPLITS + s  # [SPLITS_PAD]
    m = tl.load(part_ml_ptr + part * 2, mask=s_mask, other=NEG_BIG)
    l = tl.load(part_ml_ptr + part * 2 + 1, mask=s_mask, other=0.0)
    weight = tl.where(l > 0, tl.exp2(m - tl.max(m, 0)), 0.0)  # [SPLITS_PAD]
    acc = tl.load(part_acc_ptr + part[:, None] * D + d[None, :], mask=s_mask[:, None], other=0.0)
    num = tl.sum(acc * weight[:, None], 0)  # [D]
    den = tl.sum(l * weight, 0)
    out = num / tl.where(den > 0, den, 1.0)
    tl.store(out_ptr + token * out_stride_t + head * out_stride_h + d, out.to(out_ptr.dtype.element_ty))


def decode_block_n(head_size: int) -> int:
    """Tokens per K/V tile: 64 keeps a bf16 tile at 16 KB up to D = 128."""
    return 32 if head_size > 128 else 64


def decode_attention(
    query: torch.Tensor,  # [T, Hq, D], (Hq, D) contiguous per token
    kv_cache: torch.Tensor,  # [2, N, S, Hkv, D]
    out: torch.Tensor,  # [T, Hq, D]; rows of decode requests are written
    metadata,  # TritonAttentionMetadata
    scale: float,
) -> None:
    """Attend each decode request's single query row over its whole cached sequence."""
    md = metadata
    _, _, block_size, num_kv_heads, head_size = kv_cache.shape
    num_heads = query.shape[1]
    group = num_heads // num_kv_heads
    splits = md.num_splits
    block_n = decode_block_n(head_size)
    _decode_kernel[(num_kv_heads, splits, md.num_decodes)](
        query, kv_cache, out, md.partial_acc, md.partial_ml,
        md.decode_reqs, md.query_start_loc, md.seq_lens, md.block_tables,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1), md.block_tables.stride(0),
        kv_cache[0].numel(), scale * 1.4426950408889634,
        HKV=num_kv_heads, G=group, G_PAD=max(16, triton.next_power_of_2(group)), D=head_size,
        S=block_size, BLOCK_N=block_n, NUM_SPLITS=splits, DOT_PREC=dot_precision(query.dtype), UPCAST=interpreting(),
        num_warps=4, num_stages=2,
    )
    if splits > 1:
        _decode_reduce_kernel[(num_heads, md.num_decodes)](
            md.partial_acc, md.partial_ml, out, md.decode_reqs, md.query_start_loc,
            out.stride(0), out.stride(1),
            HQ=num_heads, D=head_size, NUM_SPLITS=splits, SPLITS_PAD=triton.next_power_of_2(splits),
            num_warps=4,
        )
