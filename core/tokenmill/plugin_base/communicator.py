"""TorchDistCommunicator: the Communicator contract over any torch.distributed backend (gloo, NCCL, HCCL)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

# torch 2.13 renamed reduce_scatter_tensor (now deprecated) to reduce_scatter_single.
_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class TorchDistCommunicator:
    """Collectives over `group` (None: the default world group); ranks are group-local.

    `fused = True` (NCCL, HCCL) gathers and scatters through single flat tensors, which device
    backends run fastest and CUDA graphs can capture. With `fused = False` (gloo) all_gather goes
    through a list of tensors, and reduce_scatter tries the native op once and, where the backend
    lacks it, falls back to an all_reduce and a slice, which moves more data for the same result.
    """

    fused: bool = True

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self._native_reduce_scatter = True  # flipped off the first time the backend refuses it

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place; returns `tensor`."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def all_gather(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Every rank's tensor concatenated along `dim` in rank order: shape[dim] * world_size."""
        if not self.fused:
            parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
            dist.all_gather(parts, tensor.contiguous(), group=self.group)
            return torch.cat(parts, dim=dim)
        moved = tensor.movedim(dim, 0).contiguous()  # [n, ...]
        out = moved.new_empty((moved.shape[0] * self.world_size, *moved.shape[1:]))  # [n * world, ...]
        dist.all_gather_into_tensor(out, moved, group=self.group)
        return out.movedim(0, dim).contiguous()

    def reduce_scatter(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Sum over ranks, then this rank's slice along `dim`: shape[dim] // world_size."""
        if tensor.shape[dim] % self.world_size:
            raise ValueError(
                f"reduce_scatter needs dim {dim} of size {tensor.shape[dim]} to divide by the "
                f"world size {self.world_size}; pad the tensor or pick another split"
            )
        if self._native_reduce_scatter:
            try:
                return self._reduce_scatter_native(tensor, dim)
            except (RuntimeError, NotImplementedError):
                if self.fused:
                    raise
                self._native_reduce_scatter = False
        summed = self.all_reduce(tensor.clone())
        return summed.chunk(self.world_size, dim=dim)[self.rank].contiguous()

    def _reduce_scatter_native(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        moved = tensor.movedim(dim, 0).contiguous()  # [size, ...], each rank's slice contiguous
        out = moved.new_empty((moved.shape[0] // self.world_size, *moved.shape[1:]))
        _REDUCE_SCATTER(out, moved, op=dist.ReduceOp.SUM, group=self.group)
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
