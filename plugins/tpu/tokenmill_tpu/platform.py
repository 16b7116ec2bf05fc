"""The TPU platform description and its availability check (torch_xla with a PJRT device).

On a Cloud TPU VM PJRT drives the TPU. With PJRT_DEVICE=CPU set explicitly the same plugin runs
its XLA graphs on XLA's CPU device: available, ranked below the cpu plugin (chosen by name only),
and saying so, which is how CI runs the conformance kit without a TPU.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from tokenmill.interfaces import Availability
from tokenmill.plugin_base import probe_availability

# The plugin contract version this plugin was written for; the core refuses it if that differs.
BUILT_FOR_CONTRACT = "2.0"
XLA_CPU_PRIORITY = 4  # below cpu's 10: XLA's CPU device is for testing, picked with --device tpu


@dataclass(frozen=True, slots=True)
class TpuPlatform:
    """Google TPUs through torch_xla, torch device type "xla"."""

    availability: Availability
    name: str = "tpu"
    device_type: str = "xla"
    priority: int = 80
    contract_version: str = BUILT_FOR_CONTRACT
    supported_dtypes: tuple[str, ...] = ("bfloat16", "float32")
    dist_backend: str = "xla"
    static_shapes: bool = True  # XLA compiles one program per shape, so shapes are bucketed
    graph_capture: str | None = "xla"

    def is_available(self) -> Availability:
        """The probe's answer, made when the platform was described; never raises."""
        return self.availability


def make_platform() -> TpuPlatform:
    """The platform for this process: TPU, XLA's CPU device (PJRT_DEVICE=CPU), or why neither."""
    kind: list[str] = []
    availability = probe_availability(lambda: _missing_requirement(kind), "a TPU", "TPU through torch_xla's PJRT runtime")
    if availability.available and kind == ["CPU"]:
        note = ("XLA's CPU device (PJRT_DEVICE=CPU): the plugin's bucketed XLA graphs run on the host, for "
                "testing; on a TPU VM set PJRT_DEVICE=TPU")
        return TpuPlatform(Availability(True, note), priority=XLA_CPU_PRIORITY, supported_dtypes=("float32", "bfloat16"))
    return TpuPlatform(availability)


def _missing_requirement(kind: list[str]) -> str | None:
    """The first thing this machine lacks, or None (appending the PJRT device type to `kind`)."""
    if importlib.util.find_spec("torch_xla") is None:
        return "torch_xla is not installed: pip install 'tokenmill[tpu]' on a Cloud TPU VM (it pulls torch-xla)"
    requested = os.environ.get("PJRT_DEVICE", "")
    if requested and requested not in ("TPU", "CPU"):
        return f"PJRT_DEVICE={requested} is not a device this plugin drives; set PJRT_DEVICE=TPU (or CPU for testing)"
    import torch_xla.runtime as xr

    device = xr.device_type()
    if device == "CPU" and requested != "CPU":
        return ("torch_xla found no TPU (PJRT fell back to its CPU device); run on a TPU VM, or set "
                "PJRT_DEVICE=CPU to run the plugin on XLA's CPU device for testing")
    if device not in ("TPU", "CPU"):
        return f"torch_xla's PJRT device is {device!r}, not 'TPU'; run on a TPU VM or set PJRT_DEVICE=TPU"
    kind.append(device)
    return None
