"""NcclCommunicator: tensor-parallel collectives on GPU tensors over a torch.distributed NCCL group."""

from __future__ import annotations

from tokenmill.plugin_base import TorchDistCommunicator


class NcclCommunicator(TorchDistCommunicator):
    """The shared torch.distributed communicator in its fused mode, over an nccl group.

    Calls are enqueued on the current CUDA stream, so they order with the model's kernels and
    can be captured in a CUDA graph; the host does not wait for them.
    """

    fused = True
