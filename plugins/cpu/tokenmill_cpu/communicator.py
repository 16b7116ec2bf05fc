"""GlooCommunicator: tensor-parallel collectives over a torch.distributed gloo process group."""

from __future__ import annotations

from tokenmill.plugin_base import TorchDistCommunicator


class GlooCommunicator(TorchDistCommunicator):
    """The shared torch.distributed communicator in its gloo mode: blocking, list all_gather,
    reduce_scatter emulated with an all_reduce where gloo lacks it."""

    fused = False
