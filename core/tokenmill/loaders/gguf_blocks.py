"""Dequantizing GGUF blocks with torch: Q4_0, Q4_1 and Q8_0 here, Q2_K/Q3_K/IQ4_XS/IQ4_NL in gguf_low_bit.

Why not only gguf.dequantize: its numpy version walks the blocks in small groups and takes ~1.2 s
for the default model's tensors, about a tenth of its start-up; these vectorised versions take
~0.2 s and give the same float32 values bit for bit (tests compare against gguf). Other types go
through the gguf package.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType

from tokenmill.loaders import gguf_low_bit

BLOCK = 32  # weights per block in Q4_0, Q4_1 and Q8_0


def _half(blocks: torch.Tensor, at: int) -> torch.Tensor:
    """The float16 at byte `at` of every block, as float32 [rows, blocks, 1]."""
    return blocks[..., at : at + 2].contiguous().view(torch.float16).float()


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 16] -> codes [..., 32] as float32: low nibbles are elements 0..15, high ones 16..31."""
    return torch.cat((packed & 15, packed >> 4), dim=-1).float()


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:  # 18 bytes: float16 d, 16 bytes of codes; w = d * (q - 8)
    return (_nibbles(blocks[..., 2:]) - 8) * _half(blocks, 0)


def _q4_1(blocks: torch.Tensor) -> torch.Tensor:  # 20 bytes: float16 d, float16 m, 16 bytes; w = d * q + m
    return _nibbles(blocks[..., 4:]) * _half(blocks, 0) + _half(blocks, 2)


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:  # 34 bytes: float16 d, 32 int8 codes; w = d * q
    return blocks[..., 2:].contiguous().view(torch.int8).float() * _half(blocks, 0)


_KERNELS = {
    GGMLQuantizationType.Q4_0: (18, _q4_0),
    GGMLQuantizationType.Q4_1: (20, _q4_1),
    GGMLQuantizationType.Q8_0: (34, _q8_0),
    GGMLQuantizationType.Q2_K: (84, gguf_low_bit.q2_k),
    GGMLQuantizationType.Q3_K: (110, gguf_low_bit.q3_k),
    GGMLQuantizationType.IQ4_NL: (18, gguf_low_bit.iq4_nl),
    GGMLQuantizationType.IQ4_XS: (136, gguf_low_bit.iq4_xs),
}
FAST_TYPES = frozenset(_KERNELS)


def dequantize_blocks(raw: np.ndarray, kind: GGMLQuantizationType) -> np.ndarray:
    """A tensor's raw bytes uint8 [..., row bytes] of type `kind` (one of FAST_TYPES) -> float32 [rows, cols]."""
    block_bytes, kernel = _KERNELS[kind]
    data = torch.from_numpy(np.array(raw, dtype=np.uint8, copy=True)).reshape(-1, block_bytes)  # a writable copy
    return kernel(data).reshape(*raw.shape[:-1], -1).numpy()  # kernels: [B, bytes] -> [B, weights]
