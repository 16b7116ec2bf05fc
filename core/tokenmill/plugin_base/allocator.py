"""KVAllocatorBase: the block copy, swap and free every allocator shares; subclasses size and allocate."""

from __future__ import annotations

import torch


class KVAllocatorBase:
    """Copy-on-write, swap and free over per-layer caches whose dim 1 is the block.

    A subclass sets `self.device` and implements `available_kv_bytes` and `allocate`. Index tensors
    are built on the host and moved to the device once per call; host copies for swap are pinned
    when `pin_host` is True (accelerators whose torch build supports pinning).
    """

    device: torch.device
    pin_host: bool = False

    def _ids(self, block_ids: list[int]) -> torch.Tensor:
        return torch.tensor(block_ids, dtype=torch.int64).to(self.device)  # [n]

    def copy_blocks(self, kv_caches: list[torch.Tensor], src_to_dst: list[tuple[int, int]]) -> None:
        """For each (src, dst) pair, dst's block becomes a copy of src's, in every layer."""
        if not src_to_dst:
            return
        src, dst = self._ids([s for s, _ in src_to_dst]), self._ids([d for _, d in src_to_dst])  # [P] each
        for cache in kv_caches:  # [2, N, S, Hkv, D]
            cache.index_copy_(1, dst, cache.index_select(1, src))

    def swap_out(self, kv_caches: list[torch.Tensor], block_ids: list[int]) -> list[torch.Tensor]:
        """Per layer, a host tensor [2, len(block_ids), S, Hkv, D] holding those blocks."""
        ids = self._ids(block_ids)
        host = []
        for cache in kv_caches:
            blocks = cache.index_select(1, ids)
            if blocks.device.type == "cpu":
                host.append(blocks)
                continue
            target = torch.empty(blocks.shape, dtype=blocks.dtype, pin_memory=self.pin_host)
            host.append(target.copy_(blocks))
        return host

    def swap_in(self, kv_caches: list[torch.Tensor], host_blocks: list[torch.Tensor], block_ids: list[int]) -> None:
        """Write each layer's host copy back into the pool at `block_ids`."""
        if len(host_blocks) != len(kv_caches):
            raise ValueError(f"swap_in got {len(host_blocks)} host tensors for {len(kv_caches)} layers")
        ids = self._ids(block_ids)
        for cache, host in zip(kv_caches, host_blocks):
            cache.index_copy_(1, ids, host.to(device=cache.device, dtype=cache.dtype, non_blocking=self.pin_host))

    def free(self, kv_caches: list[torch.Tensor]) -> None:
        """Drop the pool's tensors; memory returns when the last reference goes."""
        kv_caches.clear()
