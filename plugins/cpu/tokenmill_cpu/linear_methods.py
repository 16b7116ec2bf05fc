"""Weight-only int4 and int8 linear layers on the CPU: the native block kernels, else torch's.

The first choice is the plugin's native matmul on GGUF's Q4_1 / Q8_0 blocks (quant_matmul.cpp),
which runs a decode step's weights at memory bandwidth. Where it cannot build (no compiler),
torch's private packed kernels (aten._weight_int4pack_mm_for_cpu, aten._weight_int8pack_mm) take
over: they need no compiler, take bfloat16 activations, and run ~2x slower on this project's AVX2
CI box (benchmarks/bench_cpu_linear.py measures them all). With many rows (prefill, wide batches)
a dense GEMM can win: then the layer keeps its weight in the model's dtype too and runs steps wider
than the method's crossover on it (isa.py has the per-instruction-set choices and their figures).
Why keep the weight rather than dequantize per wide step: it is already in memory at load (the
loader dequantizes), a bf16 model's costs 2 bytes a weight and a tied head shares the embedding,
while dequantizing 106 M weights per step would cost more than the 64-row bf16 GEMMs themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from tokenmill.interfaces import StoredInt4

from tokenmill_cpu.casts import Casts, casts
from tokenmill_cpu.dense_gemm import DenseGemm
from tokenmill_cpu.isa import AUTO_MODE, host_isa
from tokenmill_cpu.quant_blocks import BLOCK, pack_q4_1, pack_q8_0, q4_1_from_codes
from tokenmill_cpu.quant_matmul import QuantBlocks, QuantMatmul, quant_matmul

log = logging.getLogger(__name__)

GROUP = 32  # inputs per int4 scale/offset group
MAX_PACKED_ROWS = 24  # torch's kernels: above this many rows float32 is faster (measured crossover: 24-32)
MAX_BLOCK_ROWS = 32  # the fewest rows a float32 model runs on the native blocks, on any host (isa.py)
_COMPUTE = torch.bfloat16  # the activation dtype torch's packed kernels are vectorised for
BLOCK_LAYOUTS = {"int4": ("q4_1", pack_q4_1), "int8": ("q8_0", pack_q8_0),  # scheme -> GGUF block layout
                 "int4_groups": ("q4_1", pack_q4_1)}
TORCH_GROUPS = (32, 64, 128, 256)  # the group sizes torch's int4 kernel takes


@dataclass(slots=True)
class PackedWeight:
    """One layer's packed weight, plus the dense one that wide steps run on."""

    codes: QuantBlocks | torch.Tensor  # native: blocks for its path; torch int4: uint8 [N, K/2]; int8: int8 [N, K]
    scales: torch.Tensor | None  # torch int4: bfloat16 [K/32, N, 2] (scale, offset); int8: bfloat16 [N]
    dense: DenseGemm | None  # the [N, K] weight in the model dtype, or None when only the packed kernel runs
    max_packed_rows: int = MAX_PACKED_ROWS  # steps wider than this run on `dense`
    group: int = GROUP  # torch int4: inputs per scale group


