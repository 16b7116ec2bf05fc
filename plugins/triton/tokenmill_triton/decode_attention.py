"""Paged decode attention, flash-decoding style: GQA-grouped programs, context splits, a reduction.

One program handles every query head of one KV head for one request (so each K/V tile is read
once per group, not once per query head) over one contiguous slice of the context. When a step
has too few (request, KV head) pairs to fill the GPU, the context is split across NUM_SPLITS
programs that store partial (max, sum, numerator) rows; the last of them to finish, found by an
atomic counter, merges them, so a step needs no second kernel (one launch fewer per layer).
With a sliding window W, a request of L keys reads only keys L - W .. L - 1: the splits divide
that range, and blocks before it are never loaded (the KV manager may have freed them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill_triton.metadata import MAX_SPLITS
from tokenmill_triton.paged_tile import NEG_BIG, dot_precision, interpreting, kv_tile_offsets, softmax_step
from tokenmill_triton.pdl import launch_options, wait_for_previous


@triton.jit
def _merge_head(part_acc_ptr, part_ml_ptr, dst_ptr, part0, D: tl.constexpr, NUM_SPLITS: tl.constexpr,
                SPLITS_PAD: tl.constexpr):
    """Merge one head's NUM_SPLITS partials (rows part0 ..) into dst [D]; loads bypass L1 (.cg),
    since the other programs' stores landed in L2."""
    s, d = tl.arange(0, SPLITS_PAD), tl.arange(0, D)
    s_mask = s < NUM_SPLITS
    part = part0 + s  # [SPLITS_PAD]
    m = tl.load(part_ml_ptr + part * 2, mask=s_mask, other=NEG_BIG, cache_modifier=".cg")
    l = tl.load(part_ml_ptr + part * 2 + 1, mask=s_mask, other=0.0, cache_modifier=".cg")
    weight = tl.where(l > 0, tl.exp2(m - tl.max(m, 0)), 0.0)  # [SPLITS_PAD]
    acc = tl.load(part_acc_ptr + part[:, None] * D + d[None, :], mask=s_mask[:, None], other=0.0, cache_modifier=".cg")
    num = tl.sum(acc * weight[:, None], 0)  # [D]
    den = tl.sum(l * weight, 0)
    tl.store(dst_ptr + d, (num / tl.where(den > 0, den, 1.0)).to(dst_ptr.dtype.element_ty))


# the block-table row stride changes with the batch's longest sequence: one compiled kernel for all
@triton.jit(do_not_specialize=["bt_stride"])
def _decode_kernel(
    q_ptr, cache_ptr, out_ptr, part_acc_ptr, part_ml_ptr, count_ptr,
    req_ptr, qsl_ptr, seq_lens_ptr, bt_ptr,
    q_stride_t, q_stride_h, out_stride_t, out_stride_h, bt_stride, v_offset, scale_log2, window, cap_log2,
    HKV: tl.constexpr, G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, S: tl.constexpr,
    BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr, PURE_DECODE: tl.constexpr,
    DOT_PREC: tl.constexpr, UPCAST: tl.constexpr, USE_PDL: tl.constexpr, WINDOWED: tl.constexpr,
    SOFT_CAP: tl.constexpr,
):
    wait_for_previous(USE_PDL)
    kv_head, split, pid_r = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if PURE_DECODE:  # request i is token i: two dependent loads fewer before the K/V reads
        req = pid_r
        token = pid_r.to(tl.int64)
    else:
        req = tl.load(req_ptr + pid_r)
        token = tl.load(qsl_ptr + req).to(tl.int64)
    seq_len = tl.load(seq_lens_ptr + req)
    g, d = tl.arange(0, G_PAD), tl.arange(0, D)
    head = kv_head * G + g  # [G_PAD]
    g_mask = g < G
    q = tl.load(q_ptr + token * q_stride_t + head[:, None] * q_stride_h + d[None, :], mask=g_mask[:, None], other=0.0)

    lo = 0
    if WINDOWED:  # only the last `window` keys: the splits share that range
        lo = tl.maximum(seq_len - window, 0)
    tiles_per_split = tl.cdiv(tl.cdiv(seq_len - lo, BLOCK_N), NUM_SPLITS)
    start = lo + split * tiles_per_split * BLOCK_N
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
        m_i, l_i, acc = softmax_step(q, k, v, n_mask[None, :], m_i, l_i, acc, scale_log2, DOT_PREC, UPCAST,
                                     cap_log2, SOFT_CAP)

    dst = out_ptr + token * out_stride_t + head[:, None] * out_stride_h + d[None, :]
    if NUM_SPLITS == 1:
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(dst, out.to(out_ptr.dtype.element_ty), mask=g_mask[:, None])
    else:
        part0 = (pid_r.to(tl.int64) * (HKV * G) + head) * NUM_SPLITS  # [G_PAD]
        tl.store(part_acc_ptr + (part0 + split)[:, None] * D + d[None, :], acc, mask=g_mask[:, None])
        tl.store(part_ml_ptr + (part0 + split) * 2, m_i, mask=g_mask)
        tl.store(part_ml_ptr + (part0 + split) * 2 + 1, l_i, mask=g_mask)
        # The last split of this (request, KV head) to finish merges them all: the barrier puts
        # every thread's stores before the release of the counter increment.
        tl.debug_barrier()
        counter = count_ptr + pid_r * HKV + kv_head
        if tl.atomic_add(counter, 1, sem="acq_rel") == NUM_SPLITS - 1:
            for i in tl.static_range(G):  # unrolled, so the heads' loads overlap
                h = kv_head * G + i
                _merge_head(part_acc_ptr, part_ml_ptr, out_ptr + token * out_stride_t + h * out_stride_h,
                            (pid_r.to(tl.int64) * (HKV * G) + h) * NUM_SPLITS, D, NUM_SPLITS, SPLITS_PAD)
            tl.atomic_xchg(counter, 0)  # ready for the next layer's launch


