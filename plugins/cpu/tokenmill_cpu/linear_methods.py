"""Weight-only int4 and int8 linear layers on the CPU: the native block kernels, else torch's.

The first choice is the plugin's native matmul on GGUF's Q4_1 / Q8_0 blocks (quant_matmul.cpp),
which runs a decode step's weights at memory bandwidth. Where it cannot build (no compiler),
torch's private packed kernels (aten._weight_int4pack_mm_for_cpu, aten._weight_int8pack_mm) take
over: they need no compiler, take bfloat16 activations, and run ~2x slower on this project's AVX2
CI box (benchmarks/bench_cpu_linear.py measures them all). With many rows (prefill, wide batches)
a dense GEMM wins, so every layer also keeps a dense copy in the host's GEMM dtype (isa.py:
bfloat16 where the CPU has bf16 arithmetic, float32 elsewhere) and runs steps wider than a
method's `max_packed_rows` on it. Why a kept copy rather than dequantizing per wide step: the copy
costs 2 bytes a weight in bf16 (~210 MB for SmolLM2-135M, whose tied head shares the embedding),
while dequantizing 106 M weights per step would cost more than the 64-row bf16 GEMMs themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from tokenmill_cpu.casts import Casts, casts
from tokenmill_cpu.isa import host_isa
from tokenmill_cpu.quant_blocks import pack_q4_1, pack_q8_0
from tokenmill_cpu.quant_matmul import QuantBlocks, QuantMatmul, quant_matmul

GROUP = 32  # inputs per int4 scale/offset group
MAX_PACKED_ROWS = 24  # torch's kernels: above this many rows float32 is faster (measured crossover: 24-32)
MAX_BLOCK_ROWS = host_isa().max_block_rows  # the native blocks' crossover on this host (isa.py)
_COMPUTE = torch.bfloat16  # the activation dtype torch's packed kernels are vectorised for
BLOCK_LAYOUTS = {"int4": ("q4_1", pack_q4_1), "int8": ("q8_0", pack_q8_0)}  # scheme -> GGUF block layout


@dataclass(slots=True)
class PackedWeight:
    """One layer's packed weight, plus the dense one that wide steps run on."""

    codes: QuantBlocks | torch.Tensor  # native: blocks for its path; torch int4: uint8 [N, K/2]; int8: int8 [N, K]
    scales: torch.Tensor | None  # torch int4: bfloat16 [K/32, N, 2] (scale, offset); int8: bfloat16 [N]
    dense: torch.Tensor | None  # [N, K] in the host's GEMM dtype, or None when only the packed kernel runs


def kernels_available() -> bool:
    """Whether this torch build has the packed CPU kernels (torch >= 2.6)."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(torch.ops.aten, "_weight_int8pack_mm")


class _PackedMethod:
    """Shared apply: the dense GEMM copy for steps wider than `max_packed_rows`, else the packed kernel."""

    scheme = ""
    compute_dtype = _COMPUTE  # the activation dtype the kernel takes
    max_packed_rows = MAX_PACKED_ROWS
    dense_dtype: torch.dtype | None = None  # the wide steps' GEMM dtype; None: the host's (isa.py)

    def apply(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        """x [T, K] -> [T, N] in x's dtype."""
        if packed.dense is not None and x.shape[0] > self.max_packed_rows:
            return _wide(packed.dense, x)
        if x.dtype == self.compute_dtype:  # e.g. float32 decode on the native kernels: no casts to make
            return self._kernel(packed, x)
        return self._kernel(packed, x.to(self.compute_dtype)).to(x.dtype)

    def _kernel(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _dense(self, weight: torch.Tensor) -> torch.Tensor:
        """The wide steps' copy: `weight` itself when it already has the GEMM dtype (so a tied head
        shares the embedding), else a contiguous cast."""
        dtype = self.dense_dtype or host_isa().wide_dtype
        return weight if weight.dtype == dtype else weight.to(dtype).contiguous()


def _wide(dense: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x [T, K] @ dense.T in dense's dtype -> [T, N] in x's; float32 <-> bf16 by the native casts."""
    if x.dtype == dense.dtype:
        return F.linear(x, dense)
    if x.dtype == torch.float32 and dense.dtype == torch.bfloat16:
        cast = _casts()
        return cast.to_f32(F.linear(cast.to_bf16(x), dense))
    return F.linear(x.to(dense.dtype), dense).to(x.dtype)


@lru_cache(maxsize=1)
def _casts() -> Casts:
    return casts()


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

    def __init__(self, scheme: str, kernel: QuantMatmul, max_packed_rows: int | None = None,
                 dense_dtype: torch.dtype | None = None) -> None:
        """`max_packed_rows` and `dense_dtype` default to the host's measured choices (isa.py)."""
        self.scheme = scheme
        self._pack = BLOCK_LAYOUTS[scheme][1]
        self._matmul = kernel
        self.max_packed_rows = host_isa().max_block_rows if max_packed_rows is None else max_packed_rows
        self.dense_dtype = dense_dtype

    def pack(self, weight: torch.Tensor) -> PackedWeight:
        """weight [N, K], K a multiple of 32 -> GGUF blocks in the kernel's layout (GGUF-born weights
        repack exactly), plus the dense copy."""
        return PackedWeight(self._matmul.pack(self._pack(weight)), None, self._dense(weight))

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
