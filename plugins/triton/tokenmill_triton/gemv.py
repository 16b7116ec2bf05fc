"""Matrix-vector products for single-row linears (decode at batch 1), streaming the weight once.

A decode step at batch 1 is weight-bandwidth bound: every linear reads its [N, K] weight to make
one output row. Each program here owns BLOCK_N output features and walks K in BLOCK_K tiles,
keeping a [BLOCK_N, BLOCK_K] float32 partial in registers and reducing it once at the end.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tokenmill_triton.gemv_tuning import chosen_config
from tokenmill_triton.pdl import launch_options, wait_for_previous

# (BLOCK_N, BLOCK_K, num_warps) before a shape is tuned (gemv_tuning.py): the best of eight
# configurations for every Llama-3-8B linear in benchmarks/cuda/bench_gemv.py on an H100
# (2.88-3.20 TB/s); two rows a program gives 2,048 or more programs, so every SM keeps several
# weight streams in flight.
DEFAULT_CONFIG = (2, 2048, 8)


@triton.jit
def _gemv_kernel(
    x_ptr,  # [K]
    w_ptr,  # [N, K] contiguous
    bias_ptr,  # [N] or a dummy when HAS_BIAS is False
    out_ptr,  # [N]
    N, K,
    HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_mask = rows < N
    cols = tl.arange(0, BLOCK_K)
    w_row = w_ptr + rows.to(tl.int64)[:, None] * K  # [BLOCK_N, 1]
    # The first weight tile is read before waiting on the previous kernel: no kernel writes weights.
    w = _weight_tile(w_row, cols, row_mask, K, EVEN_K)  # [BLOCK_N, BLOCK_K]
    wait_for_previous(USE_PDL)
    acc = w.to(tl.float32) * _input_tile(x_ptr, cols, K, EVEN_K)[None, :]
    for k0 in range(BLOCK_K, K, BLOCK_K):
        w = _weight_tile(w_row, k0 + cols, row_mask, K, EVEN_K)
        acc += w.to(tl.float32) * _input_tile(x_ptr, k0 + cols, K, EVEN_K)[None, :]
    y = tl.sum(acc, 1)  # [BLOCK_N]
    if HAS_BIAS:
        y += tl.load(bias_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows, y.to(out_ptr.dtype.element_ty), mask=row_mask)


@triton.jit
def _weight_tile(w_row, k, row_mask, K, EVEN_K: tl.constexpr):
    """[BLOCK_N, BLOCK_K] of the weight at columns k, streamed past the caches (read once per step)."""
    if EVEN_K:
        return tl.load(w_row + k[None, :], mask=row_mask[:, None], other=0.0, eviction_policy="evict_first")
    return tl.load(w_row + k[None, :], mask=row_mask[:, None] & (k < K)[None, :], other=0.0,
                   eviction_policy="evict_first")


@triton.jit
def _input_tile(x_ptr, k, K, EVEN_K: tl.constexpr):
    """[BLOCK_K] float32 of the input row at columns k."""
    if EVEN_K:
        return tl.load(x_ptr + k).to(tl.float32)
    return tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
         config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """x [1, K], weight [N, K] contiguous, bias [N] -> x @ weight.T (+ bias), [1, N] in x's dtype.

    One row only: the weight is streamed once, and at two rows cuBLAS is already as fast.
    Accumulates in float32 and rounds once, like cuBLAS. `config` defaults to the one tuned for
    this shape (gemv_tuning.py), else DEFAULT_CONFIG.
    """
    if x.shape[0] != 1:
        raise ValueError(f"gemv takes one row, got {x.shape[0]}; use torch's linear for more")
    k = x.shape[1]
    n = weight.shape[0]
    block_n, block_k, warps = config or chosen_config(x, weight) or DEFAULT_CONFIG
    block_k = min(block_k, triton.next_power_of_2(k))  # a short K needs no masked half-empty tile
    x = x.contiguous()
    out = torch.empty((1, n), dtype=x.dtype, device=x.device)
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x, weight, bias if bias is not None else weight, out, n, k,
        HAS_BIAS=bias is not None, EVEN_K=k % block_k == 0, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=warps, **launch_options(),
    )
    return out