def decode_block_n(head_size: int) -> int:
    """Tokens per K/V tile: 64 keeps a bf16 tile at 16 KB up to D = 128."""
    return 32 if head_size > 128 else 64


def decode_attention(
    query: torch.Tensor,  # [T, Hq, D], (Hq, D) contiguous per token
    kv_cache: torch.Tensor,  # [2, N, S, Hkv, D]
    out: torch.Tensor,  # [T, Hq, D]; rows of decode requests are written
    metadata,  # TritonAttentionMetadata
    scale: float,
    window: int | None = None,
    soft_cap: float | None = None,
    tiles=None,  # a plugin's DecodeTiles (block_n, num_warps, num_stages, extra launch kwargs); None: the CUDA choices
) -> None:
    """Attend each decode request's single query row over its cached sequence (its last `window` keys)."""
    md = metadata
    _, _, block_size, num_kv_heads, head_size = kv_cache.shape
    num_heads = query.shape[1]
    group = num_heads // num_kv_heads
    splits = md.num_splits
    block_n = tiles.block_n if tiles else decode_block_n(head_size)
    launch = dict(num_warps=tiles.num_warps, num_stages=tiles.num_stages, **tiles.launch) if tiles else \
        dict(num_warps=4, num_stages=2)
    args = (
        query, kv_cache, out, md.partial_acc, md.partial_ml, md.split_counts,
        md.decode_reqs, md.query_start_loc, md.seq_lens, md.block_tables,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1), md.block_tables.stride(0),
        kv_cache[0].numel(), scale * 1.4426950408889634, window or 0,
        (soft_cap or 0.0) * 1.4426950408889634,
    )
    fixed = dict(HKV=num_kv_heads, G=group, G_PAD=max(16, triton.next_power_of_2(group)), D=head_size,
                 S=block_size, BLOCK_N=block_n, DOT_PREC=dot_precision(query.dtype), UPCAST=interpreting(),
                 WINDOWED=bool(window), SOFT_CAP=bool(soft_cap), **launch, **launch_options())
    _compile_variants(args, fixed)
    _decode_kernel[(num_kv_heads, splits, md.num_decodes)](
        *args, NUM_SPLITS=splits, SPLITS_PAD=triton.next_power_of_2(splits), PURE_DECODE=md.is_pure_decode, **fixed,
    )


_COMPILED: set[tuple] = set()  # the configurations whose variants _compile_variants has compiled


def _compile_variants(args: tuple, fixed: dict) -> None:
    """Compile every split count (1 to MAX_SPLITS, powers of two) of both step kinds for this
    configuration the first time it is met, without launching them.

    The split count and the step kind are compile-time constants, and which ones a step needs
    depends on its batch: compiled on first use, each variant cost a request ~0.3-1 s of its first
    token while serving (the rate-20 TTFT p99 bursts in benchmarks/cuda/RESULTS.md). The engine's
    start-up warm-up step meets the first configuration, so they all compile before serving.
    """
    if interpreting():
        return
    key = (args[0].dtype, args[1].dtype, args[0].device, *fixed.items())  # every layer's call: ~1 us, no sorting
    if key in _COMPILED:
        return
    _COMPILED.add(key)
    for pure in (True, False):
        for splits in (1 << i for i in range(MAX_SPLITS.bit_length())):
            _decode_kernel.warmup(*args, grid=(1, 1, 1), NUM_SPLITS=splits, SPLITS_PAD=splits, PURE_DECODE=pure,
                                  **fixed)
