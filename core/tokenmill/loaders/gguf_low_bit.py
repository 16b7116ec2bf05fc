"""Dequantizing GGUF's 2-, 3- and 4-bit super-block types (Q2_K, Q3_K, IQ4_XS, IQ4_NL) with torch.

Each kernel takes uint8 blocks [B, block bytes] and returns float32 [B, weights per block], with
the gguf package's arithmetic in its order (d * sub-scale, then * code, then - min), so the values
are the package's bit for bit (tests compare over random blocks). They run about as fast as
gguf's numpy versions on one core (0.7-1.2x on 2048x2048 tensors) but share gguf_blocks' entry
point, and torch's threads speed them up on an idle many-core host. The layouts are llama.cpp's
ggml-common.h, which gguf.quants mirrors.
"""

from __future__ import annotations

import torch

SUPER = 256  # weights per K-quant / IQ4_XS super-block
# IQ4_NL / IQ4_XS's non-linear 4-bit grid (ggml-common.h kvalues_iq4nl).
IQ4_GRID = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def _half(blocks: torch.Tensor, at: int) -> torch.Tensor:
    """The float16 at byte `at` of every block, as float32 [B, 1]."""
    return blocks[:, at : at + 2].contiguous().view(torch.float16).float()


def _crumbs(packed: torch.Tensor, bits: int, fields: int) -> torch.Tensor:
    """uint8 [B, C, 32] -> [B, C, fields, 32]: field i is (byte >> (bits * i)) & mask."""
    shifts = torch.arange(0, bits * fields, bits, dtype=torch.uint8).view(1, 1, fields, 1)
    return (packed.unsqueeze(2) >> shifts) & ((1 << bits) - 1)


def q2_k(blocks: torch.Tensor) -> torch.Tensor:
    """84 bytes: 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit codes, d, dmin."""
    n = blocks.shape[0]
    scales = blocks[:, :16]
    d, dmin = _half(blocks, 80), _half(blocks, 82)  # [B, 1]
    dl = (d * (scales & 15).float()).view(n, 16, 1)
    ml = (dmin * (scales >> 4).float()).view(n, 16, 1)
    codes = _crumbs(blocks[:, 16:80].reshape(n, 2, 32), 2, 4).reshape(n, 16, 16).float()  # 128 weights a half
    return (dl * codes - ml).view(n, SUPER)


def _q3_k_scales(packed: torch.Tensor) -> torch.Tensor:
    """The 12 scale bytes [B, 12] -> 16 signed 6-bit scales as float32 [B, 16]."""
    n = packed.shape[0]
    low = (packed[:, :8].unsqueeze(1) >> torch.tensor([0, 4], dtype=torch.uint8).view(1, 2, 1)).reshape(n, 16)
    high = (packed[:, 8:12].unsqueeze(1) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(1, 4, 1)).reshape(n, 16)
    six_bit = (low & 15) | ((high & 3) << 4)
    return (six_bit.to(torch.int8) - 32).float()


def q3_k(blocks: torch.Tensor) -> torch.Tensor:
    """110 bytes: 32 bytes of high bits (set = no -4 offset), 64 bytes of 2-bit codes, 12 scale bytes, d."""
    n = blocks.shape[0]
    dl = (_half(blocks, 108) * _q3_k_scales(blocks[:, 96:108])).view(n, 16, 1)
    low = _crumbs(blocks[:, 32:96].reshape(n, 2, 32), 2, 4).reshape(n, 16, 16)
    high = _crumbs(blocks[:, :32].reshape(n, 1, 32), 1, 8).reshape(n, 16, 16) ^ 1
    codes = (low.to(torch.int8) - (high << 2).to(torch.int8)).float()
    return (dl * codes).view(n, SUPER)


def _iq4(nibble_bytes: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, 16] -> grid values float32 [B, C, 32]: low nibbles are 0..15, high ones 16..31."""
    codes = torch.cat((nibble_bytes & 15, nibble_bytes >> 4), dim=-1).long()
    return torch.tensor(IQ4_GRID, dtype=torch.float32)[codes]


def iq4_nl(blocks: torch.Tensor) -> torch.Tensor:
    """18 bytes: float16 d, 16 bytes of codes into the IQ4 grid; w = d * grid[q]."""
    return _half(blocks, 0) * _iq4(blocks[:, 2:].unsqueeze(1))[:, 0]


def iq4_xs(blocks: torch.Tensor) -> torch.Tensor:
    """136 bytes: float16 d, uint16 high scale bits, 4 bytes of low scale nibbles, 8 x 16 code bytes."""
    n = blocks.shape[0]
    high_bits = blocks[:, 2:4].contiguous().view(torch.int16).int() & 0xFFFF  # [B, 1]
    high = (high_bits >> torch.arange(0, 16, 2, dtype=torch.int32).view(1, 8)) & 3  # [B, 8]
    low = (blocks[:, 4:8].unsqueeze(-1) >> torch.tensor([0, 4], dtype=torch.uint8)).reshape(n, 8) & 15
    scales = ((low.int() | (high << 4)).to(torch.int8) - 32).float()  # [B, 8]
    dl = (_half(blocks, 0) * scales).view(n, 8, 1)
    return (dl * _iq4(blocks[:, 8:].reshape(n, 8, 16))).view(n, SUPER)
