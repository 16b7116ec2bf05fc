"""RcclCommunicator: collectives over a torch.distributed "nccl" group, which a ROCm build of torch runs on RCCL."""

from __future__ import annotations

from tokenmill.plugin_base import TorchDistCommunicator


class RcclCommunicator(TorchDistCommunicator):
    """The shared communicator in its fused mode (flat all_gather / reduce_scatter, graph-capturable)."""

    fused = True
