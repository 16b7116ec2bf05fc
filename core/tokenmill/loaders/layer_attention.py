"""Per-layer attention backends: the model's base backend, plus one per sliding window its layers use."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from tokenmill.errors import ModelLoadError, TokenmillError
from tokenmill.interfaces import AttentionSpec
from tokenmill.models.arch_config import ArchConfig
from tokenmill.plugin_base import optional

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LayerAttention:
    """What the loader decided: the backends per layer, the context, and the window the KV manager frees by."""

    base_backend: Any  # built for the spec without a window: metadata, cache shape
    layer_backends: list[Any]  # [num_layers]; the base backend for global layers
    max_model_len: int
    kv_window: int | None  # every layer attends through a window of at most this: blocks behind it can go


def plan_layer_attention(arch: ArchConfig, spec: AttentionSpec, plugins: Any, platform: Any,
                         requested_max_len: int | None) -> LayerAttention:
    """Build the base backend, fit the context to what it supports, then one backend per window.

    A backend that does not declare `supports_sliding_window` gets no windowed spec: the context
    is capped at the model's smallest window, where full attention is exact, and a longer
    requested context is refused. A window at least as long as the context is dropped (it masks
    nothing), so such layers share the base backend.
    """
    base = plugins.attention_backend(platform, spec)
    if spec.logits_soft_cap is not None and not optional(base, "supports_logits_soft_cap", False):
        raise ModelLoadError(f"{platform.name} attention backend {base.name!r} does not support attention-logit "
                             f"soft-capping, which this model uses (cap {spec.logits_soft_cap}); run it on a "
                             "platform whose backend does (the cpu one does)")
    windowed = optional(base, "supports_sliding_window", False)
    max_len = _max_model_len(arch, requested_max_len, windowed, platform.name, base.name)
    backends: dict[int | None, Any] = {None: base}
    layers = []
    for i in range(arch.num_layers):
        window = arch.window_of(i) if windowed else None
        window = window if window is not None and window < max_len else None
        if window not in backends:
            backends[window] = plugins.attention_backend(platform, dataclasses.replace(spec, sliding_window=window))
        layers.append(backends[window])
    effective = [arch.window_of(i) if layers[i] is not base else None for i in range(arch.num_layers)]
    kv_window = max(effective) if effective and all(w is not None for w in effective) else None
    return LayerAttention(base, layers, max_len, kv_window)


def _max_model_len(arch: ArchConfig, requested: int | None, windowed: bool, platform: str, backend: str) -> int:
    """The model's context; capped at its smallest window where the backend cannot window."""
    limit = arch.max_position_embeddings
    windows = [w for w in arch.layer_windows if w is not None]
    if windows and not windowed and min(windows) < limit:
        smallest = min(windows)
        if requested is not None and requested > smallest:
            raise TokenmillError(
                f"{platform} attention backend {backend!r} does not support sliding-window attention, and this "
                f"model's layers attend through a window of {smallest} tokens, so full attention is exact only up "
                f"to {smallest}; pass --max-model-len {smallest} or less, or use a platform whose backend supports "
                "sliding windows")
        if requested is None:
            log.warning("%s attention backend %r has no sliding-window support: max_model_len capped at the model's "
                        "window of %d tokens (full attention is exact within it)", platform, backend, smallest)
        limit = smallest
    if requested is None:
        return limit
    if requested > limit:
        raise TokenmillError(
            f"--max-model-len {requested} exceeds this model's context of {limit} tokens; use at most {limit}"
        )
    return requested
