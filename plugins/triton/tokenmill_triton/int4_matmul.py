"""x @ W^T for 4-bit weights in groups along K (GPTQ / AWQ codes): a Triton GEMM, or dequantize + torch's GEMM.

The packed weight is uint8 [N, K/2] (input 2i in the low nibble of byte i, 2i + 1 in the high one)
with float16 scales and zero points [N, K/G]: w = (q - zero) * scale. Tiles are cut on group
boundaries, so each row of a tile loads one scale and zero per group. Up to DEQUANT_ROWS rows the
GEMM runs tl.dot on the tile dequantized in registers (in the activations' dtype; float32 under the
interpreter, whose numpy dot misreads bfloat16); wider steps are compute-bound, and dequantizing
the weight once into a scratch [N, K] for torch's GEMM is faster there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tokenmill_triton.paged_tile import interpreting

# Measured on an H200 (benchmarks/cuda/bench_quant_linear.py, Llama-3-8B's o / gate_up / down at
# G = 128): at 16 rows this GEMM config took 12.9 / 50.8 / 47.7 us where the best of eight tried took
# the same, dequantize-then-GEMM 22 / 151 / 78 us and a dedicated one-row GEMV 16 / 83 / 51 us even
# at one row, so the GEMM serves every row count up to DEQUANT_ROWS (at 64 rows dequantizing won
# for two of the three shapes, at 256 for all).
DEQUANT_ROWS = 16  # above this many rows: dequantize to the activations' dtype, then torch's GEMM
GEMM_CONFIG = (16, 32, 256, 4)  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps)
DEQUANT_CONFIG = (32, 256, 4)  # (BLOCK_N, BLOCK_K, num_warps)


@dataclass(slots=True)
class Int4Weight:
    """One layer's weight in this kernel's layout."""

    codes: torch.Tensor  # uint8 [N, K/2]
    scales: torch.Tensor  # float16 [N, K/G]
    zeros: torch.Tensor  # float16 [N, K/G]
    group: int  # G


def pack_int4(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int) -> Int4Weight:
    """codes uint8 [N, K] (0..15), scales and zeros [N, K/G] -> the kernels' layout, on codes' device."""
    pairs = codes.view(codes.shape[0], -1, 2)
    packed = (pairs[..., 0] | (pairs[..., 1] << 4)).contiguous()  # [N, K/2]
    return Int4Weight(packed, scales.to(torch.float16).contiguous(), zeros.to(torch.float16).contiguous(), group)


@triton.jit
def _dequant_tile(w_ptr, s_ptr, z_ptr, rn, k0, N, K, groups, G: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SUB: tl.constexpr):
    """Float32 [BLOCK_N, BLOCK_K] of the weight at rows rn, inputs k0 .. k0 + BLOCK_K: the tile spans
    SUB whole groups (BLOCK_K = SUB * G) or lies inside one (SUB = 1, G a multiple of BLOCK_K)."""
    half = k0 // 2 + tl.arange(0, BLOCK_K // 2)  # [BLOCK_K / 2] byte columns
    row_ok = (rn < N)[:, None]
    rows = rn.to(tl.int64)[:, None]
    packed = tl.load(w_ptr + rows * (K // 2) + half[None, :], mask=row_ok, other=0, eviction_policy="evict_first")
    q = tl.reshape(tl.join(packed & 15, packed >> 4), (BLOCK_N, SUB, BLOCK_K // SUB)).to(tl.float32)
    at = rows * groups + (k0 // G + tl.arange(0, SUB))[None, :]  # [BLOCK_N, SUB]
    scale = tl.load(s_ptr + at, mask=row_ok, other=0.0).to(tl.float32)
    zero = tl.load(z_ptr + at, mask=row_ok, other=0.0).to(tl.float32)
    return tl.reshape((q - zero[:, :, None]) * scale[:, :, None], (BLOCK_N, BLOCK_K))


@triton.jit
def _int4_gemm_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, M, N, K, groups, G: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SUB: tl.constexpr,
                      DOT_F32: tl.constexpr):
    """Program (m, n): out[BLOCK_M rows, BLOCK_N outputs] = x tile @ dequantized w tile^T."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + rm.to(tl.int64)[:, None] * K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_rows + (k0 + rk)[None, :], mask=(rm < M)[:, None], other=0.0)  # [BLOCK_M, BLOCK_K]
        w = _dequant_tile(w_ptr, s_ptr, z_ptr, rn, k0, N, K, groups, G, BLOCK_N, BLOCK_K, SUB)
        if DOT_F32:
            acc += tl.dot(x.to(tl.float32), tl.trans(w), input_precision="ieee")
        else:
            acc += tl.dot(x, tl.trans(w.to(x.dtype)))
    out = out_ptr + rm.to(tl.int64)[:, None] * N + rn[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(rm < M)[:, None] & (rn < N)[None, :])


