"""x @ W^T for 4-bit weights in groups along K (GPTQ / AWQ codes): a GEMV for decode rows, a GEMM for the rest.

The packed weight is uint8 [N, K/2] (input 2i in the low nibble of byte i, 2i + 1 in the high one)
with float16 scales and zero points [N, K/G]: w = (q - zero) * scale. Both kernels dequantize a
[BLOCK_N, BLOCK_K] tile in registers and never write the float weight out. The GEMV keeps a
[BLOCK_N, BLOCK_K] float32 partial per program and reduces it once, as gemv.py does; the GEMM runs
tl.dot on the dequantized tile in the activations' dtype (float32 under the interpreter, whose
numpy dot misreads bfloat16).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tokenmill_triton.paged_tile import interpreting

GEMV_ROWS = 4  # up to this many rows each row streams the weight itself; more rows run the GEMM
GEMV_CONFIG = (4, 256, 4)  # (BLOCK_N, BLOCK_K, num_warps)
GEMM_CONFIG = (32, 64, 64, 4)  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps)


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
def _dequant_tile(w_ptr, s_ptr, z_ptr, rn, k0, N, K, G, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Float32 [BLOCK_N, BLOCK_K] of the weight: rows rn, inputs k0 .. k0 + BLOCK_K (K a multiple of BLOCK_K)."""
    half = k0 // 2 + tl.arange(0, BLOCK_K // 2)  # [BLOCK_K / 2] byte columns
    row_ok = (rn < N)[:, None]
    rows = rn.to(tl.int64)[:, None]
    packed = tl.load(w_ptr + rows * (K // 2) + half[None, :], mask=row_ok, other=0, eviction_policy="evict_first")
    q = tl.reshape(tl.join(packed & 15, packed >> 4), (BLOCK_N, BLOCK_K))  # byte i -> inputs 2i, 2i + 1
    group = (k0 + tl.arange(0, BLOCK_K)) // G  # [BLOCK_K]
    at = rows * (K // G) + group[None, :]
    scale = tl.load(s_ptr + at, mask=row_ok, other=0.0).to(tl.float32)
    zero = tl.load(z_ptr + at, mask=row_ok, other=0.0).to(tl.float32)
    return (q.to(tl.float32) - zero) * scale


@triton.jit
def _int4_gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, N, K, G,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Program (n, m): out[m, BLOCK_N outputs] = x[m] . w rows."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.program_id(1).to(tl.int64)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + m * K + k0 + tl.arange(0, BLOCK_K)).to(tl.float32)  # [BLOCK_K]
        acc += _dequant_tile(w_ptr, s_ptr, z_ptr, rn, k0, N, K, G, BLOCK_N, BLOCK_K) * x[None, :]
    y = tl.sum(acc, 1)
    tl.store(out_ptr + m * N + rn, y.to(out_ptr.dtype.element_ty), mask=rn < N)


@triton.jit
def _int4_gemm_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, M, N, K, G,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr):
    """Program (m, n): out[BLOCK_M rows, BLOCK_N outputs] = x tile @ dequantized w tile^T."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + rm.to(tl.int64)[:, None] * K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_rows + (k0 + rk)[None, :], mask=(rm < M)[:, None], other=0.0)  # [BLOCK_M, BLOCK_K]
        w = _dequant_tile(w_ptr, s_ptr, z_ptr, rn, k0, N, K, G, BLOCK_N, BLOCK_K)  # [BLOCK_N, BLOCK_K]
        if DOT_F32:
            acc += tl.dot(x.to(tl.float32), tl.trans(w), input_precision="ieee")
        else:
            acc += tl.dot(x, tl.trans(w.to(x.dtype)))
    out = out_ptr + rm.to(tl.int64)[:, None] * N + rn[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(rm < M)[:, None] & (rn < N)[None, :])


def int4_matmul(x: torch.Tensor, weight: Int4Weight, gemv_config: tuple[int, int, int] | None = None,
                gemm_config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """x [M, K] (float16, bfloat16 or float32) -> x @ W^T, [M, N] in x's dtype; K a multiple of 32."""
    x = x.contiguous()
    rows, cols = x.shape
    n = weight.codes.shape[0]
    out = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    if rows == 0:
        return out
    if rows <= GEMV_ROWS:
        block_n, block_k, warps = gemv_config or GEMV_CONFIG
        block_k = _dividing(block_k, cols)
        _int4_gemv_kernel[(triton.cdiv(n, block_n), rows)](
            x, weight.codes, weight.scales, weight.zeros, out, n, cols, weight.group,
            BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps)
        return out
    block_m, block_n, block_k, warps = gemm_config or GEMM_CONFIG
    block_k = _dividing(block_k, cols)
    grid = (triton.cdiv(rows, block_m), triton.cdiv(n, block_n))
    _int4_gemm_kernel[grid](x, weight.codes, weight.scales, weight.zeros, out, rows, n, cols, weight.group,
                            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                            DOT_F32=interpreting() or x.dtype == torch.float32, num_warps=warps)
    return out


def _dividing(block_k: int, cols: int) -> int:
    """The largest power of two <= block_k (and >= 32) that divides K, so no tile runs past the row."""
    while block_k > 32 and cols % block_k:
        block_k //= 2
    if cols % block_k:
        raise ValueError(f"the int4 kernels need the input size to be a multiple of 32, got {cols}")
    return block_k
