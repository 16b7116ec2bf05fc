"""The CPU plugin's int4/int8 linear methods against plain-torch references on the same codes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenmill.plugin_manager import load_plugins
from tokenmill_cpu.linear_methods import GROUP, MAX_PACKED_ROWS, Int4LinearMethod, Int8LinearMethod

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
        assert torch.equal(method.apply(method.pack(weight), x), F.linear(x, weight))


def test_a_bfloat16_model_keeps_no_dense_copy():
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
