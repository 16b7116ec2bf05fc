"""The CPU plugin's int4/int8 linear methods (native blocks and torch's kernels) against references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenmill.plugin_manager import load_plugins
from tokenmill_cpu.dense_gemm import prepacking_available
from tokenmill_cpu.isa import host_isa
from tokenmill_cpu.linear_methods import (
    GROUP,
    MAX_BLOCK_ROWS,
    MAX_PACKED_ROWS,
    BlockLinearMethod,
    Int4LinearMethod,
    Int8LinearMethod,
    linear_method,
)
from tokenmill_cpu.quant_matmul import quant_matmul

N, K = 96, 256


def q4_1_weight(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight on a GGUF Q4_1 grid (w = q * d + m per 32 inputs, fp16 d and m, q spanning 0..15),
    and its codes [N, K]."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (N, K // GROUP, GROUP), generator=gen)
    codes[..., 0], codes[..., 1] = 0, 15  # the Q4_1 quantiser maps each group's min to 0 and max to 15
    d = (torch.rand(N, K // GROUP, 1, generator=gen) * 0.02 + 0.001).half().float()
    m = (-torch.rand(N, K // GROUP, 1, generator=gen) * 0.1).half().float()
    return (codes * d + m).view(N, K), codes.view(N, K)


def reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """What the packed kernels approximate: bf16-rounded activations times the weight, in float64."""
    return x.to(torch.bfloat16).double() @ weight.double().t()


def test_int4_recovers_the_exact_q4_1_codes():
    weight, codes = q4_1_weight()
    packed = Int4LinearMethod().pack(weight)
    expected = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
    assert torch.equal(packed.codes, expected)


@pytest.mark.parametrize("rows", [1, 7, MAX_PACKED_ROWS])
def test_int4_matches_the_dequantized_weight(rows):
    weight, _ = q4_1_weight(seed=rows)
    x = torch.randn(rows, K)
    method = Int4LinearMethod()
    out = method.apply(method.pack(weight), x)
    assert out.dtype == torch.float32 and out.shape == (rows, N)
    ref = reference(x, weight)
    # bf16 scales/offsets and a bf16 output: ~3 significant digits
    assert (out.double() - ref).abs().max() <= 1e-2 * ref.abs().max()


def test_int4_rows_do_not_depend_on_the_batch():
    weight, _ = q4_1_weight()
    method = Int4LinearMethod()
    packed = method.pack(weight)
    x = torch.randn(20, K)
    together = method.apply(packed, x)
    alone = torch.cat([method.apply(packed, x[i : i + 1]) for i in range(20)])
    assert torch.equal(together, alone)


def test_many_rows_use_the_dense_float32_weight():
    weight, _ = q4_1_weight()
    x = torch.randn(MAX_PACKED_ROWS + 1, K)
    for method in (Int4LinearMethod(), Int8LinearMethod()):
        packed = method.pack(weight)
        assert packed.dense.weight is weight and not packed.dense.prepacked  # the model's own weight, no copy
        assert torch.equal(method.apply(packed, x), F.linear(x, weight))


def test_a_bfloat16_model_keeps_no_dense_copy_on_torchs_kernels():
    weight, _ = q4_1_weight()
    packed = Int4LinearMethod().pack(weight.bfloat16())
    assert packed.dense is None
    out = Int4LinearMethod().apply(packed, torch.randn(MAX_PACKED_ROWS + 5, K, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (MAX_PACKED_ROWS + 5, N)


def test_int8_matches_the_weight_within_its_rounding():
    weight = torch.randn(N, K) * 0.05
    x = torch.randn(5, K)
    method = Int8LinearMethod()
    out = method.apply(method.pack(weight), x)
    ref = reference(x, weight)
    assert (out.double() - ref).abs().max() <= 2e-2 * ref.abs().max()


def test_int4_refuses_inputs_that_do_not_fill_groups():
    with pytest.raises(ValueError, match="multiple of 32"):
        Int4LinearMethod().pack(torch.randn(8, 40))


def test_the_cpu_plugin_offers_both_schemes_and_declines_others():
    plugins = load_plugins()
    platform = plugins.select("cpu")
    assert plugins.linear_method(platform, "int4").scheme == "int4"
    assert plugins.linear_method(platform, "int8").scheme == "int8"
    assert plugins.linear_method(platform, "fp8") is None


@pytest.mark.parametrize("scheme", ["int4", "int8"])
def test_the_native_block_method_is_preferred_and_torch_is_the_fallback(scheme):
    native = linear_method(scheme)
    assert isinstance(native, BlockLinearMethod) and native.scheme == scheme
    assert type(linear_method(scheme, native=False)) is {"int4": Int4LinearMethod, "int8": Int8LinearMethod}[scheme]
    assert linear_method("fp8") is None


def block_method(scheme: str, crossover: dict | None = None) -> BlockLinearMethod:
    return BlockLinearMethod(scheme, quant_matmul({"int4": "q4_1", "int8": "q8_0"}[scheme]), crossover)


@pytest.mark.parametrize("scheme", ["int4", "int8"])
def test_the_block_method_matches_the_weight_and_hands_wide_steps_to_the_dense_weight(scheme):
    weight, _ = q4_1_weight()
    method = block_method(scheme, {torch.float32: 8})
    packed = method.pack(weight)
    assert packed.dense.weight is weight and packed.max_packed_rows == 8  # float32: the plain weight
    x = torch.randn(8, K)
    ref = x.double() @ weight.double().t()
    tolerance = 1e-4 if scheme == "int4" else 1e-2  # Q4_1 weights are exact in int4; int8 rounds them
    assert (method.apply(packed, x).double() - ref).abs().max() <= tolerance * ref.abs().max()
    wide = torch.randn(9, K)
    assert torch.equal(method.apply(packed, wide), F.linear(wide, weight))


def test_without_a_crossover_every_width_runs_the_blocks_and_no_copy_is_kept():
    weight, _ = q4_1_weight()
    method = block_method("int4", {torch.float32: None})
    packed = method.pack(weight)
    assert packed.dense is None
    x = torch.randn(300, K)
    ref = x.double() @ weight.double().t()
    assert (method.apply(packed, x).double() - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_block_method_defaults_to_the_hosts_measured_choice(dtype):
    weight, _ = q4_1_weight()
    rows = host_isa().max_block_rows(dtype)
    packed = linear_method("int4").pack(weight.to(dtype))
    assert (packed.dense is None) == (rows is None)
    if rows is not None:
        assert packed.max_packed_rows == rows


def test_a_bfloat16_model_runs_wide_steps_on_its_own_weight_and_narrow_ones_on_the_blocks():
    weight, _ = q4_1_weight()
    weight = weight.bfloat16()
    method = block_method("int4", {torch.bfloat16: 16})
    packed = method.pack(weight)
    assert packed.dense.shape == weight.shape and packed.dense.prepacked == prepacking_available()
    wide = torch.randn(17, K, dtype=torch.bfloat16)
    out, ref = method.apply(packed, wide).float(), F.linear(wide, weight).float()
    assert (out - ref).abs().max() <= 1e-2 * ref.abs().max()  # oneDNN's prepacked GEMM: bf16 rounding apart
    x = wide[:16]
    out = method.apply(packed, x)
    assert out.dtype == torch.bfloat16
    ref = x.double() @ weight.double().t()
    assert (out.double() - ref).abs().max() <= 1e-2 * ref.abs().max()


def test_float32_models_run_at_least_max_block_rows_on_the_blocks_here():
    rows = host_isa().max_block_rows(torch.float32)
    assert rows is None or rows >= MAX_BLOCK_ROWS
