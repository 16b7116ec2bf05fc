"""XlaExecution: no_grad (inference tensors cannot be traced) and a sync at the end of every step."""

from __future__ import annotations

from tokenmill.plugin_base import NoGradExecution

from tokenmill_tpu import xla_runtime


class XlaExecution(NoGradExecution):
    """The core's per-step sync point is where the step's remaining lazy graph (sampling) runs."""

    def sync(self) -> None:
        """torch_xla.sync() (xm.mark_step() on older releases)."""
        xla_runtime.sync()
