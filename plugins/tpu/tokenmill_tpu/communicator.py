"""XlaCommunicator: the Communicator contract over XLA's collectives (torch_xla.core.xla_model).

The ops go into the lazy graph as XLA collectives (all-reduce, all-gather, reduce-scatter,
collective-permute), so they compile with the step. Ranks are this process's ordinals in the
world (torch_xla's runtime); `group` is accepted for the contract but only the world group is
supported, since XLA replica groups are fixed when the graph compiles.
"""

from __future__ import annotations

from typing import Any

import torch
import torch_xla.core.xla_model as xm
import torch_xla.runtime as xr


class XlaCommunicator:
    """Collectives over every XLA process of the job (the world group)."""

    def __init__(self, group: Any = None) -> None:
        if group is not None:
            import torch.distributed as dist

            if dist.get_world_size(group) != xr.world_size():
                raise ValueError("the tpu communicator supports the world group only (XLA fixes replica groups at "
                                 "compile time); create tensor-parallel groups that span every process")
        self.rank = xr.global_ordinal()
        self.world_size = xr.world_size()

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks."""
        return xm.all_reduce(xm.REDUCE_SUM, tensor)

    def all_gather(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Every rank's tensor along `dim`, in rank order."""
        return xm.all_gather(tensor, dim=dim)

    def reduce_scatter(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Sum over ranks, then this rank's slice along `dim`."""
        if tensor.shape[dim] % self.world_size:
            raise ValueError(f"reduce_scatter needs dim {dim} of size {tensor.shape[dim]} to divide by the world "
                             f"size {self.world_size}; pad the tensor or pick another split")
        return xm.reduce_scatter(xm.REDUCE_SUM, tensor, scale=1.0, scatter_dim=dim, shard_count=self.world_size)

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Every rank gets rank `src`'s tensor (in place)."""
        xm.collective_broadcast([tensor], root_ordinal=src)
        return tensor

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        """Point-to-point through a collective permute from this rank to `dst` (recv on `dst` pairs with it)."""
        xm.collective_permute(tensor, pairs=[[self.rank, dst]])

    def recv(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """Receive rank `src`'s tensor through the matching collective permute."""
        tensor.copy_(xm.collective_permute(tensor, pairs=[[src, self.rank]]))
        return tensor
