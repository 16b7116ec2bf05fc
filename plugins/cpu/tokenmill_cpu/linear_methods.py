"""Weight-only int4 and int8 linear layers on the CPU, through torch's packed CPU matmul kernels.

Why torch's private ops (aten._weight_int4pack_mm_for_cpu, aten._weight_int8pack_mm): they are
the vectorised weight-only kernels PyTorch ships for CPU decoding, so no compiler is needed, and
on this project's AVX2 CI box they run a decode step's matmuls ~5x faster than float32 ones
(memory bandwidth, not arithmetic, bounds a decode; benchmarks/bench_cpu_linear.py measures it).
Both take bfloat16 activations. With many rows (prefill, wide batches) the float32 GEMM wins, so
a float32 model keeps its dense weight too and uses it above MAX_PACKED_ROWS rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

GROUP = 32  # inputs per int4 scale/offset group
MAX_PACKED_ROWS = 24  # above this many rows the dense float32 GEMM is faster (measured crossover: 24-32)
_COMPUTE = torch.bfloat16  # the activation dtype the packed kernels are vectorised for


@dataclass(slots=True)
class PackedWeight:
    """One layer's packed weight, plus the dense one where that is faster for many rows."""

    codes: torch.Tensor  # int4: uint8 [N, K/2] in torch's CPU layout; int8: int8 [N, K]
    scales: torch.Tensor  # int4: bfloat16 [K/32, N, 2] (scale, offset); int8: bfloat16 [N]
    dense: torch.Tensor | None  # float32 [N, K], or None when only the packed kernel runs


def kernels_available() -> bool:
    """Whether this torch build has the packed CPU kernels (torch >= 2.6)."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(torch.ops.aten, "_weight_int8pack_mm")


class _PackedMethod:
    """Shared apply: dense GEMM for many rows of a float32 model, else the packed kernel in bf16."""

    scheme = ""

    def apply(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        """x [T, K] -> [T, N] in x's dtype."""
        if packed.dense is not None and x.shape[0] > MAX_PACKED_ROWS:
            return F.linear(x, packed.dense)
        return self._kernel(packed, x.to(_COMPUTE)).to(x.dtype)

    def _kernel(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _dense(weight: torch.Tensor) -> torch.Tensor | None:
        return weight if weight.dtype == torch.float32 else None


class Int4LinearMethod(_PackedMethod):
    """Asymmetric 4-bit groups of 32 along K: w = q * scale + offset (the GGUF Q4_1 scheme)."""

    scheme = "int4"

    def pack(self, weight: torch.Tensor) -> PackedWeight:
        """weight [N, K], K a multiple of 32 -> 4-bit codes; Q4_1 weights keep their exact codes."""
        rows, cols = weight.shape
        if cols % GROUP:
            raise ValueError(f"int4 packing needs the input size to be a multiple of {GROUP}, got {cols}")
        groups = weight.float().view(rows, cols // GROUP, GROUP)  # [N, K/32, 32]
        low, high = torch.aminmax(groups, dim=-1)  # [N, K/32] each
        scale = ((high - low) / 15).clamp_min(torch.finfo(torch.float32).tiny)
        codes = (groups - low[..., None]).div_(scale[..., None]).round_().clamp_(0, 15)  # [N, K/32, 32]
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.view(rows, cols).to(torch.int32), 1)
        # the kernel computes (q - 8) * scale + offset, so its offset is low + 8 * scale
        scales = torch.stack([scale.t(), (low + 8 * scale).t()], dim=-1).to(_COMPUTE).contiguous()
        return PackedWeight(packed, scales, self._dense(weight))

    def _kernel(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed.codes, GROUP, packed.scales)


class Int8LinearMethod(_PackedMethod):
    """Symmetric 8 bits with one scale per output row."""

    scheme = "int8"

    def pack(self, weight: torch.Tensor) -> PackedWeight:
        """weight [N, K] -> int8 codes [N, K] and bf16 scales [N]."""
        w = weight.float()
        scale = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)  # [N]
        codes = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        return PackedWeight(codes, scale.to(_COMPUTE), self._dense(weight))

    def _kernel(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, packed.codes, packed.scales)


METHODS = {"int4": Int4LinearMethod, "int8": Int8LinearMethod}
