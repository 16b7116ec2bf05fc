"""GaudiExecution: no_grad around device work and htcore.mark_step() once per step (the core's sync point)."""

from __future__ import annotations

from tokenmill.plugin_base import NoGradExecution

from tokenmill_gaudi.runtime import runtime


class GaudiExecution(NoGradExecution):
    """Lazy mode accumulates a step's ops; the core's per-step sync flushes them with one mark_step."""

    def sync(self) -> None:
        """htcore.mark_step() (the stubs count the call)."""
        runtime().mark_step()
