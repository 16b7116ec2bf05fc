"""The CPU plugin's grouped-GEMM fused_moe against the core reference, on ragged loads with empty experts."""

from __future__ import annotations

import pytest
import torch

from tokenmill.ops import fused_moe as moe_reference
from tokenmill.ops import reference
from tokenmill.testing.moe_cases import make_moe_case

from tokenmill_cpu import moe


def _grouped_calls(monkeypatch) -> list[int]:
    calls = []
    real = torch._grouped_mm
    monkeypatch.setattr(torch, "_grouped_mm", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.skipif(not moe.grouped_mm_works(torch.float32), reason="this torch has no CPU grouped GEMM")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("tokens", [3, 17, 64])
def test_grouped_path_matches_reference(monkeypatch, dtype, tol, tokens):
    case = make_moe_case(tokens, 16, 64, 32, 4, dtype, seed=tokens, num_empty=5)
    grouped = moe.grouped_mm_works(dtype)  # probed before counting calls
    calls = _grouped_calls(monkeypatch)
    got = moe.CpuFusedMoe(reference.silu_and_mul)(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
    assert len(calls) == (2 if grouped else 0)  # the grouped path ran, two GEMMs
    want = moe_reference.fused_moe(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
    torch.testing.assert_close(got.float(), want.float(), atol=tol * want.abs().max().item(), rtol=0)


def test_decode_and_misaligned_shapes_use_the_reference(monkeypatch):
    calls = _grouped_calls(monkeypatch) if hasattr(torch, "_grouped_mm") else []
    fn = moe.CpuFusedMoe(reference.silu_and_mul)
    for case in (make_moe_case(3, 8, 64, 32, 2, torch.float32), make_moe_case(9, 8, 60, 30, 2, torch.float32)):
        got = fn(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
        torch.testing.assert_close(got, moe_reference.fused_moe(case.x, case.w13, case.w2, case.topk_weights,
                                                                case.topk_ids))
    assert not calls


def test_plugin_offers_fused_moe():
    from tokenmill.plugin_manager import load_plugins

    plugins = load_plugins()
    assert isinstance(plugins.op_overrides(plugins.select("cpu"))["fused_moe"], moe.CpuFusedMoe)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_single_token_path_matches_reference(dtype, tol):
    fn = moe.CpuFusedMoe(reference.silu_and_mul)
    for seed in range(3):
        case = make_moe_case(1, 16, 64, 32, 4, dtype, seed=seed)
        got = fn(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
        want = moe_reference.fused_moe(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
        assert got.dtype == dtype and got.shape == want.shape
        torch.testing.assert_close(got.float(), want.float(), atol=tol * want.abs().max().item(), rtol=0)
