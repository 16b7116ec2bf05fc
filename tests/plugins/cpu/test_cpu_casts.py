"""The native float32 <-> bfloat16 casts against torch's own conversion, bit for bit."""

from __future__ import annotations

import pytest
import torch

from tokenmill_cpu.casts import casts

SPECIAL = [0.0, -0.0, 1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), float("inf"), float("-inf"), 1e-40, -3e-39,
           3.4e38, 1.0e-45, 65504.0]


@pytest.fixture(scope="module")
def native():
    cast = casts()
    if cast._lib is None:
        pytest.fail("casts.cpp did not build (CI has g++)")
    return cast


def test_float32_to_bf16_rounds_as_torch_does(native):
    x = torch.cat([torch.randn(10_000) * 10.0 ** torch.randint(-30, 30, (10_000,)), torch.tensor(SPECIAL)])
    assert torch.equal(native.to_bf16(x).view(torch.int16), x.to(torch.bfloat16).view(torch.int16))


def test_nan_stays_nan_and_bf16_to_float32_is_exact(native):
    x = torch.tensor([float("nan"), 1.5, -2.25])
    assert native.to_bf16(x)[0].isnan() and torch.equal(native.to_bf16(x)[1:], x[1:].bfloat16())
    b = (torch.randn(64, 3072) * 100).bfloat16()
    out = native.to_f32(b)
    assert out.dtype == torch.float32 and out.shape == b.shape and torch.equal(out, b.float())


def test_other_inputs_fall_back_to_torch(native):
    x = torch.randn(8, 6)[:, ::2]  # not contiguous
    assert torch.equal(native.to_bf16(x), x.bfloat16())
    assert torch.equal(casts(native=False).to_f32(x.bfloat16()), x.bfloat16().float())
