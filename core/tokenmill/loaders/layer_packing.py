"""LayerPacker: packs each linear layer as soon as the loader has set its weights.

Why: the loader dequantizes a GGUF's blocks to the model dtype, and packing after the whole model
had loaded kept every layer's dense weights alive at once (a float32 SmolLM2-135M: 0.43 GB of them,
and the allocator kept most of that resident afterwards). Packed as it loads, one layer's dense
weights are alive at a time, and the next layer reuses their memory.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tokenmill.loaders.quantization import pack_layers
from tokenmill.loaders.weights import Checkpoint
from tokenmill.models.layout import Layout


class LayerPacker:
    """Call `loaded(param_name)` after each parameter the loader sets; `finish()` packs the rest."""

    def __init__(self, model: nn.Module, layout: Layout, schemes: dict[str, str], methods: dict[str, Any],
                 checkpoint: Checkpoint) -> None:
        self.model, self.methods, self.stored = model, methods, (checkpoint, layout)
        self.schemes = {n: s for n, s in schemes.items() if s in methods}
        self.counts: dict[str, int] = {}
        self._waiting: dict[str, set[str]] = {}  # layer -> its parameters the loader has yet to set
        self._layer_of: dict[str, str] = {}  # parameter -> its layer
        for name in self.schemes:
            params = {f"{name}.{p}" for p, _ in model.get_submodule(name).named_parameters()}
            if params and params <= layout.keys():  # a tied head is set by tie_weights: finish() packs it
                self._waiting[name] = params
                self._layer_of.update(dict.fromkeys(params, name))

    def loaded(self, param_name: str) -> None:
        """The loader has set `param_name`; packs its layer once all of the layer's parameters are set."""
        layer = self._layer_of.pop(param_name, None)
        if layer is None:
            return
        waiting = self._waiting[layer]
        waiting.discard(param_name)
        if not waiting:
            del self._waiting[layer]
            self._pack({layer: self.schemes.pop(layer)})

    def finish(self) -> dict[str, int]:
        """Packs the layers not packed yet (tied heads); returns layers per scheme."""
        self._pack(self.schemes)
        self.schemes = {}
        return self.counts

    def _pack(self, schemes: dict[str, str]) -> None:
        for scheme, count in pack_layers(self.model, schemes, self.methods, self.stored).items():
            self.counts[scheme] = self.counts.get(scheme, 0) + count
