"""--dtype auto's mode for quantized models on CPUs with bf16 dot products: float32 activations,
narrow steps on the blocks, wide steps on bf16 prepacked GEMMs; and what keeps its old choice."""

from __future__ import annotations

import pytest
import torch

from tokenmill.loaders import load_model_bundle
from tokenmill.models.packed_linear import PackedLinear
from tokenmill.plugin_manager import load_plugins
from tokenmill_cpu.dense_gemm import prepacking_available
from tokenmill_cpu.isa import HostIsa, host_isa
from tokenmill_cpu.linear_methods import BlockLinearMethod
from tokenmill_cpu.quant_matmul import quant_matmul
from test_cpu_linear_methods import K, N, q4_1_weight

capable = pytest.mark.skipif(not host_isa().auto_mode, reason="needs bf16 dot products and oneDNN bf16 prepacking")
AVX512_VNNI = {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"}


@pytest.fixture(scope="module")
def cpu():
    plugins = load_plugins()
    return plugins, plugins.select("cpu")


def load(cpu, dtype, model=None, quantization="auto"):
    plugins, platform = cpu
    return load_model_bundle(model, platform=platform, plugins=plugins, dtype=dtype, quantization=quantization)


def packed_layers(bundle) -> list[PackedLinear]:
    return [m for m in bundle.model.modules() if isinstance(m, PackedLinear)]


@capable
def test_auto_runs_the_quantized_default_in_float32_with_bf16_wide_gemms(cpu):
    bundle = load(cpu, "auto")
    layers = packed_layers(bundle)
    cache = torch.float16 if host_isa().paged_decode == "avx512_bf16" else torch.float32  # platform.kv_cache_dtypes
    assert bundle.dtype == torch.float32 and bundle.attn_spec.kv_cache_dtype == cache
    assert len(layers) == sum(bundle.packed_layers.values()) == 30 * 4 + 1  # qkv, o, gate_up, down; the head
    rows = host_isa().max_block_rows(torch.bfloat16)
    for layer in layers:
        assert layer.packed.dense is not None and layer.packed.dense.dtype == torch.bfloat16
        assert layer.packed.dense.prepacked and layer.packed.max_packed_rows == rows


@capable
def test_explicit_float32_stays_float32_everywhere(cpu):
    bundle = load(cpu, "float32")
    assert bundle.dtype == torch.float32
    for layer in packed_layers(bundle):
        assert layer.packed.dense is None or layer.packed.dense.dtype == torch.float32


def test_explicit_bfloat16_keeps_bf16_activations(cpu):
    bundle = load(cpu, "bfloat16")
    assert bundle.dtype == torch.bfloat16
    for layer in packed_layers(bundle):
        assert layer.packed.dense is None or layer.packed.dense.dtype == torch.bfloat16


def test_the_mode_needs_bf16_dot_products():
    assert not HostIsa(frozenset(AVX512_VNNI)).auto_mode  # AVX-512 VNNI without BF16
    assert not HostIsa(frozenset({"avx2", "fma"})).auto_mode
    assert HostIsa(frozenset(AVX512_VNNI | {"avx512_bf16"})).auto_mode == prepacking_available()


@capable
@pytest.mark.parametrize("scheme", ["int4", "int8"])
def test_narrow_steps_are_the_float32_blocks_and_wide_ones_close_to_float32(scheme):
    kernel = quant_matmul("q4_1" if scheme == "int4" else "q8_0")
    if kernel is None:
        pytest.skip("the native block kernels cannot build here")
    weight, _ = q4_1_weight(seed=3)
    plain = BlockLinearMethod(scheme, kernel)
    auto = plain.auto_variant()
    packed_plain, packed_auto = plain.pack(weight), auto.pack(weight)
    rows = packed_auto.max_packed_rows
    narrow = torch.randn(rows, K)
    assert torch.equal(auto.apply(packed_auto, narrow), plain.apply(packed_plain, narrow))
    wide = torch.randn(64, K)
    out = auto.apply(packed_auto, wide)
    exact = wide.double() @ weight.double().t()  # [64, N]: the Q4_1-grid weight, which int8 re-rounds a little
    assert out.dtype == torch.float32 and out.shape == (64, N)
    error = (out.double() - exact).abs().max() / exact.abs().max()
    assert 0 < error <= 1e-2  # bf16-rounded inputs (and, for int8, weights): ~3 significant digits
