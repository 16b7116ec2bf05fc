"""CpuKVAllocator: sizes the KV block pool from host RAM and allocates it lazily (copy, swap, free from the base)."""

from __future__ import annotations

import math
import mmap
import os

import torch

from tokenmill.errors import TokenmillError
from tokenmill.plugin_base import KVAllocatorBase

GiB = 1 << 30
DEFAULT_CAP_BYTES = 4 * GiB  # the default pool never exceeds this...
DEFAULT_RAM_FRACTION = 0.25  # ...nor this share of the RAM available now
MEMINFO_PATH = "/proc/meminfo"


class KVBudgetError(TokenmillError, ValueError):
    """The requested KV-cache budget does not fit in the host's available RAM."""


def available_ram_bytes(meminfo_path: str = MEMINFO_PATH) -> int:
    """RAM the OS can give us now: MemAvailable from /proc/meminfo, else free pages via sysconf."""
    try:
        with open(meminfo_path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def lazy_zeros(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A zeroed tensor on an anonymous mmap: the OS hands out zero pages on first touch.

    torch.zeros writes every byte up front, which commits the whole budget at start-up (a 4 GiB
    pool took about a minute on a small VM); here RAM is committed only as blocks get used, and
    munmap returns it when the last tensor viewing the mapping goes.
    """
    num_bytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if num_bytes == 0:
        return torch.zeros(shape, dtype=dtype)
    buffer = mmap.mmap(-1, num_bytes)  # anonymous and private: zero-filled, page aligned
    return torch.frombuffer(buffer, dtype=torch.uint8).view(dtype).view(shape)


def _fmt(num_bytes: int) -> str:
    return f"{num_bytes / GiB:.2f} GiB ({num_bytes} bytes)"


class CpuKVAllocator(KVAllocatorBase):
    """Allocates one zeroed cache tensor per layer in host RAM; blocks are dim 1 of each tensor."""

    def __init__(self, meminfo_path: str = MEMINFO_PATH) -> None:
        self.device = torch.device("cpu")
        self._meminfo_path = meminfo_path

    def available_kv_bytes(self, requested_bytes: int | None) -> int:
        """`requested_bytes` when it fits in available RAM; None: min(4 GiB, 25% of available RAM)."""
        free = available_ram_bytes(self._meminfo_path)
        if requested_bytes is None:
            return int(min(DEFAULT_CAP_BYTES, free * DEFAULT_RAM_FRACTION))
        if requested_bytes <= 0:
            raise KVBudgetError(f"--kv-cache-memory must be positive, got {requested_bytes} bytes")
        if requested_bytes > free:
            raise KVBudgetError(
                f"--kv-cache-memory asks for {_fmt(requested_bytes)} but only {_fmt(free)} of RAM is "
                f"available; lower --kv-cache-memory or leave it unset for a default of "
                f"min(4 GiB, 25% of available RAM)"
            )
        return int(requested_bytes)

    def allocate(self, num_layers: int, shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
        """num_layers zeroed tensors, each `shape` (e.g. (2, N, S, Hkv, D)) in `dtype`."""
        return [lazy_zeros(shape, dtype) for _ in range(num_layers)]
