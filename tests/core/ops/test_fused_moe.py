"""The core's fused_moe reference and softmax top-k routing against independent float64 oracles."""

from __future__ import annotations

import pytest
import torch

from tokenmill.ops import OpRegistry
from tokenmill.ops import fused_moe as moe
from tokenmill.testing.moe_cases import make_moe_case, moe_oracle


@pytest.mark.parametrize("tokens,experts,top_k", [(1, 8, 2), (7, 8, 3), (40, 16, 4), (3, 4, 4)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_reference_matches_per_pair_oracle(tokens, experts, top_k, dtype, tol):
    case = make_moe_case(tokens, experts, 64, 48, top_k, dtype, seed=tokens, num_empty=min(2, experts - top_k))
    got = moe.fused_moe(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
    want = moe_oracle(case)
    assert got.dtype == dtype and got.shape == case.x.shape
    assert (got.double() - want).abs().max().item() <= tol * want.abs().max().item()


def test_registry_offers_the_reference():
    assert OpRegistry().fused_moe is moe.fused_moe


def test_sort_by_expert_groups_pairs_stably():
    ids = torch.tensor([[2, 0], [0, 3], [2, 1]])
    order, counts = moe.sort_by_expert(ids, 5)
    assert counts.tolist() == [2, 1, 2, 1, 0]  # expert 4 empty
    assert ids.reshape(-1)[order].tolist() == [0, 0, 1, 2, 2, 3]
    assert order.tolist() == [1, 2, 5, 0, 4, 3]  # within an expert, token order kept


def test_route_softmax_top_k_and_renormalisation():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    probs = logits.softmax(-1)[0]
    weights, ids = moe.route(logits, 2, renormalize=False)
    assert ids.tolist() == [[1, 2]]
    torch.testing.assert_close(weights[0], probs[[1, 2]])
    weights, _ = moe.route(logits, 2, renormalize=True)
    torch.testing.assert_close(weights[0], probs[[1, 2]] / probs[[1, 2]].sum())
    assert weights.dtype == torch.float32


def test_no_tokens():
    case = make_moe_case(0, 4, 32, 16, 2, torch.float32, num_empty=0)
    assert moe.fused_moe(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids).shape == (0, 32)
