"""The core's default execution contexts: inference mode (eager, CUDA) and no_grad (traced backends)."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch


class CopyOnWait:
    """A HostCopy that copies when asked: free for host tensors, a blocking read for device ones."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def wait(self) -> torch.Tensor:
        """The tensor on the host."""
        return self.tensor.cpu()


class DefaultExecution:
    """torch.inference_mode() around device work, no per-step sync: what the core uses by default."""

    def guard(self) -> AbstractContextManager:
        """A fresh inference-mode context."""
        return torch.inference_mode()

    def sync(self) -> None:
        """Nothing to flush: eager kernels were launched as they were called."""

    def to_host(self, tensor: torch.Tensor) -> CopyOnWait:
        """A copy of `tensor` to the host, made when its wait() is called (interfaces.ExecutionContext)."""
        return CopyOnWait(tensor)


class NoGradExecution(DefaultExecution):
    """torch.no_grad(): for backends that trace or lazily record tensors, which inference tensors break."""

    def guard(self) -> AbstractContextManager:
        """A fresh no-grad context."""
        return torch.no_grad()
