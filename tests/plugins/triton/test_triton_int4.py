"""The Triton int4 GEMM (and its dequantize-then-GEMM path) on GPTQ-style groups against the dequantized weight in float64.

Small sizes so the interpreter (TRITON_INTERPRET=1, the CPU CI) runs them in seconds; on a GPU the
same cases run compiled. Groups of 32, 128 and all of K; rows 1, 3 and 5 take the GEMM, 33 the dequantize-then-GEMM path.
"""

from __future__ import annotations

import pytest
import torch

from triton_reference import test_device

from tokenmill_triton.int4_matmul import int4_matmul, pack_int4

DEVICE = test_device()


def stored(n: int, k: int, group: int, gen: torch.Generator):
    codes = torch.randint(0, 16, (n, k), generator=gen).to(torch.uint8)
    scales = (torch.rand(n, k // group, generator=gen) * 0.05 + 0.01).half().float()
    zeros = torch.randint(0, 16, (n, k // group), generator=gen).float()
    q = codes.float().view(n, k // group, group)
    dense = ((q - zeros[..., None]) * scales[..., None]).view(n, k)
    return pack_int4(codes.to(DEVICE), scales.to(DEVICE), zeros.to(DEVICE), group), dense


@pytest.mark.parametrize("n,k,group", [(48, 128, 32), (40, 256, 128), (16, 96, 96)])
@pytest.mark.parametrize("rows", [1, 3, 5, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_matmul_matches_the_dequantized_weight(n, k, group, rows, dtype):
    gen = torch.Generator().manual_seed(n * k + rows)
    weight, dense = stored(n, k, group, gen)
    x = torch.randn(rows, k, generator=gen).to(dtype)
    out = int4_matmul(x.to(DEVICE), weight, gemm_config=(16, 16, 64, 4), dequant_rows=16)
    want = x.double() @ dense.double().T
    assert out.shape == (rows, n) and out.dtype == dtype
    bound = (1e-5 if dtype == torch.float32 else 1e-2) * want.abs().max().item()
    assert (out.double().cpu() - want).abs().max().item() <= bound


def test_int4_matmul_refuses_a_ragged_input_size():
    weight, _ = stored(8, 64, 32, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="multiples of 32"):
        int4_matmul(torch.zeros(1, 48, device=DEVICE), weight)


@pytest.mark.parametrize("block_k,group,cols,want", [(256, 128, 256, (256, 2)), (256, 128, 128, (128, 1)),
                                                     (64, 128, 256, (64, 1)), (256, 96, 96, (32, 1))])
def test_tiles_are_cut_on_group_boundaries(block_k, group, cols, want):
    from tokenmill_triton.int4_matmul import _tiling

    assert _tiling(block_k, cols, group) == want
