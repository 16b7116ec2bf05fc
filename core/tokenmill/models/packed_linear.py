"""PackedLinear and the transform that swaps a built model's nn.Linear layers for it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class PackedLinear(nn.Module):
    """A linear layer whose weight a platform LinearMethod has repacked (e.g. to 4-bit groups)."""

    def __init__(self, method: Any, packed: Any, bias: torch.Tensor | None, in_features: int, out_features: int,
                 input_order: torch.Tensor | None = None) -> None:
        super().__init__()
        self.method = method
        self.packed = packed  # opaque to the core: only `method.apply` reads it
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.in_features, self.out_features = in_features, out_features
        self.input_order = input_order  # int64 [K]: the inputs the packed columns follow (GPTQ act-order)
        self._apply_method = method.apply

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, K] -> [T, N]."""
        if self.input_order is not None:
            x = x.index_select(-1, self.input_order)
        out = self._apply_method(self.packed, x)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.method.scheme}"


def swap_linears(model: nn.Module, schemes: dict[str, str], methods: dict[str, Any],
                 stored: dict[str, tuple[Any, torch.Tensor | None]] | None = None) -> dict[str, int]:
    """Replace each nn.Linear named in `schemes` by a PackedLinear from `methods[scheme]`.

    Returns how many layers each scheme took. The dense weight is dropped from the module (a tied
    embedding keeps its own reference), so memory is the packed state plus what the method keeps.
    A layer in `stored` (its checkpoint codes and input order) goes through the method's optional
    pack_stored; one the method declines (or a method without it) stays dense.
    """
    counts: dict[str, int] = {}
    stored = stored or {}
    for name, scheme in schemes.items():
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        dense = getattr(parent, leaf)
        if hasattr(dense, "pack_with"):  # a stack of experts (models/moe.py) packs each expert itself
            setattr(parent, leaf, dense.pack_with(methods[scheme]))
            counts[scheme] = counts.get(scheme, 0) + 1
            continue
        order = None
        if scheme in ("int4_groups", "fp8"):
            if name not in stored or not hasattr(methods[scheme], "pack_stored"):
                continue
            codes, order = stored[name]
            weight = dense.weight.detach() if order is None else dense.weight.detach()[:, order]
            packed = methods[scheme].pack_stored(codes, weight)
            if packed is None:
                continue
        else:
            packed = methods[scheme].pack(dense.weight.detach())
        bias = None if dense.bias is None else dense.bias.detach()
        setattr(parent, leaf, PackedLinear(methods[scheme], packed, bias, dense.in_features, dense.out_features, order))
        counts[scheme] = counts.get(scheme, 0) + 1
    return counts
