"""The ROCm platform description and its availability check (a HIP build of torch, an AMD GPU, triton)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from tokenmill.interfaces import Availability
from tokenmill.plugin_base import probe_availability

# The plugin contract version this plugin was written for; the core refuses it if that differs.
BUILT_FOR_CONTRACT = "2.0"


@dataclass(frozen=True, slots=True)
class RocmPlatform:
    """AMD GPUs through torch's HIP build, which torch exposes as the "cuda" device type."""

    availability: Availability
    name: str = "rocm"
    device_type: str = "cuda"  # torch drives HIP devices through its "cuda" device type
    priority: int = 90
    contract_version: str = BUILT_FOR_CONTRACT
    supported_dtypes: tuple[str, ...] = ("bfloat16", "float16", "float32")
    dist_backend: str = "nccl"  # torch maps the "nccl" backend to RCCL on ROCm
    static_shapes: bool = False
    graph_capture: str | None = "hip_graphs"  # through torch.cuda.CUDAGraph, which is a HIP graph on ROCm

    def is_available(self) -> Availability:
        """The probe's answer, made when the platform was described; never raises."""
        return self.availability


def make_platform() -> RocmPlatform:
    """The platform for this process, with torch's build, the GPU and triton probed once."""
    found: list[str] = []
    availability = probe_availability(lambda: _missing_requirement(found), "ROCm")
    if availability.available:
        availability = Availability(True, found[0])
    return RocmPlatform(availability)


def _missing_requirement(found: list[str]) -> str | None:
    """The first thing this machine lacks for ROCm, or None (appending a description of the GPU to `found`)."""
    import torch

    hip = getattr(torch.version, "hip", None)
    if hip is None:
        return (
            f"torch {torch.__version__} has no ROCm/HIP build (torch.version.hip is None); "
            "install a ROCm wheel of torch from https://download.pytorch.org/whl/ on a machine with an AMD GPU"
        )
    if not torch.cuda.is_available():
        return (
            f"torch is built for ROCm {hip} but sees no AMD GPU "
            "(torch.cuda.is_available() is False); check /dev/kfd access and HIP_VISIBLE_DEVICES"
        )
    for module, dist in (("triton", "triton"), ("tokenmill_triton", "tokenmill-triton")):
        if importlib.util.find_spec(module) is None:
            return f"{dist} is not installed: pip install 'tokenmill[rocm]'"
    name = torch.cuda.get_device_name(0)
    arch = getattr(torch.cuda.get_device_properties(0), "gcnArchName", "")
    found.append(f"{torch.cuda.device_count()} x {name}{f' ({arch})' if arch else ''}, ROCm {hip}")
    return None
