"""--dtype auto on dense and quantized checkpoints, and the loader packing each layer as it loads."""

from __future__ import annotations

import torch
from torch import nn

import tokenmill.loaders.bundle as bundle_module
from tiny_models import write_tiny_model
from tokenmill.loaders import load_model_bundle
from tokenmill.models.packed_linear import PackedLinear


def load(cpu, dtype, model=None, quantization="auto"):
    plugins, platform = cpu
    return load_model_bundle(model, platform=platform, plugins=plugins, dtype=dtype, quantization=quantization)


def packed_layers(bundle) -> list[PackedLinear]:
    return [m for m in bundle.model.modules() if isinstance(m, PackedLinear)]


def test_a_dense_model_under_auto_keeps_the_plain_choice(cpu, tmp_path):
    tiny = str(write_tiny_model("llama3", tmp_path / "llama3"))
    bundle = load(cpu, "auto", tiny)
    assert bundle.dtype == getattr(torch, cpu[1].supported_dtypes[0])
    assert packed_layers(bundle) == []


def test_the_loader_packs_each_layer_as_its_weights_load(cpu, monkeypatch):
    """At no point of the load are two layers' dense weights alive (each is packed before the next loads)."""
    alive = []
    real = bundle_module.load_weights

    def watched(net, layout, checkpoint, dtype, device, loaded=None):
        def after(name):
            loaded(name)
            alive.append(sum(isinstance(m, nn.Linear) and not m.weight.is_meta for m in net.modules()))
        real(net, layout, checkpoint, dtype, device, after)

    monkeypatch.setattr(bundle_module, "load_weights", watched)
    bundle = load(cpu, "float32")
    assert bundle.packed_layers and len(alive) > 100
    assert max(alive) == 0  # each layer was packed as its last weight came in (the tied head: after tie_weights)
