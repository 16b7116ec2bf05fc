"""TemplateAllocator: sizes and allocates the KV block pool; copy, swap and free come from the core's base."""

from __future__ import annotations

import torch

from tokenmill.plugin_base import KVAllocatorBase

DEVICE_MEMORY_BYTES = 4 << 30  # stands in for the device's memory; ask your runtime for it
DEFAULT_SHARE = 0.1  # of the usable memory, when --kv-cache-memory is not given


class TemplateAllocator(KVAllocatorBase):
    """One zeroed cache tensor per layer, each shaped by the attention backend (blocks on dim 1)."""

    def __init__(self, device_index: int, memory_utilization: float) -> None:
        self.device = torch.device("cpu")  # your device: torch.device("cuda", device_index), ...
        # What weights, activations and the KV pool may fill together. A real device subtracts what
        # the weights and the profiled activations already take (see KVCacheAllocator.profile_peak).
        self.usable_bytes = int(DEVICE_MEMORY_BYTES * memory_utilization)

    def available_kv_bytes(self, requested_bytes: int | None) -> int:
        """`requested_bytes` when it fits, a default share when None; ValueError naming both when not."""
        if requested_bytes is None:
            return int(self.usable_bytes * DEFAULT_SHARE)
        if not 0 < requested_bytes <= self.usable_bytes:
            raise ValueError(f"--kv-cache-memory {requested_bytes} bytes does not fit: {self.usable_bytes} bytes "
                             f"are usable on this device; ask for less or leave it unset")
        return requested_bytes

    def allocate(self, num_layers: int, shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
        """num_layers zeroed tensors of `shape` in the KV-cache dtype, on the device."""
        return [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
