"""DenseGemm: oneDNN's prepacked bf16 GEMM against float64 matmul, and its plain fallback."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tokenmill_cpu.dense_gemm import DenseGemm, prepacking_available

N, K = 96, 576


def _relative_error(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> float:
    ref = x.double() @ weight.double().t()
    return ((out.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.skipif(not prepacking_available(), reason="this torch/CPU has no oneDNN bf16 linear")
@pytest.mark.parametrize("rows", [1, 17, 64, 300])
def test_prepacked_bf16_matches_the_weight(rows):
    torch.manual_seed(rows)
    weight = torch.randn(N, K).bfloat16()
    gemm = DenseGemm(weight)
    assert gemm.prepacked
    x = torch.randn(rows, K).bfloat16()
    out = gemm(x)
    assert out.dtype == torch.bfloat16 and out.shape == (rows, N)
    assert _relative_error(out, x, weight) < 8e-3  # bf16 output rounding (2^-8), as F.linear's
    assert _relative_error(F.linear(x, weight), x, weight) < 8e-3


@pytest.mark.skipif(not prepacking_available(), reason="this torch/CPU has no oneDNN bf16 linear")
def test_prepacked_takes_a_column_slice_and_another_dtype():
    weight = torch.randn(N, K).bfloat16()
    gemm = DenseGemm(weight)
    wide = torch.randn(5, 2 * K).bfloat16()
    x = wide[:, K:]  # not contiguous
    assert _relative_error(gemm(x), x, weight) < 8e-3
    x32 = torch.randn(3, K)
    out = gemm(x32)
    assert out.dtype == torch.float32 and _relative_error(out, x32.bfloat16(), weight) < 8e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_plain_weights_run_f_linear_exactly(dtype):
    weight = torch.randn(N, K).to(dtype)
    gemm = DenseGemm(weight, prepack=False)
    assert gemm.weight is weight and not gemm.prepacked
    x = torch.randn(7, K).to(dtype)
    assert torch.equal(gemm(x), F.linear(x, weight))


def test_float32_weights_are_not_prepacked():
    assert not DenseGemm(torch.randn(N, K)).prepacked