@triton.jit
def _int4_dequant_kernel(w_ptr, s_ptr, z_ptr, out_ptr, N, K, groups, G: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SUB: tl.constexpr):
    """Program (n, k): the dense weight tile out[BLOCK_N rows, BLOCK_K inputs] in out's dtype."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k0 = tl.program_id(1) * BLOCK_K
    w = _dequant_tile(w_ptr, s_ptr, z_ptr, rn, k0, N, K, groups, G, BLOCK_N, BLOCK_K, SUB)
    out = out_ptr + rn.to(tl.int64)[:, None] * K + (k0 + tl.arange(0, BLOCK_K))[None, :]
    tl.store(out, w.to(out_ptr.dtype.element_ty), mask=(rn < N)[:, None])


def dequantize(weight: Int4Weight, dtype: torch.dtype, config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """The dense weight [N, K] in `dtype`."""
    n, cols = weight.codes.shape[0], weight.codes.shape[1] * 2
    block_n, block_k, warps = config or DEQUANT_CONFIG
    block_k, sub = _tiling(block_k, cols, weight.group)
    out = torch.empty((n, cols), dtype=dtype, device=weight.codes.device)
    _int4_dequant_kernel[(triton.cdiv(n, block_n), cols // block_k)](
        weight.codes, weight.scales, weight.zeros, out, n, cols, cols // weight.group, G=weight.group,
        BLOCK_N=block_n, BLOCK_K=block_k, SUB=sub, num_warps=warps)
    return out


def int4_matmul(x: torch.Tensor, weight: Int4Weight, gemm_config: tuple[int, int, int, int] | None = None,
                dequant_rows: int = DEQUANT_ROWS) -> torch.Tensor:
    """x [M, K] (float16, bfloat16 or float32) -> x @ W^T, [M, N] in x's dtype; K a multiple of 32."""
    x = x.contiguous()
    rows, cols = x.shape
    n, groups = weight.codes.shape[0], cols // weight.group
    out = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    if rows == 0:
        return out
    if rows > dequant_rows:
        return torch.nn.functional.linear(x, dequantize(weight, x.dtype))
    block_m, block_n, block_k, warps = gemm_config or GEMM_CONFIG
    block_k, sub = _tiling(block_k, cols, weight.group)
    grid = (triton.cdiv(rows, block_m), triton.cdiv(n, block_n))
    _int4_gemm_kernel[grid](x, weight.codes, weight.scales, weight.zeros, out, rows, n, cols, groups, G=weight.group,
                            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SUB=sub,
                            DOT_F32=interpreting() or x.dtype == torch.float32, num_warps=warps)
    return out


def _tiling(block_k: int, cols: int, group: int) -> tuple[int, int]:
    """(BLOCK_K, groups per tile): the largest power of two <= block_k (>= 32) that either holds whole
    groups (a multiple of a power-of-two G) or lies inside one (divides G), so a tile has one scale
    per row and group and never runs past the row."""
    if cols % 32 or group % 32 or cols % group:
        raise ValueError(f"the int4 kernels need the input size ({cols}) and group ({group}) to be multiples of 32")
    while block_k > 32 and not ((block_k <= group and group % block_k == 0) or
                                (block_k > group and block_k % group == 0 and cols % block_k == 0)):
        block_k //= 2
    return block_k, max(1, block_k // group)
