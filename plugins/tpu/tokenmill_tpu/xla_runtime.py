"""The torch_xla calls the plugin makes, in one place: the device, the step cut, compile counts, memory.

Imported only once the tpu platform is chosen (torch_xla is heavy and absent on most machines).
torch_xla.sync() is the current name of xm.mark_step(); older releases only have the latter.
"""

from __future__ import annotations

import torch
import torch_xla
import torch_xla.core.xla_model as xm
import torch_xla.debug.metrics as metrics
import torch_xla.runtime as xr


def device() -> torch.device:
    """The process's XLA device (xla:0)."""
    return torch_xla.device()


def on_tpu() -> bool:
    """True when PJRT drives a TPU (not XLA's CPU device)."""
    return xr.device_type() == "TPU"


def sync() -> None:
    """Cut the lazy graph here: compile it (or take it from the cache) and run it."""
    if hasattr(torch_xla, "sync"):
        torch_xla.sync()
    else:
        xm.mark_step()


def compile_count() -> int:
    """XLA compilations so far in this process (torch_xla.debug.metrics CompileTime samples)."""
    data = metrics.metric_data("CompileTime")
    return int(data[0]) if data else 0


def memory_info() -> dict[str, int] | None:
    """{'bytes_limit', 'bytes_used'} from torch_xla for this device, or None where PJRT has no allocator stats
    (XLA's CPU device says GetAllocatorStats is not supported)."""
    try:
        info = xm.get_memory_info(device())
    except (RuntimeError, NotImplementedError):
        return None
    limit = info.get("bytes_limit", info.get("kb_total", 0) * 1024)
    used = info.get("bytes_used", (info.get("kb_total", 0) - info.get("kb_free", 0)) * 1024)
    return {"bytes_limit": int(limit), "bytes_used": int(used)}


def initialize_cache(path: str) -> bool:
    """Turn on XLA's persistent compilation cache at `path` (once per process); False if it was already set."""
    try:
        xr.initialize_cache(path, readonly=False)
    except Exception:  # already initialised in this process, or unsupported on this runtime
        return False
    return True
