"""The ROCm platform description and its availability check (a HIP build of torch, an AMD GPU)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from tokenmill.interfaces import Availability
from tokenmill.plugin_base import probe_availability

# The plugin contract version this plugin was written for; the core refuses it if that differs.
BUILT_FOR_CONTRACT = "2.0"

SKELETON_REASON = (
    "the rocm plugin is a skeleton: its attention backend, KV allocator and communicator are not "
    "written yet; use --device cpu until a tokenmill-rocm release supplies them"
)


@dataclass(frozen=True, slots=True)
class RocmPlatform:
    """AMD GPUs through torch's HIP build, which torch exposes as the "cuda" device type."""

    name: str = "rocm"
    device_type: str = "cuda"  # torch drives HIP devices through its "cuda" device type
    priority: int = 90
    contract_version: str = BUILT_FOR_CONTRACT
    supported_dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")
    dist_backend: str = "nccl"  # torch maps the "nccl" backend to RCCL on ROCm
    static_shapes: bool = False
    graph_capture: str | None = "cuda_graphs"  # HIP graphs through torch.cuda.CUDAGraph

    def is_available(self) -> Availability:
        """Check torch's build, the GPU and triton, in that order; never raises."""
        return probe_availability(_missing_requirement, "ROCm")


def _missing_requirement() -> str | None:
    """The first thing this machine lacks for ROCm, or None when it has everything."""
    import torch

    if getattr(torch.version, "hip", None) is None:
        return (
            f"torch {torch.__version__} has no ROCm/HIP build (torch.version.hip is None); "
            "install a ROCm wheel of torch from https://download.pytorch.org/whl/ on a machine with an AMD GPU"
        )
    if not torch.cuda.is_available():
        return (
            f"torch is built for ROCm {torch.version.hip} but sees no AMD GPU "
            "(torch.cuda.is_available() is False); check /dev/kfd access and HIP_VISIBLE_DEVICES"
        )
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed: pip install 'tokenmill[rocm]'"
    return SKELETON_REASON
