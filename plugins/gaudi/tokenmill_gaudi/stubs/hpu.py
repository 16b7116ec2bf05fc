"""Stand-in for habana_frameworks.torch.hpu: one "HPU" that is the host CPU, simulated memory, eager graphs.

Memory: a fixed simulated card (`SIMULATED_LIMIT` bytes, or $TOKENMILL_GAUDI_STUBS_MEMORY) whose
"InUse" is what the plugin's tensors on it hold, tracked by `track`/`untrack`; the statistics
dict has the keys habana's memory_stats() reports (Limit, InUse, MaxInUse). Graphs: HPUGraph
records the callable and its static inputs at capture and, on replay, runs it again eagerly,
writing into the captured output tensor, so a caller sees the fixed-address semantics of a
real HPU graph (inputs copied into static buffers, the output read from the captured tensor).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

SIMULATED_LIMIT = 1 << 30  # a 1 GiB simulated card: enough for the tiny test models, small enough to refuse
DEVICE_TYPE = "cpu"

_in_use = 0
_max_in_use = 0


def is_available() -> bool:
    """The stub device is always there."""
    return True


def device_count() -> int:
    """One simulated card."""
    return 1


def get_device_name(index: int = 0) -> str:
    """Says what it is."""
    return "GAUDI (stub: host CPU)"


def _limit() -> int:
    raw = os.environ.get("TOKENMILL_GAUDI_STUBS_MEMORY")
    return int(raw) if raw else SIMULATED_LIMIT


def track(nbytes: int) -> None:
    """Count `nbytes` as allocated on the card."""
    global _in_use, _max_in_use
    _in_use += nbytes
    _max_in_use = max(_max_in_use, _in_use)


def untrack(nbytes: int) -> None:
    """Count `nbytes` as freed."""
    global _in_use
    _in_use = max(0, _in_use - nbytes)


def memory_stats(device: Any = None) -> dict[str, int]:
    """The keys the plugin reads from habana's memory_stats(): Limit, InUse, MaxInUse."""
    return {"Limit": _limit(), "InUse": _in_use, "MaxInUse": _max_in_use}


def reset_peak_memory_stats(device: Any = None) -> None:
    """MaxInUse falls back to InUse."""
    global _max_in_use
    _max_in_use = _in_use


class HPUGraph:
    """A recorded step: `record` runs it once for its output; `replay` runs it again into that output."""

    def __init__(self) -> None:
        self._fn: Callable[[], torch.Tensor] | None = None
        self.output: torch.Tensor | None = None
        self.replays = 0

    def record(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Capture: run `fn` (which reads only static buffers) and keep its output tensor."""
        self._fn = fn
        self.output = fn()
        return self.output

    def replay(self) -> None:
        """Run the recorded callable again over the static buffers' current contents."""
        if self._fn is None or self.output is None:
            raise RuntimeError("HPUGraph.replay() before a capture")
        self.output.copy_(self._fn())
        self.replays += 1
