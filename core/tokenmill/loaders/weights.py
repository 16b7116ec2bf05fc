"""Fills a model built on the meta device with checkpoint tensors: checked, merged, cast, placed.

Before any weight is read, every tensor the model needs is checked for presence, shape and storage
type against the config, and every tensor the model would not use is refused by name: a weight
stored as integers would otherwise be cast to float and print garbage, and an unknown tensor
usually means the checkpoint is of another architecture or variant than its config says.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Protocol

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

    def dtype(self, name: str) -> str:
        """The storage type of `name` as the file names it ("F32", "BF16", "I32", "Q4_1", ...)."""
        ...

    loadable_dtypes: frozenset[str]  # storage types this checkpoint can turn into float weights

    def unmapped(self) -> list[str]:
        """Tensors in the file with no transformers name (GGUF), beyond the ones the loader absorbs."""
        ...

    def quant_type(self, name: str) -> str | None:
        """The quantized storage type of `name` (a GGUF type name such as "Q4_1"), None for float."""
        ...


log = logging.getLogger(__name__)

# Tensors some checkpoints carry that the model rebuilds itself: rotary inverse frequencies (older
# transformers saved them) and an output head that duplicates the tied embedding.
_KNOWN_EXTRAS = re.compile(r"(^|\.)rotary_emb\.inv_freq$|^lm_head\.weight$")
_LISTED = 5


def check_layout(checkpoint: Checkpoint, layout: Layout) -> None:
    """Raise ModelLoadError for the first tensor the layout needs that is missing, misshaped or
    stored as a type that is not a float weight, and for tensors the layout does not use."""
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
            kind = checkpoint.dtype(name)
            if kind not in checkpoint.loadable_dtypes:
                raise ModelLoadError(
                    f"tensor {name!r} in {checkpoint.where(name)} is stored as {kind}, which is not a weight type "
                    f"tokenmill loads (it loads {', '.join(sorted(checkpoint.loadable_dtypes))}); the checkpoint is "
                    f"damaged or was exported wrongly: export it again"
                )
    _check_unused(checkpoint, {name for parts in layout.values() for name, _ in parts})


def _check_unused(checkpoint: Checkpoint, needed: set[str]) -> None:
    canonical = getattr(checkpoint, "canonical_name", None)  # GGUF: one tensor, several spellings
    if canonical is not None:
        needed = {canonical(name) for name in needed}
    unused = [name for name in checkpoint.names() if name not in needed]
    extras = [name for name in unused if _KNOWN_EXTRAS.search(name)]
    unknown = [name for name in unused if name not in extras] + checkpoint.unmapped()
    if extras:
        log.warning("%s: ignoring %d tensor(s) the model rebuilds itself: %s", checkpoint.source, len(extras),
                    ", ".join(extras[:_LISTED]))
    if unknown:
        more = f" and {len(unknown) - _LISTED} more" if len(unknown) > _LISTED else ""
        raise ModelLoadError(
            f"checkpoint {checkpoint.source} holds {len(unknown)} tensor(s) this architecture does not use: "
            f"{', '.join(repr(n) for n in unknown[:_LISTED])}{more}; the weights belong to another architecture "
            f"or variant than the config says (check config.json's architectures and sizes)"
        )


def load_weights(
    model: nn.Module, layout: Layout, checkpoint: Checkpoint, dtype: torch.dtype, device: torch.device,
    loaded: Callable[[str], None] | None = None,
) -> None:
    """Replace every (meta) parameter of `model` with its checkpoint tensors, concatenated on dim 0;
    `loaded(name)` is called after each (the LayerPacker packs a layer once its weights are in)."""
    check_layout(checkpoint, layout)
    for param_name, parts in layout.items():
        tensors = [checkpoint.tensor(name).to(dtype=dtype) for name, _ in parts]
        value = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
        module_path, _, leaf = param_name.rpartition(".")
        module = model.get_submodule(module_path)
        setattr(module, leaf, nn.Parameter(value.to(device), requires_grad=False))
        del tensors, value
        if loaded is not None:
            loaded(param_name)
