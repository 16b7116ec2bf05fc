"""The Triton fused_moe (interpreter on the CPU) against the core reference and a float64 oracle,
over every tile bucket, ragged loads and empty experts."""

from __future__ import annotations

import pytest
import torch

from tokenmill.ops import fused_moe as moe_reference
from tokenmill.testing.moe_cases import make_moe_case, moe_oracle
from triton_reference import test_device

from tokenmill_triton import fused_moe as triton_moe

DEVICE = test_device()
TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens,experts,hidden,inter,top_k", [
    (1, 8, 64, 32, 2),  # decode bucket: one row per expert
    (6, 8, 96, 48, 2),  # K and N not multiples of the tiles
    (40, 4, 64, 32, 2),  # 20 rows per expert: the middle bucket
])
def test_matches_reference_and_oracle(dtype, tokens, experts, hidden, inter, top_k):
    case = make_moe_case(tokens, experts, hidden, inter, top_k, dtype, DEVICE, seed=tokens, num_empty=1)
    assert 0 in case.counts()
    got = triton_moe.fused_moe(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
    want = moe_oracle(case)
    ref = moe_reference.fused_moe(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
    scale = want.abs().max().item()
    assert got.dtype == dtype and got.shape == case.x.shape
    assert (got.double().cpu() - want).abs().max().item() <= TOL[dtype] * scale
    assert (got.double().cpu() - ref.double().cpu()).abs().max().item() <= TOL[dtype] * scale


def test_align_pairs_pads_each_expert_to_whole_tiles():
    ids = torch.tensor([[2, 0], [0, 2], [2, 1]], device=DEVICE)
    sorted_ids, tile_expert = triton_moe.align_pairs(ids, 4, 2)
    pad = ids.numel()
    # expert 0: pairs 1, 2; expert 1: pair 5 + pad; expert 2: pairs 0, 3, 4 + pad; expert 3 empty
    assert tile_expert.tolist()[:4] == [0, 1, 2, 2] and set(tile_expert.tolist()[4:]) <= {-1}
    assert sorted_ids.tolist()[:8] == [1, 2, 5, pad, 0, 3, 4, pad]


def test_tile_buckets():
    assert triton_moe.tile_config(8, 128)[0] == 16  # Qwen3-30B-A3B decode
    assert triton_moe.tile_config(8 * 64, 128)[0] == 32
    assert triton_moe.tile_config(8 * 4096, 128)[0] == 64
