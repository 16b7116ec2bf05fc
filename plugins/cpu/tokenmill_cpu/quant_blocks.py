"""Packing float weights (or a GPTQ/AWQ checkpoint's codes) into GGUF's Q4_1 and Q8_0 block layouts.

The rounding rules are ggml's reference quantisers' (the gguf package's quants.quantize gives the
same bytes; tests compare), so a weight dequantized from a Q4_1 or Q8_0 GGUF tensor packs back to
the very bytes it came from. Why not call gguf's quantiser: the packing of the default model is on
the start-up path. The native packer (quant_pack.h) gives these torch references' bytes in one
pass, ~6x faster; the references run where it cannot build.
"""

from __future__ import annotations

import torch

from tokenmill_cpu.quant_matmul import pack_native

BLOCK = 32  # inputs per block


def pack_q4_1(weight: torch.Tensor) -> torch.Tensor:
    """weight [N, K] -> uint8 [N, K/32, 20]: per block w = d * q + m, q in 0..15."""
    _check_blocks(weight)
    native = pack_native("q4_1", weight)
    return native if native is not None else reference_q4_1(weight)


def reference_q4_1(weight: torch.Tensor) -> torch.Tensor:
    """pack_q4_1 in torch ops."""
    groups = _groups(weight)  # [N, K/32, 32]
    low, high = torch.aminmax(groups, dim=-1, keepdim=True)  # [N, K/32, 1] each
    d = (high - low) / 15
    codes = torch.trunc((groups - low) * _inverse(d) + 0.5).clamp_(0, 15).to(torch.uint8)  # [N, K/32, 32]
    nibbles = codes[..., :16] | (codes[..., 16:] << 4)  # element j low, j + 16 high: [N, K/32, 16]
    return torch.cat((_half_bytes(d), _half_bytes(low), nibbles), dim=-1).contiguous()


def q4_1_from_codes(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int) -> torch.Tensor:
    """A checkpoint's own 4-bit codes uint8 [N, K] with per-group scales and zero points [N, K/group]
    (w = (q - zero) * scale, group a multiple of 32) -> Q4_1 blocks [N, K/32, 20]: d = scale, m = -zero * scale,
    the codes unchanged (only m is rounded, to float16)."""
    rows, cols = codes.shape
    repeat = group // BLOCK
    d = scales.float().repeat_interleave(repeat, dim=1).unsqueeze(-1)  # [N, K/32, 1]
    m = (-zeros.float() * scales.float()).repeat_interleave(repeat, dim=1).unsqueeze(-1)
    q = codes.view(rows, cols // BLOCK, BLOCK)
    nibbles = q[..., :16] | (q[..., 16:] << 4)  # element j low, j + 16 high: [N, K/32, 16]
    return torch.cat((_half_bytes(d), _half_bytes(m), nibbles), dim=-1).contiguous()


def pack_q8_0(weight: torch.Tensor) -> torch.Tensor:
    """weight [N, K] -> uint8 [N, K/32, 34]: per block w = d * q, q in -127..127."""
    _check_blocks(weight)
    native = pack_native("q8_0", weight)
    return native if native is not None else reference_q8_0(weight)


def reference_q8_0(weight: torch.Tensor) -> torch.Tensor:
    """pack_q8_0 in torch ops."""
    groups = _groups(weight)  # [N, K/32, 32]
    d = groups.abs().amax(dim=-1, keepdim=True) / 127  # [N, K/32, 1]
    scaled = groups * _inverse(d)
    codes = (scaled.abs() + 0.5).floor_().copysign_(scaled).to(torch.int8)  # C roundf: halves away from 0
    return torch.cat((_half_bytes(d), codes.view(torch.uint8)), dim=-1).contiguous()


def _check_blocks(weight: torch.Tensor) -> None:
    if weight.dim() != 2 or weight.shape[1] % BLOCK:
        raise ValueError(f"block packing needs a 2-D weight whose input size is a multiple of {BLOCK}, "
                         f"got shape {tuple(weight.shape)}")


def _groups(weight: torch.Tensor) -> torch.Tensor:
    _check_blocks(weight)
    rows, cols = weight.shape
    return weight.float().reshape(rows, cols // BLOCK, BLOCK)


def _inverse(d: torch.Tensor) -> torch.Tensor:
    """1 / d, and 0 where d is 0 (a constant block: every code 0)."""
    return torch.where(d == 0, 0.0, 1.0 / d)


def _half_bytes(x: torch.Tensor) -> torch.Tensor:
    """float32 [N, G, 1] -> float16's little-endian bytes, uint8 [N, G, 2]."""
    return x.half().view(torch.uint8)
