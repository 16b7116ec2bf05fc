"""The static_toy KV allocator: host RAM, a small default budget, copy and swap from the core's base."""

from __future__ import annotations

import torch

from tokenmill.plugin_base import KVAllocatorBase

DEFAULT_BYTES = 256 << 20


class StaticToyAllocator(KVAllocatorBase):
    """One zeroed host tensor per layer; 256 MiB unless asked for more (it is an example device)."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    def available_kv_bytes(self, requested_bytes: int | None) -> int:
        """`requested_bytes`, or 256 MiB; refuses what is not positive or absurdly large."""
        if requested_bytes is None:
            return DEFAULT_BYTES
        if requested_bytes <= 0 or requested_bytes > 1 << 40:
            raise ValueError(f"--kv-cache-memory {requested_bytes} bytes is outside (0, 1 TiB] for static_toy")
        return requested_bytes

    def allocate(self, num_layers: int, shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
        """num_layers zeroed tensors of `shape`."""
        return [torch.zeros(shape, dtype=dtype) for _ in range(num_layers)]
