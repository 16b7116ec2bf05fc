"""Triton op overrides vs tokenmill.ops.reference, including strided views of a fused qkv."""

from __future__ import annotations

import pytest
import torch

from tokenmill.ops import OP_NAMES, reference
from triton_reference import test_device

from tokenmill_triton.op_table import triton_ops

DEVICE = test_device()
OPS = triton_ops()
# the interpreter rounds float32 -> bf16 by truncation, so allow one bf16 ulp of |x| <= 16
ATOL = {torch.float32: 1e-5, torch.bfloat16: 0.13}


def _randn(*shape, dtype, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype).to(DEVICE)


def _close(a, b, dtype):
    assert a.shape == b.shape and a.dtype == b.dtype
    torch.testing.assert_close(a.float(), b.float(), atol=ATOL[dtype], rtol=1e-2 if dtype != torch.float32 else 1e-5)


def test_every_override_has_a_reference_name():
    assert set(OPS) <= set(OP_NAMES)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norms(dtype):
    x, res, w = _randn(7, 200, dtype=dtype, seed=0), _randn(7, 200, dtype=dtype, seed=1), _randn(200, dtype=dtype, seed=2)
    _close(OPS["rms_norm"](x, w, 1e-5), reference.rms_norm(x, w, 1e-5), dtype)
    for got, want in zip(OPS["fused_add_rms_norm"](x, res, w, 1e-5), reference.fused_add_rms_norm(x, res, w, 1e-5)):
        _close(got, want, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_and_mul(dtype):
    x = _randn(5, 2 * 1100, dtype=dtype, seed=3)
    _close(OPS["silu_and_mul"](x), reference.silu_and_mul(x), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_on_views_of_fused_qkv(dtype):
    qkv = _randn(6, 8 * 64 + 2 * 2 * 64, dtype=dtype, seed=4)
    q, k, _ = qkv.split([8 * 64, 2 * 64, 2 * 64], dim=-1)
    positions = torch.tensor([0, 1, 9, 63, 2, 40], device=DEVICE)
    cos_sin = _randn(64, 64, dtype=torch.float32, seed=5)
    before = qkv.clone()
    for got, want in zip(OPS["rotary"](positions, q, k, cos_sin, 64), reference.rotary(positions, q, k, cos_sin, 64)):
        _close(got, want, dtype)
    assert torch.equal(qkv, before), "inputs are left as they were"


@pytest.mark.parametrize("use_k,use_p", [(True, False), (False, True), (True, True)])
def test_top_k_top_p_matches_reference(use_k, use_p):
    logits = _randn(6, 5000, dtype=torch.float32, seed=6)
    top_k = torch.tensor([0, 5, 5000, 50, 1, 2000], device=DEVICE) if use_k else None
    top_p = torch.tensor([1.0, 0.9, 0.5, 0.99, 0.3, 0.999], device=DEVICE) if use_p else None
    assert torch.equal(OPS["top_k_top_p"](logits, top_k, top_p), reference.top_k_top_p(logits, top_k, top_p))


def test_top_p_decided_within_candidates_needs_no_full_sort(monkeypatch):
    from tokenmill_triton import sampling

    logits = 4 * _randn(4, 20000, dtype=torch.float32, seed=7)  # peaked: nuclei of a few hundred
    top_p = torch.tensor([0.5, 0.8, 0.9, 0.7], device=DEVICE)
    top_k = torch.tensor([0, 0, 100, 0], device=DEVICE)
    want = reference.top_k_top_p(logits, top_k, top_p)

    def no_full_sort(*args):
        raise AssertionError("fell back to the full-sort reference")

    monkeypatch.setattr(sampling.reference, "top_k_top_p", no_full_sort)
    assert torch.equal(sampling.top_k_top_p(logits, top_k, top_p), want)
