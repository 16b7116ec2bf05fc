"""--quantization: which linear layers run packed (int4/int8) and which stay dense, layer by layer."""

from __future__ import annotations

import logging
import math
from dataclasses import fields, replace
from typing import Any

import torch
from torch import nn

from tokenmill.config import check_quantization
from tokenmill.errors import TokenmillError
from tokenmill.loaders.weights import Checkpoint
from tokenmill.models.layout import Layout
from tokenmill.models.packed_linear import swap_linears

log = logging.getLogger(__name__)

OUTPUT_HEAD = "lm_head"
# GGUF storage types whose values the int4 scheme holds exactly (affine 4-bit groups of 32), or
# nearly (Q4_0, symmetric); the 5-, 6- and 8-bit types fit the int8 scheme. So do the 2-, 3-bit and
# non-linear 4-bit ones: their 16-weight sub-blocks and IQ4 grid fall between int4's groups of 32,
# which would re-round them, while int8 per row keeps them within ~0.5% of a group's range.
_INT4_SOURCES = frozenset({"Q4_0", "Q4_1", "Q4_K"})
_INT8_SOURCES = frozenset({"Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0", "Q2_K", "Q3_K", "IQ4_XS", "IQ4_NL"})
# Checkpoint formats whose own codes a linear method takes (pack_stored) -> that scheme.
STORED_SCHEMES = {"GPTQ_INT4": "int4_groups", "AWQ_INT4": "int4_groups", "FP8_E4M3": "fp8"}


def linear_schemes(model: nn.Module, layout: Layout, checkpoint: Checkpoint, quantization: str) -> dict[str, str]:
    """Linear module name -> "int4" or "int8" for every layer that should run packed.

    auto follows the checkpoint: layers stored 4-bit in a GGUF run int4, 5- to 8-bit ones int8,
    GPTQ/AWQ ones int4_groups and FP8 ones fp8 (from their own codes), float ones stay dense. int4 packs every decoder linear to 4 bits and the output head to 8 (the
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
    kept = {STORED_SCHEMES.get(t) for t in stored_as}
    if len(kept) == 1 and None not in kept and (quantization == "auto" or kept == {"int4_groups"}):
        return kept.pop()  # a GPTQ/AWQ layer stays on its own 4-bit codes under int4 too
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


def stores_quantized(checkpoint: Checkpoint) -> bool:
    """Whether most of the checkpoint's weights (by count) are stored in a block type or as GPTQ/AWQ
    codes that a packed scheme takes (the embedded default's Q4_1/Q8_0 GGUF is; a BF16 GGUF or a
    float safetensors model is not)."""
    packable = _INT4_SOURCES | _INT8_SOURCES | {t for t, s in STORED_SCHEMES.items() if s == "int4_groups"}
    stored = total = 0
    for name in checkpoint.names():
        size = math.prod(checkpoint.shape(name) or (0,))
        total += size
        stored += size if checkpoint.quant_type(name) in packable else 0
    return total > 0 and 2 * stored > total


def pack_model(model: nn.Module, schemes: dict[str, str], *, platform: Any, plugins: Any,
               quantization: str, stored: tuple[Checkpoint, Layout] | None = None,
               auto_dtype: bool = False) -> dict[str, int]:
    """Swap the layers in `schemes` for the platform's packed kernels; returns layers per scheme
    (packing_methods says which kernels, pack_layers how)."""
    methods = packing_methods(schemes, platform=platform, plugins=plugins, quantization=quantization,
                              auto_dtype=auto_dtype)
    return pack_layers(model, schemes, methods, stored)


def packing_methods(schemes: dict[str, str], *, platform: Any, plugins: Any, quantization: str,
                    auto_dtype: bool = False) -> dict[str, Any]:
    """Scheme -> the platform's LinearMethod for every scheme in `schemes` that it has one for.

    A scheme the platform has no kernel for keeps its layers dense under auto, and is refused
    when asked for by name. Layers of the stored schemes (int4_groups, fp8) stay dense where the
    platform lacks those kernels (the loader has dequantized them), whatever --quantization says.
    `auto_dtype`: --dtype auto chose the model dtype from the platform's quantized_dtypes; a
    method's optional `auto_variant()` then replaces it (e.g. the CPU's bf16 wide-step GEMMs).
    """
    methods = {}
    for scheme in sorted(set(schemes.values())):
        method = plugins.linear_method(platform, scheme)
        if method is None and scheme in STORED_SCHEMES.values():
            log.warning("platform %s has no %s kernels: those layers run dequantized to the model dtype",
                        platform.name, scheme)
            continue
        if method is None and quantization != "auto":
            raise TokenmillError(f"platform {platform.name!r} has no {scheme} linear kernels, so --quantization "
                                 f"{quantization} cannot run there; use --quantization none (dense weights)")
        if method is None:
            log.info("platform %s has no %s kernels: those layers stay dense", platform.name, scheme)
            continue
        variant = getattr(method, "auto_variant", None) if auto_dtype else None
        methods[scheme] = variant() if variant is not None else method
    return methods


def pack_layers(model: nn.Module, schemes: dict[str, str], methods: dict[str, Any],
                stored: tuple[Checkpoint, Layout] | None = None) -> dict[str, int]:
    """Swap the layers in `schemes` whose scheme `methods` has; returns layers per scheme. Layers of
    the stored schemes are packed from `stored`'s checkpoint codes."""
    chosen = {n: s for n, s in schemes.items() if s in methods}
    codes = {} if stored is None else _stored_layers(model, chosen, *stored)
    return swap_linears(model, chosen, methods, codes)


def _stored_layers(model: nn.Module, schemes: dict[str, str], checkpoint: Checkpoint,
                   layout: Layout) -> dict[str, tuple[Any, torch.Tensor | None]]:
    """Layer name -> (its checkpoint codes on the layer's device, input order or None), merged
    projections concatenated along N; a merged layer whose parts disagree runs dense."""
    out = {}
    for name, scheme in schemes.items():
        if scheme not in STORED_SCHEMES.values():
            continue
        weight = model.get_submodule(name).weight
        parts = [checkpoint.stored(source) for source, _ in layout[f"{name}.weight"]]
        merged = _concat([p for p, _ in parts])
        perms = [perm for _, perm in parts]
        if merged is None or not _one_order(perms):
            log.warning("%s: its parts are stored with different groups or act-order; it runs dense", name)
            continue
        out[name] = (_to_device(merged, weight.device), None if perms[0] is None else perms[0].to(weight.device))
    return out


def _one_order(perms: list[torch.Tensor | None]) -> bool:
    """Whether a merged layer's parts all follow one input order (all None, or all equal)."""
    if all(p is None for p in perms):
        return True
    return all(p is not None and torch.equal(p, perms[0]) for p in perms)


def _concat(parts: list[Any]) -> Any:
    """StoredInt4 / StoredFp8 parts stacked along N (fp8 per-tensor scales become per channel)."""
    if len(parts) == 1:
        return parts[0]
    if hasattr(parts[0], "group_size"):
        if len({p.group_size for p in parts}) != 1:
            return None
        return replace(parts[0], **{f: torch.cat([getattr(p, f) for p in parts]) for f in ("codes", "scales", "zeros")})
    scales = [p.scale.expand(p.weight.shape[0]) for p in parts]
    return replace(parts[0], weight=torch.cat([p.weight for p in parts]), scale=torch.cat(scales))


def _to_device(stored: Any, device: torch.device) -> Any:
    return replace(stored, **{f.name: getattr(stored, f.name).to(device) for f in fields(stored)
                              if isinstance(getattr(stored, f.name), torch.Tensor)})
