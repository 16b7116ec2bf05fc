"""The batch-1 Triton GEMV against torch's linear: ragged N and K, bias, K shorter than a tile."""

from __future__ import annotations

import pytest
import torch

from triton_reference import test_device

from tokenmill_triton.gemv import gemv

DEVICE = test_device()


@pytest.mark.parametrize("n,k,config", [(37, 64, (8, 32, 4)), (16, 96, (4, 32, 4)), (64, 256, (16, 64, 4)), (5, 24, (2, 32, 4))])
@pytest.mark.parametrize("bias", [False, True])
def test_gemv_matches_linear(n, k, config, bias):
    gen = torch.Generator().manual_seed(n + k)
    x = torch.randn(1, k, generator=gen).to(torch.bfloat16).to(DEVICE)
    w = torch.randn(n, k, generator=gen).to(torch.bfloat16).to(DEVICE)
    b = torch.randn(n, generator=gen).to(torch.bfloat16).to(DEVICE) if bias else None
    expected = torch.nn.functional.linear(x.float(), w.float(), None if b is None else b.float())  # [1, n]
    out = gemv(x, w, b, config=config)
    assert out.shape == (1, n) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.13, rtol=1e-2)


def test_gemv_refuses_several_rows():
    with pytest.raises(ValueError, match="one row"):
        gemv(torch.zeros(2, 8, device=DEVICE), torch.zeros(4, 8, device=DEVICE))
