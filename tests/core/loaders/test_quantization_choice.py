"""--quantization: which layers get packed, the refusals, and packed outputs close to dense ones."""

from __future__ import annotations

import pytest
import torch
from gguf import GGMLQuantizationType, quants
from torch import nn

from harness import run_greedy
from tiny_models import write_tiny_model
from tokenmill_cpu.linear_methods import MAX_BLOCK_ROWS
from tokenmill.config import EngineArgs
from tokenmill.errors import TokenmillError
from tokenmill.loaders import load_model_bundle
from tokenmill.models.packed_linear import PackedLinear
from tokenmill.plugin_manager import load_plugins

# 22 prompt rows in all: few enough (<= MAX_BLOCK_ROWS) that the prefill runs the packed kernels
PACKED_TOLERANCE = 1e-3  # the CPU plugin's block kernels round activations to ~16 bits; seen: ~2e-5
PROMPTS = [[5, 9, 13, 2, 77, 31, 8], [40, 41, 42], list(range(50, 62))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(write_tiny_model("llama3", tmp_path_factory.mktemp("quant") / "llama3"))


def load(model, cpu, quantization):
    plugins, platform = cpu
    return load_model_bundle(model, platform=platform, plugins=plugins, dtype="float32", quantization=quantization)


def test_the_prompts_run_the_packed_kernels():
    assert sum(map(len, PROMPTS)) <= MAX_BLOCK_ROWS


def test_auto_keeps_a_float_checkpoint_dense(tiny, cpu):
    bundle = load(tiny, cpu, "auto")
    assert bundle.packed_layers == {}
    assert not any(isinstance(m, PackedLinear) for m in bundle.model.modules())


def fake_quantized(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    """The weight the CPU plugin's scheme stores, dequantized by the gguf package: int4 is GGUF's
    Q4_1 (affine groups of 32), int8 its Q8_0 (symmetric groups of 32)."""
    kind = {"int4": GGMLQuantizationType.Q4_1, "int8": GGMLQuantizationType.Q8_0}[scheme]
    return torch.from_numpy(quants.dequantize(quants.quantize(weight.float().numpy(), kind), kind).copy())


def with_fake_quantized_weights(bundle, schemes: dict[str, str]):
    """`bundle` with each linear replaced by a dense one holding fake_quantized(weight)."""
    for name, scheme in schemes.items():
        parent_name, _, leaf = name.rpartition(".")
        old = bundle.model.get_submodule(name)
        new = nn.Linear(old.in_features, old.out_features, bias=old.bias is not None)
        new.weight = nn.Parameter(fake_quantized(old.weight.detach(), scheme), requires_grad=False)
        new.bias = old.bias
        setattr(bundle.model.get_submodule(parent_name), leaf, new)
    return bundle


@pytest.mark.parametrize("quantization", ["int4", "int8"])
def test_packed_layers_compute_the_quantized_weights(tiny, cpu, quantization):
    plugins, platform = cpu
    packed = load(tiny, cpu, quantization)
    layers = packed.arch.num_layers
    expected = {"int4": {"int4": 4 * layers, "int8": 1}, "int8": {"int8": 4 * layers + 1}}[quantization]
    assert packed.packed_layers == expected
    assert isinstance(packed.model.lm_head, PackedLinear)
    schemes = {n: m.method.scheme for n, m in packed.model.named_modules() if isinstance(m, PackedLinear)}
    reference = with_fake_quantized_weights(load(tiny, cpu, "none"), schemes)
    assert packed.num_params == reference.num_params
    ours = run_greedy(packed, plugins, platform, PROMPTS, 1)
    ref = run_greedy(reference, plugins, platform, PROMPTS, 1)
    for a, b in zip(ours.logits, ref.logits):  # the prefill rows: the same inputs in both runs
        assert (a - b).abs().max() <= PACKED_TOLERANCE * b.abs().max()


def test_a_platform_without_kernels_refuses_an_explicit_scheme(tiny):
    plugins = load_plugins()
    toy = plugins.select("toy")
    with pytest.raises(TokenmillError, match="--quantization none"):
        load_model_bundle(tiny, platform=toy, plugins=plugins, dtype="float32", quantization="int4")


def test_auto_on_a_platform_without_kernels_loads_the_gguf_dense():
    plugins = load_plugins()
    toy = plugins.select("toy")
    bundle = load_model_bundle(None, platform=toy, plugins=plugins, dtype="float32", quantization="auto")
    assert bundle.packed_layers == {}


def test_unknown_values_are_refused_with_the_choices():
    with pytest.raises(TokenmillError, match="auto, none, int4, int8"):
        EngineArgs(quantization="fp8")
