"""The Habana runtime the plugin drives: habana_frameworks.torch on a Gaudi, or the shipped stubs.

Every other module reaches Habana through `runtime()` alone, so the same plugin logic runs on a
Gaudi and, with TOKENMILL_GAUDI_STUBS=1, on the host CPU. Nothing here is imported at plugin load:
the platform probe calls `runtime()` only once it knows which side to take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Callable

import torch

STUBS_ENV = "TOKENMILL_GAUDI_STUBS"


def stubs_requested() -> bool:
    """True when TOKENMILL_GAUDI_STUBS=1: the plugin runs on its habana-free stubs."""
    return os.environ.get(STUBS_ENV, "") == "1"


@dataclass(frozen=True, slots=True)
class HabanaRuntime:
    """The pieces of habana_frameworks.torch the plugin uses, from the real bridge or the stubs."""

    stubs: bool
    hpu: ModuleType  # is_available, device_count, memory_stats, reset_peak_memory_stats, HPUGraph
    mark_step: Callable[[], None]
    device_type: str  # "hpu" on a Gaudi, "cpu" on the stubs
    dist_backend: str  # "hccl" on a Gaudi, "gloo" on the stubs

    def device(self, index: int = 0) -> torch.device:
        """The torch device of card `index`."""
        return torch.device(self.device_type, index) if self.device_type == "hpu" else torch.device("cpu")

    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[object, torch.Tensor]:
        """Record `fn` (reading only static buffers) as an HPU graph; returns (graph, its output tensor)."""
        graph = self.hpu.HPUGraph()
        if self.stubs:
            return graph, graph.record(fn)
        graph.capture_begin()
        output = fn()
        graph.capture_end()
        return graph, output


@lru_cache(maxsize=2)
def _load(stubs: bool) -> HabanaRuntime:
    if stubs:
        from tokenmill_gaudi.stubs import core, distributed, hpu

        return HabanaRuntime(True, hpu, core.mark_step, hpu.DEVICE_TYPE, distributed.BACKEND)
    import habana_frameworks.torch.core as htcore
    import habana_frameworks.torch.distributed.hccl  # noqa: F401  (registers the "hccl" backend)
    import habana_frameworks.torch.hpu as hthpu

    return HabanaRuntime(False, hthpu, htcore.mark_step, "hpu", "hccl")


def runtime() -> HabanaRuntime:
    """The stubs under TOKENMILL_GAUDI_STUBS=1, else habana_frameworks.torch (ImportError without it)."""
    return _load(stubs_requested())
