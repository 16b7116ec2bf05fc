"""The core's default execution contexts: inference mode (eager, CUDA) and no_grad (traced backends)."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch


class DefaultExecution:
    """torch.inference_mode() around device work, no per-step sync: what the core uses by default."""

    def guard(self) -> AbstractContextManager:
        """A fresh inference-mode context."""
        return torch.inference_mode()

    def sync(self) -> None:
        """Nothing to flush: eager kernels were launched as they were called."""


class NoGradExecution(DefaultExecution):
    """torch.no_grad(): for backends that trace or lazily record tensors, which inference tensors break."""

    def guard(self) -> AbstractContextManager:
        """A fresh no-grad context."""
        return torch.no_grad()
