"""The TPU platform description and its availability check (torch_xla with a PJRT TPU device)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from tokenmill.interfaces import Availability
from tokenmill.plugin_base import probe_availability

# The plugin contract version this plugin was written for; the core refuses it if that differs.
BUILT_FOR_CONTRACT = "2.0"

SKELETON_REASON = (
    "the tpu plugin is a skeleton: its attention backend, KV allocator and communicator are not "
    "written yet; use --device cpu until a tokenmill-tpu release supplies them"
)


@dataclass(frozen=True, slots=True)
class TpuPlatform:
    """Google TPUs through torch_xla, torch device type "xla"."""

    name: str = "tpu"
    device_type: str = "xla"
    priority: int = 80
    contract_version: str = BUILT_FOR_CONTRACT
    supported_dtypes: tuple[str, ...] = ("float32", "bfloat16")
    dist_backend: str = "xla"
    static_shapes: bool = True  # XLA compiles one program per shape, so shapes are bucketed
    graph_capture: str | None = "xla"

    def is_available(self) -> Availability:
        """Check torch_xla and that its PJRT runtime drives a TPU; never raises."""
        return probe_availability(_missing_requirement, "a TPU")


def _missing_requirement() -> str | None:
    """The first thing this machine lacks for a TPU, or None when it has everything."""
    if importlib.util.find_spec("torch_xla") is None:
        return "torch_xla is not installed: pip install 'tokenmill[tpu]' on a Cloud TPU VM (it pulls torch-xla)"
    import torch_xla.runtime as xr

    kind = xr.device_type()
    if kind != "TPU":
        return f"torch_xla's PJRT device is {kind!r}, not 'TPU'; run on a TPU VM or set PJRT_DEVICE=TPU"
    return SKELETON_REASON
