"""TemplateCommunicator: tensor-parallel collectives, from the core's torch.distributed base."""

from __future__ import annotations

from tokenmill.plugin_base import TorchDistCommunicator


class TemplateCommunicator(TorchDistCommunicator):
    """The shared communicator; ranks are group-local. `fused = False` suits gloo, which lacks the
    flat all_gather/reduce_scatter ops; device libraries (NCCL, HCCL) keep the default True."""

    fused = False
