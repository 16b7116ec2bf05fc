"""The int4_groups linear method on the Triton kernels: GPTQ / AWQ layers run from their own codes."""

from __future__ import annotations

import torch

from tokenmill.interfaces import StoredInt4

from tokenmill_triton.int4_matmul import Int4Weight, int4_matmul, pack_int4

DENSE_GROUP = 32  # pack(weight) for a float weight: min-max groups of this many inputs


class Int4GroupsMethod:
    """LinearMethod "int4_groups": w = (q - zero) * scale per group of any multiple of 32 inputs."""

    scheme = "int4_groups"

    def pack_stored(self, stored: StoredInt4, weight: torch.Tensor) -> Int4Weight | None:
        """A checkpoint's codes, scales and zero points (float16 in the kernel); None for groups or
        input sizes that are not multiples of 32."""
        cols = stored.codes.shape[1]
        if stored.group_size % 32 or cols % 32:
            return None
        return pack_int4(stored.codes, stored.scales, stored.zeros, stored.group_size)

    def pack(self, weight: torch.Tensor) -> Int4Weight:
        """A float weight [N, K] quantized min-max in groups of 32 (asymmetric, as int4_groups defines)."""
        rows, cols = weight.shape
        groups = weight.float().view(rows, cols // DENSE_GROUP, DENSE_GROUP)
        low, high = torch.aminmax(groups, dim=-1)  # [N, K/32]
        scale = ((high - low) / 15).clamp_min(1e-8)
        zero = (-low / scale).round_().clamp_(0, 15)
        codes = (groups / scale[..., None] + zero[..., None]).round_().clamp_(0, 15).to(torch.uint8)
        return pack_int4(codes.view(rows, cols), scale, zero, DENSE_GROUP)

    def apply(self, packed: Int4Weight, x: torch.Tensor) -> torch.Tensor:
        """x [T, K] -> [T, N] in x's dtype."""
        return int4_matmul(x, packed)
