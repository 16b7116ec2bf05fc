"""CpuPlatform: what the CPU reference plugin says about the host it runs on."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.interfaces import Availability
from tokenmill_cpu.ipex import ipex_version
from tokenmill_cpu.native_build import describe

# The plugin contract version this plugin was written against; the core refuses a mismatch.
BUILT_FOR_CONTRACT = 1


@dataclass(frozen=True, slots=True)
class CpuPlatform:
    """The host CPU. Always available: it is the reference every other platform is compared with.

    `ipex_version` is set when intel_extension_for_pytorch imports and matches torch's major.minor;
    the plugin then takes its norm from it. `kernels` says whether the native kernels can be built
    here (a C++ compiler, TOKENMILL_CPU_NATIVE not 0) or torch's ops run instead.
    """

    name: str = "cpu"
    device_type: str = "cpu"
    priority: int = 10
    contract_version: int = BUILT_FOR_CONTRACT
    supported_dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")  # first = --dtype auto
    dist_backend: str = "gloo"
    static_shapes: bool = False
    graph_capture: str | None = None
    ipex_version: str | None = None
    kernels: str = "torch kernels"

    def is_available(self) -> Availability:
        """The CPU is always there; the reason says which kernels run: native ones, IPEX's, torch's."""
        kernels = self.kernels
        if self.ipex_version:
            kernels += f", intel_extension_for_pytorch {self.ipex_version}"
        return Availability(True, f"host CPU ({kernels})")


def make_platform() -> CpuPlatform:
    """The platform object for this process, with the optional IPEX probe done once."""
    return CpuPlatform(ipex_version=ipex_version(), supported_dtypes=dtypes_by_preference(),
                       kernels=describe())


def dtypes_by_preference(cpuinfo_path: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """float32 first on every CPU (`cpuinfo_path` names the flags file the choice was once made from).

    --dtype is the activations' dtype. bf16 arithmetic pays where the work is matrix products, and
    those get it without a bf16 model: on CPUs with AVX512-BF16 or AMX the linear methods run wide
    steps on a bf16 GEMM copy (isa.py). Float32 activations keep the native norm, rotary and
    activation kernels (torch's bf16 elementwise ops convert to float32 and back, several times per
    op) and the ~16-bit block kernels, and keep the defaults on transformers' float32 greedy tokens:
    on SmolLM2's 8 x 64 check (an AVX-512 BF16 + AMX Xeon) a bfloat16 model agreed on 0.973 of the
    tokens, float32 activations with the bf16 GEMM copy on 1.000. On an AVX2-only EPYC, bf16
    matmuls ran 6x slower than fp32 at batch 64.
    """
    del cpuinfo_path  # the same answer on every CPU now; kept for callers that pass it
    return ("float32", "bfloat16", "float16")
