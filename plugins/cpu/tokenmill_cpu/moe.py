"""fused_moe on the CPU: torch's grouped GEMM (one call per projection for every expert) where it runs.

The core reference loops over the experts that received tokens, two matmuls each; with many
tokens spread over many experts that is dozens of small GEMMs and their Python dispatch per
layer. torch._grouped_mm takes the expert-sorted rows and the per-expert row offsets and runs
them all in one call (empty experts included). A single token (single-stream decode) skips the
grouping: its K experts run in turn, three ops each, where the reference's sort, gathers and
scatter-add cost more ops than the matmuls on a small model. A handful of pairs keeps the
reference (benchmarks/moe_cpu.py --op measures all three); so do torch builds without a CPU
grouped GEMM (it arrived after torch 2.9) and dtypes it refuses.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import torch
import torch.nn.functional as F

from tokenmill.ops import fused_moe as moe_reference
from tokenmill.ops import reference

MIN_GROUPED_PAIRS = 8  # fewer (token, expert) pairs than this: the reference (measured crossover 4-16)


@lru_cache(maxsize=8)
def grouped_mm_works(dtype: torch.dtype) -> bool:
    """Whether torch._grouped_mm runs on the CPU for `dtype` (probed once on a tiny case)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    try:
        x, w = torch.ones(3, 16, dtype=dtype), torch.ones(2, 16, 16, dtype=dtype)
        out = torch._grouped_mm(x, w, offs=torch.tensor([0, 3], dtype=torch.int32))
        return bool(out.shape == (3, 16) and out.float().eq(16).all())
    except (RuntimeError, NotImplementedError):
        return False


class CpuFusedMoe:
    """The grouped-GEMM fused_moe, with the plugin's silu_and_mul between the two projections."""

    def __init__(self, silu_and_mul: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self._silu_and_mul = silu_and_mul

    def __call__(self, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                 topk_ids: torch.Tensor) -> torch.Tensor:
        """x [T, H], w13 [E, 2I, H], w2 [E, H, I], weights float32 [T, K], ids [T, K] -> [T, H]."""
        if topk_ids.shape[0] == 1:
            return self._one_token(x, w13, w2, topk_weights, topk_ids)
        if topk_ids.numel() < MIN_GROUPED_PAIRS or not self._grouped(x, w13, w2):
            return moe_reference.fused_moe(x, w13, w2, topk_weights, topk_ids)
        num_tokens, top_k = topk_ids.shape
        order, counts = moe_reference.sort_by_expert(topk_ids, w13.shape[0])
        offsets = counts.cumsum(0).to(torch.int32)  # [E]: each expert's segment end
        rows = x.index_select(0, order // top_k)  # [T*K, H], grouped by expert
        hidden = torch._grouped_mm(rows, w13.transpose(1, 2), offs=offsets)  # [T*K, 2I]
        out = torch._grouped_mm(self._silu_and_mul(hidden), w2.transpose(1, 2), offs=offsets)  # [T*K, H]
        return moe_reference.combine(out, order, topk_weights, num_tokens, top_k, x.dtype)

    def _one_token(self, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                   topk_ids: torch.Tensor) -> torch.Tensor:
        """Single-stream decode: the token's K experts in turn, three ops each (no sort, gather or scatter)."""
        experts, weights = topk_ids[0].tolist(), topk_weights[0].tolist()
        out = torch.zeros(1, x.shape[1], dtype=torch.float32)  # [1, H], summed in float32 like the reference
        for expert, weight in zip(experts, weights):
            act = self._silu_and_mul(F.linear(x, w13[expert]))  # [1, I]
            if x.dtype == torch.float32:
                out.addmm_(act, w2[expert].t(), alpha=weight)
            else:  # the expert's output rounds to the model dtype first, as in the reference
                out.add_(F.linear(act, w2[expert]).float(), alpha=weight)
        return out.to(x.dtype)

    @staticmethod
    def _grouped(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> bool:
        """torch's grouped GEMM wants one dtype and rows 16-byte aligned (H and I times the element size)."""
        aligned = all(size * x.element_size() % 16 == 0 for size in (w13.shape[2], w2.shape[2]))
        return aligned and x.dtype == w13.dtype == w2.dtype and grouped_mm_works(x.dtype)


def moe_ops(op_table: dict[str, Any]) -> dict[str, Any]:
    """{"fused_moe": the grouped version}, given the plugin's other overrides (for silu_and_mul)."""
    return {"fused_moe": CpuFusedMoe(op_table.get("silu_and_mul", reference.silu_and_mul))}
