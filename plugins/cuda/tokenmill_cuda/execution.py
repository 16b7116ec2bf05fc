"""CudaExecution: inference mode, and sampled ids read back through pinned memory and an event."""

from __future__ import annotations

import torch

from tokenmill.plugin_base import DefaultExecution
from tokenmill.plugin_base.execution import CopyOnWait


class PinnedCopy:
    """A device-to-host copy issued on the current stream into pinned memory; wait() waits for it alone.

    torch's caching host allocator hands the pinned buffer out again only once the copy that used it
    has finished, so buffers are cheap after the first steps.
    """

    __slots__ = ("host", "event")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)  # same shape, on the host
        self.host.copy_(tensor, non_blocking=True)
        self.event = torch.cuda.Event()
        self.event.record()

    def wait(self) -> torch.Tensor:
        """The host tensor, once the copy (not the work queued after it) is done."""
        self.event.synchronize()
        return self.host


class CudaExecution(DefaultExecution):
    """The core's inference mode and no per-step sync, plus a non-blocking `to_host` for async scheduling."""

    def to_host(self, tensor: torch.Tensor) -> PinnedCopy | CopyOnWait:
        """Start copying `tensor` (e.g. the sampled ids, int64 [B]) to the host; see interfaces.ExecutionContext."""
        if tensor.device.type != "cuda":
            return super().to_host(tensor)
        return PinnedCopy(tensor)
