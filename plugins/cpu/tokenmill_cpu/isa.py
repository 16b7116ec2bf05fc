"""What the host CPU computes natively (from /proc/cpuinfo), and the matmul paths the plugin picks for it.

The choices are measured ones (benchmarks/bench_cpu_linear.py, figures in its docstring): the
native block kernels for narrow steps, a dense GEMM copy for wide ones, in bfloat16 where the CPU
has bf16 arithmetic (oneDNN runs it on AMX tiles or AVX512-BF16) and in float32 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

CPUINFO = "/proc/cpuinfo"


@dataclass(frozen=True, slots=True)
class HostIsa:
    """The instruction-set extensions that decide the CPU plugin's paths."""

    flags: frozenset[str]

    @property
    def bf16(self) -> bool:
        """bf16 dot products in hardware (AVX512-BF16 or AMX-BF16)."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"})

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.flags and "amx_tile" in self.flags

    @property
    def vnni512(self) -> bool:
        return {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= self.flags

    @property
    def wide_dtype(self) -> torch.dtype:
        """The dtype of the dense GEMM copy that wide steps run on."""
        return torch.bfloat16 if self.bf16 else torch.float32

    @property
    def max_block_rows(self) -> int:
        """Up to this many rows a step runs on the block kernels; above, on the dense copy.

        AVX-512 VNNI vs a bf16 GEMM on AMX (Sapphire Rapids class, 2 threads): the blocks are 5x
        faster at 1 row and even at about 32. AVX2 blocks vs a float32 GEMM (Zen 3): 1.4x at 16
        rows, even at 24-32.
        """
        return 24 if self.vnni512 else 32

    def describe(self) -> str:
        """One line for `tokenmill plugins`: the extensions in use and the paths they choose."""
        blocks = "avx512_vnni" if self.vnni512 else ("avx2" if "avx2" in self.flags else "portable")
        gemm = f"{'bfloat16' if self.bf16 else 'float32'} GEMM{' (AMX)' if self.amx else ''}"
        return f"block matmul {blocks} up to {self.max_block_rows} rows, then a dense {gemm}"


@lru_cache(maxsize=4)
def host_isa(cpuinfo_path: str = CPUINFO) -> HostIsa:
    """The host's flags (empty where /proc/cpuinfo cannot be read: the portable choices)."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as f:
            line = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        line = ""
    return HostIsa(frozenset(line.partition(":")[2].split()))
