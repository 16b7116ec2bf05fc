"""CudaKVAllocator: sizes the KV pool from a profiled peak and owns its GPU tensors.

Sizing, as in vLLM: the pool gets `gpu_memory_utilization` of the card, less what is already in
use (CUDA context, weights, other processes) and less the activation peak of the largest step.
The engine measures that peak by running its biggest step through `profile_peak` once the
weights are loaded and before asking `available_kv_bytes`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from tokenmill.errors import TokenmillError
from tokenmill.plugin_base import KVAllocatorBase

GiB = 1 << 30
DEFAULT_UTILIZATION = 0.9
ENV_UTILIZATION = "TOKENMILL_GPU_MEMORY_UTILIZATION"
UNPROFILED_RESERVE_FRACTION = 0.05  # held back for activations when no step was profiled

log = logging.getLogger(__name__)


class KVBudgetError(TokenmillError, ValueError):
    """The KV-cache budget asked for (or left over) does not fit on the GPU."""


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    """How available_kv_bytes arrived at its answer, in bytes; kept for the start-up report."""

    total: int
    utilization: float
    in_use: int  # context + weights + other processes, after emptying torch's cache
    activation_peak: int
    profiled: bool
    kv_bytes: int

    def describe(self) -> str:
        """One line for the start-up log."""
        peak = f"{self.activation_peak / GiB:.2f} GiB activation peak" + ("" if self.profiled else " (unprofiled reserve)")
        return (
            f"KV cache {self.kv_bytes / GiB:.2f} GiB = {self.utilization:.2f} x {self.total / GiB:.2f} GiB "
            f"- {self.in_use / GiB:.2f} GiB in use - {peak}"
        )


def _utilization_default() -> float:
    raw = os.environ.get(ENV_UTILIZATION)
    return float(raw) if raw else DEFAULT_UTILIZATION


class CudaKVAllocator(KVAllocatorBase):
    """One zeroed cache tensor per layer on one GPU; blocks are dim 1 of each tensor.

    :param device_index: the CUDA device (the tensor-parallel rank's local GPU).
    :param gpu_memory_utilization: share of the card tokenmill may fill, in (0, 1]; the engine passes
        --gpu-memory-utilization; None: 0.9 or $TOKENMILL_GPU_MEMORY_UTILIZATION. Copy and swap
        come from KVAllocatorBase (host copies pinned).
    """

    pin_host = True

    def __init__(self, device_index: int = 0, gpu_memory_utilization: float | None = None) -> None:
        self.device = torch.device("cuda", device_index)
        self.gpu_memory_utilization = gpu_memory_utilization or _utilization_default()
        self.activation_peak_bytes: int | None = None  # set by profile_peak
        self.last_budget: MemoryBudget | None = None

    def profile_peak(self, fn: Callable[[], Any]) -> int:
        """Run `fn` (the engine's largest step) and record the memory it allocates at its peak.

        Call after the weights are loaded and before the KV pool exists. Returns the peak bytes
        above what was allocated when it started; the largest of several calls is kept.
        """
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        start = torch.cuda.memory_allocated(self.device)
        fn()
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - start
        self.activation_peak_bytes = max(peak, self.activation_peak_bytes or 0)
        torch.cuda.empty_cache()
        return peak

    def budget(self) -> MemoryBudget:
        """The default KV budget from the card's state now (see the module docstring)."""
        utilization = self.gpu_memory_utilization
        if not 0.0 < utilization <= 1.0:
            raise KVBudgetError(f"gpu_memory_utilization must be in (0, 1], got {utilization}")
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        profiled = self.activation_peak_bytes is not None
        peak = self.activation_peak_bytes if profiled else int(total * UNPROFILED_RESERVE_FRACTION)
        in_use = total - free
        kv = int(utilization * total) - in_use - peak
        return MemoryBudget(total, utilization, in_use, peak, profiled, kv)

    def available_kv_bytes(self, requested_bytes: int | None) -> int:
        """`requested_bytes` if it fits beside the activation peak; None: the profiled budget."""
        budget = self.budget()
        self.last_budget = budget
        if requested_bytes is None:
            if budget.kv_bytes <= 0:
                raise KVBudgetError(
                    f"no GPU memory is left for the KV cache ({budget.describe()}); raise "
                    f"gpu_memory_utilization (${ENV_UTILIZATION}), lower --max-num-batched-tokens, or use a smaller model"
                )
            log.info("%s", budget.describe())
            return budget.kv_bytes
        free = budget.total - budget.in_use - budget.activation_peak
        if requested_bytes <= 0 or requested_bytes > free:
            raise KVBudgetError(
                f"--kv-cache-memory asks for {requested_bytes / GiB:.2f} GiB but only {max(free, 0) / GiB:.2f} GiB "
                f"of {torch.cuda.get_device_name(self.device)} is free beside the activation peak; "
                f"lower --kv-cache-memory or leave it unset"
            )
        return int(requested_bytes)

    def allocate(self, num_layers: int, shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
        """num_layers zeroed tensors, each `shape` (e.g. (2, N, S, Hkv, D)), on this GPU."""
        return [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]

    def free(self, kv_caches: list[torch.Tensor]) -> None:
        """Drop the pool's tensors and hand the cached memory back to the driver."""
        super().free(kv_caches)
        torch.cuda.empty_cache()
