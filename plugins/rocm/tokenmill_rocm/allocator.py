"""RocmKVAllocator: the KV pool on an AMD GPU, sized from HIP's free/total memory and a profiled peak.

A HIP build of torch answers torch.cuda's memory API (mem_get_info, max_memory_allocated,
empty_cache) from the HIP runtime, so the pool is sized exactly as the CUDA plugin sizes it:
`memory_utilization` of the card, less what is in use and less the largest step's activation
peak. The class is the CUDA plugin's allocator (this plugin already depends on tokenmill-cuda for
its graph runner); copy-on-write, swap and free come from KVAllocatorBase beneath it.
"""

from __future__ import annotations

from tokenmill_cuda.allocator import CudaKVAllocator


class RocmKVAllocator(CudaKVAllocator):
    """One zeroed cache tensor per layer on GPU `device_index` (HIP memory through torch.cuda)."""
