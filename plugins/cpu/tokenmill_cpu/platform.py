"""CpuPlatform: what the CPU reference plugin says about the host it runs on."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.interfaces import Availability
from tokenmill_cpu.ipex import ipex_status, ipex_version
from tokenmill_cpu.isa import HostIsa, host_isa
from tokenmill_cpu.native_build import compiler, describe

# The plugin contract version this plugin was written against; the core refuses a mismatch.
BUILT_FOR_CONTRACT = "2.0"


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
    contract_version: str = BUILT_FOR_CONTRACT
    supported_dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")  # first = --dtype auto
    quantized_dtypes: tuple[str, ...] = ()  # first = --dtype auto for a quantized model (see make_platform)
    kv_cache_dtypes: dict[str, str] = field(default_factory=dict)  # --kv-cache-dtype auto, by model dtype
    dist_backend: str = "gloo"
    static_shapes: bool = False
    graph_capture: str | None = None
    ipex_version: str | None = None
    kernels: str = "torch kernels"
    ipex_status: str = ""  # IPEX in use, or why not (see tokenmill_cpu.ipex)

    def is_available(self) -> Availability:
        """The CPU is always there; the reason says which kernels run: native ones, IPEX's, torch's."""
        kernels = self.kernels
        if self.ipex_status:
            kernels += f"; {self.ipex_status}"
        elif self.ipex_version:
            kernels += f", intel_extension_for_pytorch {self.ipex_version}"
        return Availability(True, f"host CPU ({kernels})")


def make_platform() -> CpuPlatform:
    """The platform object for this process, with the optional IPEX probe done once."""
    return CpuPlatform(ipex_version=ipex_version(), supported_dtypes=dtypes_by_preference(),
                       quantized_dtypes=quantized_dtypes(), kv_cache_dtypes=kv_cache_dtypes(), kernels=describe(),
                       ipex_status=ipex_status())


def quantized_dtypes() -> tuple[str, ...]:
    """float32 where quantized models run isa.AUTO_MODE (bf16 dot products, oneDNN prepacking and a C++
    compiler for the native blocks); else () and --dtype auto gives them the dense choice.

    Why: under bf16 activations SmolLM2's greedy tokens agreed with transformers on 0.979 of the
    check's tokens; float32 activations agree on all of them. The blocks run float32 decode steps
    as fast as bf16 ones, and wide steps take bf16 GEMMs, so batch speed stays near bf16's.
    """
    return ("float32",) if host_isa().auto_mode and compiler() is not None else ()


def kv_cache_dtypes(isa: HostIsa | None = None) -> dict[str, str]:
    """Under --dtype auto, a float16 cache for float32 models where the paged decode kernel's
    avx512_bf16 path runs (it widens halves exactly with vcvtph2ps); else {}: the model's dtype.

    Why: a float32 model's cache then holds half the bytes, and decode attention reads half (64
    requests x 250 tokens, SmolLM2's 30 layers, 2 threads: 29.2 ms a step against 46.7 ms for
    float32). SmolLM2's greedy check keeps the float32 cache's agreement with transformers (0.996
    under --dtype auto, the same flip). A bfloat16 cache would cost that check another token.
    The generic path's float16 cache ran 5x slower than its float32 one, so it is not chosen there.
    """
    if (isa or host_isa()).paged_decode != "avx512_bf16" or compiler() is None:
        return {}
    return {"float32": "float16"}


def dtypes_by_preference(cpuinfo_path: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """bfloat16 first where the CPU computes it natively (AVX512-BF16, AMX); else float32 first.

    Measured on an AVX2-only EPYC: bf16 matmuls ran 6x slower than fp32 at batch 64, and
    single-stream decode gained nothing, so fp32 is the better default there.
    """
    try:
        with open(cpuinfo_path, encoding="utf-8") as f:
            flags = set(f.read().split())
    except OSError:
        flags = set()
    if flags & {"avx512_bf16", "amx_bf16"}:
        return ("bfloat16", "float32", "float16")
    return ("float32", "bfloat16", "float16")
