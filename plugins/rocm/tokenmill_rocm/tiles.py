"""The AMD choices for the shared Triton kernels: wavefront 64, tile sizes, warps and stages per head size.

CDNA GPUs (MI200/MI300) run 64-lane wavefronts, so a Triton "warp" is 64 lanes and num_warps=4 is a
256-lane workgroup, twice an NVIDIA one of the same num_warps. With the larger register file per
lane a prefill tile of 128 query rows fits for head sizes up to 128 (the CUDA choice is 64); above
that the tile halves. MFMA instructions want K/V tiles that are multiples of 16 in each dimension.
AMD's Triton backend pipelines through LDS differently from NVIDIA's cp.async path: one stage for
the load-bound decode kernel, and `waves_per_eu` (a HIP-only launch option, left out under the
interpreter) asks the compiler to keep two wavefronts resident per SIMD for latency hiding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

WAVEFRONT_SIZE = 64  # lanes per wavefront on CDNA (gfx90a, gfx942)
INTERPRETER_CUS = 4  # compute units assumed under TRITON_INTERPRET=1: few splits keep tests quick


@dataclass(frozen=True, slots=True)
class DecodeTiles:
    """Launch choices of tokenmill_triton.decode_attention."""

    block_n: int  # tokens per K/V tile
    num_warps: int  # wavefronts per program
    num_stages: int
    launch: dict = field(default_factory=dict)  # backend-only launch options (waves_per_eu)


@dataclass(frozen=True, slots=True)
class PrefillTiles:
    """Launch choices of tokenmill_triton.prefill_attention."""

    block_m: int  # query rows per program
    block_n: int  # keys per tile
    num_warps: int
    num_stages: int
    launch: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RocmTiles:
    """What TritonAttentionBackend takes as `tiles`: both kernels' choices and the CUs to fill."""

    decode: DecodeTiles
    prefill: PrefillTiles
    num_sms: int  # compute units (torch calls them multiprocessors on ROCm too)


def _hip_launch() -> dict:
    """waves_per_eu on a HIP device; nothing under the interpreter, which knows no AMD options."""
    return {} if os.environ.get("TRITON_INTERPRET", "0") == "1" else {"waves_per_eu": 2}


def rocm_tiles(head_size: int, num_cus: int) -> RocmTiles:
    """The tiles for `head_size` on a GPU with `num_cus` compute units."""
    launch = _hip_launch()
    if head_size > 128:
        decode = DecodeTiles(block_n=32, num_warps=4, num_stages=1, launch=launch)
        prefill = PrefillTiles(block_m=64, block_n=32, num_warps=4, num_stages=1, launch=launch)
    else:
        decode = DecodeTiles(block_n=64, num_warps=4, num_stages=1, launch=launch)
        prefill = PrefillTiles(block_m=128, block_n=64, num_warps=4, num_stages=1, launch=launch)
    return RocmTiles(decode, prefill, num_cus)


def compute_units(device) -> int:
    """The GPU's compute units, or INTERPRETER_CUS on the host."""
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRETER_CUS
