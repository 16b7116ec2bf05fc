"""Fills a model built on the meta device with checkpoint tensors: shape-checked, merged, cast, placed."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from tokenmill.errors import ModelLoadError
from tokenmill.models.layout import Layout


class Checkpoint(Protocol):
    """A source of tensors by transformers name (SafetensorsCheckpoint, GGUFCheckpoint)."""

    source: str
    config: dict[str, Any]

    def names(self) -> list[str]: ...

    def shape(self, name: str) -> tuple[int, ...] | None: ...

    def tensor(self, name: str) -> torch.Tensor: ...

    def where(self, name: str) -> str: ...

    def quant_type(self, name: str) -> str | None:
        """The quantized storage type of `name` (a GGUF type name such as "Q4_1"), None for float."""
        ...


def check_layout(checkpoint: Checkpoint, layout: Layout) -> None:
    """Raise ModelLoadError for the first tensor the layout needs that is missing or misshaped."""
    for parts in layout.values():
        for name, expected in parts:
            found = checkpoint.shape(name)
            if found is None:
                raise ModelLoadError(
                    f"checkpoint {checkpoint.source} lacks tensor {name!r} (expected shape {expected}); "
                    f"the checkpoint is incomplete or does not match its config"
                )
            if found != expected:
                raise ModelLoadError(
                    f"tensor {name!r} in {checkpoint.where(name)} has shape {found}, but the config implies "
                    f"{expected}; the weights and the config disagree"
                )


def load_weights(
    model: nn.Module, layout: Layout, checkpoint: Checkpoint, dtype: torch.dtype, device: torch.device
) -> None:
    """Replace every (meta) parameter of `model` with its checkpoint tensors, concatenated on dim 0."""
    check_layout(checkpoint, layout)
    for param_name, parts in layout.items():
        tensors = [checkpoint.tensor(name).to(dtype=dtype) for name, _ in parts]
        value = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
        module_path, _, leaf = param_name.rpartition(".")
        module = model.get_submodule(module_path)
        setattr(module, leaf, nn.Parameter(value.to(device), requires_grad=False))
