"""What the host CPU computes natively (from /proc/cpuinfo), and the matmul paths the plugin picks for it.

A packed layer runs narrow steps on the native block kernels and, where that measured faster,
wide steps on the dense weight in the model's dtype (never a rounder one: a float32 model keeps
float32 products, so it stays on transformers' float32 tokens). Measured per layer of SmolLM2-135M
(benchmarks/bench_cpu_linear.py, one thread, an AVX-512 VNNI + BF16 + AMX Xeon), ms:

    rows   float32 GEMM   bfloat16 GEMM (oneDNN, AMX)   VNNI blocks
      24       1.69            0.65                         0.86
      64       3.42            1.02                         2.60
     256      11.71            2.51                        11.19

So with VNNI a bfloat16 model hands steps above 16 rows to its bf16 weight, and a float32 model
keeps no dense copy at all (the blocks match its GEMM at 256 rows and beat it below, for a
quarter of the memory). On AVX2 the blocks beat the float32 GEMM up to 24-32 rows (Zen 3), and a
bf16 GEMM without bf16 hardware ran 6x slower than float32, so bf16 models stay on the blocks.
Since then the bf16 weight is prepacked for oneDNN (dense_gemm.py), 2.2-2.4x faster than the
column above at 17-64 rows; the crossover stayed at 16 (`bench_cpu_linear.py --threads 1`: at 16
rows the prepacked GEMM and the VNNI blocks were within 10% of each other, above it the GEMM won).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from tokenmill_cpu.dense_gemm import prepacking_available

CPUINFO = "/proc/cpuinfo"
# --dtype auto's mode for quantized models where HostIsa.auto_mode holds (named in logs and `tokenmill plugins`)
AUTO_MODE = "float32 activations, packed layers' wide steps on bf16 GEMMs"


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
    def blocks(self) -> str:
        """The block matmul's path here (quant_matmul.cpp picks the same at run time)."""
        return "avx512_vnni" if self.vnni512 else ("avx2" if "avx2" in self.flags else "portable")

    @property
    def paged_decode(self) -> str:
        """The paged decode kernel's path for bf16, float32 and float16 caches (paged_decode.cpp picks the same at run time)."""
        needs = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"}
        return "avx512_bf16" if needs <= self.flags else "generic"

    @property
    def auto_mode(self) -> bool:
        """Whether --dtype auto runs quantized models in AUTO_MODE here: float32 activations, narrow
        steps on the blocks, steps wider than bf16's crossover on a bf16 prepacked dense copy. Needs
        bf16 dot products in hardware and oneDNN's prepacked bf16 GEMM (dense_gemm.py)."""
        return self.bf16 and self.max_block_rows(torch.bfloat16) is not None and prepacking_available()

    def max_block_rows(self, dtype: torch.dtype) -> int | None:
        """Up to this many rows a `dtype` model's packed layer runs on the block kernels, above it on
        its dense weight; None: always the blocks (no dense copy is kept)."""
        if dtype == torch.bfloat16:
            return 16 if self.bf16 and self.vnni512 else (24 if self.bf16 else None)
        if dtype == torch.float32:
            return None if self.vnni512 else 32
        return None

    def describe(self) -> str:
        """One line for `tokenmill plugins`: the extensions in use and the paths they choose."""
        parts = []
        for dtype in (torch.bfloat16, torch.float32):
            rows = self.max_block_rows(dtype)
            packed = " (oneDNN, prepacked)" if dtype == torch.bfloat16 and prepacking_available() else ""
            gemm = "" if rows is None else f", above {rows} rows the {str(dtype)[6:]} GEMM{packed}"
            parts.append(f"{str(dtype)[6:]} models: blocks{gemm}")
        if self.auto_mode:
            rows = self.max_block_rows(torch.bfloat16)
            parts.append(f"quantized models under --dtype auto: {AUTO_MODE} (blocks up to {rows} rows)")
        amx = ", AMX" if self.amx else ""
        cache = " (float32 models: float16 KV cache under --kv-cache-dtype auto)" if self.paged_decode == "avx512_bf16" else ""
        return f"block matmul {self.blocks}{amx}; " + "; ".join(parts) + f"; paged decode {self.paged_decode}{cache}"


@lru_cache(maxsize=4)
def host_isa(cpuinfo_path: str = CPUINFO) -> HostIsa:
    """The host's flags (empty where /proc/cpuinfo cannot be read: the portable choices)."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as f:
            line = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        line = ""
    return HostIsa(frozenset(line.partition(":")[2].split()))
