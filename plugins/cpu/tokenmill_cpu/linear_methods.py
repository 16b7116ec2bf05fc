"""Weight-only int4 and int8 linear layers on the CPU: the native block kernels, else torch's.

The first choice is the plugin's native matmul on GGUF's Q4_1 / Q8_0 blocks (quant_matmul.cpp),
which runs a decode step's weights at memory bandwidth. Where it cannot build (no compiler),
torch's private packed kernels (aten._weight_int4pack_mm_for_cpu, aten._weight_int8pack_mm) take
over: they need no compiler, take bfloat16 activations, and run ~2x slower on this project's AVX2
CI box (benchmarks/bench_cpu_linear.py measures all three against float32). With many rows
(prefill, wide batches) the float32 GEMM wins, so a float32 model keeps its dense weight too and
uses it above a method's `max_packed_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokenmill_cpu.quant_blocks import pack_q4_1, pack_q8_0
from tokenmill_cpu.quant_matmul import QuantMatmul, quant_matmul

GROUP = 32  # inputs per int4 scale/offset group
MAX_PACKED_ROWS = 24  # torch's kernels: above this many rows float32 is faster (measured crossover: 24-32)
MAX_BLOCK_ROWS = 32  # native vs float32 (benchmarks/bench_cpu_linear.py): 1.4x at 16 rows, about even at 24-32
_COMPUTE = torch.bfloat16  # the activation dtype torch's packed kernels are vectorised for
BLOCK_LAYOUTS = {"int4": ("q4_1", pack_q4_1), "int8": ("q8_0", pack_q8_0)}  # scheme -> GGUF block layout


@dataclass(slots=True)
class PackedWeight:
    """One layer's packed weight, plus the dense one where that is faster for many rows."""

    codes: torch.Tensor  # native: uint8 [N, K/32, block bytes]; torch int4: uint8 [N, K/2]; int8: int8 [N, K]
    scales: torch.Tensor | None  # torch int4: bfloat16 [K/32, N, 2] (scale, offset); int8: bfloat16 [N]
    dense: torch.Tensor | None  # float32 [N, K], or None when only the packed kernel runs


def kernels_available() -> bool:
    """Whether this torch build has the packed CPU kernels (torch >= 2.6)."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(torch.ops.aten, "_weight_int8pack_mm")


class _PackedMethod:
    """Shared apply: dense GEMM for many rows of a float32 model, else the packed kernel."""

    scheme = ""
    compute_dtype = _COMPUTE  # the activation dtype the kernel takes
    max_packed_rows = MAX_PACKED_ROWS

    def apply(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        """x [T, K] -> [T, N] in x's dtype."""
        if packed.dense is not None and x.shape[0] > self.max_packed_rows:
            return F.linear(x, packed.dense)
        if x.dtype == self.compute_dtype:  # e.g. float32 decode on the native kernels: no casts to make
            return self._kernel(packed, x)
        return self._kernel(packed, x.to(self.compute_dtype)).to(x.dtype)

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


class BlockLinearMethod(_PackedMethod):
    """The native kernels on GGUF blocks: int4 as Q4_1 (w = d * q + m per 32 inputs), int8 as Q8_0."""

    compute_dtype = torch.float32
    max_packed_rows = MAX_BLOCK_ROWS

    def __init__(self, scheme: str, kernel: QuantMatmul) -> None:
        self.scheme = scheme
        self._pack = BLOCK_LAYOUTS[scheme][1]
        self._matmul = kernel

    def pack(self, weight: torch.Tensor) -> PackedWeight:
        """weight [N, K], K a multiple of 32 -> blocks [N, K/32, bytes]; GGUF-born weights repack exactly."""
        return PackedWeight(self._pack(weight), None, self._dense(weight))

    def _kernel(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        return self._matmul(x, packed.codes)


TORCH_METHODS = {"int4": Int4LinearMethod, "int8": Int8LinearMethod}
SCHEMES = frozenset(TORCH_METHODS)


def linear_method(scheme: str, native: bool = True) -> _PackedMethod | None:
    """The fastest method for `scheme` here: native blocks, else torch's kernels, else None."""
    if scheme not in SCHEMES:
        return None
    kernel = quant_matmul(BLOCK_LAYOUTS[scheme][0]) if native else None
    if kernel is not None:
        return BlockLinearMethod(scheme, kernel)
    return TORCH_METHODS[scheme]() if kernels_available() else None
