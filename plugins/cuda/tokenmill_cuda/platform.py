"""CudaPlatform: what the CUDA plugin says about the NVIDIA GPUs torch can see, and why not."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field

import torch

from tokenmill.interfaces import Availability

# The plugin contract version this plugin was written against; the core refuses a mismatch.
BUILT_FOR_CONTRACT = "2.0"

BF16_MIN_CAPABILITY = (8, 0)  # Ampere and later have bf16 tensor cores
ALL_DTYPES = ("bfloat16", "float16", "float32")  # by preference: --dtype auto takes the first
# Cards of this much memory or more (H100, H200, A100 80GB) default to a larger step and batch: on an
# H200, the 500-request benchmark ran 71-73 req/s at 512 sequences x 8192 tokens against 50-63 at the
# core's 256 x 2048 (benchmarks/cuda/RESULTS.md); smaller cards keep the core's defaults.
LARGE_CARD_BYTES = 70 << 30
LARGE_CARD_SCHEDULER = {"max_num_seqs": 512, "max_num_batched_tokens": 8192}


@dataclass(frozen=True, slots=True)
class CudaPlatform:
    """NVIDIA GPUs through torch's CUDA build; Triton kernels for attention and fused ops.

    The availability probe runs once in `make_platform`; `is_available` only reports it.
    """

    availability: Availability
    name: str = "cuda"
    device_type: str = "cuda"
    priority: int = 100
    contract_version: str = BUILT_FOR_CONTRACT
    supported_dtypes: tuple[str, ...] = ALL_DTYPES
    dist_backend: str = "nccl"
    static_shapes: bool = False
    graph_capture: str | None = "cuda_graphs"
    scheduler_defaults: dict[str, int] = field(default_factory=dict)  # optional: unset --max-num-* take these
    # optional: schedule step n+1 while step n runs (engine/inflight.py); --no-async-scheduling turns it off
    async_scheduling: bool = True

    def is_available(self) -> Availability:
        """The probe's result: available with the GPU's name, or the reason it cannot run."""
        return self.availability


def probe() -> tuple[Availability, tuple[int, int] | None]:
    """(availability, compute capability of device 0); never raises."""
    if getattr(torch.version, "hip", None):
        return Availability(False, f"torch {torch.__version__} is a ROCm build; use the rocm plugin (pip install 'tokenmill[rocm]')"), None
    if torch.version.cuda is None:
        return Availability(False, _cpu_torch_reason()), None
    try:
        if not torch.cuda.is_available():
            return Availability(False, "torch.cuda.is_available() is False: no NVIDIA GPU/driver visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"), None
        capability = torch.cuda.get_device_capability(0)
        gpu = torch.cuda.get_device_name(0)
        count = torch.cuda.device_count()
    except Exception as exc:  # a broken driver must explain itself, not crash discovery
        return Availability(False, f"CUDA initialisation failed: {type(exc).__name__}: {exc}"), None
    if importlib.util.find_spec("triton") is None:
        return Availability(False, "triton is not installed; pip install 'tokenmill[cuda]' (it brings triton)"), capability
    return Availability(True, f"{count} x {gpu} (sm_{capability[0]}{capability[1]}), CUDA {torch.version.cuda}"), capability


def _cpu_torch_reason() -> str:
    """A CPU build of torch: say whether this machine has an NVIDIA GPU at all, and what to do."""
    build = f"torch {torch.__version__} was built without CUDA"
    if not (os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi")):
        return (f"no NVIDIA GPU is visible on this machine (no NVIDIA driver found), and {build}; run on the "
                f"CPU (--device cpu, or leave --device out), or on a GPU machine install a CUDA build of torch")
    return f"{build}, but an NVIDIA driver is present; install a CUDA build: pip install --force-reinstall torch==2.13.0"


def make_platform() -> CudaPlatform:
    """The platform for this process; bfloat16 is offered only on compute capability >= 8.0."""
    availability, capability = probe()
    dtypes = ALL_DTYPES
    if capability is not None and capability < BF16_MIN_CAPABILITY:
        dtypes = ("float16", "float32")
    return CudaPlatform(availability=availability, supported_dtypes=dtypes,
                        scheduler_defaults=_scheduler_defaults(availability))


def _scheduler_defaults(availability: Availability) -> dict[str, int]:
    """The larger step and batch on cards of LARGE_CARD_BYTES or more (device 0); nothing otherwise."""
    if not availability.available:
        return {}
    try:
        memory = torch.cuda.get_device_properties(0).total_memory
    except Exception:  # noqa: BLE001  the probe said available; a failure here only loses the suggestion
        return {}
    return dict(LARGE_CARD_SCHEDULER) if memory >= LARGE_CARD_BYTES else {}
