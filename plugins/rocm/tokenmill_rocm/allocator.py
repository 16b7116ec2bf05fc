"""RocmKVAllocator: the KV pool on an AMD GPU, sized from HIP's free/total memory and a profiled peak.

The shared KVAllocatorBase supplies copy-on-write, swap (pinned host copies) and free; this class
sizes the pool as the CUDA plugin does, through torch.cuda's memory API, which a HIP build of
torch answers from the HIP runtime: `memory_utilization` of the card, less what is in use and
less the largest step's activation peak.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from tokenmill.plugin_base import KVAllocatorBase

GiB = 1 << 30
UNPROFILED_RESERVE_FRACTION = 0.05


class RocmKVAllocator(KVAllocatorBase):
    """One zeroed cache tensor per layer on GPU `device_index`."""

    pin_host = True

    def __init__(self, device_index: int = 0, memory_utilization: float = 0.9) -> None:
        self.device = torch.device("cuda", device_index)
        self.memory_utilization = memory_utilization or 0.9
        self.activation_peak: int | None = None

    def profile_peak(self, fn: Callable[[], Any]) -> int:
        """Run `fn` (the largest step); the bytes it allocated at its peak above the start."""
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        start = torch.cuda.memory_allocated(self.device)
        fn()
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - start
        self.activation_peak = max(peak, self.activation_peak or 0)
        return peak

    def available_kv_bytes(self, requested_bytes: int | None) -> int:
        """`requested_bytes` if it fits beside the peak; None: the utilization budget."""
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        peak = self.activation_peak if self.activation_peak is not None else int(total * UNPROFILED_RESERVE_FRACTION)
        if requested_bytes is None:
            budget = int(self.memory_utilization * total) - (total - free) - peak
            if budget <= 0:
                raise ValueError(f"no GPU memory is left for the KV cache ({free / GiB:.2f} of {total / GiB:.2f} GiB "
                                 f"free, {peak / GiB:.2f} GiB activation peak); raise --gpu-memory-utilization")
            return budget
        if requested_bytes <= 0 or requested_bytes > free - peak:
            raise ValueError(f"--kv-cache-memory asks for {requested_bytes / GiB:.2f} GiB but {max(free - peak, 0) / GiB:.2f} "
                             f"GiB are free beside the activation peak; lower --kv-cache-memory or leave it unset")
        return int(requested_bytes)

    def allocate(self, num_layers: int, shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
        """num_layers zeroed tensors of `shape` on the GPU."""
        return [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]

    def free(self, kv_caches: list[torch.Tensor]) -> None:
        """Drop the pool and return the cached memory to HIP."""
        super().free(kv_caches)
        torch.cuda.empty_cache()
