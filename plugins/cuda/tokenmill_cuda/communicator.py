"""NcclCommunicator: tensor-parallel collectives on GPU tensors over a torch.distributed NCCL group."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class NcclCommunicator:
    """Collectives over `group` (None: the default world group), created with the nccl backend.

    Calls are enqueued on the current CUDA stream, so they order with the model's kernels and
    can be captured in a CUDA graph; the host does not wait for them.
    """

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place; returns `tensor`."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def all_gather(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Every rank's tensor concatenated along `dim` in rank order: shape[dim] * world_size."""
        moved = tensor.movedim(dim, 0).contiguous()  # [n, ...]
        out = torch.empty((moved.shape[0] * self.world_size, *moved.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        dist.all_gather_into_tensor(out, moved, group=self.group)
        return out.movedim(0, dim).contiguous()

    def reduce_scatter(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Sum over ranks, then this rank's slice along `dim`: shape[dim] // world_size."""
        if tensor.shape[dim] % self.world_size:
            raise ValueError(
                f"reduce_scatter needs dim {dim} of size {tensor.shape[dim]} to divide by the "
                f"world size {self.world_size}; pad the tensor or pick another split"
            )
        moved = tensor.movedim(dim, 0).contiguous()  # [n, ...], each rank's slice contiguous
        out = torch.empty((moved.shape[0] // self.world_size, *moved.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        dist.reduce_scatter_tensor(out, moved, op=dist.ReduceOp.SUM, group=self.group)
        return out.movedim(0, dim).contiguous()

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Every rank gets group rank `src`'s tensor, in place; returns `tensor`."""
        dist.broadcast(tensor, group=self.group, group_src=src)
        return tensor

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        """Send to group rank `dst`; pairs with `recv` there."""
        dist.send(tensor.contiguous(), group=self.group, group_dst=dst)

    def recv(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """Receive from group rank `src` into `tensor` (shape and dtype as sent); returns it."""
        dist.recv(tensor, group=self.group, group_src=src)
        return tensor
