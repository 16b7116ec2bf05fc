"""The modules tensor parallelism adds around a sharded layer: each owns the one collective it needs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class RowParallel(nn.Module):
    """A linear layer holding a slice of the input features; the partial outputs are summed over ranks.

    `inner` is the sharded nn.Linear or PackedLinear (its bias, if any, is kept on rank 0 only, so
    the sum adds it once).
    """

    def __init__(self, inner: nn.Module, comm: Any) -> None:
        super().__init__()
        self.inner = inner
        self._all_reduce = comm.all_reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, K / world] -> [T, N], the same on every rank."""
        return self._all_reduce(self.inner(x))


class VocabParallelEmbedding(nn.Module):
    """An embedding table holding rows [start, start + rows) of the vocabulary; lookups sum over ranks."""

    def __init__(self, weight: nn.Parameter, start: int, comm: Any) -> None:
        super().__init__()
        self.weight = weight  # [V / world (padded), H]; the same Parameter as a tied output head's
        self.start = start
        self.rows = weight.shape[0]
        self._all_reduce = comm.all_reduce

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """int64 [T] -> [T, H]: each rank embeds the ids in its rows and zeroes the rest."""
        local = input_ids - self.start  # [T]
        outside = (local < 0) | (local >= self.rows)  # [T] bool
        hidden = nn.functional.embedding(local.masked_fill(outside, 0), self.weight)  # [T, H]
        return self._all_reduce(hidden.masked_fill(outside.unsqueeze(1), 0))


class GatheredHead(nn.Module):
    """The output head holding a slice of the vocabulary; every rank's logits are concatenated."""

    def __init__(self, inner: nn.Module, vocab_size: int, comm: Any) -> None:
        super().__init__()
        self.inner = inner  # nn.Linear or PackedLinear over [V / world (padded), H]
        self.vocab_size = vocab_size
        self._all_gather = comm.all_gather

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, H] -> logits [N, V] in the model dtype."""
        shard = self.inner(hidden)  # [N, V / world]
        return self._all_gather(shard, dim=-1)[:, : self.vocab_size]  # [N, V]


class AllReducedExperts(nn.Module):
    """An MoE block's experts (dense ExpertStack or PackedExperts) whose partial sums over this rank's
    slice of every expert's width are all-reduced into the whole output."""

    def __init__(self, inner: nn.Module, comm: Any) -> None:
        super().__init__()
        self.inner, self._comm = inner, comm

    def run(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, fused_moe: Any) -> torch.Tensor:
        """x [T, H] -> [T, H], summed over ranks."""
        return self._comm.all_reduce(self.inner.run(x, weights, ids, fused_moe))
