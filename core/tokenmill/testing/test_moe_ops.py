"""Conformance: a plugin's fused_moe agrees with the core reference and a float64 per-pair oracle.

The cases route decode-sized to prefill-sized batches over 8-16 experts with ragged loads, two
experts always empty, and (one case) a single token. Platforms that do not override fused_moe
are skipped: the core reference runs there, and tests/core/ops checks it.
"""

from __future__ import annotations

import pytest
import torch

from tokenmill.ops import fused_moe as moe_reference
from tokenmill.testing.moe_cases import make_moe_case, moe_oracle

# against the float64 oracle; a bf16/fp16 kernel rounds the [T*K, 2I] activations once more or less
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 4e-2, torch.float16: 6e-3}
CASES = [(1, 8, 64, 32, 2), (5, 8, 64, 96, 2), (33, 16, 128, 64, 4), (64, 16, 64, 32, 8)]  # (T, E, H, I, K)


@pytest.mark.parametrize("tokens,experts,hidden,inter,top_k", CASES)
def test_fused_moe(tokenmill_manager, tokenmill_platform, kv_allocator, dtype, tokens, experts, hidden, inter, top_k):
    fn = tokenmill_manager.op_overrides(tokenmill_platform).get("fused_moe")
    if fn is None:
        pytest.skip(f"{tokenmill_platform.name} does not override 'fused_moe'; the core's reference runs")
    case = make_moe_case(tokens, experts, hidden, inter, top_k, dtype, tokenmill_platform.device_type, seed=tokens)
    assert case.counts()[-1] == case.counts()[-2] == 0
    got = fn(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
    assert got.shape == case.x.shape and got.dtype == dtype
    want = moe_oracle(case)
    err = (got.double().cpu() - want).abs().max().item() / max(want.abs().max().item(), 1e-6)
    assert err <= TOLERANCE[dtype], f"fused_moe vs the float64 oracle: max error {err:.3g} of the largest output"
    ref = moe_reference.fused_moe(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
    ref_err = (ref.double().cpu() - want).abs().max().item() / max(want.abs().max().item(), 1e-6)
    assert err <= max(2 * ref_err, TOLERANCE[torch.float32]), f"fused_moe is {err:.3g} off, the reference {ref_err:.3g}"
