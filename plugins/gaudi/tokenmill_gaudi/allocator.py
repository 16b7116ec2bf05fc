"""GaudiAllocator: sizes the KV pool from the card's memory statistics and owns its tensors on the HPU.

Sizing follows the CUDA plugin: `memory_utilization` of the card's Limit, less what is in use
(weights, the runtime) and less the activation peak of the largest step, measured in
`profile_peak` as MaxInUse above InUse. Statistics come from habana's memory_stats() (the
stubs simulate a card whose InUse counts the pool this allocator made).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from tokenmill.plugin_base import KVAllocatorBase

from tokenmill_gaudi.runtime import runtime

GiB = 1 << 30
UNPROFILED_RESERVE_FRACTION = 0.05  # held back for activations when no step was profiled


class GaudiAllocator(KVAllocatorBase):
    """One zeroed cache tensor per layer on card `device_index`; copy and swap from KVAllocatorBase."""

    def __init__(self, device_index: int = 0, memory_utilization: float = 0.9) -> None:
        self.rt = runtime()
        self.device = self.rt.device(device_index)
        self.memory_utilization = memory_utilization or 0.9
        self.activation_peak: int | None = None
        self._allocated = 0

    def _stats(self) -> dict[str, int]:
        return self.rt.hpu.memory_stats(self.device)

    def profile_peak(self, fn: Callable[[], Any]) -> int:
        """Run `fn` (the largest step) and return the bytes it took at its peak above the start."""
        self.rt.hpu.reset_peak_memory_stats(self.device)
        start = self._stats()["InUse"]
        fn()
        self.rt.mark_step()
        peak = max(0, self._stats()["MaxInUse"] - start)
        self.activation_peak = max(peak, self.activation_peak or 0)
        return peak

    def available_kv_bytes(self, requested_bytes: int | None) -> int:
        """`requested_bytes` if it fits beside what is in use and the peak; None: the utilization budget."""
        stats = self._stats()
        limit, in_use = stats["Limit"], stats["InUse"]
        peak = self.activation_peak if self.activation_peak is not None else int(limit * UNPROFILED_RESERVE_FRACTION)
        if requested_bytes is None:
            budget = int(self.memory_utilization * limit) - in_use - peak
            if budget <= 0:
                raise ValueError(f"no HPU memory is left for the KV cache: {self.memory_utilization:.2f} x "
                                 f"{limit / GiB:.2f} GiB minus {in_use / GiB:.2f} GiB in use and a "
                                 f"{peak / GiB:.2f} GiB activation peak; raise --gpu-memory-utilization")
            return budget
        free = limit - in_use - peak
        if requested_bytes <= 0 or requested_bytes > free:
            raise ValueError(f"--kv-cache-memory asks for {requested_bytes} bytes but {max(free, 0)} bytes of the "
                             f"HPU are free beside the activation peak; lower --kv-cache-memory or leave it unset")
        return int(requested_bytes)

    def allocate(self, num_layers: int, shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
        """num_layers zeroed tensors of `shape` on the card."""
        caches = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        nbytes = sum(c.numel() * c.element_size() for c in caches)
        if self.rt.stubs:
            self.rt.hpu.track(nbytes)
        self._allocated += nbytes
        return caches

    def free(self, kv_caches: list[torch.Tensor]) -> None:
        """Drop the pool (the stubs' InUse falls by what this allocator made)."""
        super().free(kv_caches)
        if self.rt.stubs:
            self.rt.hpu.untrack(self._allocated)
        self._allocated = 0
