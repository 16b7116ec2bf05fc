"""--quantization: which linear layers run packed (int4/int8) and which stay dense, layer by layer."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from tokenmill.config import check_quantization
from tokenmill.errors import TokenmillError
from tokenmill.loaders.weights import Checkpoint
from tokenmill.models.layout import Layout
from tokenmill.models.packed_linear import swap_linears

log = logging.getLogger(__name__)

OUTPUT_HEAD = "lm_head"
# GGUF storage types whose values the int4 scheme holds exactly (affine 4-bit groups of 32), or
# nearly (Q4_0, symmetric); the 5-, 6- and 8-bit types fit the int8 scheme.
_INT4_SOURCES = frozenset({"Q4_0", "Q4_1", "Q4_K"})
_INT8_SOURCES = frozenset({"Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0"})


def linear_schemes(model: nn.Module, layout: Layout, checkpoint: Checkpoint, quantization: str) -> dict[str, str]:
    """Linear module name -> "int4" or "int8" for every layer that should run packed.

    auto follows the checkpoint: layers stored 4-bit in a GGUF run int4, 5- to 8-bit ones int8,
    float ones stay dense. int4 packs every decoder linear to 4 bits and the output head to 8 (the
    head is the layer most hurt by 4 bits, and llama.cpp keeps it wider too). int8 packs all.
    """
    check_quantization(quantization)
    if quantization == "none":
        return {}
    sources = _source_names(model, layout)
    schemes = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) and not hasattr(module, "pack_with"):  # pack_with: MoE experts
            continue
        params = [module.weight] if isinstance(module, nn.Linear) else list(module.parameters(recurse=False))
        stored = [checkpoint.quant_type(s) for p in params for s in sources[id(p)]]
        scheme = _scheme(name, quantization, stored)
        if scheme is not None:
            schemes[name] = scheme
    return schemes


def _scheme(name: str, quantization: str, stored_as: list[str | None]) -> str | None:
    if quantization == "int8" or (quantization == "int4" and name == OUTPUT_HEAD):
        return "int8"
    if quantization == "int4":
        return "int4"
    if all(t in _INT4_SOURCES for t in stored_as):
        return "int4"
    if all(t in _INT4_SOURCES | _INT8_SOURCES for t in stored_as):
        return "int8"
    return None


def _source_names(model: nn.Module, layout: Layout) -> dict[int, list[str]]:
    """id(parameter) -> the checkpoint tensors it was loaded from (a tied head maps to the embedding's)."""
    return {id(param): [source for source, _ in layout[name]] for name, param in model.named_parameters()
            if name in layout}


def pack_model(model: nn.Module, schemes: dict[str, str], *, platform: Any, plugins: Any,
               quantization: str) -> dict[str, int]:
    """Swap the layers in `schemes` for the platform's packed kernels; returns layers per scheme.

    A scheme the platform has no kernel for keeps its layers dense under auto, and is refused
    when asked for by name.
    """
    methods = {}
    for scheme in sorted(set(schemes.values())):
        method = plugins.linear_method(platform, scheme)
        if method is None and quantization != "auto":
            raise TokenmillError(f"platform {platform.name!r} has no {scheme} linear kernels, so --quantization "
                                 f"{quantization} cannot run there; use --quantization none (dense weights)")
        if method is None:
            log.info("platform %s has no %s kernels: those layers stay dense", platform.name, scheme)
            continue
        methods[scheme] = method
    return swap_linears(model, {n: s for n, s in schemes.items() if s in methods}, methods)
