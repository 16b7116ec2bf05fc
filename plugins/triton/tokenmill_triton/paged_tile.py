"""Device helpers shared by the attention kernels: gather a K/V tile from pages, online softmax."""

from __future__ import annotations

import os

import triton
import triton.language as tl

# Running max starts finite so a fully masked tile gives exp2(-inf - m) = 0 instead of NaN.
NEG_BIG = tl.constexpr(-1.0e30)


def interpreting() -> bool:
    """True under TRITON_INTERPRET=1, whose numpy tl.dot misreads bf16: kernels then upcast first."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def dot_precision(dtype) -> str:
    """float32 (and interpreted) dots get exact ("ieee") products; 16-bit ones the tensor cores' path."""
    return "ieee" if interpreting() or str(dtype) == "torch.float32" else "tf32"


@triton.jit
def kv_tile_offsets(
    bt_row_ptr,  # int32 block-table row of one request
    n,  # [BLOCK_N] token positions in the sequence
    n_mask,  # [BLOCK_N] which positions are real
    kv_head,
    S: tl.constexpr,  # block size
    HKV: tl.constexpr,
    D: tl.constexpr,
):
    """Element offsets [BLOCK_N, D] of tokens `n` of one KV head inside cache[0] (add v_offset for V)."""
    block = tl.load(bt_row_ptr + n // S, mask=n_mask, other=0)
    slot = block.to(tl.int64) * S + n % S  # [BLOCK_N]
    d = tl.arange(0, D)
    return slot[:, None] * (HKV * D) + kv_head * D + d[None, :]


@triton.jit
def softmax_step(
    q,  # [M, D]
    k,  # [BLOCK_N, D]
    v,  # [BLOCK_N, D]
    visible,  # [M, BLOCK_N] bool
    m_i,  # [M] running max (log2 domain)
    l_i,  # [M] running sum
    acc,  # [M, D] float32 running numerator
    scale_log2,  # softmax scale * log2(e)
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,  # dot in float32 (the interpreter's workaround)
    cap_log2,  # soft cap * log2(e), read when SOFT_CAP
    SOFT_CAP: tl.constexpr,
):
    """One flash-attention step over a K/V tile; returns the updated (m_i, l_i, acc).

    With SOFT_CAP, scores s become cap * tanh(s / cap) (Gemma 2); in the log2 domain that is
    C * tanh(t / C) with C = cap * log2(e), tanh written as 1 - 2 / (e^(2y) + 1)."""
    if UPCAST:
        q, k = q.to(tl.float32), k.to(tl.float32)
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * scale_log2  # [M, BLOCK_N]
    if SOFT_CAP:
        qk = cap_log2 * (1.0 - 2.0 / (tl.exp2(qk * (2.8853900817779268 / cap_log2)) + 1.0))
    qk = tl.where(visible, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(qk - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    p = p.to(v.dtype)
    if UPCAST:
        p, v = p.to(tl.float32), v.to(tl.float32)
    acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=DOT_PREC)
    return m_new, l_i, acc
