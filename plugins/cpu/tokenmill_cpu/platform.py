"""CpuPlatform: what the CPU reference plugin says about the host it runs on."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.interfaces import CONTRACT_VERSION, Availability

from tokenmill_cpu.ipex import ipex_version


@dataclass(frozen=True, slots=True)
class CpuPlatform:
    """The host CPU. Always available: it is the reference every other platform is compared with.

    `ipex_version` is set when intel_extension_for_pytorch imports and matches torch's major.minor;
    the plugin then takes its op overrides from it. Without it everything runs in plain torch.
    """

    name: str = "cpu"
    device_type: str = "cpu"
    priority: int = 10
    contract_version: int = CONTRACT_VERSION
    supported_dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")
    dist_backend: str = "gloo"
    static_shapes: bool = False
    graph_capture: str | None = None
    ipex_version: str | None = None

    def is_available(self) -> Availability:
        """The CPU is always there; the reason names the accelerator extension in use, if any."""
        extra = f"intel_extension_for_pytorch {self.ipex_version}" if self.ipex_version else "plain torch"
        return Availability(True, f"host CPU ({extra})")


def make_platform() -> CpuPlatform:
    """The platform object for this process, with the optional IPEX probe done once."""
    return CpuPlatform(ipex_version=ipex_version())
