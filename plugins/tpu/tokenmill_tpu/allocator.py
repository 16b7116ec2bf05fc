"""TpuAllocator: sizes the KV pool from torch_xla's memory figures and allocates it on the XLA device.

On a TPU, xm.get_memory_info gives the HBM limit and use: the pool gets `memory_utilization` of
the limit less what is used (weights and runtime). XLA's CPU device reports no allocator stats, so
there the pool takes host RAM as the CPU plugin does (a quarter of what is free, at most 4 GiB).
The pool is materialised at once (a sync), so the first step graph does not carry its zeros.
"""

from __future__ import annotations

import os

import torch

from tokenmill.plugin_base import KVAllocatorBase

from tokenmill_tpu import xla_runtime

GiB = 1 << 30
HOST_CAP, HOST_FRACTION = 4 * GiB, 0.25


def _host_free_bytes() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class TpuAllocator(KVAllocatorBase):
    """One zeroed cache tensor per layer on the XLA device; copy and swap from KVAllocatorBase."""

    def __init__(self, memory_utilization: float = 0.9) -> None:
        self.device = xla_runtime.device()
        self.memory_utilization = memory_utilization or 0.9

    def free_bytes(self) -> tuple[int, str]:
        """(bytes the pool may take by default, where the figure came from)."""
        info = xla_runtime.memory_info()
        if info is None:
            return int(min(HOST_CAP, _host_free_bytes() * HOST_FRACTION)), "host RAM (XLA's CPU device has no allocator stats)"
        budget = int(self.memory_utilization * info["bytes_limit"]) - info["bytes_used"]
        return budget, f"torch_xla: {info['bytes_used']} of {info['bytes_limit']} bytes in use"

    def available_kv_bytes(self, requested_bytes: int | None) -> int:
        """`requested_bytes` if it fits, else the default budget (see the module docstring)."""
        budget, source = self.free_bytes()
        if requested_bytes is None:
            if budget <= 0:
                raise ValueError(f"no device memory is left for the KV cache ({source}); raise --gpu-memory-utilization")
            return budget
        info = xla_runtime.memory_info()
        free = info["bytes_limit"] - info["bytes_used"] if info else _host_free_bytes()
        if requested_bytes <= 0 or requested_bytes > free:
            raise ValueError(f"--kv-cache-memory asks for {requested_bytes} bytes but {max(free, 0)} are free "
                             f"({source}); lower --kv-cache-memory or leave it unset")
        return int(requested_bytes)

    def allocate(self, num_layers: int, shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
        """num_layers zeroed tensors of `shape`, materialised on the device."""
        caches = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        xla_runtime.sync()
        return caches
