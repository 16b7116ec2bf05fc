"""Prefill attention over ragged requests whose earlier tokens already sit in the paged cache.

Covers prefix-cache hits and chunked prefill alike: request b's new rows are positions
ctx .. seq_len-1 (ctx = seq_len - query_len), and every key is read from the cache, which the
cache-write kernel has already filled for the new tokens. Row i sees keys 0 .. ctx + i.
One program handles BLOCK_M new rows of one query head; keys before the tile's first row are
visible to all its rows and skip the causal mask. With a sliding window W, row i sees keys
ctx + i - W < j <= ctx + i: the tile starts at its first row's window and masks every key tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill_triton.paged_tile import NEG_BIG, dot_precision, interpreting, kv_tile_offsets, softmax_step


# the block-table row stride changes with the batch's longest sequence: one compiled kernel for all
@triton.jit(do_not_specialize=["bt_stride"])
def _prefill_kernel(
    q_ptr, cache_ptr, out_ptr, req_ptr, qsl_ptr, seq_lens_ptr, bt_ptr,
    q_stride_t, q_stride_h, out_stride_t, out_stride_h, bt_stride, v_offset, scale_log2, window, cap_log2,
    HKV: tl.constexpr, G: tl.constexpr, D: tl.constexpr, S: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
    WINDOWED: tl.constexpr, SOFT_CAP: tl.constexpr,
):
    head, m_tile, pid_r = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    req = tl.load(req_ptr + pid_r)
    q_start = tl.load(qsl_ptr + req)
    query_len = tl.load(qsl_ptr + req + 1) - q_start
    if m_tile * BLOCK_M >= query_len:
        return
    seq_len = tl.load(seq_lens_ptr + req)
    ctx = seq_len - query_len
    kv_head = head // G
    rows = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] row within the new chunk
    row_mask = rows < query_len
    d = tl.arange(0, D)
    tokens = (q_start + rows).to(tl.int64)
    q = tl.load(q_ptr + tokens[:, None] * q_stride_t + head * q_stride_h + d[None, :], mask=row_mask[:, None], other=0.0)

    m_i = tl.full([BLOCK_M], NEG_BIG, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    bt_row = bt_ptr + req.to(tl.int64) * bt_stride
    all_visible = tl.full([BLOCK_M, BLOCK_N], 1, tl.int1)
    full_end = (ctx + m_tile * BLOCK_M) // BLOCK_N * BLOCK_N  # whole tiles every row sees
    masked_start = full_end
    if WINDOWED:  # no tile is seen whole: every one is masked, from the tile's first row's window on
        masked_start = tl.maximum(ctx + m_tile * BLOCK_M - window + 1, 0)
        full_end = full_end * 0
    for n0 in range(0, full_end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        offs = kv_tile_offsets(bt_row, n, n < full_end, kv_head, S, HKV, D)
        k = tl.load(cache_ptr + offs)
        v = tl.load(cache_ptr + v_offset + offs)
        m_i, l_i, acc = softmax_step(q, k, v, all_visible, m_i, l_i, acc, scale_log2, DOT_PREC, UPCAST, cap_log2, SOFT_CAP)
    causal_end = tl.minimum(seq_len, ctx + (m_tile + 1) * BLOCK_M)
    for n0 in range(masked_start, causal_end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < causal_end
        offs = kv_tile_offsets(bt_row, n, n_mask, kv_head, S, HKV, D)
        k = tl.load(cache_ptr + offs, mask=n_mask[:, None], other=0.0)
        v = tl.load(cache_ptr + v_offset + offs, mask=n_mask[:, None], other=0.0)
        visible = (n[None, :] <= (ctx + rows)[:, None]) & n_mask[None, :]
        if WINDOWED:
            visible = visible & (n[None, :] > (ctx + rows)[:, None] - window)
        m_i, l_i, acc = softmax_step(q, k, v, visible, m_i, l_i, acc, scale_log2, DOT_PREC, UPCAST, cap_log2, SOFT_CAP)

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    dst = out_ptr + tokens[:, None] * out_stride_t + head * out_stride_h + d[None, :]
    tl.store(dst, out.to(out_ptr.dtype.element_ty), mask=row_mask[:, None])


def prefill_tiles(head_size: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for a head size; smaller key tiles keep D = 256 in registers."""
    if head_size > 128:
        return 64, 32, 8
    return 64, 64, 4


def prefill_attention(
    query: torch.Tensor,  # [T, Hq, D], (Hq, D) contiguous per token
    kv_cache: torch.Tensor,  # [2, N, S, Hkv, D], already holding the new tokens
    out: torch.Tensor,  # [T, Hq, D]; rows of prefill requests are written
    metadata,  # TritonAttentionMetadata
    scale: float,
    window: int | None = None,
    soft_cap: float | None = None,
    tiles=None,  # a plugin's PrefillTiles (block_m, block_n, num_warps, num_stages, extra launch kwargs); None: CUDA's
) -> None:
    """Causal attention of each prefill request's new rows over its cached prefix and itself
    (over its last `window` keys per row, with a window)."""
    md = metadata
    _, _, block_size, num_kv_heads, head_size = kv_cache.shape
    num_heads = query.shape[1]
    block_m, block_n, warps = (tiles.block_m, tiles.block_n, tiles.num_warps) if tiles else prefill_tiles(head_size)
    launch = dict(num_stages=tiles.num_stages, **tiles.launch) if tiles else dict(num_stages=2)
    grid = (num_heads, triton.cdiv(md.max_prefill_query_len, block_m), md.num_prefills)
    _prefill_kernel[grid](
        query, kv_cache, out, md.prefill_reqs, md.query_start_loc, md.seq_lens, md.block_tables,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1), md.block_tables.stride(0),
        kv_cache[0].numel(), scale * 1.4426950408889634, window or 0,
        (soft_cap or 0.0) * 1.4426950408889634,
        HKV=num_kv_heads, G=num_heads // num_kv_heads, D=head_size, S=block_size,
        BLOCK_M=block_m, BLOCK_N=block_n, DOT_PREC=dot_precision(query.dtype), UPCAST=interpreting(),
        WINDOWED=bool(window), SOFT_CAP=bool(soft_cap), num_warps=warps, **launch,
    )
