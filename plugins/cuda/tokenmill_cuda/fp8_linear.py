"""The fp8 linear method on sm89+ GPUs: e4m3 weights, activations rounded to e4m3 per token, torch._scaled_mm.

Each step's activations get one scale per row (amax / 448), so a row with a large outlier does not
flatten the others. Hopper (sm90+) scales rows and output channels inside the GEMM; on Ada (sm89)
_scaled_mm takes one scale per operand, so the per-token and per-channel scales are applied to
its float32 output instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenmill.interfaces import StoredFp8

E4M3_MAX = 448.0


@dataclass(slots=True)
class Fp8Weight:
    """One layer: e4m3 codes [N, K] and float32 scales [1, N] (per tensor: the same value N times)."""

    codes: torch.Tensor
    scales: torch.Tensor


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, K] -> (e4m3 [T, K], float32 scales [T, 1]) with x ~= codes * scales."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12) / E4M3_MAX
    return (x.float() / scale).clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale


class Fp8Method:
    """LinearMethod "fp8" for GPUs of compute capability >= 8.9."""

    scheme = "fp8"

    def __init__(self, rowwise: bool) -> None:
        self.rowwise = rowwise  # sm90+: per-row and per-channel scales inside _scaled_mm

    def pack_stored(self, stored: StoredFp8, weight: torch.Tensor) -> Fp8Weight | None:
        """The checkpoint's codes as they are; None when K or N is not a multiple of 16 (_scaled_mm's rule)."""
        rows, cols = stored.weight.shape
        if rows % 16 or cols % 16:
            return None
        scales = stored.scale.float().expand(rows).reshape(1, rows).contiguous()
        return Fp8Weight(stored.weight.contiguous(), scales)

    def pack(self, weight: torch.Tensor) -> Fp8Weight:
        """A float weight [N, K] rounded to e4m3 with one scale per output channel."""
        codes, scale = quantize_rows(weight)
        return Fp8Weight(codes, scale.reshape(1, -1).contiguous())

    def apply(self, packed: Fp8Weight, x: torch.Tensor) -> torch.Tensor:
        """x [T, K] -> [T, N] in x's dtype."""
        if x.shape[0] == 0:
            return x.new_empty((0, packed.codes.shape[0]))
        codes, scale = quantize_rows(x)
        if self.rowwise and x.dtype == torch.bfloat16:
            return torch._scaled_mm(codes, packed.codes.t(), scale_a=scale, scale_b=packed.scales,
                                    out_dtype=torch.bfloat16)
        one = torch.ones((), dtype=torch.float32, device=x.device)
        out = torch._scaled_mm(codes, packed.codes.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        return (out * scale * packed.scales).to(x.dtype)
