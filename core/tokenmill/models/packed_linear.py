"""PackedLinear and the transform that swaps a built model's nn.Linear layers for it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class PackedLinear(nn.Module):
    """A linear layer whose weight a platform LinearMethod has repacked (e.g. to 4-bit groups)."""

    def __init__(self, method: Any, packed: Any, bias: torch.Tensor | None, in_features: int, out_features: int) -> None:
        super().__init__()
        self.method = method
        self.packed = packed  # opaque to the core: only `method.apply` reads it
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.in_features, self.out_features = in_features, out_features
        self._apply_method = method.apply

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, K] -> [T, N]."""
        out = self._apply_method(self.packed, x)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.method.scheme}"


def swap_linears(model: nn.Module, schemes: dict[str, str], methods: dict[str, Any]) -> dict[str, int]:
    """Replace each nn.Linear named in `schemes` by a PackedLinear from `methods[scheme]`.

    Returns how many layers each scheme took. The dense weight is dropped from the module (a tied
    embedding keeps its own reference), so memory is the packed state plus what the method keeps.
    """
    counts: dict[str, int] = {}
    for name, scheme in schemes.items():
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        dense = getattr(parent, leaf)
        if hasattr(dense, "pack_with"):  # a stack of experts (models/moe.py) packs each expert itself
            setattr(parent, leaf, dense.pack_with(methods[scheme]))
            counts[scheme] = counts.get(scheme, 0) + 1
            continue
        packed = methods[scheme].pack(dense.weight.detach())
        bias = None if dense.bias is None else dense.bias.detach()
        setattr(parent, leaf, PackedLinear(methods[scheme], packed, bias, dense.in_features, dense.out_features))
        counts[scheme] = counts.get(scheme, 0) + 1
    return counts