def kernels_available() -> bool:
    """Whether this torch build has the packed CPU kernels (torch >= 2.6)."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(torch.ops.aten, "_weight_int8pack_mm")


class _PackedMethod:
    """Shared apply: the dense weight for steps wider than the layer's crossover, else the packed kernel."""

    scheme = ""
    compute_dtype = _COMPUTE  # the activation dtype the kernel takes

    def apply(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        """x [T, K] -> [T, N] in x's dtype."""
        if packed.dense is not None and x.shape[0] > packed.max_packed_rows:
            return packed.dense(x)
        if x.dtype == self.compute_dtype:  # e.g. float32 decode on the native kernels: no casts to make
            return self._kernel(packed, x)
        cast = _casts()
        return cast.to(self._kernel(packed, cast.to(x, self.compute_dtype)), x.dtype)

    def _kernel(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _crossover(self, dtype: torch.dtype) -> int | None:
        """Rows above which a `dtype` model's layer runs dense; None keeps no dense weight."""
        return MAX_PACKED_ROWS if dtype == torch.float32 else None

    def _packed(self, codes, scales, weight: torch.Tensor) -> PackedWeight:
        rows = self._crossover(weight.dtype)
        dense = None if rows is None else DenseGemm(weight)
        return PackedWeight(codes, scales, dense, MAX_PACKED_ROWS if rows is None else rows)


@lru_cache(maxsize=1)
def _casts() -> Casts:
    return casts()


@lru_cache(maxsize=1)
def _log_auto_mode(rows: int) -> None:
    log.info("--dtype auto on a quantized model: %s (steps up to %d rows on the float32 blocks); "
             "--dtype float32 runs float32 everywhere", AUTO_MODE, rows)


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
        return self._packed(packed, scales, weight)

    def _kernel(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed.codes, packed.group, packed.scales)


class Int4GroupsLinearMethod(Int4LinearMethod):
    """A GPTQ/AWQ checkpoint's own codes on torch's int4 kernel, in its group size where torch takes it."""

    scheme = "int4_groups"

    def pack_stored(self, stored: StoredInt4, weight: torch.Tensor) -> PackedWeight | None:
        """Codes unchanged; scales and offsets rounded to bfloat16 (the kernel's (q - 8) * s + o form)."""
        rows, cols = stored.codes.shape
        group, scales, zeros = stored.group_size, stored.scales, stored.zeros
        if group not in TORCH_GROUPS:
            if group % GROUP or cols % GROUP:
                return None
            scales, zeros = (t.repeat_interleave(group // GROUP, dim=1) for t in (scales, zeros))
            group = GROUP
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(stored.codes.to(torch.int32), 1)
        offsets = (8 - zeros) * scales  # [N, K/G]
        table = torch.stack([scales.t(), offsets.t()], dim=-1).to(_COMPUTE).contiguous()  # [K/G, N, 2]
        return replace(self._packed(packed, table, weight), group=group)


class Int8LinearMethod(_PackedMethod):
    """Symmetric 8 bits with one scale per output row."""

    scheme = "int8"

    def pack(self, weight: torch.Tensor) -> PackedWeight:
        """weight [N, K] -> int8 codes [N, K] and bf16 scales [N]."""
        w = weight.float()
        scale = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)  # [N]
        codes = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        return self._packed(codes, scale.to(_COMPUTE), weight)

    def _kernel(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, packed.codes, packed.scales)


class BlockLinearMethod(_PackedMethod):
    """The native kernels on GGUF blocks: int4 as Q4_1 (w = d * q + m per 32 inputs), int8 as Q8_0."""

    compute_dtype = torch.float32

    def __init__(self, scheme: str, kernel: QuantMatmul,
                 crossover: dict[torch.dtype, int | None] | None = None, gemm_dtype: torch.dtype | None = None) -> None:
        """`crossover` (model dtype -> rows above which the dense weight runs, None for never)
        defaults to the host's measured choices (isa.py); `gemm_dtype` rounds the dense weight
        (None: the model's dtype)."""
        self.scheme = scheme
        self._pack = BLOCK_LAYOUTS[scheme][1]
        self._matmul = kernel
        self._crossovers = crossover or {}
        self.gemm_dtype = gemm_dtype

    def auto_variant(self) -> BlockLinearMethod:
        """The method for a model whose dtype --dtype auto chose (the platform's quantized_dtypes:
        float32 on a CPU with bf16 dot products and oneDNN prepacking, platform.py): narrow steps
        on the blocks in float32 as ever, wide ones on a bf16 prepacked GEMM (AUTO_MODE)."""
        host = host_isa()
        if not host.auto_mode:
            return self
        rows = host.max_block_rows(torch.bfloat16)
        _log_auto_mode(rows)
        return BlockLinearMethod(self.scheme, self._matmul, {torch.float32: rows}, torch.bfloat16)

    def _packed(self, codes, scales, weight: torch.Tensor) -> PackedWeight:
        rows = self._crossover(weight.dtype)
        dense = None if rows is None else DenseGemm(weight, gemm_dtype=self.gemm_dtype)
        return PackedWeight(codes, scales, dense, MAX_PACKED_ROWS if rows is None else rows)

    def pack(self, weight: torch.Tensor) -> PackedWeight:
        """weight [N, K], K a multiple of 32 -> GGUF blocks in the kernel's layout (GGUF-born weights
        repack exactly), plus the weight itself where wide steps run dense."""
        return self._packed(self._matmul.pack(self._pack(weight)), None, weight)

    def pack_stored(self, stored: StoredInt4, weight: torch.Tensor) -> PackedWeight | None:
        """int4_groups: a GPTQ/AWQ layer's codes as Q4_1 blocks (groups of 32k split into 32s, exactly)."""
        if self.scheme != "int4_groups" or stored.group_size % BLOCK or stored.codes.shape[1] % BLOCK:
            return None
        blocks = q4_1_from_codes(stored.codes, stored.scales, stored.zeros, stored.group_size)
        return self._packed(self._matmul.pack(blocks), None, weight)

    def _crossover(self, dtype: torch.dtype) -> int | None:
        return self._crossovers.get(dtype, host_isa().max_block_rows(dtype))

    def _kernel(self, packed: PackedWeight, x: torch.Tensor) -> torch.Tensor:
        return self._matmul(x, packed.codes)


TORCH_METHODS = {"int4": Int4LinearMethod, "int8": Int8LinearMethod, "int4_groups": Int4GroupsLinearMethod}
SCHEMES = frozenset(TORCH_METHODS)


def linear_method(scheme: str, native: bool = True) -> _PackedMethod | None:
    """The fastest method for `scheme` here: native blocks, else torch's kernels, else None."""
    if scheme not in SCHEMES:
        return None
    kernel = quant_matmul(BLOCK_LAYOUTS[scheme][0]) if native else None
    if kernel is not None:
        return BlockLinearMethod(scheme, kernel)
    return TORCH_METHODS[scheme]() if kernels_available() else None
