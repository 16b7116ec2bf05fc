"""GaudiCommunicator: the shared torch.distributed communicator over HCCL (gloo on the stubs)."""

from __future__ import annotations

from typing import Any

from tokenmill.plugin_base import TorchDistCommunicator

from tokenmill_gaudi.runtime import runtime


class GaudiCommunicator(TorchDistCommunicator):
    """Fused flat gathers and scatters on HCCL; list gathers and an emulated reduce_scatter on gloo."""

    def __init__(self, group: Any = None) -> None:
        super().__init__(group)
        self.fused = not runtime().stubs
