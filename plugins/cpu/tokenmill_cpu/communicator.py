"""GlooCommunicator: tensor-parallel collectives over a torch.distributed gloo process group."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

# torch 2.13 renamed reduce_scatter_tensor (now deprecated) to reduce_scatter_single.
_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class GlooCommunicator:
    """Collectives over `group` (None: the default world group), created with the gloo backend.

    Every method blocks until the collective is done. gloo may lack reduce_scatter; it is then
    emulated with an all_reduce and a slice, which moves more data but gives the same result.
    """

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self._native_reduce_scatter = True  # flipped off the first time gloo refuses it

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place; returns `tensor`."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def all_gather(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Every rank's tensor concatenated along `dim` in rank order: shape[dim] * world_size."""
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous(), group=self.group)
        return torch.cat(parts, dim=dim)

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
                self._native_reduce_scatter = False
        summed = self.all_reduce(tensor.clone())
        return summed.chunk(self.world_size, dim=dim)[self.rank].contiguous()

    def _reduce_scatter_native(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        moved = tensor.movedim(dim, 0).contiguous()  # [size, ...], slices contiguous along dim 0
        out = torch.empty((moved.shape[0] // self.world_size, *moved.shape[1:]), dtype=tensor.dtype)
        _REDUCE_SCATTER(out, moved, op=dist.ReduceOp.SUM, group=self.group)
        return out.movedim(0, dim).contiguous()

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Every rank gets rank `src`'s (group rank) tensor, in place; returns `tensor`."""
        dist.broadcast(tensor, group=self.group, group_src=src)
        return tensor

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        """Send to group rank `dst`; blocks until the matching recv has taken it."""
        dist.send(tensor.contiguous(), group=self.group, group_dst=dst)

    def recv(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """Receive from group rank `src` into `tensor` (shape and dtype as sent); returns it."""
        dist.recv(tensor, group=self.group, group_src=src)
        return tensor
